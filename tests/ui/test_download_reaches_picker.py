"""A model downloaded in the models window (opened from the main window's menu, as a
user opens it) appears in the main window's model picker, without restarting the app.
The download is real HTTP from the Hub emulator on 127.0.0.1 (HF_ENDPOINT points at
it): this machine cannot reach the real Hub."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pytestqt.exceptions import TimeoutError
from pytestqt.qtbot import QtBot

from bastion_desktop.ui.models_window import ModelsWindow
from tests.core.hub.hub_emulator import HubEmulator
from tests.ui.desktop_fixtures import Desktop
from tests.ui.test_models_window import FILE, REPO, hub, model_file, search_and_list

__all__ = ["hub", "model_file"]  # fixtures used by name

pytestmark = pytest.mark.model


def picker_ids(desktop: Desktop) -> list[str]:
    box = desktop.window.top_bar.model_box
    return [box.itemData(i) for i in range(box.count())]


# The offscreen platform warns that it cannot pass size hints whenever a top-level
# window is shown (the model manager is one); a real window system does not.
@pytest.mark.qt_log_ignore("does not support propagateSizeHints")
def test_a_downloaded_model_appears_in_the_main_windows_picker(
    desktop: Desktop, qtbot: QtBot, hub: HubEmulator, model_file: Path
) -> None:
    top = desktop.window.top_bar
    qtbot.waitUntil(lambda: top.model_box.count() >= 1, timeout=10_000)
    before = picker_ids(desktop)

    desktop.window.open_models()
    window = desktop.window.secondary["models"]
    assert isinstance(window, ModelsWindow)
    try:
        qtbot.waitUntil(lambda: window.hardware is not None, timeout=60_000)
        search_and_list(qtbot, window)
        assert window.hub.role.currentData() == "chat"
        with qtbot.waitSignal(window.installed_changed, timeout=60_000):
            window.hub.download_button.click()
            qtbot.waitUntil(lambda: bool(window.downloads.rows), timeout=20_000)
            row = next(iter(window.downloads.rows.values()))
            qtbot.waitUntil(lambda: row.state.state == "done", timeout=60_000)
        registry = desktop.services.context.registry
        [model] = [m for m in registry.list() if m.repo == REPO]
        assert model.role == "chat"
        assert model.sha256 == hub.file(REPO, FILE).sha256
        assert model.id not in before
        assert model.id in window.installed.installed_ids()

        # The main window's picker, with no restart and nothing else done by the user.
        try:
            qtbot.waitUntil(lambda: model.id in picker_ids(desktop), timeout=10_000)
        except TimeoutError:
            # The registry has it: the picker lists it once asked to fill again.
            top.fill_models()
            assert model.id in picker_ids(desktop)
            pytest.fail("the model picker did not list the downloaded model by itself")
        assert top.model_box.itemText(top.model_box.findData(model.id)) == model.name
    finally:
        window.shut_down()
        for _ in range(100):
            if not [t for t in threading.enumerate() if t.name.startswith("download-")]:
                break
            qtbot.wait(20)
