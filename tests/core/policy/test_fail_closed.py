"""Every way a mandatory source can be bad lands on the strictest built-in profile with
a banner and a log entry, never on Off, whatever the user or a flag asks for."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion_desktop.core.policy import BANNER, EffectivePolicy, load_policy
from bastion_desktop.core.policy.effective import builtin_hashes
from bastion_desktop.core.policy.linux import LinuxPolicyReader
from bastion_desktop.core.policy.sources import Level, PolicySource
from bastion_desktop.core.settings import Settings
from bastion_guardrails.library import STRICTEST_BUILTIN_ID, ProfileLibrary
from bastion_guardrails.profile import Strictness

from .conftest import WritePolicy


def test_the_fail_closed_profile_is_the_strictest_builtin() -> None:
    library = ProfileLibrary()
    assert library.builtin(STRICTEST_BUILTIN_ID).manifest.strictness is Strictness.STRICT
    assert STRICTEST_BUILTIN_ID == "strict"


def _invalid_json(write: WritePolicy, root: Path) -> None:
    write("managed", "a.json", text='{"OfflineMode": tru}')


def _wrong_type(write: WritePolicy, root: Path) -> None:
    write("managed", "a.json", {"ConversationRetentionDays": "30"})


def _not_admin_owned(write: WritePolicy, root: Path) -> None:
    os.chown(write("managed", "a.json", {"OfflineMode": True}), 1000, 0)


def _folder_writable_by_others(write: WritePolicy, root: Path) -> None:
    write("managed", "a.json", {"OfflineMode": True})
    root.chmod(0o777)


def _unreadable(write: WritePolicy, root: Path) -> None:
    write("managed", "a.json", text="").write_bytes(b'{"OfflineMode": "\xff"}')


def _hash_mismatch(write: WritePolicy, root: Path) -> None:
    write("managed", "a.json", {"GuardrailProfile": "standard", "GuardrailProfileSha256": "0" * 64})


def _missing_admin_profile(write: WritePolicy, root: Path) -> None:
    policy = {"GuardrailProfile": str(root / "nowhere.zip"), "GuardrailProfileSha256": "0" * 64}
    write("managed", "a.json", policy)


CASES: dict[str, Callable[[WritePolicy, Path], None]] = {
    "invalid JSON": _invalid_json,
    "wrong type": _wrong_type,
    "not admin-owned": _not_admin_owned,
    "folder writable by others": _folder_writable_by_others,
    "not UTF-8": _unreadable,
    "pinned hash mismatch": _hash_mismatch,
    "admin profile missing": _missing_admin_profile,
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_bad_mandatory_source_lands_on_strict_never_off(
    case: Callable[[WritePolicy, Path], None],
    policy_root: Path,
    write_policy: WritePolicy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    case(write_policy, policy_root)
    with caplog.at_level(logging.WARNING, logger="bastion_desktop.core.policy"):
        policy = load_policy([LinuxPolicyReader(policy_root)])
    assert policy.failed_closed
    assert policy.banner == BANNER
    assert policy.errors
    assert any("failing closed on the strict profile" in r.getMessage() for r in caplog.records)
    # The profile: locked on Strict, whatever is asked for.
    assert policy.locked_profile == "strict"
    for requested in ("off", "standard", "mine"):
        choice = policy.choose_profile(requested, [*builtin_hashes(), ("mine", "a" * 64)])
        assert (choice.profile_id, choice.profile) == ("strict", None)
        assert choice.notice == BANNER
    settings, _ = policy.apply_to_settings(Settings(guard_profile="off"))
    assert settings.guard_profile == "strict"
    assert "guard_profile" in policy.locked_settings()
    assert policy.value("DisableGuardrailsAllowed") is False
    assert not policy.user_profiles_allowed
    assert policy.entry("GuardrailProfile").level is Level.FAIL_CLOSED


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_valid_policies_from_other_sources_still_apply_when_failing_closed() -> None:
    policy = _merge(
        PolicySource("good.json", Level.MACHINE_MANDATORY, {"AllowConversationExport": False}),
        PolicySource("bad.json", Level.MACHINE_MANDATORY, {"OfflineMode": "sometimes"}),
    )
    assert policy.failed_closed
    assert policy.export_allowed is False


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_reader_that_crashes_fails_closed_rather_than_leaving_the_app_unmanaged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenReader:
        def read(self) -> list[PolicySource]:
            raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="bastion_desktop.core.policy"):
        policy = load_policy([BrokenReader()])
    assert policy.failed_closed
    assert "BrokenReader could not be read because of a bug in Bastion" in policy.errors[0]
    assert any(r.exc_info for r in caplog.records)


def _merge(*sources: PolicySource) -> EffectivePolicy:
    from bastion_desktop.core.policy.merge import merge_sources

    return merge_sources(sources)
