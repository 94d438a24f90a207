"""The window offers to repair a damaged history as it starts: when the file cannot be
opened, and when damage was met while the app last ran. The passphrase is asked for
once; Quit leaves the file as it was."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.context import AppContext
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.errors import HistoryDamagedError
from bastion_desktop.ui.first_run import open_history_at_start
from bastion_desktop.ui.history_repair import RepairDeclinedError
from bastion_desktop.ui.qt import QtCore, QtWidgets
from tests.core.history.conftest import conversation_with, fingerprints
from tests.ui.desktop_fixtures import screenshot
from tests.ui.test_startup import GOOD, Typist, answering

pytestmark = [
    pytest.mark.qt_log_ignore("does not support propagateSizeHints"),
    pytest.mark.blocks_loop("the history is written with asyncio.run on the GUI thread"),
]


class BoxAnswerer:
    """Clicks `button` in each message box named `name` as it opens; notes its text."""

    def __init__(self, qtbot: QtBot, answers: dict[str, str]) -> None:
        self.qtbot = qtbot
        self.answers = answers
        self.seen: list[tuple[str, str]] = []
        self._timer = QtCore.QTimer()
        self._timer.setInterval(20)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        box = QtWidgets.QApplication.activeModalWidget()
        if not isinstance(box, QtWidgets.QMessageBox) or not box.isVisible():
            return
        name = box.objectName()
        self.seen.append((name, f"{box.text()} {box.informativeText()}".strip()))
        screenshot(box, name)
        wanted = self.answers[name]
        (button,) = [b for b in box.buttons() if b.text().replace("&", "") == wanted]
        self.qtbot.mouseClick(button, QtCore.Qt.MouseButton.LeftButton)


def a_history_with_a_damaged_conversation(qtbot: QtBot, context: AppContext) -> None:
    """Made with the passphrase GOOD: a short conversation on either side of one whose
    reply fills most of the file, and a page of that one overwritten."""
    typist = answering(qtbot, (GOOD, GOOD))
    try:
        store = open_history_at_start(context, None)
    finally:
        typist.stop()
    with store:
        asyncio.run(conversation_with(store, "Gannets?", "They dive.", title="Before"))
        asyncio.run(conversation_with(store, "Lighthouse?", "lighthouse " * 60_000, title="Long"))
        asyncio.run(conversation_with(store, "Puffins?", "They nest.", title="After"))
    path = context.history_file
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(os.urandom(4096))


def titles(store: object) -> list[str]:
    listed = asyncio.run(store.list_conversations())  # type: ignore[attr-defined]
    return sorted(c.title for c in listed)


def started_choosing_repair(
    qtbot: QtBot, context: AppContext
) -> tuple[EncryptedConversationStore, Typist, BoxAnswerer]:
    """The history opened at start, the passphrase typed and Repair chosen when asked."""
    typist = answering(qtbot, (GOOD, ""))
    boxes = BoxAnswerer(qtbot, {"historyRepair": "Repair", "historyRepaired": "OK"})
    try:
        store = open_history_at_start(context, None)
    finally:
        typist.stop()
        boxes.stop()
    return store, typist, boxes


def test_damage_met_in_use_is_repaired_at_the_next_start(qtbot: QtBot) -> None:
    context = AppContext.start()
    a_history_with_a_damaged_conversation(qtbot, context)
    # The app in use meets the damage: the sentence says what to do, and it is noted.
    typist = answering(qtbot, (GOOD, ""))
    try:
        store = open_history_at_start(context, None)
    finally:
        typist.stop()
    with store:
        (long,) = [c for c in asyncio.run(store.list_conversations()) if c.title == "Long"]
        with pytest.raises(HistoryDamagedError, match="start Bastion again"):
            asyncio.run(store.messages(long.id))
    assert context.history_damage_noted()

    store, typist, boxes = started_choosing_repair(qtbot, context)
    with store:
        assert titles(store) == ["After", "Before"]
    assert len(typist.seen) == 1, "the passphrase is asked for once"
    assert [name for name, _ in boxes.seen] == ["historyRepair", "historyRepaired"]
    assert boxes.seen[0][1].startswith("Your conversation history is damaged")
    repaired = boxes.seen[1][1]
    assert repaired.startswith(
        "The history was repaired: it keeps 2 conversations. "
        "1 could not be read and was left out: “Long”. The damaged file is kept as "
    )
    assert Path(repaired.rsplit(" as ", 1)[1].removesuffix(".")).exists()
    assert not context.history_damage_noted()


def test_quit_leaves_the_damaged_history_as_it_was(qtbot: QtBot) -> None:
    context = AppContext.start()
    a_history_with_a_damaged_conversation(qtbot, context)
    (context.history_file.parent / "history.db.needs-repair").touch()  # as met in use
    before = fingerprints(context.history_file.parent)
    typist = answering(qtbot, (GOOD, ""))
    boxes = BoxAnswerer(qtbot, {"historyRepair": "Quit"})
    try:
        with pytest.raises(RepairDeclinedError, match="left as it was"):
            open_history_at_start(context, None)
    finally:
        typist.stop()
        boxes.stop()
    assert fingerprints(context.history_file.parent) == before
    assert context.history_damage_noted(), "asked again at the next start"


def test_a_history_that_cannot_be_opened_is_offered_the_repair_too(qtbot: QtBot) -> None:
    """Damage where opening reads (here the file's own bookkeeping is cut off): no window
    could start on it before."""
    context = AppContext.start()
    typist = answering(qtbot, (GOOD, GOOD))
    try:
        open_history_at_start(context, None).close()
    finally:
        typist.stop()
    with context.history_file.open("r+b") as handle:  # a part page: a copy cut short
        handle.truncate(context.history_file.stat().st_size - 1000)
    store, _, boxes = started_choosing_repair(qtbot, context)
    with store:
        assert titles(store) == []
    assert boxes.seen[0][1].startswith("Your conversation history is damaged, so Bastion cannot")
    assert boxes.seen[1][1].startswith("The history was repaired: it keeps 0 conversations.")
