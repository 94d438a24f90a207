"""The registry reader's parsing and precedence, through a fake registry (this Linux
machine has none): value types, JSON strings and ADMX list subkeys for lists, HKLM over
HKCU, and the Recommended subkey."""

from __future__ import annotations

import json
import sys

import pytest

from bastion_desktop.core.policy import EffectivePolicy
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level
from bastion_desktop.core.policy.windows import (
    POLICY_KEY,
    REG_BINARY,
    REG_DWORD,
    REG_MULTI_SZ,
    REG_QWORD,
    REG_SZ,
    Hive,
    RegistryValue,
    WindowsPolicyReader,
)

from .fakes import FakeRegistry

RECOMMENDED = f"{POLICY_KEY}\\Recommended"
HKLM = Hive.MACHINE
HKCU = Hive.USER


def _read(keys: dict[tuple[Hive, str], list[RegistryValue] | OSError]) -> EffectivePolicy:
    return merge_sources(WindowsPolicyReader(FakeRegistry(keys)).read())


def test_value_types_become_policy_values() -> None:
    repo_list = json.dumps(["bartowski/*", "A" * 64])
    policy = _read(
        {
            (HKLM, POLICY_KEY): [
                ("AllowModelDownloads", 0, REG_DWORD),
                ("ConversationRetentionDays", 30, REG_QWORD),
                ("SafetyModel", "bartowski/Llama-Guard-3-1B-GGUF", REG_SZ),
                ("AllowedGuardrailProfiles", ["standard", "strict", ""], REG_MULTI_SZ),
                ("AllowedModels", repo_list, REG_SZ),
                ("", "the key's (Default) value is not a policy", REG_SZ),
            ]
        }
    )
    assert policy.errors == ()
    assert policy.downloads_allowed is False
    assert policy.value("ConversationRetentionDays") == 30
    assert policy.safety_model == "bartowski/Llama-Guard-3-1B-GGUF"
    assert policy.value("AllowedGuardrailProfiles") == ("standard", "strict")
    # sha256 entries are compared in lower case.
    assert policy.value("AllowedModels") == ("bartowski/*", "a" * 64)
    entry = policy.entry("AllowModelDownloads")
    assert (entry.source, entry.level) == (f"HKLM\\{POLICY_KEY}", Level.MACHINE_MANDATORY)


def test_an_admx_list_subkey_gives_its_entries_in_number_order() -> None:
    policy = _read(
        {
            (HKLM, POLICY_KEY): [],
            (HKLM, f"{POLICY_KEY}\\AllowedModels"): [
                ("10", "org/ten", REG_SZ),
                ("2", "org/two", REG_SZ),
                ("1", "org/one", REG_SZ),
            ],
        }
    )
    assert policy.value("AllowedModels") == ("org/one", "org/two", "org/ten")
    assert policy.is_locked("AllowedModels")


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_dword_boolean_must_be_zero_or_one() -> None:
    policy = _read({(HKLM, POLICY_KEY): [("OfflineMode", 2, REG_DWORD)]})
    assert (
        "HKLM\\SOFTWARE\\Policies\\Bastion: OfflineMode must be true or false" in policy.errors[0]
    )
    assert policy.failed_closed


def test_hklm_wins_over_hkcu_and_both_lock() -> None:
    policy = _read(
        {
            (HKLM, POLICY_KEY): [("ConversationRetentionDays", 14, REG_DWORD)],
            (HKCU, POLICY_KEY): [
                ("ConversationRetentionDays", 365, REG_DWORD),
                ("AllowConversationExport", 0, REG_DWORD),
            ],
        }
    )
    retention = policy.entry("ConversationRetentionDays")
    assert (retention.value, retention.level) == (14, Level.MACHINE_MANDATORY)
    export = policy.entry("AllowConversationExport")
    assert (export.value, export.level) == (False, Level.USER_MANDATORY)
    assert export.source == f"HKCU\\{POLICY_KEY}"
    assert policy.is_locked("AllowConversationExport")


def test_recommended_subkey_is_weaker_than_either_mandatory_hive() -> None:
    policy = _read(
        {
            (HKCU, POLICY_KEY): [("OfflineMode", 0, REG_DWORD)],
            (HKLM, RECOMMENDED): [
                ("OfflineMode", 1, REG_DWORD),
                ("GuardrailProfile", "strict", REG_SZ),
            ],
            (HKCU, RECOMMENDED): [("GuardrailProfile", "workplace", REG_SZ)],
        }
    )
    assert policy.entry("OfflineMode").level is Level.USER_MANDATORY
    assert policy.offline_mode is False
    profile = policy.entry("GuardrailProfile")
    # Machine recommended over user recommended; neither locks.
    assert (profile.value, profile.level) == ("strict", Level.MACHINE_RECOMMENDED)
    assert not policy.is_locked("GuardrailProfile")
    assert policy.locked_profile is None


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_mandatory_only_policy_under_recommended_is_ignored_not_fatal() -> None:
    policy = _read({(HKLM, RECOMMENDED): [("AllowModelDownloads", 0, REG_DWORD)]})
    assert policy.downloads_allowed is True
    assert "can only be set as mandatory" in policy.errors[0]
    assert not policy.failed_closed


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_embedded_profile_is_a_json_string() -> None:
    embedded = {"files": {"profile.yml": "id: x", "config.yml": "rails: {}"}}
    policy = _read({(HKLM, RECOMMENDED): [("GuardrailProfile", json.dumps(embedded), REG_SZ)]})
    # As a recommendation, only an id is accepted: reported and skipped.
    assert "as a recommendation must be a profile id" in policy.errors[0]
    assert not policy.failed_closed


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_bad_registry_data_in_a_mandatory_key_fails_closed() -> None:
    policy = _read(
        {
            (HKLM, POLICY_KEY): [
                ("AllowedModels", "[not json", REG_SZ),
                ("AllowEphemeralChats", b"\x01", REG_BINARY),
            ]
        }
    )
    assert policy.failed_closed
    assert policy.value("GuardrailProfile") == "strict"
    assert any("AllowedModels holds text that is not valid JSON" in e for e in policy.errors)
    assert any("AllowEphemeralChats has a registry type (type 3)" in e for e in policy.errors)


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_an_unreadable_mandatory_key_fails_closed_but_hkcu_still_applies() -> None:
    policy = _read(
        {
            (HKLM, POLICY_KEY): PermissionError(5, "Access is denied"),
            (HKCU, POLICY_KEY): [("AllowEphemeralChats", 0, REG_DWORD)],
        }
    )
    assert policy.failed_closed
    assert policy.errors[0].startswith("HKLM\\SOFTWARE\\Policies\\Bastion cannot be read")
    assert policy.ephemeral_allowed is False


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_an_unknown_value_name_fails_closed_when_mandatory_and_is_ignored_when_not() -> None:
    # An admin who typed OfflineMod meant to enforce something: Bastion cannot tell what.
    policy = _read({(HKLM, POLICY_KEY): [("OfflineMod", 1, REG_DWORD)]})
    assert policy.errors == (
        "HKLM\\SOFTWARE\\Policies\\Bastion: OfflineMod is not a Bastion policy (did you mean "
        "OfflineMode?); it was not applied.",
    )
    assert policy.failed_closed
    assert policy.locked_profile == "strict"
    recommended = _read({(HKLM, RECOMMENDED): [("OfflineMod", 1, REG_DWORD)]})
    assert recommended.errors == (
        "HKLM\\SOFTWARE\\Policies\\Bastion\\Recommended: OfflineMod is not a Bastion policy "
        "(did you mean OfflineMode?); it was ignored.",
    )
    assert not recommended.failed_closed


@pytest.mark.skipif(sys.platform == "win32", reason="on Windows it reads the real registry")
@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_the_real_backend_refuses_to_run_off_windows() -> None:
    policy = merge_sources(WindowsPolicyReader().read())
    assert policy.failed_closed
    assert "cannot be read" in policy.errors[0]
