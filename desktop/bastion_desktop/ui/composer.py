"""Where the user writes: Enter sends, Shift+Enter adds a line, Esc stops a reply (or
leaves an edit). While a reply streams the text box stays usable for the next message
but cannot send, and the Send button becomes Stop. Text files can be attached (the +
button, File > Attach files, or dropped or pasted onto the box): each shows as a chip
above the text until the message is sent with it."""

from __future__ import annotations

from pathlib import Path

from bastion_desktop.core.attachments import (
    Attachment,
    AttachmentError,
    read_attachment,
    with_attachments,
)
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal

_MAX_LINES = 8
# A long file name is shortened in the middle to this width, in pixels, on its chip.
_CHIP_NAME_WIDTH = 220
# From this share of the context window on, the composer warns that it is filling up.
NEARLY_FULL = 0.8


_FILE_FILTER = (
    "Text and code (*.txt *.md *.csv *.json *.log *.py *.js *.ts *.c *.cpp *.h *.rs *.go "
    "*.java *.sh *.sql *.html *.css *.xml *.yaml *.yml *.toml *.ini);;All files (*)"
)


def _local_files(mime: QtCore.QMimeData) -> list[Path]:
    """The files a drop or a paste carries; none when it carries anything else."""
    if not mime.hasUrls():
        return []
    urls = mime.urls()
    if not urls or not all(url.isLocalFile() for url in urls):
        return []
    return [Path(url.toLocalFile()) for url in urls]


def _size_text(size: int) -> str:
    return f"{size:,} bytes" if size < 1024 else f"{size / 1024:,.0f} KB"


def _take_files(event: QtGui.QDropEvent) -> list[Path]:
    """The files a drag carries, taken as a copy; none when it carries something else.
    Never a move: Windows' Explorer deletes the file a drop target says it moved."""
    files = _local_files(event.mimeData())
    if files:
        event.setDropAction(QtCore.Qt.DropAction.CopyAction)
        event.accept()
    return files


class _MessageEdit(QtWidgets.QPlainTextEdit):
    """The text box. Files dropped or pasted on it are attached, not typed as paths,
    also while a reply streams and the box is read-only."""

    submitted = Signal()
    escaped = Signal()
    files_dropped = Signal(list)  # of Path

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        if not _take_files(event):
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QtGui.QDragMoveEvent) -> None:
        if not _take_files(event):
            super().dragMoveEvent(event)

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        files = _take_files(event)
        if files:
            self.files_dropped.emit(files)
        else:
            super().dropEvent(event)

    def canInsertFromMimeData(self, source: QtCore.QMimeData) -> bool:
        return bool(_local_files(source)) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QtCore.QMimeData) -> None:
        files = _local_files(source)  # a paste of files copied in a file manager
        if files:
            self.files_dropped.emit(files)
        else:
            super().insertFromMimeData(source)

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        if event.matches(QtGui.QKeySequence.StandardKey.Paste):
            files = _local_files(QtWidgets.QApplication.clipboard().mimeData())
            if files:  # read-only while a reply streams, the box would ignore them
                self.files_dropped.emit(files)
                return
        key = event.key()
        if key in (QtCore.Qt.Key.Key_Return, QtCore.Qt.Key.Key_Enter):
            if event.modifiers() & QtCore.Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submitted.emit()
            return
        if key == QtCore.Qt.Key.Key_Escape:
            self.escaped.emit()
            return
        super().keyPressEvent(event)


class _Chip(QtWidgets.QFrame):
    """One attached file: its name and size, and a button that takes it off."""

    removed = Signal(object)  # the Path

    def __init__(self, path: Path, attachment: Attachment, parent: QtWidgets.QWidget) -> None:
        super().__init__(parent)
        self.path = path
        self.setObjectName("attachmentChip")
        self.setToolTip(str(path))
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(8, 2, 2, 2)
        row.setSpacing(4)
        self.label = QtWidgets.QLabel(self)
        name = self.label.fontMetrics().elidedText(
            attachment.name, QtCore.Qt.TextElideMode.ElideMiddle, _CHIP_NAME_WIDTH
        )
        self.label.setText(f"{name} · {_size_text(attachment.size)}")
        row.addWidget(self.label)
        self.remove_button = QtWidgets.QToolButton(self)
        self.remove_button.setText("\N{MULTIPLICATION SIGN}")
        self.remove_button.setAutoRaise(True)
        self.remove_button.setAccessibleName(f"Remove {attachment.name}")
        self.remove_button.setToolTip("Do not send this file")
        self.remove_button.clicked.connect(lambda: self.removed.emit(path))
        row.addWidget(self.remove_button)


class Composer(QtWidgets.QFrame):
    send_requested = Signal(str)
    edit_requested = Signal(int, str)  # message id, new text
    stop_requested = Signal()
    attach_failed = Signal(str)  # the sentences saying why files were not attached

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composer")
        self._busy = False
        self.editing: int | None = None
        self._attached: list[tuple[Path, Attachment]] = []
        self._last_folder = ""
        self.setAcceptDrops(True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(16, 8, 16, 12)
        layout.setSpacing(4)
        self.edit_banner = QtWidgets.QLabel(self)
        self.edit_banner.setObjectName("editBanner")
        self.edit_banner.setText("Editing a message: Enter resends it, Esc cancels.")
        self.edit_banner.setVisible(False)
        layout.addWidget(self.edit_banner)
        self.chip_area = self._chip_row()
        layout.addWidget(self.chip_area)
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(8)
        self.attach_button = self._attach_button()
        row.addWidget(self.attach_button, 0, QtCore.Qt.AlignmentFlag.AlignBottom)
        self.text = _MessageEdit(self)
        self.text.setObjectName("messageInput")
        self.text.setAccessibleName("Message")
        self.text.setPlaceholderText("Message  (Enter sends, Shift+Enter adds a line)")
        self.text.setTabChangesFocus(True)
        self.text.submitted.connect(self.submit)
        self.text.escaped.connect(self._escape)
        self.text.textChanged.connect(self._fit)
        self.text.files_dropped.connect(self.attach_files)
        row.addWidget(self.text, 1)
        self.send_button = QtWidgets.QPushButton("Send", self)
        self.send_button.setObjectName("sendButton")
        self.send_button.setAccessibleName("Send")
        self.send_button.setDefault(False)
        self.send_button.clicked.connect(self._button)
        row.addWidget(self.send_button, 0, QtCore.Qt.AlignmentFlag.AlignBottom)
        layout.addLayout(row)
        self.context_use = QtWidgets.QLabel(self)
        self.context_use.setObjectName("contextUse")
        self.context_use.setAccessibleName("Context used")
        self.context_use.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight)
        self.context_use.setVisible(False)
        layout.addWidget(self.context_use)
        self._fit()

    def _chip_row(self) -> QtWidgets.QScrollArea:
        """Where the attached files show, above the text, in one row that scrolls
        sideways when they are many (it never widens the window); hidden while there
        are none. `chips` holds them."""
        area = QtWidgets.QScrollArea(self)
        area.setObjectName("attachments")
        area.setAccessibleName("Attached files")
        area.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        area.setWidgetResizable(True)
        area.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        area.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.chips = QtWidgets.QWidget(area)
        row = QtWidgets.QHBoxLayout(self.chips)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(6)
        row.addStretch(1)
        area.setWidget(self.chips)
        chip_height = self.fontMetrics().height() + 16
        area.setFixedHeight(chip_height + area.horizontalScrollBar().sizeHint().height())
        area.setVisible(False)
        return area

    def _attach_button(self) -> QtWidgets.QToolButton:
        button = QtWidgets.QToolButton(self)
        button.setObjectName("attachButton")
        button.setText("+")
        button.setAccessibleName("Attach files")
        button.setToolTip("Attach text files: notes, code, CSV, JSON (Ctrl+O)")
        button.clicked.connect(self.choose_files)
        return button

    @property
    def busy(self) -> bool:
        return self._busy

    def set_busy(self, busy: bool) -> None:
        """A reply is streaming: sending waits, the button stops it."""
        self._busy = busy
        self.send_button.setText("Stop" if busy else "Send")
        self.send_button.setAccessibleName("Stop reply" if busy else "Send")
        self.send_button.setToolTip("Stop the reply (Esc)" if busy else "Send (Enter)")
        self.text.setReadOnly(busy)

    def show_context(self, used: int, window: int) -> None:
        """How much of the model's context window the conversation filled at its last
        reply (`used` of `window` tokens); nothing when that is not known."""
        if used <= 0 or window <= 0:
            self.context_use.setVisible(False)
            return
        share = min(1.0, used / window)
        text = f"Context: {used:,} of {window:,} tokens ({share:.0%})"
        if share >= NEARLY_FULL:
            text += ". Older messages will soon be left out of what the model reads"
        self.context_use.setText(text)
        self.context_use.setProperty("nearlyFull", share >= NEARLY_FULL)
        self.context_use.style().unpolish(self.context_use)
        self.context_use.style().polish(self.context_use)
        self.context_use.setToolTip(
            "What the model reads at each turn: this conversation's messages, up to the "
            "model's context window. When it is full the oldest messages are left out of "
            "what the model reads; they stay in the history."
        )
        self.context_use.setVisible(True)

    def begin_edit(self, message_id: int, text: str) -> None:
        self.editing = message_id
        self.text.setPlainText(text)
        self.edit_banner.setVisible(True)
        self.text.setFocus()
        self.text.moveCursor(QtGui.QTextCursor.MoveOperation.End)

    def cancel_edit(self) -> None:
        if self.editing is not None:
            self.editing = None
            self.edit_banner.setVisible(False)
            self.text.clear()

    @property
    def attachments(self) -> list[Attachment]:
        return [attachment for _path, attachment in self._attached]

    def choose_files(self) -> None:
        """Ask for text files to attach (the + button, File > Attach files)."""
        names, _filter = QtWidgets.QFileDialog.getOpenFileNames(
            self, "Attach text files", self._last_folder, _FILE_FILTER
        )
        if names:
            self._last_folder = str(Path(names[0]).parent)
            self.attach_files([Path(name) for name in names])
        self.text.setFocus()

    def attach_files(self, paths: list[Path]) -> None:
        """Attach each file that can be; for those that cannot, `attach_failed` says why,
        once for all of them (the text typed and the files attached already are kept). A
        file attached already is not attached twice."""
        refused: list[str] = []
        for path in paths:
            if any(path == attached for attached, _a in self._attached):
                continue
            already = sum(attachment.size for attachment in self.attachments)
            try:
                attachment = read_attachment(path, already)
            except AttachmentError as error:
                refused.append(str(error))
                continue
            self._attached.append((path, attachment))
            chip = _Chip(path, attachment, self.chips)
            chip.removed.connect(self.remove_attachment)
            layout = self.chips.layout()
            assert isinstance(layout, QtWidgets.QHBoxLayout)
            layout.insertWidget(layout.count() - 1, chip)
        self.chip_area.setVisible(bool(self._attached))
        if refused:
            self.attach_failed.emit(" ".join(refused))

    def remove_attachment(self, path: Path) -> None:
        self._attached = [(p, a) for p, a in self._attached if p != path]
        for chip in self.chips.findChildren(_Chip):
            if chip.path == path:
                chip.deleteLater()
        self.chip_area.setVisible(bool(self._attached))

    def clear_attachments(self) -> None:
        for path, _attachment in list(self._attached):
            self.remove_attachment(path)

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        _take_files(event)

    def dragMoveEvent(self, event: QtGui.QDragMoveEvent) -> None:
        _take_files(event)

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        files = _take_files(event)
        if files:
            self.attach_files(files)

    def submit(self) -> None:
        if self._busy:
            return
        if not self.send_button.isEnabled():
            return  # nothing can be sent yet (the profile is opening): the text stays
        text = with_attachments(self.text.toPlainText(), self.attachments)
        if not text:
            return
        editing, self.editing = self.editing, None
        self.edit_banner.setVisible(False)
        self.text.clear()
        self.clear_attachments()
        if editing is not None:
            self.edit_requested.emit(editing, text)
        else:
            self.send_requested.emit(text)

    def _button(self) -> None:
        if self._busy:
            self.stop_requested.emit()
        else:
            self.submit()

    def _escape(self) -> None:
        if self._busy:
            self.stop_requested.emit()
        else:
            self.cancel_edit()

    def _fit(self) -> None:
        """Grow with the text, up to a few lines, then scroll."""
        metrics = self.text.fontMetrics()
        lines = max(1, min(_MAX_LINES, int(self.text.document().size().height())))
        margins = self.text.contentsMargins()
        height = lines * metrics.lineSpacing() + 2 * int(self.text.document().documentMargin())
        self.text.setFixedHeight(height + margins.top() + margins.bottom() + 4)
