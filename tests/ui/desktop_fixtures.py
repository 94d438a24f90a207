"""The desktop window as the app builds it, for the window's tests: the real
AppContext on the test's BASTION_HOME, the real encrypted history (its key from a
passphrase: this machine has no keychain), the real ChatService with the starter model
through llama.cpp, and the real guardrail engine on the engine thread."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.commands.passphrase import passphrase_prompt
from bastion_desktop.context import AppContext
from bastion_desktop.core.events import TokenEvent
from bastion_desktop.ui.engine import Engine
from bastion_desktop.ui.main_window import MainWindow
from bastion_desktop.ui.qt import QtCore, QtWidgets
from bastion_desktop.ui.services import AppServices
from bastion_desktop.ui.theme import apply_theme

# Short, reproducible replies: the starter model with a fixed seed.
SAMPLING = {"max_tokens": 24, "seed": 7, "temperature": 0.7}
TURN_TIMEOUT_MS = 180_000


def write_settings(home: Path, **values: Any) -> None:
    path = home / "config" / "settings.json"
    current = json.loads(path.read_text("utf-8")) if path.exists() else {}
    current.update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current), encoding="utf-8")


def screenshot(widget: QtWidgets.QWidget, name: str) -> None:
    """Save what the widget looks like, for a person to look at, when
    $BASTION_SCREENSHOTS names a folder (never asserted on)."""
    folder = os.environ.get("BASTION_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # The layout requests still queued: a word-wrapped label takes its height over
        # a few passes, as the user sees it a frame or two later.
        for _ in range(3):
            QtWidgets.QApplication.processEvents()
            time.sleep(0.02)
        widget.grab().save(str(Path(folder) / f"{name}.png"))


@dataclass
class Desktop:
    """One run of the app: services and its main window."""

    services: AppServices
    window: MainWindow
    qtbot: QtBot
    tokens: list[str] = field(default_factory=list)
    closed: bool = False

    def send(self, text: str) -> None:
        """Type `text` in the composer and press Enter; wait until the turn is saved
        and shown."""
        composer = self.window.composer
        composer.text.setPlainText(text)
        controller = self.window.controller
        with (
            self.qtbot.waitSignal(self.window.chat_view.shown, timeout=TURN_TIMEOUT_MS),
            self.qtbot.waitSignal(controller.turn_finished, timeout=TURN_TIMEOUT_MS),
        ):
            self.qtbot.keyClick(composer.text, QtCore.Qt.Key.Key_Return)

    def wait_turn(self, start: Callable[[], object]) -> None:
        controller = self.window.controller
        with (
            self.qtbot.waitSignal(self.window.chat_view.shown, timeout=TURN_TIMEOUT_MS),
            self.qtbot.waitSignal(controller.turn_finished, timeout=TURN_TIMEOUT_MS),
        ):
            start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.window.close()
        self.window.deleteLater()
        self.services.shut_down()


def open_desktop(qtbot: QtBot, passphrase_file: Path, *, ready: bool = True) -> Desktop:
    """The app started as a user starts it; `ready=False` when its profile is expected
    not to open (the wait is for that failure instead)."""
    context = AppContext.start()
    store = context.open_history(passphrase_prompt(passphrase_file))
    engine = Engine()
    engine.start()
    services = AppServices.assemble(context, engine, store)
    app = QtWidgets.QApplication.instance()
    assert isinstance(app, QtWidgets.QApplication)
    apply_theme(app, context.settings.theme)
    window = MainWindow(services)
    desktop = Desktop(services, window, qtbot)
    window.controller.chat_event.connect(
        lambda e: desktop.tokens.append(e.text) if isinstance(e, TokenEvent) else None
    )
    window.show()
    with qtbot.waitSignal(window.ready if ready else window.profile_failed, timeout=120_000):
        window.start()
    # The starter is checked (its sha256) on a worker thread at the start, then listed:
    # tests begin once the model picker holds it, as a user's first look would.
    qtbot.waitUntil(lambda: window.top_bar.model_box.count() > 0, timeout=60_000)
    return desktop


@pytest.fixture
def desktop_home(home_with_starter: Path) -> Path:
    write_settings(home_with_starter, sampling=SAMPLING, guard_profile="standard")
    return home_with_starter


@pytest.fixture
def desktop(qtbot: QtBot, desktop_home: Path, passphrase_file: Path) -> Iterator[Desktop]:
    opened = open_desktop(qtbot, passphrase_file)
    yield opened
    opened.close()
