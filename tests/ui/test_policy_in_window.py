"""The administrator's policy as the window shows it: a policy source that cannot be
read puts the app on Strict with a banner, and locked settings are disabled. The OS's
policy channel is replaced by an in-process reader (this machine has no /etc policy,
and the real reader refuses folders it does not trust)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.policy import loading
from bastion_desktop.core.policy.sources import Level, PolicySource, unusable
from bastion_desktop.ui.managed import MANAGED_TEXT
from bastion_desktop.ui.settings_dialog import SettingsDialog
from tests.ui.desktop_fixtures import Desktop, open_desktop

pytestmark = pytest.mark.model


class FixedReader:
    def __init__(self, sources: Sequence[PolicySource]) -> None:
        self.sources = list(sources)

    def read(self) -> Sequence[PolicySource]:
        return self.sources


@pytest.fixture
def managed_desktop(
    qtbot: QtBot, desktop_home: Path, passphrase_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Desktop]:
    managed = "/etc/bastion/policies/managed"
    sources = [
        PolicySource(
            f"{managed}/10-retention.json",
            Level.MACHINE_MANDATORY,
            {"ConversationRetentionDays": 30},
        ),
        unusable(f"{managed}/20-broken.json", Level.MACHINE_MANDATORY, "is not valid JSON"),
    ]
    monkeypatch.setattr(loading, "system_readers", lambda: [FixedReader(sources)])
    opened = open_desktop(qtbot, passphrase_file)
    yield opened
    opened.close()


@pytest.mark.log_warnings("the failure the test provokes is logged as a warning")
def test_a_broken_policy_fails_closed_with_a_banner_and_locks(
    managed_desktop: Desktop, qtbot: QtBot
) -> None:
    window, services = managed_desktop.window, managed_desktop.services
    assert services.context.policy.failed_closed
    banner = window.policy_banner
    assert not banner.isHidden()
    assert banner.text().startswith(services.context.policy.banner or "?")
    assert services.chat is not None
    assert services.chat.guard.profile_id == "strict", "never Off, never the user's choice"
    profile_box = window.top_bar.profile_box
    assert not profile_box.isEnabled()
    assert profile_box.toolTip().startswith(MANAGED_TEXT)
    assert not window.top_bar.managed_label.isHidden()

    dialog = SettingsDialog(services, window)
    qtbot.addWidget(dialog)
    retention = dialog.fields["retention_days"]
    assert not retention.control.isEnabled()
    assert retention.note.text() == "Managed by your organization"
    assert services.context.settings.retention_days == 30
