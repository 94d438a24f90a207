"""Profiles as data: the built-ins, validation that names file, field and line, the
no-code rule, the content hash, import and export."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from bastion_guardrails.bundle import ProfileOrigin, read_bundle, read_folder
from bastion_guardrails.library import (
    BUILTIN_IDS,
    ProfileLibrary,
    builtin_bundle,
    check_profile,
    export_profile,
    import_profile,
)
from bastion_guardrails.problems import ProfileError, ProfileNotFoundError, ProfileProblem
from bastion_guardrails.profile import Strictness, load_profile
from tests.guardrails.conftest import write_profile

CONFIG = """\
rails:
  input:
    flows:
      - bastion block prompt injection on input
  output:
    flows:
      - bastion mask secrets on output
"""


def problems_of(path: Path, origin: ProfileOrigin = ProfileOrigin.USER) -> list[ProfileProblem]:
    with pytest.raises(ProfileError) as raised:
        load_profile(read_bundle(path, origin))
    return list(raised.value.problems)


def test_the_builtin_profiles_load_and_carry_no_code() -> None:
    library = ProfileLibrary()
    profiles = [library.get(i) for i in BUILTIN_IDS]
    assert [p.name for p in profiles] == ["Off", "Standard", "Strict", "Workplace"]
    assert [p.manifest.strictness for p in profiles] == [
        Strictness.OFF,
        Strictness.STANDARD,
        Strictness.STRICT,
        Strictness.STANDARD,
    ]
    for profile in profiles:
        assert profile.origin is ProfileOrigin.BUILTIN
        assert not profile.manifest.safety_model_required
        assert set(profile.bundle.files) == {"profile.yml", "config.yml"}


def test_a_valid_user_profile_loads(tmp_path: Path) -> None:
    profile = check_profile(write_profile(tmp_path / "mine", CONFIG, profile_id="mine"))
    assert profile.id == "mine"
    assert [f.name for f in profile.input_flows] == ["bastion block prompt injection on input"]
    assert profile.origin is ProfileOrigin.USER


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("id: Bad Id\nname: X\nversion: '1'\nstrictness: standard\n", ("id", 1)),
        ("id: x\nname: X\nversion: '1'\nstrictness: extreme\n", ("strictness", 4)),
        ("id: x\nname: X\nstrictness: standard\n", ("version", None)),
        ("id: x\nname: X\nversion: '1'\nstrictness: standard\ncolour: red\n", ("colour", 5)),
        (
            "id: x\nname: X\nversion: '1'\nstrictness: standard\nmodels:\n  vision: optional\n",
            ("models.vision", 6),
        ),
        ("id: x\nname: X\nversion: '1'\nstrictness: off\n", ("strictness", 4)),
    ],
)
def test_manifest_problems_name_the_field_and_line(
    tmp_path: Path, manifest: str, expected: tuple[str, int | None]
) -> None:
    folder = write_profile(tmp_path / "p", CONFIG, manifest=manifest)
    (problem,) = problems_of(folder)
    assert problem.file == "profile.yml"
    assert (problem.field, problem.line) == expected


def test_yaml_off_reads_as_false_and_the_message_says_so(tmp_path: Path) -> None:
    folder = write_profile(
        tmp_path / "p", CONFIG, manifest="id: x\nname: X\nversion: '1'\nstrictness: off\n"
    )
    (problem,) = problems_of(folder)
    assert "YAML reads off" in problem.message


@pytest.mark.parametrize(
    ("config", "field", "line", "words"),
    [
        (
            "rails:\n  input:\n    flows:\n      - bastion block prompt injection on input\n"
            "      - bastion mask secret on input\n",
            "rails.input.flows.1",
            5,
            "neither one of Bastion's rails",
        ),
        (
            "rails:\n  input:\n    flows:\n      - bastion mask secrets on output\n",
            "rails.input.flows.0",
            4,
            "a rail for the output side",
        ),
        ("models:\n  - type: main\n    engine: openai\n", "models", 1, "model roles"),
        (
            "rails:\n  dialog:\n    single_call: {enabled: true}\n",
            "rails.dialog",
            2,
            "input and output rails only",
        ),
        ("import_paths: [../other]\n", "import_paths", 1, "outside itself"),
        (
            "rails:\n  output:\n    flows: []\n    streaming:\n      chunk_size: 0\n",
            "rails.output.streaming.chunk_size",
            5,
            "whole number",
        ),
        (
            "rails:\n  output:\n    flows: []\n    streaming:\n      chunk_size: 8\n"
            "      context_size: 8\n",
            "rails.output.streaming.context_size",
            6,
            "smaller than chunk_size",
        ),
        (
            "custom_data:\n  bastion:\n    content_safety:\n"
            "      block: [violent_crimes, rudeness]\n",
            "custom_data.bastion.content_safety.block.1",
            4,
            "not a safety category",
        ),
        (
            "rails:\n  input:\n    flows: [bastion content safety on input]\n",
            "rails.input.flows.0",
            3,
            "does not declare",
        ),
        ("rails: [\n", None, 2, "not valid YAML"),
    ],
)
def test_config_problems_name_the_field_and_line(
    tmp_path: Path, config: str, field: str | None, line: int, words: str
) -> None:
    (problem,) = problems_of(write_profile(tmp_path / "p", config))
    assert problem.file == "config.yml"
    assert (problem.field, problem.line) == (field, line)
    assert words in problem.message
    assert str(problem).startswith(f"config.yml, line {line}")


def test_a_config_nested_too_deeply_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    deep = "rails: " + "[" * 50_000 + "]" * 50_000 + "\n"
    (problem,) = problems_of(write_profile(tmp_path / "p", deep))
    assert problem.file == "config.yml"
    assert "nested too deeply" in problem.message


EXECUTE = "  execute bastion_secrets(text=$user_message)\n"


@pytest.mark.parametrize(
    ("colang", "line", "words"),
    [
        (
            "define subflow my rail\n  execute call_activefence_api(text=$user_message)\n",
            2,
            "not an action in Bastion's registry",
        ),
        ('define user ask secret\n  "what is the password"\n', 1, "embedding model"),
        (
            "import core\n\ndefine subflow my rail\n" + EXECUTE,
            1,
            "self-contained",
        ),
        (
            "define subflow my rail\n" + EXECUTE + "  bot say no\n  stop\n",
            3,
            "no 'define bot say no'",
        ),
        (
            "define subflow my rail\n  create event Foo\n" + EXECUTE,
            2,
            "creates events",
        ),
        ("define subflow my rail\n  do self check input\n", 2, "neither a flow of this profile"),
        (
            "define subflow bastion mask secrets on input\n" + EXECUTE,
            1,
            "reserved",
        ),
        ("define subflow my rail\n  $r = execute (\n", 2, "not valid Colang"),
        (
            "define flow my rail\n  user express greeting\n" + EXECUTE,
            2,
            "waits for an event",
        ),
    ],
)
def test_colang_problems_name_the_file_and_line(
    tmp_path: Path, colang: str, line: int, words: str
) -> None:
    config = "rails:\n  input:\n    flows: [bastion block prompt injection on input]\n"
    found = problems_of(write_profile(tmp_path / "p", config, rails_co=colang))
    assert any(p.file == "rails.co" and p.line == line and words in p.message for p in found), found


@pytest.mark.parametrize("code_file", ["actions.py", "config.py", "actions/helpers.py"])
def test_a_user_or_admin_profile_with_code_is_refused(tmp_path: Path, code_file: str) -> None:
    folder = write_profile(tmp_path / "p", CONFIG)
    (folder / code_file).parent.mkdir(exist_ok=True)
    (folder / code_file).write_text("import os\nos.system('echo pwned')\n")
    for origin in (ProfileOrigin.USER, ProfileOrigin.ADMIN):
        (problem,) = problems_of(folder, origin)
        assert problem.file == code_file
        assert "only Bastion's built-in profiles may carry code" in problem.message
    assert load_profile(read_folder(folder, ProfileOrigin.BUILTIN)).id == "test-profile"


def test_other_files_are_refused_and_docs_allowed(tmp_path: Path) -> None:
    folder = write_profile(tmp_path / "p", CONFIG, README_md="# My profile\n")
    (folder / "model.gguf").write_bytes(b"GGUF")
    (problem,) = problems_of(folder)
    assert problem.file == "model.gguf"


def test_the_hash_is_stable_for_the_same_content_and_changes_with_any_change(
    tmp_path: Path,
) -> None:
    folder = write_profile(tmp_path / "p", CONFIG, notes_md="notes\n")
    first = read_folder(folder, ProfileOrigin.USER).content_hash
    assert read_folder(folder, ProfileOrigin.USER).content_hash == first
    # Line endings and a byte-order mark are not content.
    config = folder / "config.yml"
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes().replace(b"\n", b"\r\n"))
    assert read_folder(folder, ProfileOrigin.USER).content_hash == first
    changes = [
        lambda: config.write_text(CONFIG + "\n"),
        lambda: (folder / "notes.md").write_text("notes!\n"),
        lambda: (folder / "notes.md").rename(folder / "other.md"),
        lambda: (folder / "extra.md").write_text(""),
    ]
    seen = {first}
    for change in changes:
        change()
        digest = read_folder(folder, ProfileOrigin.USER).content_hash
        assert digest not in seen
        seen.add(digest)


def test_builtin_hashes_are_pinned_by_content() -> None:
    assert builtin_bundle("standard").content_hash == ProfileLibrary().get("standard").content_hash
    assert len({builtin_bundle(i).content_hash for i in BUILTIN_IDS}) == len(BUILTIN_IDS)


def test_export_then_import_keeps_the_hash(tmp_path: Path) -> None:
    source = check_profile(write_profile(tmp_path / "src", CONFIG, profile_id="team"))
    archive = export_profile(source, tmp_path / "out")
    assert archive == tmp_path / "out" / "team.zip" or archive.name == "out"
    archive = export_profile(source, tmp_path / "team.zip")
    again = export_profile(source, tmp_path / "team-again.zip")
    assert archive.read_bytes() == again.read_bytes(), "the same profile zips to the same bytes"
    user_dir = tmp_path / "profiles"
    installed = import_profile(archive, user_dir)
    assert installed.content_hash == source.content_hash
    assert installed.origin is ProfileOrigin.USER
    assert ProfileLibrary(user_dir=user_dir).get("team").content_hash == source.content_hash
    with pytest.raises(ProfileError, match="already installed"):
        import_profile(archive, user_dir)
    assert import_profile(archive, user_dir, replace=True).id == "team"


def test_a_builtin_can_be_exported_but_not_shadowed(tmp_path: Path) -> None:
    archive = export_profile(ProfileLibrary().get("strict"), tmp_path / "strict.zip")
    with pytest.raises(ProfileError, match="id of a built-in profile"):
        import_profile(archive, tmp_path / "profiles")
    assert not (tmp_path / "profiles" / "strict").exists()


def test_an_invalid_profile_is_not_installed(tmp_path: Path) -> None:
    folder = write_profile(tmp_path / "bad", CONFIG, profile_id="bad", actions_py="x = 1\n")
    with pytest.raises(ProfileError):
        import_profile(folder, tmp_path / "profiles")
    assert not (tmp_path / "profiles" / "bad").exists()


@pytest.mark.parametrize("name", ["../evil/profile.yml", "/etc/profile.yml", "a\\..\\b.yml"])
def test_a_zip_that_escapes_its_folder_is_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("profile.yml", "id: evil\n")
        zipped.writestr(name, "x")
    with pytest.raises(ProfileError, match="unsafe path"):
        read_bundle(archive, ProfileOrigin.USER)


def test_a_missing_profile_says_so() -> None:
    with pytest.raises(ProfileNotFoundError, match="'nope'"):
        ProfileLibrary().get("nope")


def test_a_broken_user_profile_is_listed_with_its_problems(tmp_path: Path) -> None:
    user_dir = tmp_path / "profiles"
    write_profile(user_dir / "good", CONFIG, profile_id="good")
    write_profile(user_dir / "broken", "rails: [\n", profile_id="broken")
    entries = {e.id: e for e in ProfileLibrary(user_dir=user_dir).entries()}
    assert set(entries) == {*BUILTIN_IDS, "good", "broken"}
    assert entries["good"].profile is not None
    assert entries["broken"].profile is None
    assert entries["broken"].error is not None
