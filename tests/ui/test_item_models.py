"""Every item model behind the secondary windows' tables, lists and trees (and their
pickers), filled with real data, checked by pytest-qt's model tester: the catalog, a
Hub search and a repository's files from the Hub emulator, the installed models, the
built-in profiles and their checks, a refused import's problems, and the settings'
presets and pickers. (The conversations sidebar's model is checked in
test_conversations.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.context import AppContext
from bastion_desktop.ui.engine import Engine
from bastion_desktop.ui.models_window import ModelsWindow
from bastion_desktop.ui.profiles_window import ProfilesWindow
from bastion_desktop.ui.settings_dialog import SettingsDialog
from tests.guardrails.conftest import write_profile
from tests.ui.desktop_fixtures import write_settings
from tests.ui.test_models_window import hub, model_file, search_and_list, window
from tests.ui.window_services import context, engine, make_services, services

__all__ = ["context", "engine", "hub", "model_file", "services", "window"]  # fixtures used by name

PRESETS = {"Translator": "Translate into French.", "Terse": "Answer in one line."}


def test_the_models_windows_tables(
    qtbot: QtBot, qtmodeltester: Any, window: ModelsWindow, hub: Any, model_file: Path
) -> None:
    assert window.catalog.table.rowCount() >= 10
    qtmodeltester.check(window.catalog.table.model())

    search_and_list(qtbot, window)  # one result and its one file, from the emulator
    qtmodeltester.check(window.hub.results.model())
    qtmodeltester.check(window.hub.files.model())

    with qtbot.waitSignal(window.installed_changed, timeout=20_000):
        window.installed.import_file(model_file, "reference")
    qtbot.waitUntil(lambda: bool(window.installed.installed_ids()), timeout=10_000)
    assert window.installed.table.rowCount() == len(window.installed.installed_ids()) >= 1
    qtmodeltester.check(window.installed.table.model())
    assert window.installed.use_as.count() >= 2
    qtmodeltester.check(window.installed.use_as.model())


def test_the_profiles_windows_list_checks_and_problems(
    qtbot: QtBot, qtmodeltester: Any, services: Any, tmp_path: Path
) -> None:
    window = ProfilesWindow(services)
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: len(window.views) >= 4, timeout=20_000)
    assert window.list.count() >= 4
    qtmodeltester.check(window.list.model())
    assert window.checks.topLevelItemCount() >= 2
    qtmodeltester.check(window.checks.model())

    # A profile with a bad field: its problems fill the problems list.
    bad = (
        "rails:\n  output_streaming: 1\n"
        "  input:\n    flows: [bastion block prompt injection on input]\n"
    )
    folder = write_profile(tmp_path / "bad", bad, profile_id="bad")
    with qtbot.waitSignal(window.import_failed, timeout=20_000):
        window.import_from(folder)
    assert window.problems.count() >= 1
    qtmodeltester.check(window.problems.model())


@pytest.fixture
def services_with_presets(bastion_home: Path, engine: Engine) -> Any:
    write_settings(bastion_home, system_prompt_presets=PRESETS)
    return make_services(AppContext.start(), engine)


# The offscreen platform cannot size a dialog from its hints; it says so at WARNING.
@pytest.mark.qt_log_ignore("does not support propagateSizeHints")
def test_the_settings_dialogs_presets_and_pickers(
    qtbot: QtBot, qtmodeltester: Any, services_with_presets: Any
) -> None:
    dialog = SettingsDialog(services_with_presets)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.guard_profile.count() >= 4, timeout=10_000)
    names = dialog.presets.names
    assert [names.item(i).text() for i in range(names.count())] == list(PRESETS)
    qtmodeltester.check(names.model())
    for combo in (dialog.default_model, dialog.guard_profile, dialog.theme):
        assert combo.count() >= 1
        qtmodeltester.check(combo.model())
    # A list of the profiles there are: no id can be typed that the next start lacks.
    assert not dialog.guard_profile.isEditable()
