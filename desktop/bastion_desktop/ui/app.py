"""Starting the desktop app: the QApplication (high-DPI, theme), the crash handler, the
history key, the engine thread, the main window — and an orderly shutdown."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bastion_desktop.core.errors import BastionError
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets

log = logging.getLogger(__name__)

# The app's id: the desktop entry's and AppStream metainfo's name, the macOS bundle id
# and the policy domain.
APP_ID = "org.bastion.Bastion"

EXIT_OK = 0
EXIT_USER_ERROR = 1

# Colours of the app's own parts (messages, badges); Qt's palette covers the rest.
_LIGHT = {
    "window": "#f6f7f9",
    "base": "#ffffff",
    "text": "#1d2127",
    "muted": "#5e6673",
    "user": "#e8effc",
    "assistant": "#ffffff",
    "border": "#dde1e7",
    "code": "#f3f4f6",
    "passed": "#1e7b3a",
    "masked": "#9a6700",
    "blocked": "#b42318",
    "accent": "#2f6fdf",
    "notice": "#fff4e5",
}
_DARK = {
    "window": "#1b1d21",
    "base": "#23262b",
    "text": "#e6e8eb",
    "muted": "#9aa3ae",
    "user": "#2a3547",
    "assistant": "#23262b",
    "border": "#363a41",
    "code": "#272822",
    "passed": "#5cc779",
    "masked": "#e3b341",
    "blocked": "#f47067",
    "accent": "#5b9bff",
    "notice": "#3b2f1a",
}


def _style_sheet(c: dict[str, str]) -> str:
    return f"""
    #sidebar {{ background: {c["window"]}; }}
    #chatContainer {{ background: {c["base"]}; }}
    #topBar {{ border-bottom: 1px solid {c["border"]}; }}
    #userMessage {{ background: {c["user"]}; border-radius: 10px; }}
    #assistantMessage {{ background: {c["assistant"]}; border: 1px solid {c["border"]};
        border-radius: 10px; }}
    #author {{ font-weight: 600; }}
    #stats, #messageNote, #placeholder, #profileStatus, #fitBadge, #codeLanguage, #contextUse,
    #serverHint {{ color: {c["muted"]}; }}
    #contextUse {{ font-size: 11px; }}
    #contextUse[nearlyFull="true"] {{ color: {c["masked"]}; }}
    #messageNote {{ font-style: italic; }}
    #codeBlock {{ background: {c["code"]}; border: 1px solid {c["border"]};
        border-radius: 6px; }}
    #codeText {{ background: transparent; }}
    #guardBadge {{ border-radius: 8px; padding: 0 6px; font-size: 11px; }}
    #guardBadge[verdict="passed"] {{ color: {c["passed"]}; }}
    #guardBadge[verdict="masked"] {{ color: {c["masked"]}; }}
    #guardBadge[verdict="blocked"], #guardBadge[verdict="withdrawn"] {{ color: {c["blocked"]}; }}
    #guardBadge[verdict="unchecked"] {{ color: {c["muted"]}; }}
    #policyBanner, #auditNotice {{ background: {c["notice"]}; padding: 6px 12px; }}
    #privateBanner {{ background: {c["user"]}; color: {c["accent"]}; font-weight: 600;
        padding: 6px 12px; }}
    #policyBanner[failedClosed="true"] {{ color: {c["blocked"]}; font-weight: 600; }}
    #notice, #starterNotice, #newTokenNotice {{ background: {c["notice"]}; border-radius: 6px;
        padding: 6px; }}
    #composer {{ border-top: 1px solid {c["border"]}; }}
    #editBanner {{ color: {c["accent"]}; }}
    #passphraseDialog #problem {{ color: {c["blocked"]}; }}
    QScrollBar:vertical {{ background: transparent; width: 10px; margin: 0; }}
    QScrollBar:horizontal {{ background: transparent; height: 10px; margin: 0; }}
    QScrollBar::handle {{ background: {c["border"]}; border-radius: 4px; margin: 2px; }}
    QScrollBar::handle:hover {{ background: {c["muted"]}; }}
    QScrollBar::handle:vertical {{ min-height: 24px; }}
    QScrollBar::handle:horizontal {{ min-width: 24px; }}
    QScrollBar::add-line, QScrollBar::sub-line {{ width: 0; height: 0; }}
    QScrollBar::add-page, QScrollBar::sub-page {{ background: transparent; }}
    """


def wants_dark(theme: str, app: QtWidgets.QApplication) -> bool:
    if theme == "dark":
        return True
    if theme == "light":
        return False
    return app.styleHints().colorScheme() == QtCore.Qt.ColorScheme.Dark


def _palette(c: dict[str, str]) -> QtGui.QPalette:
    palette = QtGui.QPalette()
    role = QtGui.QPalette.ColorRole
    color = QtGui.QColor
    for which, value in (
        (role.Window, c["window"]),
        (role.WindowText, c["text"]),
        (role.Base, c["base"]),
        (role.AlternateBase, c["window"]),
        (role.Text, c["text"]),
        (role.Button, c["base"]),
        (role.ButtonText, c["text"]),
        (role.ToolTipBase, c["base"]),
        (role.ToolTipText, c["text"]),
        (role.PlaceholderText, c["muted"]),
        (role.Highlight, c["accent"]),
        (role.HighlightedText, "#ffffff"),
        (role.Link, c["accent"]),
    ):
        palette.setColor(which, color(value))
    for which in (role.WindowText, role.Text, role.ButtonText):
        palette.setColor(QtGui.QPalette.ColorGroup.Disabled, which, color(c["muted"]))
    return palette


def apply_theme(app: QtWidgets.QApplication, theme: str) -> bool:
    """Fusion with Bastion's light or dark colours; returns whether it is dark."""
    dark = wants_dark(theme, app)
    colours = _DARK if dark else _LIGHT
    app.setStyle("Fusion")
    app.setPalette(_palette(colours))
    app.setStyleSheet(_style_sheet(colours))
    return dark


def make_application(argv: list[str] | None = None) -> QtWidgets.QApplication:
    existing = QtWidgets.QApplication.instance()
    if isinstance(existing, QtWidgets.QApplication):
        return existing
    # Qt 6 scales for high DPI by itself; pass fractional factors (125 %, 150 %) through
    # rather than rounding them, so text is neither blurry nor oversized.
    QtGui.QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        QtCore.Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )
    app = QtWidgets.QApplication(argv or [sys.argv[0]])
    app.setApplicationName("Bastion")
    app.setOrganizationName("Bastion")
    app.setApplicationDisplayName("Bastion")
    # The desktop entry's name (org.bastion.Bastion.desktop): Wayland compositors match
    # the window to it, and so to its icon in docks and task switchers, by this id.
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(app_icon())
    return app


def app_icon() -> QtGui.QIcon:
    """The window's icon: a 256 px PNG among the package data (resources/icons/render.sh
    makes it), which a wheel and a PyInstaller build both keep beside the modules. It is
    decoded before the first paint: about 2 ms, where going through importlib.resources
    (imported for this alone) took 6 ms and the SVG would load Qt's SVG module."""
    return QtGui.QIcon(str(Path(__file__).parent.parent / "resources" / "bastion.png"))


# -- crashes --------------------------------------------------------------------------


def crash_text(log_file: Path | None) -> str:
    where = f" The details are in {log_file}." if log_file else ""
    return (
        "Bastion ran into a bug and this action did not complete. Your conversations are "
        f"saved.{where} Please report it, with that log."
    )


class CrashHandler:
    """Uncaught exceptions in slots go to the log with their traceback and to the user
    as a dialog; a user error (BastionError) is shown as its sentence, never a trace:
    in the window (`notice`) once there is one, else in a dialog."""

    def __init__(self, log_file: Path | None) -> None:
        self.log_file = log_file
        self.notice: Callable[[str], None] | None = None
        self.dialogs: list[QtWidgets.QMessageBox] = []  # open now (tests look at them)

    def __call__(
        self, kind: type[BaseException], error: BaseException, trace: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            QtWidgets.QApplication.quit()
            return
        app = QtWidgets.QApplication.instance()
        if isinstance(error, BastionError):
            log.info("user error reached the top: %s", kind.__name__)
            if self.notice is not None:
                self.notice(str(error))
                return
            text, title = str(error), "Bastion"
            icon = QtWidgets.QMessageBox.Icon.Warning
        else:
            log.critical(
                "uncaught exception\n%s", "".join(traceback.format_exception(kind, error, trace))
            )
            text, title = crash_text(self.log_file), "Bastion — internal error"
            icon = QtWidgets.QMessageBox.Icon.Critical
        if app is None:
            print(f"bastion: {text}", file=sys.stderr)
            return
        box = QtWidgets.QMessageBox(icon, title, text)
        box.setObjectName("crashDialog")
        self.dialogs.append(box)
        try:
            box.exec()
        finally:
            self.dialogs.remove(box)
            box.deleteLater()


def install_crash_handler(log_file: Path | None) -> CrashHandler:
    handler = CrashHandler(log_file)
    sys.excepthook = handler
    return handler


# -- running --------------------------------------------------------------------------


def _passphrase_file(args: argparse.Namespace | None) -> Path | None:
    from bastion_desktop.cli import PASSPHRASE_FILE_VARIABLE

    given = getattr(args, "passphrase_file", None) if args is not None else None
    if given:
        return Path(given)
    from_env = os.environ.get(PASSPHRASE_FILE_VARIABLE)
    return Path(from_env) if from_env else None


def _fatal(text: str) -> int:
    box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Warning, "Bastion", text)
    box.setObjectName("startupError")
    box.exec()
    print(f"bastion: {text}", file=sys.stderr)
    return EXIT_USER_ERROR


def _no_display() -> bool:
    """On Linux and the BSDs, a window needs an X or Wayland display; without one Qt
    aborts the process with a message about platform plugins. (QT_QPA_PLATFORM, as
    `offscreen`, says the caller knows better.)"""
    if sys.platform in ("win32", "darwin") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def first_theme(settings_file: Path) -> str:
    """The theme the settings file names, read on its own: the window paints before the
    settings are loaded and checked (a broken file gives the system's theme here, and
    its sentence once they are)."""
    try:
        theme = json.loads(settings_file.read_text(encoding="utf-8")).get("theme")
    except (OSError, ValueError, AttributeError):
        return "system"
    return theme if theme in ("light", "dark") else "system"


def after_first_paint(
    window: QtWidgets.QWidget, callback: Callable[[], object], fallback_ms: int = 2000
) -> None:
    """Run `callback` once `window` (any widget in it) has painted for the first time,
    after that whole paint pass, or after `fallback_ms` if it never paints (a minimized
    window). A zero timer set at `show()` can fire before the paint."""
    app = QtWidgets.QApplication.instance()
    assert app is not None
    done: list[bool] = []

    def run() -> None:
        if not done:
            done.append(True)
            app.removeEventFilter(watcher)
            callback()

    class Watcher(QtCore.QObject):
        def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
            if (
                event.type() == QtCore.QEvent.Type.Paint
                and isinstance(watched, QtWidgets.QWidget)
                and watched.window() is window
            ):
                QtCore.QTimer.singleShot(0, window, run)
            return False

    watcher = Watcher(window)
    app.installEventFilter(watcher)
    QtCore.QTimer.singleShot(fallback_ms, window, run)


TRACE_STARTUP_VARIABLE = "BASTION_TRACE_STARTUP"


def _trace_first_paint() -> None:
    print(json.dumps({"first_paint_monotonic": time.monotonic()}), file=sys.stderr, flush=True)


def run_app(args: argparse.Namespace | None = None) -> int:
    """`bastion` with no subcommand: the desktop window, until it is closed.

    The window paints first, built from light modules only, then the application
    starts behind it (`Startup`): settings, policy, the history (asking for its
    passphrase over the window), the engine thread and the window's contents. Imported
    before the paint, those held it back by a second."""
    from bastion_desktop.core.paths import AppPaths
    from bastion_desktop.core.privacy import apply_private_environment
    from bastion_desktop.ui.main_window import MainWindow
    from bastion_desktop.ui.window_state import (
        WINDOW_STATE_FILE,
        read_window_state,
        write_window_state,
    )

    if _no_display():
        print(
            "bastion: there is no display to open the window on (no DISPLAY or "
            "WAYLAND_DISPLAY). `bastion chat` is the same chat in the terminal.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    apply_private_environment()
    app = make_application()
    paths = AppPaths.discover()
    crashes = install_crash_handler(paths.log_file)
    theme = first_theme(paths.settings_file)
    apply_theme(app, theme)
    window = MainWindow()
    state_file = paths.config / WINDOW_STATE_FILE
    window.restore(read_window_state(state_file))
    window.show()
    startup = Startup(app, window, _passphrase_file(args), crashes, theme)
    after_first_paint(window, startup.run)
    if os.environ.get(TRACE_STARTUP_VARIABLE):
        # When the first paint ends, on the system-wide monotonic clock, so a benchmark
        # can compare an installed build's start with a checkout's (bench_install.py).
        after_first_paint(window, _trace_first_paint)
    try:
        return app.exec()
    finally:
        crashes.notice = None  # the window is going: dialogs again
        write_window_state(state_file, window.state())
        window.deleteLater()
        startup.shut_down()


@dataclass
class Startup:
    """The application, started behind the painted window."""

    app: QtWidgets.QApplication
    window: Any  # MainWindow: its module is imported by run_app
    passphrase_file: Path | None
    crashes: CrashHandler
    theme: str  # the one applied before the paint
    services: Any = None  # AppServices, once started

    def run(self) -> None:
        """Start and fill the window; on a problem the user must hear about before
        anything else (a broken policy, a cancelled passphrase), leave with its
        sentence."""
        from bastion_desktop.app import AppContext
        from bastion_desktop.ui.engine import Engine
        from bastion_desktop.ui.first_run import PassphraseCancelledError, open_history_at_start
        from bastion_desktop.ui.services import AppServices

        app = self.app
        try:
            context = AppContext.start()
        except BastionError as error:
            app.exit(_fatal(str(error)))
            return
        if context.settings.theme != self.theme:  # restyling every widget is not free
            apply_theme(app, context.settings.theme)
        log.info("desktop window starting (%s theme)", context.settings.theme)
        try:
            store = open_history_at_start(context, self.passphrase_file)
        except PassphraseCancelledError as error:
            print(f"bastion: {error}", file=sys.stderr)  # the user chose to leave: no dialog
            app.exit(EXIT_USER_ERROR)
            return
        except BastionError as error:
            app.exit(_fatal(str(error)))
            return
        engine = Engine()
        engine.start()
        services = self.services = AppServices.assemble(context, engine, store)
        services.settings_changed.connect(lambda s: apply_theme(app, s.theme))
        app.styleHints().colorSchemeChanged.connect(self._follow_system)
        self.window.attach(services)
        self.crashes.notice = self.window.show_error
        # Filled (profiles, models and their fit, the guardrail engine: NeMo's and
        # llama.cpp's imports on the engine thread) once the contents have painted.
        after_first_paint(self.window, self._fill)
        engine.submit(context.sweep_history(store))

    def _fill(self) -> None:
        self.window.start()
        # The local API, if the user left it on and the policy allows it: after the
        # window's own start, so the chat's profile is opened first on the engine loop.
        self.services.local_api.resume()

    def _follow_system(self, _scheme: object) -> None:
        apply_theme(self.app, self.services.context.settings.theme)

    def shut_down(self) -> None:
        if self.services is not None:
            self.app.styleHints().colorSchemeChanged.disconnect(self._follow_system)
            self.services.shut_down()
