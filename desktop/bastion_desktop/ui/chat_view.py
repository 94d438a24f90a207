"""The conversation pane: the messages of the shown branch, the reply streaming in, and
notices (a trimmed context, an error). It draws what `ChatController` reports and sends
the user's actions back to it; it never talks to the core itself."""

from __future__ import annotations

import time
from collections.abc import Callable

from bastion_desktop.core.conversation_store import GuardEventRecord, MessageState, StoredMessage
from bastion_desktop.core.events import (
    BlockedEvent,
    ContextTrimmedEvent,
    ConversationEvent,
    DoneEvent,
    ErrorEvent,
    GuardEvent,
    LoadingEvent,
    MessageEvent,
    NoticeEvent,
    TokenEvent,
)
from bastion_desktop.core.inference.types import Role
from bastion_desktop.ui.chat_controller import ChatController, LoadedConversation
from bastion_desktop.ui.message_widget import (
    OFF_PROFILE,
    UNCHECKED,
    Badge,
    MessageWidget,
    stats_line,
)
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal
from bastion_guardrails.decisions import GuardDecision


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
# Messages are built newest first, a few per step of the event loop and for at most this
# long per step, so the window keeps painting (and the newest messages show first) while
# a conversation opens. A frame is 16 ms; layout and painting need the rest.
BUILD_STEP_MS = 3.0
# Message widgets of a closed conversation are kept (per role) to show the next one:
# refilling a widget costs a fraction of building one.
SPARES_KEPT = SHOWN_AT_ONCE


class ChatView(QtWidgets.QScrollArea):
    edit_requested = Signal(int, str)  # message id, its text (the composer takes it)
    # Every message asked for is built and drawn as saved: a conversation opened, the
    # earlier ones, a turn ended.
    shown = Signal()
    context_used = Signal(int, int)  # a reply finished: tokens now in use, of the window

    def __init__(self, controller: ChatController, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setObjectName("chatView")
        self.setAccessibleName("Conversation")
        self.setWidgetResizable(True)
        self.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._build_container()
        self.messages: list[MessageWidget] = []
        self._loaded: LoadedConversation | None = None
        self._records: dict[int, GuardEventRecord] = {}
        self._first_shown = 0  # index in the loaded messages of the first one shown
        self._to_build: list[StoredMessage] = []  # built from the end, above the shown ones
        self._build_timer = QtCore.QTimer(self)
        self._build_timer.setSingleShot(True)
        self._build_timer.setInterval(0)
        self._build_timer.timeout.connect(self._build_step)
        self._spares: dict[Role, list[MessageWidget]] = {role: [] for role in Role}
        self._spares_wanted: dict[Role, int] = {}
        self._spare_timer = QtCore.QTimer(self)
        self._spare_timer.setSingleShot(True)
        self._spare_timer.setInterval(0)
        self._spare_timer.timeout.connect(self._prepare_step)
        self._streaming: MessageWidget | None = None
        self._loading = False  # the reply's model is loading: its note says so
        self._notice_for: str | None = None  # the conversation whose turn just ended
        self._follow = True  # at the bottom: stay there as the reply grows
        self._from_bottom = 0  # otherwise: how far above the bottom the view is
        self._in_turn = False
        self.model_name = "Assistant"
        # The models' names by id, read once per opened conversation: each reply names
        # the model that wrote it. The main window sets it (it knows the registry).
        self.model_names: Callable[[], dict[str, str]] = dict
        # A guardrail profile's name by id, for the badges (the top bar knows them).
        self.profile_names: Callable[[str], str] = str
        self._names: dict[str, str] = {}
        # Confirmation is a seam for tests: they answer it without a modal loop.
        self.confirm_link = confirm_link
        self.opened_links: list[QtCore.QUrl] = []
        self.verticalScrollBar().rangeChanged.connect(self._keep_in_place)
        self.verticalScrollBar().valueChanged.connect(self._track_position)

        controller.loaded.connect(self.show_conversation)
        controller.turn_started.connect(self._on_turn_started)
        controller.chat_event.connect(self._on_event)
        controller.turn_finished.connect(self._on_turn_finished)
        controller.error.connect(self.show_notice)

    def _build_container(self) -> QtWidgets.QWidget:
        """The scrolled widget: the "earlier messages" button, the placeholder, the
        messages, the notice, and a stretch that keeps a short conversation at the top."""
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
        self.notice = QtWidgets.QLabel(container)
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.setVisible(False)
        self.notice.setAccessibleName("Notice")
        self._layout.insertWidget(self._layout.count() - 1, self.notice)
        self.setWidget(container)
        return container

    # -- whole conversations -----------------------------------------------------------

    @property
    def building(self) -> bool:
        """Whether messages asked for are still being built (`shown` follows)."""
        return bool(self._to_build)

    def clear(self) -> None:
        self._to_build = []
        self._build_timer.stop()
        for widget in self.messages:
            self._retire(widget)
        self.messages = []
        self._streaming = None

    def show_conversation(self, loaded: LoadedConversation | None) -> None:
        """Show a conversation: its latest `SHOWN_AT_ONCE` messages, newest first, a
        step at a time (see `BUILD_STEP_MS`), then a button for the earlier ones. Each
        message is a widget: building 2,000 of them at once froze the window for a
        minute, and even 40 in one go held it for a third of a second."""
        self.clear()
        # The conversation read back after its turn keeps what the turn said (an error,
        # older messages left out); another one starts without it.
        kept, self._notice_for = self._notice_for, None
        if loaded is None or loaded.conversation.id != kept:
            self.show_notice("")
        self.placeholder.setVisible(loaded is None or not loaded.messages)
        self._loaded = loaded
        self._first_shown = 0
        self._follow, self._from_bottom = True, 0
        self.earlier.setVisible(False)
        if loaded is None:
            self.shown.emit()
            return
        self._records = {r.message_id: r for r in loaded.guard_events if r.message_id is not None}
        self._names = self.model_names()
        model_id = loaded.conversation.model_id
        self.model_name = self._names.get(model_id, model_id)
        self._first_shown = max(0, len(loaded.messages) - SHOWN_AT_ONCE)
        self._to_build = list(loaded.messages[self._first_shown :])
        self._build_step()

    def show_earlier(self) -> None:
        """Put the previous `SHOWN_AT_ONCE` messages above the ones shown, keeping the
        view on what the user was reading."""
        loaded = self._loaded
        if loaded is None or self._first_shown == 0 or self._to_build:
            return
        start = max(0, self._first_shown - SHOWN_AT_ONCE)
        self._follow = False
        self.earlier.setVisible(False)
        self._to_build = list(loaded.messages[start : self._first_shown])
        self._first_shown = start
        self._build_step()

    def _build_step(self) -> None:
        """Build the next messages up from the bottom, for one step's worth of time."""
        began = time.perf_counter()
        while self._to_build:
            message = self._to_build.pop()
            self._render(message, self._add(message.role, message.id, top=True))
            if (time.perf_counter() - began) * 1000.0 >= BUILD_STEP_MS:
                break
        if self._to_build:
            self._build_timer.start()
            return
        self._update_earlier()
        self.shown.emit()

    def _update_earlier(self) -> None:
        count = self._first_shown
        self.earlier.setVisible(count > 0)
        plural = "s" if count != 1 else ""
        self.earlier.setText(f"Show earlier messages ({count:,} more message{plural})")

    def _render(self, message: StoredMessage, widget: MessageWidget) -> None:
        loaded = self._loaded
        assert loaded is not None
        if message.role is Role.ASSISTANT:
            # Each reply names the model that wrote it: the conversation's model may
            # have changed since.
            writer = message.model_id or loaded.conversation.model_id
            widget.author_label.setText(self._names.get(writer, writer))
        widget.set_text(message.content)
        widget.set_state(message.state)
        decision = loaded.decisions.get(message.id)
        record = self._records.get(message.id)
        if decision is not None:
            retracted = message.role is Role.ASSISTANT and decision.blocked
            widget.set_badge(self._badge(decision, retracted=retracted))
        elif record is not None:
            badge = Badge.from_record(record, self._profile_name(record.profile_id))
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

    def _profile_name(self, profile_id: str) -> str:
        loaded = self._loaded
        known = loaded.profile_names.get(profile_id) if loaded is not None else None
        return known or self.profile_names(profile_id)

    def _badge(self, decision: GuardDecision, *, retracted: bool = False) -> Badge:
        name = self._profile_name(decision.profile_id)
        return Badge.from_decision(decision, retracted=retracted, profile_name=name)

    def _default_badge(self, message: StoredMessage) -> Badge | None:
        if message.profile_id is None or message.state is MessageState.STREAMING:
            return None
        if message.role is Role.ASSISTANT and not message.content:
            return None  # stopped before its first word: there was nothing to check
        profile = self._profile_name(message.profile_id)
        if message.profile_id == OFF_PROFILE:
            return Badge("unchecked", profile, explanation=UNCHECKED)
        if message.state is MessageState.BLOCKED:
            return Badge("blocked", profile)
        return Badge("passed", profile, explanation=f"The {profile} profile let it through.")

    def _add(self, role: Role, message_id: int | None, *, top: bool = False) -> MessageWidget:
        """A message widget, a spare one refilled if there is one, at the bottom (before
        the notice and the trailing stretch) or above the messages shown."""
        author = "You" if role is Role.USER else self.model_name
        spares = self._spares[role]
        if spares:
            widget = spares.pop()
            widget.reuse(message_id, author)
        else:
            widget = self._new_widget(role, message_id, author)
        if top:
            at = self._layout.indexOf(self.messages[0]) if self.messages else None
            self.messages.insert(0, widget)
        else:  # a message of the turn starting: no actions until it is saved
            at = None
            self.messages.append(widget)
            widget.set_actions_enabled(False)
        self._layout.insertWidget(self._layout.count() - 2 if at is None else at, widget)
        widget.show()  # now, not at the layout's next queued show
        self.placeholder.setVisible(False)
        return widget

    def prepare_spares(self, count: int) -> None:
        """Build `count` spare message widgets of each role while the window is idle,
        one per step of the event loop, so the first conversation opened refills
        widgets rather than building them (about 10 ms each, the first one more)."""
        self._spares_wanted = {
            role: min(count, SPARES_KEPT) for role in (Role.USER, Role.ASSISTANT)
        }
        self._spare_timer.start(0)

    def _prepare_step(self) -> None:
        if self._to_build:  # a conversation is being shown: that comes first
            self._spare_timer.start(50)
            return
        wanted = self._spares_wanted
        role = max(wanted, key=lambda r: wanted[r])
        if wanted[role] <= 0:
            return
        wanted[role] -= 1
        widget = self._new_widget(role, None, self.model_name)
        if role is Role.ASSISTANT and not self._spares[role]:
            # The first code block's view loads the monospace font: 60 ms of the GUI
            # thread once, here rather than as a reply shows its first code.
            widget.set_text("```\n \n```")
        widget.set_text("")  # its text view is built on the first text: build it now
        widget.ensurePolished()  # the style sheet is applied at the first show otherwise
        self._spares[role].append(widget)
        self._spare_timer.start(0)

    def _new_widget(self, role: Role, message_id: int | None, author: str) -> MessageWidget:
        widget = MessageWidget(role, author, message_id, self.widget())
        widget.setVisible(False)
        widget.regenerate_requested.connect(self.controller.regenerate)
        widget.alternative_requested.connect(self.controller.select_alternative)
        widget.edit_requested.connect(lambda mid, w=widget: self.edit_requested.emit(mid, w.text))
        widget.link_requested.connect(self.open_link)
        return widget

    def _retire(self, widget: MessageWidget) -> None:
        """Take a message out of the view, keeping its widget for the next one."""
        self._layout.removeWidget(widget)
        spares = self._spares[widget.role]
        if len(spares) < SPARES_KEPT:
            widget.hide()
            spares.append(widget)
        else:
            widget.deleteLater()

    # -- a turn ------------------------------------------------------------------------

    def _on_turn_started(self, kind: str, text: str) -> None:
        self._in_turn = True
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
        self._loading = False
        self._follow = True

    def _drop_last(self, role: Role) -> None:
        if self.messages and self.messages[-1].role is role:
            self._retire(self.messages.pop())

    def _drop_from_last_question(self) -> None:
        self._drop_last(Role.ASSISTANT)
        self._drop_last(Role.USER)

    def _reply_widget(self) -> MessageWidget:
        if self._streaming is None:
            self._streaming = self._add(Role.ASSISTANT, None)
        return self._streaming

    def _on_event(self, event: object) -> None:
        if isinstance(event, ConversationEvent):
            self._on_conversation(event)
            return
        if isinstance(event, MessageEvent):
            self._on_saved(event.message)
            return
        self._on_reply_event(event)

    def _on_reply_event(self, event: object) -> None:
        if self._loading and not isinstance(event, LoadingEvent):
            self._loading_ended(answered=not isinstance(event, ErrorEvent))
        if isinstance(event, GuardEvent):
            self._on_guard(event)
        elif isinstance(event, LoadingEvent):
            # Seconds for a large model: the reply says so until its first words.
            self._reply_widget().set_note(f"Loading {self.model_name}…")
            self._loading = True
        elif isinstance(event, TokenEvent):
            self._reply_widget().append(event.text)
        elif isinstance(event, BlockedEvent):
            self._on_blocked(event)
        elif isinstance(event, DoneEvent):
            reply = self._reply_widget()
            reply.flush()
            reply.set_stats(stats_line(event))
            self.context_used.emit(event.prompt_tokens + event.tokens, event.context_length)
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

    def _on_conversation(self, event: ConversationEvent) -> None:
        """The turn created the conversation, or named it: what the view renders from
        is the controller's record of it, which the turn's events keep up to date."""
        self._loaded = self.controller.current
        if event.created:
            self._names = self.model_names()

    def _on_saved(self, message: StoredMessage) -> None:
        """A message of the turn as the store now has it: its widget takes its id, and,
        once it has ended, is drawn from the record as any saved message is."""
        widget = self._last(Role.USER) if message.role is Role.USER else self._reply_widget()
        if widget is None or widget.message_id not in (None, message.id):
            return
        widget.message_id = message.id
        if message.state is not MessageState.STREAMING and self._loaded is not None:
            self._render(message, widget)
            widget.set_actions_enabled(False)  # until the turn ends

    def _on_guard(self, event: GuardEvent) -> None:
        if event.decision.stage.value == "output":
            # Something in the reply was masked as it streamed: the text shown is
            # already the masked text; the badge says what and why.
            self._reply_widget().set_badge(self._badge(event.decision))
            return
        question = self._last(Role.USER)
        if question is not None:
            question.set_badge(self._badge(event.decision))
            if event.decision.verdict.value == "masked" and event.decision.rewritten:
                question.set_text(event.decision.rewritten)

    def _on_blocked(self, event: BlockedEvent) -> None:
        # The blocked message says why under itself; the notice only when there is none.
        if event.decision.stage.value == "input":
            question = self._last(Role.USER)
            if question is not None:
                question.set_badge(self._badge(event.decision))
                question.set_state(MessageState.BLOCKED)
            else:
                self.show_notice(event.decision.explanation)
        else:
            reply = self._reply_widget()
            reply.set_text("")
            reply.set_state(MessageState.BLOCKED)
            reply.set_badge(self._badge(event.decision, retracted=True))

    def _loading_ended(self, *, answered: bool) -> None:
        """The model has loaded, or never will (an error, a stop while it loaded): its
        note goes, and so does a reply that never got a word."""
        self._loading = False
        reply = self._streaming
        if reply is None:
            return
        reply.set_note("")
        if not answered and not reply.text and self.messages and self.messages[-1] is reply:
            self._retire(self.messages.pop())
            self._streaming = None

    def _on_turn_finished(self) -> None:
        self._in_turn = False
        self._notice_for = self.controller.conversation_id
        if self._loading:
            self._loading_ended(answered=False)
        if self._streaming is not None:
            self._streaming.flush()
        if self.controller.reading_back:
            return  # the conversation is read back and shown again (then `shown`)
        for widget in self.messages:
            widget.set_actions_enabled(True)
        self.shown.emit()

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

    def _track_position(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24
        self._from_bottom = bar.maximum() - value

    def _keep_in_place(self, _low: int, high: int) -> None:
        """The content's height changed: at the bottom, stay there; otherwise keep what
        is being read where it is. Outside a turn the change is above (earlier messages
        built, a conversation filling in), so that is the distance from the bottom; in a
        turn it is the reply growing below, so the view does not move."""
        if self._follow:
            self.verticalScrollBar().setValue(high)
        elif not self._in_turn:
            self.verticalScrollBar().setValue(high - self._from_bottom)
