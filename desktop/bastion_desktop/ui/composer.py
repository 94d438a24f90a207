"""Where the user writes: Enter sends, Shift+Enter adds a line, Esc stops a reply (or
leaves an edit). While a reply streams the text box stays usable for the next message
but cannot send, and the Send button becomes Stop."""

from __future__ import annotations

from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal

_MAX_LINES = 8
# From this share of the context window on, the composer warns that it is filling up.
NEARLY_FULL = 0.8


class _MessageEdit(QtWidgets.QPlainTextEdit):
    submitted = Signal()
    escaped = Signal()

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
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


class Composer(QtWidgets.QFrame):
    send_requested = Signal(str)
    edit_requested = Signal(int, str)  # message id, new text
    stop_requested = Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("composer")
        self._busy = False
        self.editing: int | None = None
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(16, 8, 16, 12)
        layout.setSpacing(4)
        self.edit_banner = QtWidgets.QLabel(self)
        self.edit_banner.setObjectName("editBanner")
        self.edit_banner.setText("Editing a message: Enter resends it, Esc cancels.")
        self.edit_banner.setVisible(False)
        layout.addWidget(self.edit_banner)
        row = QtWidgets.QHBoxLayout()
        row.setSpacing(8)
        self.text = _MessageEdit(self)
        self.text.setObjectName("messageInput")
        self.text.setAccessibleName("Message")
        self.text.setPlaceholderText("Message  (Enter sends, Shift+Enter adds a line)")
        self.text.setTabChangesFocus(True)
        self.text.submitted.connect(self.submit)
        self.text.escaped.connect(self._escape)
        self.text.textChanged.connect(self._fit)
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

    def submit(self) -> None:
        if self._busy:
            return
        if not self.send_button.isEnabled():
            return  # nothing can be sent yet (the profile is opening): the text stays
        text = self.text.toPlainText().strip()
        if not text:
            return
        editing, self.editing = self.editing, None
        self.edit_banner.setVisible(False)
        self.text.clear()
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
