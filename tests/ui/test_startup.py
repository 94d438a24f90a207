"""Starting the desktop app: the passphrase dialog (this machine has no keychain unless
the `secret_service` fixture starts one, so the history key comes from a passphrase),
the crash handler, and `run_app` itself from start to close. The real dialogs are driven
as a user would, typing into their fields: a timer finds each one once its modal loop
runs, since `exec()` does not return until it is answered."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.context import AppContext
from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.history.keys import MIN_PASSPHRASE_LENGTH, keychain_backend
from bastion_desktop.ui.errors import install_crash_handler
from bastion_desktop.ui.first_run import (
    PassphraseCancelledError,
    PassphraseDialog,
    open_history_at_start,
)
from bastion_desktop.ui.main_window import MainWindow
from bastion_desktop.ui.qt import QtCore, QtWidgets
from bastion_desktop.ui.startup import EXIT_OK, EXIT_USER_ERROR, run_app
from bastion_desktop.ui.theme import apply_theme
from bastion_desktop.ui.window_state import read_window_state, write_window_state
from tests.ui.desktop_fixtures import screenshot, write_settings

# The offscreen platform cannot size a dialog from its hints; it says so at WARNING.
pytestmark = pytest.mark.qt_log_ignore("does not support propagateSizeHints")

GOOD = "correct horse battery"
CANCEL = None


@dataclass
class Seen:
    confirm: bool  # the dialog asked for the passphrase twice
    problem_on_open: str  # what it said before anything was typed
    problem_after: str  # what it said after OK, if it stayed open


@dataclass
class Typist:
    """Answers each passphrase dialog as it opens: types one (first, repeat) pair and
    clicks OK, or clicks Cancel (None), and notes what the dialog said."""

    qtbot: QtBot
    answers: list[tuple[str, str] | None]
    seen: list[Seen] = field(default_factory=list)
    _timer: QtCore.QTimer = field(default_factory=QtCore.QTimer)

    def __post_init__(self) -> None:
        self._timer.setInterval(20)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        dialog = QtWidgets.QApplication.activeModalWidget()
        if not isinstance(dialog, PassphraseDialog) or not dialog.isVisible() or not self.answers:
            return
        answer = self.answers.pop(0)
        seen = Seen(dialog.confirm, dialog.problem.text(), "")
        self.seen.append(seen)
        if answer is CANCEL:
            self.qtbot.mouseClick(dialog.cancel_button, QtCore.Qt.MouseButton.LeftButton)
            return
        first, repeat = answer
        for line, text in ((dialog.first, first), (dialog.second, repeat)):
            line.clear()
            if line.isVisibleTo(dialog):
                self.qtbot.keyClicks(line, text)
        screenshot(dialog, f"passphrase-{len(self.seen)}")
        self.qtbot.mouseClick(dialog.ok_button, QtCore.Qt.MouseButton.LeftButton)
        if dialog.isVisible():
            seen.problem_after = dialog.problem.text()


def answering(qtbot: QtBot, *answers: tuple[str, str] | None) -> Typist:
    app = QtWidgets.QApplication.instance()
    assert isinstance(app, QtWidgets.QApplication)
    apply_theme(app, "light")  # run_app themes the app before it asks
    return Typist(qtbot, list(answers))


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def test_there_is_no_keychain_here() -> None:
    """What the dialog tests below rely on: without `secret_service`, no keychain."""
    assert keychain_backend() is None


def test_the_first_start_asks_twice_and_creates_the_history(qtbot: QtBot) -> None:
    context = AppContext.start()
    assert not context.history_file.exists()
    typist = answering(
        qtbot,
        ("short", "short"),
        (GOOD, GOOD + " typo"),
        (GOOD, GOOD),
    )
    try:
        store = open_history_at_start(context, None)
    finally:
        typist.stop()
    try:
        assert [s.confirm for s in typist.seen] == [True, True, True], "one dialog, asking twice"
        assert typist.seen[0].problem_after == (
            f"The passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long."
        )
        assert typist.seen[1].problem_after == "The two passphrases differ."
        assert typist.seen[2].problem_after == ""
    finally:
        store.close()
    assert context.history_file.exists()


def test_a_wrong_passphrase_says_so_and_asks_again(qtbot: QtBot) -> None:
    context = AppContext.start()
    first = answering(qtbot, (GOOD, GOOD))
    try:
        with open_history_at_start(context, None) as store:
            kept = asyncio.run(
                store.create_conversation(
                    title="Kept", model_id="starter", profile_id="standard", system_prompt=""
                )
            )
    finally:
        first.stop()

    again = answering(qtbot, ("not the passphrase", ""), (GOOD, ""))
    try:
        store = open_history_at_start(context, None)
    finally:
        again.stop()
    with store:
        assert asyncio.run(store.get_conversation(kept.id)).title == "Kept"
    assert [s.confirm for s in again.seen] == [False, False], "asked once each time"
    assert again.seen[0].problem_on_open == ""
    assert again.seen[1].problem_on_open == (
        "That passphrase does not unlock your conversation history. Try again; the "
        "history was left as it was."
    )


def test_cancel_leaves_and_touches_nothing(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # run_app installs its own
    context = AppContext.start()
    # On the first start: nothing is created.
    typist = answering(qtbot, CANCEL)
    try:
        with pytest.raises(PassphraseCancelledError, match="nothing was changed"):
            open_history_at_start(context, None)
    finally:
        typist.stop()
    assert not context.history_file.exists()
    assert not context.history_keys(None).exists()

    typist = answering(qtbot, (GOOD, GOOD))
    try:
        open_history_at_start(context, None).close()
    finally:
        typist.stop()
    before = fingerprint(context.history_file)
    # On a later start, from `bastion` itself: it leaves with the sentence, no dialog.
    typist = answering(qtbot, CANCEL)
    try:
        assert run_app(argparse.Namespace(passphrase_file=None)) == EXIT_USER_ERROR
    finally:
        typist.stop()
    assert len(typist.seen) == 1
    assert fingerprint(context.history_file) == before


# -- the crash handler ------------------------------------------------------------------


def _button(slot: Callable[[], None]) -> QtWidgets.QPushButton:
    button = QtWidgets.QPushButton("Do it")
    button.clicked.connect(slot)
    return button


@pytest.mark.qt_no_exception_capture
@pytest.mark.log_warnings("the crash handler logs the bug it caught, as it must")
def test_a_bug_in_a_slot_is_logged_with_its_traceback_and_shown_in_a_dialog(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    context = AppContext.start()  # logging to the log file, as the app does
    handler = install_crash_handler(context.paths.log_file)
    assert sys.excepthook is handler

    def broken() -> None:
        raise ZeroDivisionError("a bug in Bastion")

    button = _button(broken)
    qtbot.addWidget(button)
    shown: list[tuple[str, str]] = []

    def answer() -> None:
        if handler.dialogs:
            box = handler.dialogs[-1]
            shown.append((box.windowTitle(), box.text()))
            screenshot(box, "crash-dialog")
            box.accept()

    timer = QtCore.QTimer()
    timer.timeout.connect(answer)
    timer.start(20)
    try:
        qtbot.mouseClick(button, QtCore.Qt.MouseButton.LeftButton)
    finally:
        timer.stop()
    assert len(shown) == 1
    title, text = shown[0]
    assert title == "Bastion — internal error"
    assert str(context.paths.log_file) in text
    assert "Your conversations are saved" in text
    logged = context.paths.log_file.read_text("utf-8")
    assert "uncaught exception" in logged
    assert "Traceback (most recent call last)" in logged
    assert "ZeroDivisionError: a bug in Bastion" in logged
    assert "in broken" in logged, "the traceback names the function that failed"


@pytest.mark.qt_no_exception_capture
def test_a_user_error_in_a_slot_shows_its_sentence_in_the_window(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    context = AppContext.start()
    handler = install_crash_handler(context.paths.log_file)
    notices: list[str] = []
    handler.notice = notices.append  # what run_app sets to the window's show_error
    sentence = "The model file is missing. Import it again from the Models window."

    def refused() -> None:
        raise BastionError(sentence)

    button = _button(refused)
    qtbot.addWidget(button)
    qtbot.mouseClick(button, QtCore.Qt.MouseButton.LeftButton)
    assert notices == [sentence]
    assert handler.dialogs == []
    assert "Traceback" not in context.paths.log_file.read_text("utf-8")


# -- run_app from start to close ----------------------------------------------------------


@pytest.mark.model
def test_run_app_starts_reaches_ready_and_closes_cleanly(
    qtbot: QtBot, home_with_starter: Path, passphrase_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # run_app installs its own
    write_settings(home_with_starter, guard_profile="standard")
    # Left last time at 760x540 with a wider list (the offscreen screen is 800x600).
    last = MainWindow()
    last.resize(760, 540)
    state_file = home_with_starter / "config" / "window.json"
    write_window_state(state_file, replace(last.state(), sidebar=300))
    last.deleteLater()
    before = set(threading.enumerate())
    seen: dict[str, object] = {}

    def close_when_ready() -> None:
        windows = [w for w in QtWidgets.QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
        if not windows or "closed" in seen:
            return
        window = windows[0]
        if window.profile_ready and window.isVisible():
            seen["closed"] = True
            seen["title"] = window.windowTitle()
            seen["size"] = (window.width(), window.height())
            window.splitter.setSizes([280, window.width() - 280])  # the user drags it
            seen["threads"] = set(threading.enumerate()) - before
            screenshot(window, "run-app-ready")
            window.close()

    timer = QtCore.QTimer()
    timer.timeout.connect(close_when_ready)
    timer.start(50)
    safety = QtCore.QTimer()  # never wait forever: a window that never gets ready fails
    safety.setSingleShot(True)
    safety.timeout.connect(lambda: QtWidgets.QApplication.exit(99))
    safety.start(120_000)
    try:
        code = run_app(argparse.Namespace(passphrase_file=str(passphrase_file)))
    finally:
        timer.stop()
        safety.stop()
    assert code == EXIT_OK
    assert seen.get("closed"), "the window reached ready and was closed"
    assert seen["title"] == "Bastion"
    assert seen["size"] == (760, 540), "the window opened as it was left"
    saved = read_window_state(state_file)
    assert saved is not None
    assert saved.sidebar == 280, "and was saved as it closed"
    started = seen["threads"]
    assert isinstance(started, set)
    assert "bastion-engine" in {t.name for t in started}, "the engine ran while it was open"
    assert not [t for t in started if t.name == "bastion-engine" and t.is_alive()]
    assert AppContext.start().history_file.exists()


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="X11/Wayland only")
def test_without_a_display_the_window_says_where_to_chat_instead(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(variable, raising=False)
    assert run_app(None) == EXIT_USER_ERROR
    assert capsys.readouterr().err == (
        "bastion: there is no display to open the window on (no DISPLAY or "
        "WAYLAND_DISPLAY). `bastion chat` is the same chat in the terminal.\n"
    )


# -- the first paint comes before the application starts ---------------------------------

# Run in a fresh interpreter: what `bastion` has imported, and what the window shows,
# when it first paints; then whether its contents arrive. Exits 0 once they have.
FIRST_PAINT_PROBE = """
import json, os, sys
from PySide6 import QtCore, QtWidgets

WATCHED = ("pydantic", "asyncio", "importlib.metadata", "bastion_desktop.context",
           "bastion_desktop.core.history.encrypted_store", "bastion_guardrails.engine",
           "nemoguardrails", "llama_cpp", "huggingface_hub")
seen = {}

class Probe(QtCore.QObject):
    def eventFilter(self, watched, event):
        if (event.type() == QtCore.QEvent.Type.Paint and isinstance(watched, QtWidgets.QWidget)
                and isinstance(watched.window(), QtWidgets.QMainWindow)):
            window = watched.window()
            if "first" not in seen:
                seen["first"] = {
                    "imported": [m for m in WATCHED if m in sys.modules],
                    "title": window.windowTitle(),
                    "menus": [a.text() for a in window.menuBar().actions()],
                }
            if watched.objectName() == "composer" and "filled" not in seen:
                seen["filled"] = True
                QtCore.QTimer.singleShot(0, done)
        return False

def done():
    print(json.dumps(seen), flush=True)
    os._exit(0)

from bastion_desktop.ui.startup import make_application
app = make_application()
probe = Probe()
app.installEventFilter(probe)
QtCore.QTimer.singleShot(120_000, lambda: os._exit(3))
from bastion_desktop.cli import main
sys.exit(main([]))
"""


def test_the_window_paints_before_the_application_starts_then_fills(
    home_with_starter: Path, passphrase_file: Path
) -> None:
    import json
    import os
    import subprocess

    env = dict(
        os.environ,
        BASTION_HOME=str(home_with_starter),
        BASTION_PASSPHRASE_FILE=str(passphrase_file),
        QT_QPA_PLATFORM="offscreen",
    )
    done = subprocess.run(
        [sys.executable, "-c", FIRST_PAINT_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    first = seen["first"]
    # Nothing heavy before the first paint: not the settings' validation (pydantic), the
    # installed metadata (the version), the history, the guardrails, llama.cpp or the Hub
    # client.
    assert first["imported"] == []
    assert first["title"] == "Bastion"
    assert first["menus"] == ["&File", "&Edit", "&Tools", "&Help"]
    assert seen["filled"], "the conversations and the composer arrived after it"


def test_a_window_built_in_two_steps_is_inert_until_attached(qtbot: QtBot) -> None:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    placeholder = window.centralWidget().findChild(QtWidgets.QLabel, "placeholder")
    assert placeholder is not None
    assert placeholder.text() == "Opening Bastion…"
    actions = {action.text(): action.isEnabled() for action in window.actions()}
    assert actions["&Quit"]
    assert actions["&About Bastion"]
    assert not actions["&New chat"], "nothing to act on before the contents exist"
    assert not actions["S&top reply"]
    window.close()  # closing before the contents exist is fine


@pytest.mark.log_warnings("the unreadable settings file is logged")
def test_a_broken_settings_file_is_a_sentence_after_the_window_paints(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # run_app installs its own
    context = AppContext.start()
    context.paths.settings_file.write_text("{ not json", encoding="utf-8")
    answered: list[str] = []

    def answer() -> None:
        box = QtWidgets.QApplication.activeModalWidget()
        if isinstance(box, QtWidgets.QMessageBox) and box.objectName() == "startupError":
            answered.append(box.text())
            box.accept()

    timer = QtCore.QTimer()
    timer.timeout.connect(answer)
    timer.start(20)
    try:
        assert run_app(None) == EXIT_USER_ERROR
    finally:
        timer.stop()
    assert len(answered) == 1
    assert "settings" in answered[0].lower()
    assert capsys.readouterr().err == f"bastion: {answered[0]}\n"
