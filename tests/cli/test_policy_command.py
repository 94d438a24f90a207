"""`bastion policy show|check|templates|profile-hash`, and a locked policy holding
against the settings file and the `--profile` flag.

`policy check` and `templates` run the installed command as an admin would. The real
policy folder is /etc/bastion/policies, which a test must not write to, so tests that
need a policy in force run the CLI's `main()` (or `AppContext.start()`) in this process
with the policy readers replaced: there is deliberately no outside switch for that.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion_desktop import context as context_module
from bastion_desktop.cli import main
from bastion_desktop.context import AppContext
from bastion_desktop.core.policy import BANNER, loading
from bastion_desktop.core.policy.linux import ETC_ROOT, LinuxPolicyReader
from bastion_desktop.core.policy.templates import TEMPLATE_FILES
from bastion_guardrails.library import builtin_bundle

BASTION = Path(sys.executable).with_name("bastion")


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BASTION_HOME=str(home))
    return subprocess.run(
        [str(BASTION), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def policy_root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("policy folders must be root's: building them needs root")
    root = tmp_path / "policies"
    for folder in (root, root / "managed", root / "recommended"):
        folder.mkdir()
        folder.chmod(0o755)
    return root


@pytest.fixture
def managed(policy_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app reads its policy from `policy_root` (this process only) and leaves the
    root logger alone (AppContext.start would add a file handler to it)."""
    monkeypatch.setattr(loading, "system_readers", lambda: [LinuxPolicyReader(policy_root)])
    monkeypatch.setattr(context_module, "configure_logging", lambda _path: None)
    return policy_root / "managed"


def _write(folder: Path, name: str, data: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(data), encoding="utf-8")
    path.chmod(0o644)
    return path


# --- check -------------------------------------------------------------------------------


def test_check_accepts_a_valid_file(bastion_home: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, "ok.json", {"OfflineMode": True, "AllowedModels": ["bartowski/*"]})
    result = _run(bastion_home, "policy", "check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{path} is a valid Bastion policy file.\n"


def test_check_names_each_key_and_its_problem(bastion_home: Path, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bad.json",
        {"OflineMode": True, "ConversationRetentionDays": 0, "AllowedModels": "bartowski/*"},
    )
    result = _run(bastion_home, "policy", "check", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}: OflineMode is not a Bastion policy (did you mean OfflineMode?); it was not "
        "applied.",
        f"{path}: ConversationRetentionDays must be from 1 to 36500, not 0; it was not applied.",
        f"{path}: AllowedModels must be a list of text entries; it was not applied.",
    ]


def test_check_a_recommended_file(bastion_home: Path, tmp_path: Path) -> None:
    path = _write(tmp_path, "rec.json", {"AllowModelDownloads": False})
    assert _run(bastion_home, "policy", "check", str(path)).returncode == 0
    result = _run(bastion_home, "policy", "check", "--recommended", str(path))
    assert result.returncode == 1
    assert "AllowModelDownloads can only be set as mandatory" in result.stderr


def test_check_invalid_json_and_a_missing_file(bastion_home: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"OfflineMode": true,}', encoding="utf-8")
    result = _run(bastion_home, "policy", "check", str(broken))
    assert result.returncode == 1
    assert "is not valid JSON (Expecting property name enclosed in double quotes" in result.stderr
    missing = _run(bastion_home, "policy", "check", str(tmp_path / "nope.json"))
    assert missing.returncode == 1
    assert "nope.json cannot be read (No such file or directory)." in missing.stderr


# --- templates and profile-hash -------------------------------------------------------------


def test_templates_writes_every_file(bastion_home: Path, tmp_path: Path) -> None:
    result = _run(bastion_home, "policy", "templates", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(
        str(tmp_path / "out" / f) for f in TEMPLATE_FILES
    )


def test_profile_hash_prints_the_pin_an_admin_profile_needs(
    bastion_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "acme"
    folder.mkdir()
    for name, data in builtin_bundle("strict").files.items():
        (folder / name).write_bytes(data.replace(b"id: strict", b"id: acme"))
    result = _run(bastion_home, "policy", "profile-hash", str(folder))
    assert result.returncode == 0, result.stderr
    pin = result.stdout.strip()
    assert len(pin) == 64
    policy = _write(
        tmp_path, "p.json", {"GuardrailProfile": str(folder), "GuardrailProfileSha256": pin}
    )
    assert _run(bastion_home, "policy", "check", str(policy)).returncode == 0
    (folder / "actions.py").write_text("print('hi')\n", encoding="utf-8")
    refused = _run(bastion_home, "policy", "profile-hash", str(folder))
    assert refused.returncode == 1
    assert "actions.py" in refused.stderr


# --- show --------------------------------------------------------------------------------------


@pytest.mark.skipif(ETC_ROOT.exists(), reason="this machine has a real /etc/bastion policy")
def test_show_on_an_unmanaged_machine_lists_defaults(bastion_home: Path) -> None:
    result = _run(bastion_home, "policy", "show", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert report["failed_closed"] is False
    assert report["banner"] is None
    assert {p["level"] for p in report["policies"]} == {"default"}
    downloads = next(p for p in report["policies"] if p["name"] == "AllowModelDownloads")
    assert downloads == {
        "name": "AllowModelDownloads",
        "value": True,
        "source": "default",
        "level": "default",
        "locked": False,
    }


@pytest.mark.log_warnings("a policy that fails closed is logged as a warning")
def test_show_lists_values_sources_levels_and_errors(
    managed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _write(managed, "10-base.json", {"ConversationRetentionDays": 30})
    recommended = _write(managed.parent / "recommended", "a.json", {"OfflineMode": True, "Typo": 1})
    assert main(["policy", "show", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in report["policies"]}
    assert by_name["ConversationRetentionDays"] == {
        "name": "ConversationRetentionDays",
        "value": 30,
        "source": str(first),
        "level": "machine mandatory",
        "locked": True,
    }
    assert by_name["OfflineMode"]["level"] == "machine recommended"
    assert by_name["OfflineMode"]["locked"] is False
    assert report["errors"] == [f"{recommended}: Typo is not a Bastion policy; it was ignored."]
    assert report["failed_closed"] is False, "an unknown name fails closed only when mandatory"
    assert main(["policy", "show"]) == 0
    text = capsys.readouterr().out
    assert f"ConversationRetentionDays   30  [machine mandatory]  from {first}" in text
    assert "Problems:\n  - " in text


@pytest.mark.log_warnings("a policy that fails closed is logged as a warning")
def test_show_when_failing_closed_has_the_banner(
    managed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(managed, "a.json", {"AllowEphemeralChats": "no"})
    os.chown(bad, 1000, 1000)
    assert main(["policy", "show", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed_closed"] is True
    assert report["banner"] == BANNER
    profile = next(p for p in report["policies"] if p["name"] == "GuardrailProfile")
    assert (profile["value"], profile["level"], profile["locked"]) == (
        "strict",
        "fail closed",
        True,
    )
    assert "belongs to user id 1000" in report["errors"][0]
    assert main(["policy", "show"]) == 0
    assert capsys.readouterr().out.startswith(BANNER)


# --- locks hold against the settings file and the --profile flag ------------------------------


def _settings(home: Path, data: object) -> None:
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "settings.json").write_text(json.dumps(data), encoding="utf-8")


async def test_locked_retention_and_profile_beat_the_settings_file_and_the_flag(
    managed: Path, bastion_home: Path
) -> None:
    _write(managed, "a.json", {"ConversationRetentionDays": 30, "GuardrailProfile": "strict"})
    _settings(bastion_home, {"retention_days": 3650, "guard_profile": "off"})
    context = AppContext.start()
    assert context.settings.retention_days == 30
    assert context.settings.guard_profile == "strict"
    assert context.policy.locked_settings() == frozenset({"retention_days", "guard_profile"})
    assert len(context.policy_notices) == 2
    # `bastion chat --profile off` asks open_guard for "off": the locked profile runs.
    runtime = await context.open_guard("off")
    assert runtime.profile_id == "strict"
    assert runtime.checks_anything
    assert context.guard_choice("off").notice == (
        "Your organization has set the guardrail profile to 'strict'; 'off' cannot be used."
    )


async def test_an_admin_profile_by_path_runs_as_locked(
    managed: Path, bastion_home: Path, tmp_path: Path
) -> None:
    from bastion_guardrails.library import check_profile

    folder = tmp_path / "acme"
    folder.mkdir()
    for name, data in builtin_bundle("workplace").files.items():
        (folder / name).write_bytes(data.replace(b"id: workplace", b"id: acme"))
    pin = check_profile(folder).content_hash
    _write(managed, "a.json", {"GuardrailProfile": str(folder), "GuardrailProfileSha256": pin})
    context = AppContext.start()
    assert context.policy.errors == ()
    runtime = await context.open_guard("off")
    assert runtime.profile_id == "acme"
    assert context.guard_status().profile_id == "acme"


async def test_no_environment_variable_or_imported_profile_escapes_a_locked_profile(
    managed: Path, bastion_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(managed, "a.json", {"GuardrailProfile": "workplace"})
    # Variables a user might try: Bastion's own names, and the ones NeMo Guardrails and
    # llama-cpp-python read. None of them is a way to choose or replace a profile.
    for name, value in {
        "BASTION_PROFILE": "off",
        "BASTION_GUARD_PROFILE": "off",
        "BASTION_POLICY_DIR": str(tmp_path),
        "NEMOGUARDRAILS_CONFIG_PATH": str(tmp_path),
        "NEMO_GUARDRAILS_CONFIG": str(tmp_path),
        "LLAMA_ARG_MODEL": str(tmp_path / "other.gguf"),
        "LLAMA_CPP_LIB": str(tmp_path / "libllama.so"),
    }.items():
        monkeypatch.setenv(name, value)
    # An imported profile named like a way out is just another profile the lock overrules.
    folder = tmp_path / "off-really"
    folder.mkdir()
    for name, data in builtin_bundle("off").files.items():
        (folder / name).write_bytes(data.replace(b'id: "off"', b'id: "off-really"'))
    context = AppContext.start()
    from bastion_guardrails.library import import_profile

    import_profile(folder, context.profiles_dir)
    for asked in (None, "off", "off-really", "strict"):
        runtime = await context.open_guard(asked)
        assert runtime.profile_id == "workplace", asked
    assert context.guard_status("off-really").profile_id == "workplace"


@pytest.mark.log_warnings("a policy that fails closed is logged as a warning")
async def test_a_failed_policy_runs_strict_even_when_off_is_asked_for(
    managed: Path, bastion_home: Path
) -> None:
    (managed / "a.json").write_text("{oops", encoding="utf-8")
    (managed / "a.json").chmod(0o644)
    _settings(bastion_home, {"guard_profile": "off"})
    context = AppContext.start()
    assert context.policy.banner == BANNER
    assert context.settings.guard_profile == "strict"
    runtime = await context.open_guard("off")
    assert runtime.profile_id == "strict"


def test_contexts_built_directly_have_no_policy(bastion_home: Path) -> None:
    from bastion_desktop.core.installed_models import ModelRegistry
    from bastion_desktop.core.paths import AppPaths
    from bastion_desktop.core.settings import Settings

    paths = AppPaths.discover()
    context = AppContext(paths, Settings(guard_profile="off"), ModelRegistry(paths.registry_file))
    assert context.policy.errors == ()
    assert context.guard_choice().profile_id == "off"


# --- enforcement in the commands ------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        (
            {"AllowConversationExport": False},
            ["history", "export", "--output", "out.json"],
            "Your organization does not allow exporting conversations; nothing was written.",
        ),
        (
            {"AllowEphemeralChats": False},
            ["chat", "--ephemeral", "hello"],
            "Your organization does not allow ephemeral chats",
        ),
        (
            {"OfflineMode": True},
            ["models", "search", "llama"],
            "Your organization has turned on offline mode",
        ),
        (
            {"AllowModelDownloads": False},
            ["models", "download", "bartowski/x-GGUF", "x.Q4_K_M.gguf"],
            "Your organization does not allow model downloads.",
        ),
    ],
)
def test_commands_refuse_what_the_policy_forbids(
    managed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[dict[str, object], list[str], str],
) -> None:
    policy, argv, sentence = case
    monkeypatch.chdir(tmp_path)
    _write(managed, "a.json", policy)
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"bastion: {sentence}")
    assert not (tmp_path / "out.json").exists()


def test_a_model_outside_allowed_models_does_not_run(managed: Path, tmp_path: Path) -> None:
    from bastion_desktop.core.policy import PolicyRefusedError

    model = tmp_path / "local.gguf"
    model.write_bytes(b"GGUF not really a model")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    _write(managed, "a.json", {"AllowedModels": ["bartowski/*"]})
    with pytest.raises(PolicyRefusedError, match=r"does not allow the model local\.gguf"):
        AppContext.start().resolve_model(str(model))
    _write(managed, "a.json", {"AllowedModels": ["bartowski/*", digest]})
    assert AppContext.start().resolve_model(str(model))[1] == model.resolve()


def test_allowed_models_hashes_a_model_file_once_while_it_is_unchanged(
    managed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every turn resolves its model: hashing a multi-gigabyte file each time stalled turns.
    import bastion_desktop.context as context_module

    model = tmp_path / "local.gguf"
    model.write_bytes(b"GGUF not really a model")
    hashed: list[Path] = []

    def counting(path: Path) -> str:
        hashed.append(path)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    monkeypatch.setattr(context_module, "sha256_of", counting)
    _write(managed, "a.json", {"AllowedModels": [counting(model)]})
    hashed.clear()
    context = AppContext.start()
    for _turn in range(3):
        context.resolve_model(str(model))
    assert len(hashed) == 1, hashed
    model.write_bytes(b"GGUF another file now")  # changed: hashed again, and refused
    from bastion_desktop.core.policy import PolicyRefusedError

    with pytest.raises(PolicyRefusedError):
        context.resolve_model(str(model))
    assert len(hashed) == 2


@pytest.mark.model
def test_chat_with_profile_off_runs_the_locked_profile_and_says_so(
    managed: Path, home_with_starter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(managed, "a.json", {"GuardrailProfile": "strict"})
    argv = ["chat", "--ephemeral", "--profile", "off", "--json", "--max-tokens", "2", "Hello"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == (
        "Your organization has set the guardrail profile to 'strict'; 'off' cannot be used."
    )
    events = [json.loads(line) for line in captured.out.splitlines()]
    guardrails = next(e for e in events if e.get("type") == "guardrails")
    assert guardrails["profile"] == "strict"


# --- AllowedModels, user profiles and a saved conversation (issue 7) ------------------------


def test_continuing_a_saved_conversation_checks_allowed_models(
    managed: Path, tmp_path: Path, passphrase_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--conversation` takes the model the conversation was saved with: AllowedModels
    holds for it as for `--model`, and the conversation is left as it was."""
    import asyncio

    from bastion_desktop.commands.passphrase import passphrase_prompt

    model = tmp_path / "saved-with.gguf"
    model.write_bytes(b"GGUF not really a model")
    context = AppContext.start()
    store = context.open_history(passphrase_prompt(passphrase_file))
    try:
        saved = asyncio.run(
            store.create_conversation(
                title="kept", model_id=str(model), profile_id="standard", system_prompt=""
            )
        )
    finally:
        store.close()
    _write(managed, "a.json", {"AllowedModels": ["bartowski/*"]})
    argv = ["chat", "--passphrase-file", str(passphrase_file), "--conversation", saved.id, "Hi"]
    assert main(argv) == 1
    assert capsys.readouterr().err == (
        "bastion: Your organization does not allow the model saved-with.gguf; ask your "
        "administrator to add it to AllowedModels.\n"
    )
    store = AppContext.start().open_history(passphrase_prompt(passphrase_file))
    try:
        assert asyncio.run(store.messages(saved.id)) == []
        assert asyncio.run(store.get_conversation(saved.id)).title == "kept"
    finally:
        store.close()


def test_importing_a_model_outside_allowed_models_registers_and_copies_nothing(
    managed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.core.hub.gguf_files import write_tiny_gguf

    folder = tmp_path / "mine"
    folder.mkdir()
    model = write_tiny_gguf(folder / "Mine-Q4_K_M.gguf")[0]
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    _write(managed, "a.json", {"AllowedModels": ["bartowski/*"]})
    assert main(["models", "import", str(model), "--copy"]) == 1
    assert capsys.readouterr().err == (
        "bastion: Your organization does not allow the model Mine-Q4_K_M.gguf; ask your "
        "administrator to add it to AllowedModels.\n"
    )
    context = AppContext.start()
    assert [m.id for m in context.registry.list() if m.source == "local"] == []
    assert not (context.models_dir / "imported").exists(), "nothing was copied"
    # Listed by its sha256 (a file from disk has no Hub repository): imported.
    _write(managed, "a.json", {"AllowedModels": ["bartowski/*", digest]})
    assert main(["models", "import", str(model), "--copy"]) == 0
    model_id = capsys.readouterr().out.strip()
    registered = AppContext.start().registry.get(model_id)
    assert registered is not None
    assert registered.sha256 == digest


def test_importing_a_profile_is_refused_when_user_profiles_are_not_allowed(
    managed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    for name, data in builtin_bundle("strict").files.items():
        (folder / name).write_bytes(data.replace(b"id: strict", b"id: team"))
    _write(managed, "a.json", {"AllowUserGuardrailProfiles": False})
    assert main(["profiles", "import", str(folder)]) == 1
    assert capsys.readouterr().err == (
        "bastion: Your organization does not allow importing guardrail profiles; nothing was "
        "installed. Use a built-in profile or one your administrator provides.\n"
    )
    profiles_dir = AppContext.start().profiles_dir
    assert not (profiles_dir / "team").exists()
    _write(managed, "a.json", {"AllowUserGuardrailProfiles": True})
    assert main(["profiles", "import", str(folder)]) == 0
    assert (profiles_dir / "team" / "profile.yml").is_file()
