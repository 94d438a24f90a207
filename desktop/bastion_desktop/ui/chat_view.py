"""The conversation pane: the messages of the shown branch, the reply streaming in, and
notices (a trimmed context, an error). It draws what `ChatController` reports and sends
the user's actions back to it; it never talks to the core itself."""

from __future__ import annotations

from bastion_desktop.core.events import (
    BlockedEvent,
    ContextTrimmedEvent,
    DoneEvent,
    ErrorEvent,
    GuardEvent,
    NoticeEvent,
    TokenEvent,
)
from bastion_desktop.core.inference.types import Role
from bastion_desktop.core.store import GuardEventRecord, MessageState, StoredMessage
from bastion_desktop.ui.chat_controller import ChatController, LoadedConversation
from bastion_desktop.ui.message_widget import Badge, MessageWidget, stats_line
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal

OFF_PROFILE = "off"


def confirm_link(parent: QtWidgets.QWidget, url: QtCore.QUrl) -> bool:
    """Ask before opening a link from a message: model output is untrusted, and the
    text of a link can say something other than where it goes."""
    box = QtWidgets.QMessageBox(parent)
    box.setObjectName("confirmLink")
    box.setWindowTitle("Open link?")
    box.setIcon(QtWidgets.QMessageBox.Icon.Question)
    box.setText("Open this link in your web browser?")
    box.setInformativeText(url.toDisplayString())
    box.setStandardButtons(
        QtWidgets.QMessageBox.StandardButton.Open | QtWidgets.QMessageBox.StandardButton.Cancel
    )
    box.setDefaultButton(QtWidgets.QMessageBox.StandardButton.Cancel)
    return box.exec() == QtWidgets.QMessageBox.StandardButton.Open


# How many messages of a conversation are built when it opens (and per "earlier" step).
SHOWN_AT_ONCE = 40


class ChatView(QtWidgets.QScrollArea):
    edit_requested = Signal(int, str)  # message id, its text (the composer takes it)

    def __init__(self, controller: ChatController, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setObjectName("chatView")
        self.setAccessibleName("Conversation")
        self.setWidgetResizable(True)
        self.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        container = QtWidgets.QWidget(self)
        container.setObjectName("chatContainer")
        self._layout = QtWidgets.QVBoxLayout(container)
        self._layout.setContentsMargins(24, 16, 24, 16)
        self._layout.setSpacing(12)
        self.placeholder = QtWidgets.QLabel(container)
        self.placeholder.setObjectName("placeholder")
        self.placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setText("Start a conversation: type a message below.")
        self.earlier = QtWidgets.QPushButton(container)
        self.earlier.setObjectName("earlierMessages")
        self.earlier.setAccessibleName("Show earlier messages")
        self.earlier.setVisible(False)
        self.earlier.clicked.connect(self.show_earlier)
        self._layout.addWidget(self.earlier, 0, QtCore.Qt.AlignmentFlag.AlignHCenter)
        self._layout.addWidget(self.placeholder)
        self._layout.addStretch(1)
        self.setWidget(container)
        self.messages: list[MessageWidget] = []
        self._loaded: LoadedConversation | None = None
        self._records: dict[int, GuardEventRecord] = {}
        self._first_shown = 0  # index in the loaded messages of the first one shown
        self.notice = QtWidgets.QLabel(container)
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.setVisible(False)
        self.notice.setAccessibleName("Notice")
        self._layout.insertWidget(self._layout.count() - 1, self.notice)
        self._streaming: MessageWidget | None = None
        self._follow = True
        self.model_name = "Assistant"
        # Confirmation is a seam for tests: they answer it without a modal loop.
        self.confirm_link = confirm_link
        self.opened_links: list[QtCore.QUrl] = []
        self.verticalScrollBar().rangeChanged.connect(self._keep_at_bottom)
        self.verticalScrollBar().valueChanged.connect(self._track_follow)

        controller.loaded.connect(self.show_conversation)
        controller.turn_started.connect(self._on_turn_started)
        controller.chat_event.connect(self._on_event)
        controller.turn_finished.connect(self._on_turn_finished)
        controller.error.connect(self.show_notice)

    # -- whole conversations -----------------------------------------------------------

    def clear(self) -> None:
        for widget in self.messages:
            self._layout.removeWidget(widget)
            widget.deleteLater()
        self.messages = []
        self._streaming = None
        self.show_notice("")

    def show_conversation(self, loaded: LoadedConversation | None) -> None:
        """Show a conversation: its latest `SHOWN_AT_ONCE` messages, and a button for
        the earlier ones (each message is a widget: building 2,000 of them at once froze
        the window for seconds)."""
        self.clear()
        self.placeholder.setVisible(loaded is None or not loaded.messages)
        self._loaded = loaded
        self._first_shown = 0
        if loaded is None:
            self._update_earlier()
            return
        self._records = {r.message_id: r for r in loaded.guard_events if r.message_id is not None}
        self._first_shown = max(0, len(loaded.messages) - SHOWN_AT_ONCE)
        for message in loaded.messages[self._first_shown :]:
            self._render(message, self._add(message.role, message.id))
        self._update_earlier()
        self._follow = True

    def show_earlier(self) -> None:
        """Put the previous `SHOWN_AT_ONCE` messages above the ones shown, keeping the
        view on what the user was reading."""
        loaded = self._loaded
        if loaded is None or self._first_shown == 0:
            return
        start = max(0, self._first_shown - SHOWN_AT_ONCE)
        bar = self.verticalScrollBar()
        from_bottom = bar.maximum() - bar.value()
        self._follow = False
        at = self._layout.indexOf(self.messages[0]) if self.messages else 1
        added = []
        for offset, message in enumerate(loaded.messages[start : self._first_shown]):
            widget = self._add(message.role, message.id, index=at + offset)
            self._render(message, widget)
            added.append(widget)
        if added:
            del self.messages[-len(added) :]  # _add appended them: they belong in front
            self.messages[:0] = added
        self._first_shown = start
        self._update_earlier()
        # The range grows once the layout has run: then keep the same distance from the
        # bottom, so the message being read stays where it was.
        QtCore.QTimer.singleShot(0, self, lambda: bar.setValue(bar.maximum() - from_bottom))

    def _update_earlier(self) -> None:
        count = self._first_shown
        self.earlier.setVisible(count > 0)
        plural = "s" if count != 1 else ""
        self.earlier.setText(f"Show earlier messages ({count:,} more message{plural})")

    def _render(self, message: StoredMessage, widget: MessageWidget) -> None:
        loaded = self._loaded
        assert loaded is not None
        widget.set_text(message.content)
        widget.set_state(message.state)
        decision = loaded.decisions.get(message.id)
        record = self._records.get(message.id)
        if decision is not None:
            retracted = message.role is Role.ASSISTANT and decision.blocked
            widget.set_badge(Badge.from_decision(decision, retracted=retracted))
        elif record is not None:
            badge = Badge.from_record(record, loaded.profile_names.get(record.profile_id))
            if message.role is Role.ASSISTANT and badge.verdict == "blocked":
                badge = Badge(
                    "withdrawn", badge.profile, badge.rail, badge.category, badge.explanation
                )
            widget.set_badge(badge)
        else:
            widget.set_badge(self._default_badge(message))
        if message.stats is not None:
            widget.set_stats(stats_line(message.stats))
        ids = loaded.siblings.get(message.id, [])
        if ids:
            index = ids.index(message.id)
            widget.set_alternatives(
                index + 1,
                len(ids),
                ids[index - 1] if index > 0 else None,
                ids[index + 1] if index + 1 < len(ids) else None,
            )
        widget.set_actions_enabled(True)

    def _default_badge(self, message: StoredMessage) -> Badge | None:
        profile = message.profile_id
        if profile is None or message.state is MessageState.STREAMING:
            return None
        if profile == OFF_PROFILE:
            return Badge("unchecked", profile, explanation="Guardrails were off.")
        if message.state is MessageState.BLOCKED:
            return Badge("blocked", profile)
        return Badge("passed", profile, explanation=f"The {profile} profile let it through.")

    def _add(self, role: Role, message_id: int | None, index: int | None = None) -> MessageWidget:
        author = "You" if role is Role.USER else self.model_name
        widget = MessageWidget(role, author, message_id, self.widget())
        widget.regenerate_requested.connect(self.controller.regenerate)
        widget.alternative_requested.connect(self.controller.select_alternative)
        widget.edit_requested.connect(lambda mid, w=widget: self.edit_requested.emit(mid, w.text))
        widget.link_requested.connect(self.open_link)
        # Before the notice and the trailing stretch (or where asked: earlier messages).
        self._layout.insertWidget(self._layout.count() - 2 if index is None else index, widget)
        widget.show()  # now, not at the layout's next queued show
        self.messages.append(widget)
        self.placeholder.setVisible(False)
        return widget

    # -- a turn ------------------------------------------------------------------------

    def _on_turn_started(self, kind: str, text: str) -> None:
        self.show_notice("")
        for widget in self.messages:
            widget.set_actions_enabled(False)
        if kind == "regenerate":
            self._drop_last(Role.ASSISTANT)
        elif kind == "edit":
            self._drop_from_last_question()
        if kind in ("send", "edit"):
            question = self._add(Role.USER, None)
            question.set_text(text)
        self._streaming = None
        self._follow = True

    def _drop_last(self, role: Role) -> None:
        if self.messages and self.messages[-1].role is role:
            widget = self.messages.pop()
            self._layout.removeWidget(widget)
            widget.deleteLater()

    def _drop_from_last_question(self) -> None:
        self._drop_last(Role.ASSISTANT)
        self._drop_last(Role.USER)

    def _reply_widget(self) -> MessageWidget:
        if self._streaming is None:
            self._streaming = self._add(Role.ASSISTANT, None)
        return self._streaming

    def _on_event(self, event: object) -> None:
        if isinstance(event, GuardEvent):
            self._on_guard(event)
        elif isinstance(event, TokenEvent):
            self._reply_widget().append(event.text)
        elif isinstance(event, BlockedEvent):
            self._on_blocked(event)
        elif isinstance(event, DoneEvent):
            reply = self._reply_widget()
            reply.flush()
            reply.set_stats(stats_line(event))
            if event.finish_reason == "cancelled":
                reply.set_state(MessageState.STOPPED)
        elif isinstance(event, ContextTrimmedEvent):
            self.show_notice(event.sentence)
        elif isinstance(event, NoticeEvent):
            self.show_notice(event.message)
        elif isinstance(event, ErrorEvent):
            if self._streaming is not None:
                self._streaming.flush()
            self.show_notice(event.message)

    def _on_guard(self, event: GuardEvent) -> None:
        if event.decision.stage.value == "output":
            # Something in the reply was masked as it streamed: the text shown is
            # already the masked text; the badge says what and why.
            self._reply_widget().set_badge(Badge.from_decision(event.decision))
            return
        question = self._last(Role.USER)
        if question is not None:
            question.set_badge(Badge.from_decision(event.decision))
            if event.decision.verdict.value == "masked" and event.decision.rewritten:
                question.set_text(event.decision.rewritten)

    def _on_blocked(self, event: BlockedEvent) -> None:
        if event.decision.stage.value == "input":
            question = self._last(Role.USER)
            if question is not None:
                question.set_badge(Badge.from_decision(event.decision))
                question.set_state(MessageState.BLOCKED)
        else:
            reply = self._reply_widget()
            reply.set_text("")
            reply.set_state(MessageState.BLOCKED)
            reply.set_badge(Badge.from_decision(event.decision, retracted=True))
        self.show_notice(event.decision.explanation)

    def _on_turn_finished(self) -> None:
        if self._streaming is not None:
            self._streaming.flush()

    def _last(self, role: Role) -> MessageWidget | None:
        for widget in reversed(self.messages):
            if widget.role is role:
                return widget
        return None

    # -- notices, links, scrolling ----------------------------------------------------

    def show_notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def open_link(self, url: QtCore.QUrl) -> None:
        if url.scheme().lower() not in ("http", "https", "mailto"):
            self.show_notice(f"Bastion does not open {url.scheme() or 'relative'} links.")
            return
        if self.confirm_link(self, url):
            self.opened_links.append(url)
            QtGui.QDesktopServices.openUrl(url)

    def _track_follow(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24

    def _keep_at_bottom(self, _low: int, high: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(high)
