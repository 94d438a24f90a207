"""The macOS reader through a fake preference domain (CoreFoundation exists only on
macOS): only forced values (an MDM profile's) are mandatory, the rest recommendations."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from bastion_desktop.core.policy import EffectivePolicy
from bastion_desktop.core.policy.macos import PREFERENCE_DOMAIN, MacPolicyReader
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level

from .fakes import FakePreferences


def _read(values: dict[str, tuple[Any, bool]]) -> EffectivePolicy:
    reader = MacPolicyReader(FakePreferences(PREFERENCE_DOMAIN, values))
    return merge_sources(reader.read())


def test_forced_values_are_mandatory_and_the_rest_recommended() -> None:
    policy = _read(
        {
            "ConversationRetentionDays": (30, True),
            "AllowedModels": (["bartowski/*"], True),
            "GuardrailProfile": ("strict", False),
            "OfflineMode": (True, False),
        }
    )
    assert policy.errors == ()
    retention = policy.entry("ConversationRetentionDays")
    assert (retention.value, retention.level) == (30, Level.MACHINE_MANDATORY)
    assert retention.source == f"managed preferences (MDM) of {PREFERENCE_DOMAIN}"
    assert policy.value("AllowedModels") == ("bartowski/*",)
    profile = policy.entry("GuardrailProfile")
    assert (profile.value, profile.level) == ("strict", Level.USER_RECOMMENDED)
    assert policy.locked_profile is None
    assert policy.locked_settings() == frozenset({"retention_days"})


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_value_the_user_wrote_cannot_grant_what_only_a_mandate_can() -> None:
    # `defaults write` by the user: not forced, so not a lock and, for a mandatory-only
    # policy, not applied at all.
    policy = _read({"AllowedModels": (["evil/*"], False)})
    assert policy.value("AllowedModels") is None
    assert "can only be set as mandatory" in policy.errors[0]
    assert not policy.failed_closed


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_forced_value_of_the_wrong_type_fails_closed() -> None:
    policy = _read({"AllowConversationExport": ("no", True)})
    assert policy.failed_closed
    assert policy.value("GuardrailProfile") == "strict"
    assert "AllowConversationExport must be true or false" in policy.errors[0]


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_value_that_cannot_be_read_fails_closed() -> None:
    policy = _read({"OfflineMode": (OSError("not a property list"), True)})
    assert policy.failed_closed
    assert "OfflineMode cannot be read (not a property list)" in policy.errors[0]


@pytest.mark.skipif(sys.platform == "darwin", reason="on macOS it reads the real domain")
@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_without_corefoundation_the_reader_fails_closed() -> None:
    policy = merge_sources(MacPolicyReader().read())
    assert policy.failed_closed
    assert "CoreFoundation is not available" in policy.errors[0]
