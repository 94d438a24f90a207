"""The history sidebar: a list model over the encrypted store (pinned first, then the
newest), a full-text search box, and the actions of a conversation's context menu
(rename, pin, export, delete). Every store call runs on the engine thread. Export is
"Managed by your organization" when the administrator's policy does not allow it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion_desktop.core.conversation_store import Conversation
from bastion_desktop.core.history.search import SearchHit
from bastion_desktop.core.policy import PolicyRefusedError
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.managed import MANAGED_TEXT
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal
from bastion_desktop.ui.services import AppServices

LIST_LIMIT = 500
SEARCH_LIMIT = 50
# Typing pauses this long before a search runs, so each key press is not a query.
SEARCH_DELAY_MS = 200

IdRole = QtCore.Qt.ItemDataRole.UserRole + 1
PinnedRole = QtCore.Qt.ItemDataRole.UserRole + 2
MessageIdRole = QtCore.Qt.ItemDataRole.UserRole + 3

# Shown for a conversation whose first message is still being checked (ChatService
# titles it after that message, once the guardrails have seen it).
UNTITLED = "New conversation"


@dataclass(frozen=True)
class ConversationRow:
    conversation_id: str
    title: str
    pinned: bool = False
    snippet: str = ""  # a search hit's matching text
    message_id: int | None = None


def rows_from_conversations(conversations: list[Conversation]) -> list[ConversationRow]:
    return [ConversationRow(c.id, c.title or UNTITLED, c.pinned) for c in conversations]


def rows_from_hits(hits: list[SearchHit]) -> list[ConversationRow]:
    return [
        ConversationRow(
            h.conversation_id, h.conversation_title or UNTITLED, False, h.snippet, h.message_id
        )
        for h in hits
    ]


MARKDOWN_FILES = "Markdown (*.md)"
JSON_FILES = "Bastion JSON (*.json)"


def export_path(chosen: str, kind: str) -> Path:
    """The file an export writes: the name chosen, with the suffix of the kind chosen
    when the name has neither (the format follows the suffix)."""
    path = Path(chosen)
    if path.suffix.lower() in (".md", ".json"):
        return path
    return path.with_name(path.name + (".json" if kind == JSON_FILES else ".md"))


def file_stem(title: str) -> str:
    """A file name from a conversation's title: what file systems refuse is dropped."""
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', " ", title).strip(" .")
    return " ".join(stem.split())[:80] or "conversation"


class ConversationListModel(QtCore.QAbstractListModel):
    """Rows as the store returned them (it orders them); replaced wholesale on refresh."""

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[ConversationRow] = []

    def rowCount(self, parent: Any = None) -> int:
        if parent is not None and parent.isValid():
            return 0
        return len(self._rows)

    def data(self, index: Any, role: int = QtCore.Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        title = f"📌 {row.title}" if row.pinned else row.title
        values: dict[int, Any] = {
            QtCore.Qt.ItemDataRole.DisplayRole: f"{title}\n{row.snippet}" if row.snippet else title,
            QtCore.Qt.ItemDataRole.ToolTipRole: row.snippet or row.title,
            QtCore.Qt.ItemDataRole.AccessibleTextRole: row.title
            + (", pinned" if row.pinned else ""),
            IdRole: row.conversation_id,
            PinnedRole: row.pinned,
            MessageIdRole: row.message_id,
        }
        return values.get(role)

    def row(self, index: int) -> ConversationRow:
        return self._rows[index]

    def rows(self) -> list[ConversationRow]:
        return list(self._rows)

    def set_rows(self, rows: list[ConversationRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def index_of(self, conversation_id: str) -> int | None:
        for number, row in enumerate(self._rows):
            if row.conversation_id == conversation_id:
                return number
        return None


class ConversationSidebar(QtWidgets.QWidget):
    """Search box, New chat, and the list. Emits `open_requested` for a click."""

    open_requested = Signal(str)
    new_chat_requested = Signal()
    deleted = Signal(str)
    refreshed = Signal()
    searched = Signal(str)  # the query whose results are shown
    error = Signal(str)
    exported = Signal(Path)  # where a conversation was written

    def __init__(self, services: AppServices, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.setObjectName("sidebar")
        self.current_id: str | None = None
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.setSpacing(6)
        self.new_button = QtWidgets.QPushButton("New chat", self)
        self.new_button.setObjectName("newChat")
        self.new_button.setAccessibleName("New chat")
        self.new_button.setToolTip("New chat (Ctrl+N)")
        self.new_button.clicked.connect(self.new_chat_requested.emit)
        layout.addWidget(self.new_button)
        self.search = QtWidgets.QLineEdit(self)
        self.search.setObjectName("searchBox")
        self.search.setAccessibleName("Search conversations")
        self.search.setPlaceholderText("Search conversations (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        layout.addWidget(self.search)
        self.model = ConversationListModel(self)
        self.view = QtWidgets.QListView(self)
        self.view.setObjectName("conversationList")
        self.view.setAccessibleName("Conversations")
        self.view.setModel(self.model)
        self.view.setUniformItemSizes(False)
        self.view.setWordWrap(True)
        self.view.setTextElideMode(QtCore.Qt.TextElideMode.ElideRight)
        self.view.setContextMenuPolicy(QtCore.Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._menu)
        self.view.activated.connect(self._activated)
        self.view.clicked.connect(self._activated)
        layout.addWidget(self.view, 1)
        # In the list's place when it has nothing to show: why it is empty.
        self.empty = QtWidgets.QLabel(self)
        self.empty.setObjectName("conversationListEmpty")
        self.empty.setWordWrap(True)
        self.empty.setAlignment(QtCore.Qt.AlignmentFlag.AlignHCenter)
        self.empty.setVisible(False)
        layout.addWidget(self.empty)
        self._search_timer = QtCore.QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(lambda _t: self._search_timer.start())

    # -- loading -----------------------------------------------------------------------

    def refresh(self) -> None:
        store = self.services.store
        if store is None:
            return
        query = self.search.text().strip()
        if query:

            async def found() -> list[ConversationRow]:
                return rows_from_hits(await store.search(query, limit=SEARCH_LIMIT))

            call(self.services.engine, found(), self, lambda r: self._show(r, query), self._fail)
        else:

            async def listed() -> list[ConversationRow]:
                return rows_from_conversations(await store.list_conversations(limit=LIST_LIMIT))

            call(self.services.engine, listed(), self, lambda r: self._show(r, ""), self._fail)

    def _show(self, rows: object, query: str) -> None:
        if query != self.search.text().strip():
            return  # the user typed on: a newer search is coming
        assert isinstance(rows, list)
        self.model.set_rows(rows)
        self.empty.setText(
            f"No conversation mentions “{query}”." if query else "No conversations yet."
        )
        self.empty.setVisible(not rows)
        self.select(self.current_id)
        if query:
            self.searched.emit(query)
        self.refreshed.emit()

    def select(self, conversation_id: str | None) -> None:
        self.current_id = conversation_id
        index = self.model.index_of(conversation_id) if conversation_id else None
        selection = self.view.selectionModel()
        if index is None:
            selection.clearSelection()
            return
        selection.setCurrentIndex(
            self.model.index(index, 0), QtCore.QItemSelectionModel.SelectionFlag.ClearAndSelect
        )

    def _activated(self, index: QtCore.QModelIndex) -> None:
        conversation_id = index.data(IdRole)
        if conversation_id:
            self.current_id = conversation_id
            self.open_requested.emit(conversation_id)

    def _fail(self, error: object) -> None:
        sentence = sentence_for(error, "Loading the conversation list")
        if sentence:
            self.error.emit(sentence)

    # -- the context menu --------------------------------------------------------------

    def _menu(self, point: QtCore.QPoint) -> None:
        index = self.view.indexAt(point)
        if not index.isValid():
            return
        menu = self.context_menu(self.model.row(index.row()))
        menu.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.popup(self.view.viewport().mapToGlobal(point))

    def context_menu(self, row: ConversationRow) -> QtWidgets.QMenu:
        """The actions on one conversation; a managed one stays listed, disabled."""
        menu = QtWidgets.QMenu(self)
        menu.setToolTipsVisible(True)
        menu.addAction("Rename…", lambda: self.rename(row.conversation_id, ask=True))
        menu.addAction(
            "Unpin" if row.pinned else "Pin", lambda: self.pin(row.conversation_id, not row.pinned)
        )
        export = menu.addAction("Export…", lambda: self.export(row.conversation_id))
        if not self.services.context.policy.export_allowed:
            export.setEnabled(False)
            export.setToolTip(MANAGED_TEXT)
            export.setStatusTip(MANAGED_TEXT)
        menu.addSeparator()
        menu.addAction("Delete…", lambda: self.delete(row.conversation_id, ask=True))
        return menu

    def _after(self, coro: Any) -> None:
        call(self.services.engine, coro, self, lambda _r: self.refresh(), self._fail)

    def rename(self, conversation_id: str, title: str | None = None, *, ask: bool = False) -> None:
        store = self.services.store
        assert store is not None
        if ask:
            index = self.model.index_of(conversation_id)
            current = self.model.row(index).title if index is not None else ""
            title, ok = QtWidgets.QInputDialog.getText(
                self, "Rename conversation", "Title:", text=current
            )
            if not ok:
                return
        title = (title or "").strip()
        if title:
            self._after(store.rename_conversation(conversation_id, title))

    def pin(self, conversation_id: str, pinned: bool) -> None:
        store = self.services.store
        assert store is not None
        self._after(store.set_pinned(conversation_id, pinned))

    def delete(self, conversation_id: str, *, ask: bool = False) -> None:
        store = self.services.store
        assert store is not None
        if ask:
            answer = QtWidgets.QMessageBox.question(
                self,
                "Delete conversation",
                "Delete this conversation and all its messages? This cannot be undone.",
            )
            if answer != QtWidgets.QMessageBox.StandardButton.Yes:
                return

        async def work() -> None:
            await store.delete_conversation(conversation_id)

        def done(_result: object) -> None:
            self.deleted.emit(conversation_id)
            self.refresh()

        call(self.services.engine, work(), self, done, self._fail)

    def export(self, conversation_id: str, path: Path | None = None) -> None:
        store = self.services.store
        assert store is not None
        try:
            self.services.context.policy.require_export()
        except PolicyRefusedError as error:
            self.error.emit(str(error))
            return
        if path is None:
            title = next(
                (r.title for r in self.model.rows() if r.conversation_id == conversation_id), ""
            )
            chosen, kind = QtWidgets.QFileDialog.getSaveFileName(
                self,
                "Export conversation",
                str(Path.home() / f"{file_stem(title)}.md"),
                f"{MARKDOWN_FILES};;{JSON_FILES}",
            )
            if not chosen:
                return
            path = export_path(chosen, kind)
        if path.suffix.lower() == ".json":
            coro = store.export_json(path, [conversation_id])
        else:
            coro = store.export_markdown(path, [conversation_id])
        written = path
        call(self.services.engine, coro, self, lambda _r: self.exported.emit(written), self._fail)

    def focus_search(self) -> None:
        self.search.setFocus(QtCore.Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        if event.key() == QtCore.Qt.Key.Key_Delete and self.view.hasFocus():
            index = self.view.currentIndex()
            if index.isValid():
                self.delete(index.data(IdRole), ask=True)
                return
        super().keyPressEvent(event)
