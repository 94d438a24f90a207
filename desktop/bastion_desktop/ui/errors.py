"""The one bridge from a failure to what the user is told.

A user error (Bastion's own `BastionError`, the guardrail layer's `GuardrailsError`) is
a sentence written for the person, and is shown where they are looking. Anything else is
a bug: its traceback goes to the log and the crash dialog says so; the widget that
started the work shows the same short sentence. Nothing is decided by an exception's
module or shown as raw exception text. Every window's failure path goes through
`sentence_for` (background work) or the crash handler (an exception escaping a slot)."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from bastion_desktop.core.errors import BastionError
from bastion_desktop.ui.qt import QtCore, QtWidgets
from bastion_guardrails.problems import GuardrailsError

log = logging.getLogger(__name__)


def is_user_error(error: object) -> bool:
    """A problem the user can act on, whose message is a sentence for them: Bastion's
    own errors and the guardrail layer's (a missing or broken profile)."""
    return isinstance(error, BastionError | GuardrailsError)


def sentence_for(error: object, doing: str, *, also: tuple[type[BaseException], ...] = ()) -> str:
    """What to tell the user when `doing` ("Reading the profiles") failed with `error`:
    a user error's own sentence (or that of an `also` type the caller knows is the
    user's, such as an OSError naming a file); for a bug, the traceback is logged, the
    crash dialog opens (once the app has installed its handler) and the sentence says
    Bastion ran into a bug. A cancellation says nothing: ""."""
    import asyncio  # not before the window's first paint (startup imports this module)

    if isinstance(error, asyncio.CancelledError):
        return ""
    if is_user_error(error):
        return str(error)
    if also and isinstance(error, also):
        return _os_sentence(error) if isinstance(error, OSError) else str(error)
    log.error("%s failed", doing, exc_info=error if isinstance(error, BaseException) else None)
    crashes = sys.excepthook  # the app's CrashHandler once it has installed one
    if isinstance(crashes, CrashHandler) and isinstance(error, BaseException):
        crashes.show_bug(error)
    return f"{doing} did not complete: Bastion ran into a bug. The log file has the details."


def _os_sentence(error: OSError) -> str:
    if error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}."
    return f"{error.strerror or error}."


def crash_text(log_file: Path | None) -> str:
    where = f" The details are in {log_file}." if log_file else ""
    return (
        "Bastion ran into a bug and this action did not complete. Your conversations are "
        f"saved.{where} Please report it, with that log."
    )


class CrashHandler:
    """Uncaught exceptions in slots go to the log with their traceback and to the user
    as a dialog; a user error (`is_user_error`) is shown as its sentence, never a trace:
    in the window (`notice`) once there is one, else in a dialog. A bug in background
    work reaches it through `sentence_for` (`show_bug`)."""

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
        if is_user_error(error):
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

    def show_bug(self, error: BaseException) -> None:
        """The crash dialog for `error`, a bug in background work (its traceback is
        already logged), from any thread: it opens on the GUI thread, without waiting for
        it to be closed (the work's own widget says what did not complete)."""
        app = QtWidgets.QApplication.instance()
        if app is not None:
            QtCore.QTimer.singleShot(0, app, self._open_bug_dialog)

    def _open_bug_dialog(self) -> None:
        box = QtWidgets.QMessageBox(
            QtWidgets.QMessageBox.Icon.Critical,
            "Bastion — internal error",
            crash_text(self.log_file),
        )
        box.setObjectName("crashDialog")
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.dialogs.append(box)
        box.finished.connect(lambda _result: self.dialogs.remove(box))
        box.show()


def install_crash_handler(log_file: Path | None) -> CrashHandler:
    """Route uncaught exceptions, and the bugs `sentence_for` meets, to one handler."""
    handler = CrashHandler(log_file)
    sys.excepthook = handler
    return handler
