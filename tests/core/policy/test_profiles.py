"""The guardrail profile under policy: a locked built-in or administrator's profile
(by path or embedded, pinned by its sha256), allowed lists that move a disallowed
choice, and the Off profile only where the policy allows it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion_desktop.core.policy.effective import builtin_hashes
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level, PolicySource
from bastion_desktop.core.settings import Settings
from bastion_guardrails.bundle import ProfileOrigin
from bastion_guardrails.library import builtin_bundle

AVAILABLE = [*builtin_hashes(), ("mine", "b" * 64)]


def _mandatory(**values: object) -> PolicySource:
    return PolicySource("/etc/bastion/policies/managed/a.json", Level.MACHINE_MANDATORY, values)


def _admin_profile_files(profile_id: str = "acme") -> dict[str, str]:
    files = {k: v.decode("utf-8") for k, v in builtin_bundle("strict").files.items()}
    files["profile.yml"] = files["profile.yml"].replace("id: strict", f"id: {profile_id}")
    files["profile.yml"] = files["profile.yml"].replace("name: Strict", "name: ACME")
    return files


@pytest.fixture
def admin_profile(tmp_path: Path) -> Path:
    folder = tmp_path / "acme"
    folder.mkdir()
    for name, text in _admin_profile_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _hash_of(folder: Path) -> str:
    from bastion_guardrails.library import check_profile

    return check_profile(folder, ProfileOrigin.ADMIN).content_hash


def test_a_locked_builtin_wins_over_any_request() -> None:
    policy = merge_sources([_mandatory(GuardrailProfile="workplace")])
    assert policy.locked_profile == "workplace"
    choice = policy.choose_profile("off", AVAILABLE)
    assert choice.profile_id == "workplace"
    assert choice.notice == (
        "Your organization has set the guardrail profile to 'workplace'; 'off' cannot be used."
    )
    assert policy.choose_profile("workplace", AVAILABLE).notice is None


def test_a_path_profile_with_a_matching_pin_is_locked_with_the_admin_origin(
    admin_profile: Path,
) -> None:
    pin = _hash_of(admin_profile)
    policy = merge_sources(
        [_mandatory(GuardrailProfile=str(admin_profile), GuardrailProfileSha256=pin.upper())]
    )
    assert policy.errors == ()
    choice = policy.choose_profile("standard", AVAILABLE)
    assert choice.profile_id == "acme"
    assert choice.profile is not None
    assert choice.profile.origin is ProfileOrigin.ADMIN
    assert choice.profile.content_hash == pin
    assert policy.apply_to_settings(Settings())[0].guard_profile == "acme"


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_path_profile_whose_hash_differs_fails_closed(admin_profile: Path) -> None:
    pin = _hash_of(admin_profile)
    (admin_profile / "config.yml").write_text(
        (admin_profile / "config.yml").read_text(encoding="utf-8") + "\n# edited\n",
        encoding="utf-8",
    )
    policy = merge_sources(
        [_mandatory(GuardrailProfile=str(admin_profile), GuardrailProfileSha256=pin)]
    )
    assert policy.failed_closed
    assert f"but GuardrailProfileSha256 pins {pin}" in policy.errors[0]
    choice = policy.choose_profile("standard", AVAILABLE)
    assert (choice.profile_id, choice.profile) == ("strict", None)


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_path_profile_needs_a_pin(admin_profile: Path) -> None:
    policy = merge_sources([_mandatory(GuardrailProfile=str(admin_profile))])
    assert policy.failed_closed
    assert "must be pinned by its hash" in policy.errors[0]


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_an_admin_profile_may_not_carry_code(admin_profile: Path) -> None:
    (admin_profile / "actions.py").write_text("import os\n", encoding="utf-8")
    pin = _hash_of_any(admin_profile)
    policy = merge_sources(
        [_mandatory(GuardrailProfile=str(admin_profile), GuardrailProfileSha256=pin)]
    )
    assert policy.failed_closed
    assert "actions.py" in policy.errors[0]
    assert "is code" in policy.errors[0]


def _hash_of_any(folder: Path) -> str:
    from bastion_guardrails.bundle import read_folder

    return read_folder(folder, ProfileOrigin.ADMIN).content_hash


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_an_embedded_profile_is_locked_and_its_pin_checked() -> None:
    embedded = {"files": _admin_profile_files("embedded-acme")}
    policy = merge_sources([_mandatory(GuardrailProfile=embedded)])
    assert policy.errors == ()
    choice = policy.choose_profile("off", AVAILABLE)
    assert choice.profile is not None
    assert (choice.profile.id, choice.profile.origin) == ("embedded-acme", ProfileOrigin.ADMIN)
    wrong = merge_sources([_mandatory(GuardrailProfile=embedded, GuardrailProfileSha256="0" * 64)])
    assert wrong.failed_closed
    assert wrong.locked_profile == "strict"


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_an_admin_profile_may_not_take_a_builtin_id() -> None:
    embedded = {"files": _admin_profile_files("standard")}
    policy = merge_sources([_mandatory(GuardrailProfile=embedded)])
    assert policy.failed_closed
    assert "has the id of a built-in profile ('standard')" in policy.errors[0]


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_builtin_can_be_pinned_too() -> None:
    strict_hash = dict(builtin_hashes())["strict"]
    good = merge_sources(
        [_mandatory(GuardrailProfile="strict", GuardrailProfileSha256=strict_hash)]
    )
    assert good.errors == ()
    bad = merge_sources(
        [_mandatory(GuardrailProfile="standard", GuardrailProfileSha256=strict_hash)]
    )
    assert bad.failed_closed
    assert bad.locked_profile == "strict"


def test_a_locked_id_that_is_not_installed_lands_on_strict() -> None:
    policy = merge_sources([_mandatory(GuardrailProfile="lab-profile")])
    choice = policy.choose_profile("standard", AVAILABLE)
    assert choice.profile_id == "strict"
    assert choice.notice is not None
    assert "'lab-profile' your organization requires is not installed" in choice.notice


def test_a_locked_installed_profile_must_match_its_pin() -> None:
    policy = merge_sources([_mandatory(GuardrailProfile="mine", GuardrailProfileSha256="c" * 64)])
    assert policy.choose_profile("mine", AVAILABLE).profile_id == "strict"
    pinned = merge_sources([_mandatory(GuardrailProfile="mine", GuardrailProfileSha256="b" * 64)])
    assert pinned.choose_profile("off", AVAILABLE).profile_id == "mine"


def test_an_allowed_list_moves_a_disallowed_choice_and_says_so() -> None:
    policy = merge_sources([_mandatory(AllowedGuardrailProfiles=["strict", "workplace"])])
    choice = policy.choose_profile("standard", AVAILABLE)
    assert choice.profile_id == "strict"
    assert choice.notice == (
        "Your organization does not allow the guardrail profile 'standard'; Bastion uses "
        "'strict' instead."
    )
    assert policy.choose_profile("workplace", AVAILABLE).notice is None
    settings, notices = policy.apply_to_settings(Settings(guard_profile="off"))
    assert settings.guard_profile == "strict"
    assert notices == [
        "Your organization does not allow the guardrail profile 'off'; Bastion uses "
        "'strict' instead."
    ]


def test_a_recommended_profile_is_where_a_disallowed_choice_moves_first() -> None:
    recommended = PolicySource("rec", Level.MACHINE_RECOMMENDED, {"GuardrailProfile": "workplace"})
    policy = merge_sources([_mandatory(DisableGuardrailsAllowed=False), recommended])
    assert policy.choose_profile("off", AVAILABLE).profile_id == "workplace"


def test_off_only_where_allowed() -> None:
    policy = merge_sources([_mandatory(DisableGuardrailsAllowed=False)])
    choice = policy.choose_profile("off", AVAILABLE)
    assert choice.profile_id == "standard"
    assert choice.notice is not None
    assert merge_sources([]).choose_profile("off", AVAILABLE).profile_id == "off"


def test_user_profiles_only_where_allowed() -> None:
    policy = merge_sources([_mandatory(AllowUserGuardrailProfiles=False)])
    assert not policy.user_profiles_allowed
    assert policy.choose_profile("mine", AVAILABLE).profile_id == "standard"
    settings, _ = policy.apply_to_settings(Settings(guard_profile="mine"))
    assert settings.guard_profile == "standard"


def test_a_profile_can_be_allowed_by_its_hash() -> None:
    policy = merge_sources([_mandatory(AllowedGuardrailProfiles=["strict", "B" * 64])])
    assert policy.choose_profile("mine", AVAILABLE).profile_id == "mine"
    assert policy.choose_profile("mine", [*AVAILABLE[:-1], ("mine", "d" * 64)]).profile_id == (
        "strict"
    )


def test_when_nothing_allowed_is_installed_the_strictest_builtin_is_used() -> None:
    policy = merge_sources([_mandatory(AllowedGuardrailProfiles=["lab-only"])])
    assert policy.choose_profile("off", AVAILABLE).profile_id == "strict"


def test_a_profile_that_is_not_installed_is_left_for_the_engine_to_report() -> None:
    policy = merge_sources([_mandatory(AllowedGuardrailProfiles=["strict"])])
    assert policy.choose_profile("nonexistent", AVAILABLE).profile_id == "nonexistent"


def test_embedded_profile_json_round_trips_through_a_policy_file(tmp_path: Path) -> None:
    from bastion_desktop.core.policy.check import check_policy_file

    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"GuardrailProfile": {"files": _admin_profile_files()}}))
    assert check_policy_file(path) == []
