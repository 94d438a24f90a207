"""The /etc reader: files in name order (a later file wins per key), and the rule that
a file counts only if it and every folder above it are root's and not writable by
group or others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion_desktop.core.policy import EffectivePolicy
from bastion_desktop.core.policy.linux import LinuxPolicyReader
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level

from .conftest import WritePolicy


def _policy(root: Path) -> EffectivePolicy:
    return merge_sources(LinuxPolicyReader(root).read())


def test_no_policy_folder_means_defaults_and_no_errors(tmp_path: Path) -> None:
    policy = _policy(tmp_path / "absent")
    assert policy.errors == ()
    assert not policy.failed_closed
    assert policy.value("AllowModelDownloads") is True
    assert policy.locked_settings() == frozenset()


def test_files_merge_in_name_order_later_file_wins_per_key(
    policy_root: Path, write_policy: WritePolicy
) -> None:
    # Written out of order, to show that name order (not creation order) counts.
    write_policy("managed", "50-lab.json", {"ConversationRetentionDays": 7})
    write_policy("managed", "10-base.json", {"ConversationRetentionDays": 90, "OfflineMode": True})
    write_policy("managed", "notes.txt", text="not a policy file")
    policy = _policy(policy_root)
    assert policy.errors == ()
    retention = policy.entry("ConversationRetentionDays")
    assert retention.value == 7
    assert retention.source == str(policy_root / "managed" / "50-lab.json")
    assert retention.level is Level.MACHINE_MANDATORY
    offline = policy.entry("OfflineMode")
    assert offline.value is True
    assert offline.source.endswith("10-base.json")
    assert policy.locked_settings() == frozenset({"retention_days"})


def test_managed_wins_over_recommended(policy_root: Path, write_policy: WritePolicy) -> None:
    write_policy("recommended", "a.json", {"ConversationRetentionDays": 30, "OfflineMode": True})
    write_policy("managed", "a.json", {"ConversationRetentionDays": 60})
    policy = _policy(policy_root)
    assert policy.entry("ConversationRetentionDays").value == 60
    assert policy.is_locked("ConversationRetentionDays")
    offline = policy.entry("OfflineMode")
    assert (offline.value, offline.level) == (True, Level.MACHINE_RECOMMENDED)
    assert not policy.is_locked("OfflineMode")


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_file_owned_by_another_user_does_not_count(
    policy_root: Path, write_policy: WritePolicy
) -> None:
    write_policy("managed", "10-root.json", {"AllowConversationExport": False})
    planted = write_policy("managed", "20-user.json", {"AllowConversationExport": True})
    os.chown(planted, 1000, 1000)
    policy = _policy(policy_root)
    assert policy.value("AllowConversationExport") is False  # the planted file lost
    assert any(str(planted) in e and "belongs to user id 1000" in e for e in policy.errors)
    assert policy.failed_closed


@pytest.mark.parametrize("mode", [0o646, 0o664])
@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_file_writable_by_group_or_others_does_not_count(
    policy_root: Path, write_policy: WritePolicy, mode: int
) -> None:
    path = write_policy("managed", "a.json", {"AllowEphemeralChats": False})
    path.chmod(mode)
    policy = _policy(policy_root)
    assert policy.value("AllowEphemeralChats") is True
    assert any("can be written by group or others" in e for e in policy.errors)
    assert policy.failed_closed


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_folder_writable_by_others_makes_its_files_not_count(
    policy_root: Path, write_policy: WritePolicy
) -> None:
    write_policy("managed", "a.json", {"AllowEphemeralChats": False})
    (policy_root / "managed").chmod(0o757)
    policy = _policy(policy_root)
    assert policy.value("AllowEphemeralChats") is True
    assert any(
        str(policy_root / "managed") in e and "can be written by group or others" in e
        for e in policy.errors
    )
    assert policy.failed_closed


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_folder_further_up_owned_by_a_user_makes_files_not_count(
    policy_root: Path, write_policy: WritePolicy
) -> None:
    write_policy("recommended", "a.json", {"OfflineMode": True})
    os.chown(policy_root, 1000, 1000)
    policy = _policy(policy_root)
    assert policy.value("OfflineMode") is False
    assert any(str(policy_root) in e and "not admin-owned" in e for e in policy.errors)
    # The managed folder under it is untrusted too, and that one is mandatory.
    assert any(str(policy_root / "managed") in e for e in policy.errors)
    assert policy.failed_closed


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_bad_recommended_file_is_reported_without_failing_closed(
    policy_root: Path, write_policy: WritePolicy
) -> None:
    write_policy("recommended", "a.json", text="{not json")
    write_policy("recommended", "b.json", {"ConversationRetentionDays": "a week"})
    policy = _policy(policy_root)
    assert not policy.failed_closed
    assert policy.banner is None
    assert any("a.json is not valid JSON" in e for e in policy.errors)
    assert any(
        "b.json: ConversationRetentionDays must be a whole number" in e for e in policy.errors
    )


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_symlinked_file_is_judged_by_its_target(
    policy_root: Path, write_policy: WritePolicy, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    elsewhere.chmod(0o777)  # anyone could rewrite the target
    target = elsewhere / "real.json"
    target.write_text('{"OfflineMode": true}', encoding="utf-8")
    (policy_root / "managed" / "linked.json").symlink_to(target)
    policy = _policy(policy_root)
    assert policy.value("OfflineMode") is False
    assert any(str(elsewhere) in e for e in policy.errors)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"OfflineMode": "yes"}', "OfflineMode must be true or false"),
        # Which of the two was meant is not for Bastion to guess.
        ('{"OfflineMode": true, "OfflineMode": false}', "names OfflineMode twice"),
        ('{"AllowedModels": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    ],
)
@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_a_bad_managed_file_fails_closed(
    policy_root: Path, write_policy: WritePolicy, text: str, expected: str
) -> None:
    write_policy("managed", "a.json", text=text)
    policy = _policy(policy_root)
    assert policy.failed_closed
    assert any(expected in e for e in policy.errors)
    assert policy.value("GuardrailProfile") == "strict"


@pytest.mark.log_warnings("policy problems are logged as warnings for the administrator")
def test_an_unreadable_managed_file_fails_closed(policy_root: Path) -> None:
    (policy_root / "managed" / "a.json").mkdir(mode=0o755)  # a folder cannot be read as text
    (policy_root / "managed" / "a.json").chmod(0o755)
    policy = _policy(policy_root)
    assert policy.failed_closed
    assert any("a.json cannot be read" in e for e in policy.errors)
