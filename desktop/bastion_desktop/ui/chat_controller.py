"""`ChatController`: the GUI-thread owner of one chat turn at a time. It starts the
chat service's streams on the engine and relays their events as signals. The service
owns the turn (it creates the conversation and says, by id, what it saved and which
decision is about which message): the controller keeps `current`, the conversation
shown, up to date from those events, and reads the conversation back from the store
only when a turn ended without saying how (a bug, a forced stop). Tests wait on its
signals (DESIGN.md, "Threads and processes")."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from bastion_desktop.core.chat import ChatService, NewConversation
from bastion_desktop.core.conversation_store import (
    Conversation,
    ConversationStore,
    GuardEventRecord,
    StoredMessage,
)
from bastion_desktop.core.events import (
    BlockedEvent,
    ConversationEvent,
    DoneEvent,
    ErrorEvent,
    GuardEvent,
    MessageEvent,
)
from bastion_desktop.core.inference.types import Role
from bastion_desktop.ui.engine import Stream, call, stream
from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.qt import QtCore, Signal
from bastion_desktop.ui.services import AppServices
from bastion_guardrails.decisions import GuardDecision

log = logging.getLogger(__name__)

# After Stop, the model host is asked to stop between tokens; if the turn has not ended
# by then (a model still loading, a guard check running), its task is cancelled.
STOP_GRACE_MS = 3000


@dataclass(frozen=True)
class LoadedConversation:
    conversation: Conversation
    messages: list[StoredMessage]
    guard_events: list[GuardEventRecord]
    # For messages with alternatives: the ids of all versions, oldest first.
    siblings: dict[int, list[int]] = field(default_factory=dict)
    # Decisions seen live this session (they carry the explanation), by message id.
    decisions: dict[int, GuardDecision] = field(default_factory=dict)
    # The names of the profiles the guard events name ("Standard" for "standard").
    profile_names: dict[str, str] = field(default_factory=dict)


class ChatController(QtCore.QObject):
    loaded = Signal(object)  # LoadedConversation, or None for a new, empty chat
    turn_started = Signal(str, str)  # kind ("send", "regenerate", "edit"), the user's text
    chat_event = Signal(object)  # each ChatEvent of the turn (not `event`: QObject.event)
    turn_finished = Signal()  # the turn ended (done, blocked, stopped, failed)
    error = Signal(str)  # a sentence for the user
    conversations_changed = Signal()  # the sidebar should refresh
    busy_changed = Signal(bool)
    model_set = Signal(str)  # the open conversation's next turns use this model
    # The conversation shown was created or renamed by a turn (its Conversation record).
    conversation_changed = Signal(object)

    def __init__(self, services: AppServices, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.conversation_id: str | None = None
        self.current: LoadedConversation | None = None
        self._stream: Stream | None = None
        self._turn_ended = False  # the service said how the turn ended (done, blocked, error)
        # The live decisions (they carry the explanation) of the conversation shown, by
        # message id. Ids are only unique within one store, and a private chat's memory
        # store numbers from 1 like the history: they are dropped when another
        # conversation is shown, which then reads its badges from its own store.
        self._decisions: dict[int, GuardDecision] = {}
        self._decisions_for: str | None = None
        # True from the end of a turn whose saved state must be read back from the store
        # until it is shown (the view then waits for `loaded`).
        self.reading_back = False
        self._profile_names: dict[str, str] = {}  # read on the engine thread only
        # A private chat's service (memory only), while one is shown.
        self._private: ChatService | None = None
        self._stop_timer = QtCore.QTimer(self)
        self._stop_timer.setSingleShot(True)
        self._stop_timer.timeout.connect(self._force_stop)

    @property
    def busy(self) -> bool:
        return self._stream is not None

    @property
    def private(self) -> bool:
        """The chat shown is private: kept in memory only, never in the history."""
        return self._private is not None

    @property
    def chat(self) -> ChatService | None:
        if self._private is not None:
            # The profile the user picked checks private chats as well.
            if self.services.chat is not None:
                self._private.guard = self.services.chat.guard
            return self._private
        return self.services.chat

    @property
    def store(self) -> ConversationStore | None:
        if self._private is not None:
            return self._private.store
        return self.services.store

    # -- which conversation --------------------------------------------------------

    def new_chat(self, *, private: bool = False) -> None:
        """An empty chat; `private` keeps it in memory only (the caller checks that the
        policy allows it). A private chat shown before is dropped."""
        if self.busy:
            return
        self._private = self.services.private_chat() if private else None
        self.conversation_id, self.current = None, None
        self._forget_decisions()
        self.loaded.emit(None)

    def open(self, conversation_id: str) -> None:
        if self.busy:
            return
        self._private = None  # a saved conversation from the list
        self.conversation_id = conversation_id
        self._forget_decisions()
        self.reload()

    def _forget_decisions(self) -> None:
        self._decisions, self._decisions_for = {}, None

    def reload(self) -> None:
        conversation_id = self.conversation_id
        if conversation_id is None:
            self.loaded.emit(None)
            return
        call(
            self.services.engine,
            self._load(conversation_id),
            self,
            on_result=self._on_loaded,
            on_error=self._on_error,
        )

    async def _load(self, conversation_id: str) -> LoadedConversation:
        store = self.store
        assert store is not None
        conversation = await store.get_conversation(conversation_id)
        messages = await store.messages(conversation_id)
        events = await store.list_guard_events(conversation_id)
        siblings = {
            m.id: [s.id for s in await store.alternatives(m.id)]
            for m in messages
            if m.alternative_count > 1
        }
        checked_by = {e.profile_id for e in events} | {m.profile_id for m in messages}
        names = {p: self._profile_name(p) for p in checked_by if p is not None}
        return LoadedConversation(conversation, messages, events, siblings, {}, names)

    def _profile_name(self, profile_id: str) -> str:
        """The profile's name as the user knows it (its id if it is gone since)."""
        if profile_id not in self._profile_names:
            try:
                name = self.services.context.profile_library().get(profile_id).name
            except Exception:  # deleted, or broken since: the id still says which it was
                name = profile_id
            self._profile_names[profile_id] = name
        return self._profile_names[profile_id]

    def _on_loaded(self, result: object) -> None:
        assert isinstance(result, LoadedConversation)
        self.reading_back = False
        if result.conversation.id != self.conversation_id:
            return  # another conversation was opened meanwhile
        if self._decisions_for != result.conversation.id:
            self._decisions, self._decisions_for = {}, result.conversation.id
        shown = LoadedConversation(
            result.conversation,
            result.messages,
            result.guard_events,
            result.siblings,
            self._decisions,  # the live ones, kept as turns add to them
            result.profile_names,
        )
        self.current = shown
        self.loaded.emit(shown)

    def set_model(self, model_id: str) -> bool:
        """Answer the open conversation's next turns with `model_id` (the replies
        already written keep theirs); False when no saved conversation is open."""
        store, conversation_id = self.store, self.conversation_id
        if self.busy or store is None or conversation_id is None:
            return False

        def done(_result: object) -> None:
            current = self.current
            if current is not None and current.conversation.id == conversation_id:
                changed = dataclasses.replace(current.conversation, model_id=model_id)
                self.current = dataclasses.replace(current, conversation=changed)
            self.model_set.emit(model_id)

        call(
            self.services.engine,
            store.set_conversation_model(conversation_id, model_id),
            self,
            on_result=done,
            on_error=self._on_error,
        )
        return True

    def select_alternative(self, message_id: int) -> None:
        store = self.store
        if self.busy or store is None:
            return
        call(
            self.services.engine,
            store.select_alternative(message_id),
            self,
            on_result=lambda _r: self.reload(),
            on_error=self._on_error,
        )

    # -- turns -----------------------------------------------------------------------

    def send(self, text: str) -> bool:
        text = text.strip()
        if self.busy or not text:
            return False
        chat, store = self.chat, self.store
        assert chat is not None
        assert store is not None
        params = self.services.sampling()
        existing = self.conversation_id
        context = self.services.context

        async def turn() -> AsyncIterator[object]:
            if existing is not None:
                target: str | NewConversation = existing
            else:
                # Off the loop: it may write the starter or hash a model (AllowedModels).
                model_id, _path = await asyncio.to_thread(context.resolve_model, None)
                target = NewConversation(model_id, context.settings.system_prompt)
            async for event in chat.send(target, text, params):
                yield event

        self._start("send", text, turn)
        return True

    def regenerate(self, reply_id: int) -> None:
        chat, conversation_id = self.chat, self.conversation_id
        if self.busy or chat is None or conversation_id is None:
            return
        params = self.services.sampling()
        self._start("regenerate", "", lambda: chat.regenerate(conversation_id, reply_id, params))

    def edit_and_resend(self, message_id: int, text: str) -> bool:
        chat, conversation_id = self.chat, self.conversation_id
        text = text.strip()
        if self.busy or chat is None or conversation_id is None or not text:
            return False
        params = self.services.sampling()
        self._start(
            "edit",
            text,
            lambda: chat.edit_and_resend(conversation_id, message_id, text, params),
        )
        return True

    def stop(self) -> None:
        """Stop the reply, keeping what was written so far."""
        if self._stream is None:
            return
        chat = self.chat
        if chat is not None and self.services.engine.running:
            # On the engine loop: the model host's cancel is not for other threads.
            self.services.engine.loop.call_soon_threadsafe(chat.cancel)
        self._stop_timer.start(STOP_GRACE_MS)

    def _force_stop(self) -> None:
        if self._stream is not None:
            self._stream.cancel()

    def _start(self, kind: str, text: str, make: object) -> None:
        self._turn_ended = False
        current = self.current
        if current is not None:
            # What the view drops as the turn starts: the reply regenerated, or the
            # question edited and its reply (they stay in the store as alternatives).
            messages = current.messages
            drops: dict[str, tuple[Role, ...]] = {
                "regenerate": (Role.ASSISTANT,),
                "edit": (Role.ASSISTANT, Role.USER),
            }
            for role in drops.get(kind, ()):
                if messages and messages[-1].role is role:
                    messages.pop()
        handle = stream(self.services.engine, make, self)  # type: ignore[arg-type]
        handle.item.connect(self._on_item)
        handle.finished.connect(self._on_finished)
        handle.failed.connect(self._on_failed)
        self._stream = handle
        self.busy_changed.emit(True)
        self.turn_started.emit(kind, text)

    def _on_item(self, item: object) -> None:
        if isinstance(item, ConversationEvent):
            self._take_conversation(item)
        elif isinstance(item, MessageEvent):
            self._take_message(item)
        elif isinstance(item, GuardEvent | BlockedEvent) and item.message_id is not None:
            self._decisions[item.message_id] = item.decision
        if isinstance(item, DoneEvent | BlockedEvent | ErrorEvent):
            self._turn_ended = True
        self.chat_event.emit(item)

    def _take_conversation(self, event: ConversationEvent) -> None:
        conversation = event.conversation
        if event.created:
            self.conversation_id = conversation.id
            self._decisions, self._decisions_for = {}, conversation.id
            self.current = LoadedConversation(conversation, [], [], {}, self._decisions)
            self.conversations_changed.emit()
        elif self.current is not None and self.current.conversation.id == conversation.id:
            self.current = dataclasses.replace(self.current, conversation=conversation)
        self.conversation_changed.emit(conversation)

    def _take_message(self, event: MessageEvent) -> None:
        """Keep `current` as the store has it: the message replaced by its new record,
        or added after the others."""
        current, message = self.current, event.message
        if current is None or current.conversation.id != message.conversation_id:
            return
        messages = current.messages
        if messages and messages[-1].id == message.id:
            messages[-1] = message
        else:
            messages.append(message)
        if event.alternatives:
            current.siblings[message.id] = list(event.alternatives)

    def _on_failed(self, error: object) -> None:
        self._on_error(error)
        self._on_finished()

    def _on_finished(self) -> None:
        self._stop_timer.stop()
        handle, self._stream = self._stream, None
        if handle is not None:
            handle.deleteLater()
        # A turn that ended without saying how (a bug, a stop that had to cancel it) may
        # have saved more than it said: the store is read back, the only guess-free way.
        self.reading_back = not self._turn_ended and self.conversation_id is not None
        self.busy_changed.emit(False)
        self.turn_finished.emit()
        self.conversations_changed.emit()
        if self.reading_back:
            self.reload()

    def _on_error(self, error: object) -> None:
        sentence = sentence_for(error, "The chat")
        if sentence:
            self.error.emit(sentence)
