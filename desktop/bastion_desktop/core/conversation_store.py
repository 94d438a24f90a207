"""Where conversations live. `ConversationStore` is what the chat service needs; the
in-memory store serves ephemeral chats and tests, and the encrypted SQLite store
implements the same protocol."""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.inference.types import GenerationStats, Role
from bastion_guardrails.decisions import GuardDecision, Judgement


class MessageState(StrEnum):
    STREAMING = "streaming"
    COMPLETE = "complete"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"
    BLOCKED = "blocked"


class ConversationNotFoundError(BastionError):
    """No conversation has that id."""


class MessageNotFoundError(BastionError):
    """No message has that id."""


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    model_id: str
    profile_id: str
    system_prompt: str
    created_at: float
    updated_at: float
    pinned: bool = False
    archived: bool = False


@dataclass(frozen=True)
class StoredMessage:
    """One message of a conversation.

    Messages form a tree: a regenerated reply or an edited question is a sibling of the
    message it replaces (same `parent_id`), so nothing is overwritten. `messages()`
    returns the branch being shown; `alternative_number` of `alternative_count` says
    which sibling this is (for a "2 / 3" switcher).
    """

    id: int
    conversation_id: str
    role: Role
    content: str
    state: MessageState
    created_at: float
    model_id: str | None = None
    profile_id: str | None = None
    stats: GenerationStats | None = None
    parent_id: int | None = None
    alternative_number: int = 1
    alternative_count: int = 1


@dataclass(frozen=True)
class GuardEventRecord:
    """A guardrail decision as recorded: which rail decided what, never the text."""

    conversation_id: str
    message_id: int | None
    verdict: str
    stage: str
    profile_id: str
    rail: str | None
    category: str | None
    latency_ms: float
    created_at: float
    judgement: Judgement | None = None  # who flagged it (a content-safety block)


class ConversationStore(Protocol):
    async def create_conversation(
        self, *, title: str, model_id: str, profile_id: str, system_prompt: str
    ) -> Conversation: ...

    async def get_conversation(self, conversation_id: str) -> Conversation: ...

    async def rename_conversation(self, conversation_id: str, title: str) -> None: ...

    async def set_conversation_model(self, conversation_id: str, model_id: str) -> None:
        """Answer the conversation's next turns with `model_id`; the replies already
        written keep the model that wrote them (StoredMessage.model_id)."""
        ...

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        """The branch being shown, oldest first."""
        ...

    async def add_message(
        self,
        conversation_id: str,
        role: Role,
        content: str,
        state: MessageState,
        *,
        model_id: str | None = None,
        profile_id: str | None = None,
        after: int | None = None,
    ) -> StoredMessage:
        """Add a message after `after` (a reply after the question it answers), or else
        after the message shown last; it becomes the one shown."""
        ...

    async def update_message(
        self,
        message_id: int,
        *,
        content: str,
        state: MessageState,
        stats: GenerationStats | None = None,
    ) -> None: ...

    async def record_guard_event(
        self, conversation_id: str, message_id: int | None, decision: GuardDecision
    ) -> None: ...

    async def list_guard_events(self, conversation_id: str) -> list[GuardEventRecord]:
        """The conversation's recorded decisions, oldest first."""
        ...

    async def branch_from(self, message_id: int) -> None:
        """Make the next message added to that conversation an alternative to
        `message_id` (regenerate, edit): the shown branch ends just before it."""
        ...

    async def alternatives(self, message_id: int) -> list[StoredMessage]:
        """The message and its siblings, oldest first."""
        ...

    async def select_alternative(self, message_id: int) -> None:
        """Show the branch through `message_id`, down to its newest reply."""
        ...


class InMemoryConversationStore:
    """Conversations in memory only: gone when the process ends."""

    def __init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[int, StoredMessage] = {}
        # The last message of the branch each conversation shows (None: empty).
        self._shown: dict[str, int | None] = {}
        self._ids = itertools.count(1)
        self.guard_events: list[GuardEventRecord] = []

    async def create_conversation(
        self, *, title: str, model_id: str, profile_id: str, system_prompt: str
    ) -> Conversation:
        now = time.time()
        conversation = Conversation(
            uuid.uuid4().hex, title, model_id, profile_id, system_prompt, now, now
        )
        self._conversations[conversation.id] = conversation
        self._shown[conversation.id] = None
        return conversation

    async def rename_conversation(self, conversation_id: str, title: str) -> None:
        conversation = await self.get_conversation(conversation_id)
        self._conversations[conversation_id] = replace(conversation, title=title)

    async def set_conversation_model(self, conversation_id: str, model_id: str) -> None:
        conversation = await self.get_conversation(conversation_id)
        self._conversations[conversation_id] = replace(conversation, model_id=model_id)

    async def get_conversation(self, conversation_id: str) -> Conversation:
        try:
            return self._conversations[conversation_id]
        except KeyError:
            raise ConversationNotFoundError(f"No conversation with id {conversation_id}.") from None

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        await self.get_conversation(conversation_id)
        branch: list[StoredMessage] = []
        message_id = self._shown[conversation_id]
        while message_id is not None:
            message = self._numbered(self._messages[message_id])
            branch.append(message)
            message_id = message.parent_id
        return branch[::-1]

    async def add_message(
        self,
        conversation_id: str,
        role: Role,
        content: str,
        state: MessageState,
        *,
        model_id: str | None = None,
        profile_id: str | None = None,
        after: int | None = None,
    ) -> StoredMessage:
        conversation = await self.get_conversation(conversation_id)
        message = StoredMessage(
            next(self._ids),
            conversation_id,
            role,
            content,
            state,
            time.time(),
            model_id,
            profile_id,
            parent_id=self._shown[conversation_id] if after is None else after,
        )
        self._messages[message.id] = message
        self._shown[conversation_id] = message.id
        self._conversations[conversation_id] = replace(conversation, updated_at=message.created_at)
        return self._numbered(message)

    async def update_message(
        self,
        message_id: int,
        *,
        content: str,
        state: MessageState,
        stats: GenerationStats | None = None,
    ) -> None:
        message = self._message(message_id)
        self._messages[message_id] = replace(
            message, content=content, state=state, stats=stats or message.stats
        )

    async def record_guard_event(
        self, conversation_id: str, message_id: int | None, decision: GuardDecision
    ) -> None:
        self.guard_events.append(
            GuardEventRecord(
                conversation_id,
                message_id,
                decision.verdict.value,
                decision.stage.value,
                decision.profile_id,
                decision.rail,
                decision.category,
                decision.latency_ms,
                time.time(),
                decision.judgement,
            )
        )

    async def list_guard_events(self, conversation_id: str) -> list[GuardEventRecord]:
        await self.get_conversation(conversation_id)
        return [e for e in self.guard_events if e.conversation_id == conversation_id]

    async def branch_from(self, message_id: int) -> None:
        message = self._message(message_id)
        self._shown[message.conversation_id] = message.parent_id

    async def alternatives(self, message_id: int) -> list[StoredMessage]:
        return [self._numbered(m) for m in self._siblings(self._message(message_id))]

    async def select_alternative(self, message_id: int) -> None:
        message = self._message(message_id)
        while children := [m for m in self._messages.values() if m.parent_id == message.id]:
            message = children[-1]
        self._shown[message.conversation_id] = message.id

    def _message(self, message_id: int) -> StoredMessage:
        try:
            return self._messages[message_id]
        except KeyError:
            raise MessageNotFoundError(f"No message with id {message_id}.") from None

    def _siblings(self, message: StoredMessage) -> list[StoredMessage]:
        return [
            m
            for m in self._messages.values()
            if m.conversation_id == message.conversation_id and m.parent_id == message.parent_id
        ]

    def _numbered(self, message: StoredMessage) -> StoredMessage:
        siblings = [m.id for m in self._siblings(message)]
        return replace(
            message,
            alternative_number=siblings.index(message.id) + 1,
            alternative_count=len(siblings),
        )
