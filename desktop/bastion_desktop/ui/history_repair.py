"""Offering the repair of a damaged history as the window starts: the only moment no
window has the file open, so it can be replaced. Damage met while the app runs is
noted beside the file (`damage_marker`), and the next start asks."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bastion_desktop.context import AppContext
from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.history.errors import HistoryDamagedError
from bastion_desktop.core.history.keys import PassphrasePrompt
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets

T = TypeVar("T")


class RepairDeclinedError(BastionError):
    """The user chose not to repair the damaged history now."""


def offer_repair(
    context: AppContext, prompt: PassphrasePrompt, damage: HistoryDamagedError | None
) -> None:
    """Ask whether to repair the history, and do it. `damage` is why opening failed;
    None when the damage was met earlier. Raises RepairDeclinedError on Quit and the
    repair's own HistoryError when it cannot be done (nothing changed then)."""
    box = QtWidgets.QMessageBox(
        QtWidgets.QMessageBox.Icon.Warning,
        "Bastion",
        "Your conversation history is damaged: part of it can no longer be read."
        if damage is None
        else "Your conversation history is damaged, so Bastion cannot open it.",
    )
    box.setObjectName("historyRepair")
    box.setInformativeText(
        "Repair rebuilds it from every conversation that can still be read. The damaged "
        "file is kept beside it, exactly as it is now."
    )
    if damage is not None:
        box.setDetailedText(str(damage))
    repair = box.addButton("Repair", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Quit", QtWidgets.QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(repair)
    box.exec()
    chosen = box.clickedButton()
    box.deleteLater()
    if chosen is not repair:
        raise RepairDeclinedError(
            "The conversation history was left as it was; Bastion offers to repair it at "
            "the next start, and `bastion history repair` repairs it from a terminal."
        )
    QtWidgets.QApplication.setOverrideCursor(QtGui.QCursor(QtCore.Qt.CursorShape.WaitCursor))
    try:
        # The passphrase was typed to open the history: `prompt` asks nothing again.
        result = _while_painting(lambda: context.repair_history(prompt))
    finally:
        QtWidgets.QApplication.restoreOverrideCursor()
    done = QtWidgets.QMessageBox(
        QtWidgets.QMessageBox.Icon.Information, "Bastion", result.summary()
    )
    done.setObjectName("historyRepaired")
    done.exec()
    done.deleteLater()


def _while_painting(work: Callable[[], T]) -> T:
    """`work` on a thread of its own while the window goes on painting: a repair of
    20,000 messages (16 MB) took 3.7 s on a 2-core Zen 1, a frozen window for as long."""
    loop = QtCore.QEventLoop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-repair") as pool:
        future = pool.submit(work)
        future.add_done_callback(
            lambda _done: QtCore.QMetaObject.invokeMethod(
                loop, "quit", QtCore.Qt.ConnectionType.QueuedConnection
            )
        )
        loop.exec()  # a quit posted before it runs is still delivered to it
        return future.result()
