"""Starting the desktop app: the QApplication (high-DPI, icon, theme), the crash
handler, the history key, the engine thread, the main window — and an orderly shutdown.
The look is in `theme.py`, the crash handler and the error bridge in `errors.py`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.paths import PASSPHRASE_FILE_VARIABLE
from bastion_desktop.ui.errors import CrashHandler, install_crash_handler
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets
from bastion_desktop.ui.theme import apply_theme, first_theme

log = logging.getLogger(__name__)

# The app's id: the desktop entry's and AppStream metainfo's name, the macOS bundle id
# and the policy domain.
APP_ID = "org.bastion.Bastion"

EXIT_OK = 0
EXIT_USER_ERROR = 1


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


# -- running --------------------------------------------------------------------------


def _passphrase_file(args: argparse.Namespace | None) -> Path | None:
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


@contextlib.contextmanager
def quitting_on_signals(app: QtWidgets.QApplication) -> Iterator[None]:
    """While inside, Ctrl+C in the terminal (SIGINT) and `kill`, a logout or a service
    manager (SIGTERM) close the app as its Quit does: the streaming reply is kept, the
    window's place saved, the model hosts stopped. Python runs a signal handler only
    between its own bytecodes, never inside Qt's event loop, so the signal also writes
    to a socket Qt watches, which wakes the loop into Python (`signal.set_wakeup_fd`)."""
    receive, send = socket.socketpair()
    for end in (receive, send):
        end.setblocking(False)
    notifier = QtCore.QSocketNotifier(receive.fileno(), QtCore.QSocketNotifier.Type.Read)

    def drain() -> None:
        with contextlib.suppress(OSError):
            receive.recv(512)  # the handler itself runs as this returns to Python

    def leave(signum: int, _frame: object) -> None:
        log.info("leaving on %s", signal.Signals(signum).name)
        app.quit()

    notifier.activated.connect(drain)
    previous_fd = signal.set_wakeup_fd(send.fileno())
    previous = {signum: signal.signal(signum, leave) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        notifier.setEnabled(False)
        receive.close()
        send.close()


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
        with quitting_on_signals(app):
            return app.exec()
    finally:
        crashes.notice = None  # the window is going: dialogs again
        write_window_state(state_file, window.state())
        window.hide()  # it is deleted later, with no event loop left to show it
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
        from bastion_desktop.context import AppContext
        from bastion_desktop.ui.engine import Engine
        from bastion_desktop.ui.first_run import PassphraseCancelledError, open_history_at_start
        from bastion_desktop.ui.history_repair import RepairDeclinedError
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
        except (PassphraseCancelledError, RepairDeclinedError) as error:
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
