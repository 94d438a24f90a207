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
from bastion_guardrails.decisions import GuardDecision


class MessageState(StrEnum):
    STREAMING = "streaming"
    COMPLETE = "complete"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"
    BLOCKED = "blocked"


class ConversationNotFoundError(BastionError):
    """No conversation has that id."""


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    model_id: str
    profile_id: str
    system_prompt: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: str
    role: Role
    content: str
    state: MessageState
    created_at: float
    model_id: str | None = None
    profile_id: str | None = None
    stats: GenerationStats | None = None


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


class ConversationStore(Protocol):
    async def create_conversation(
        self, *, title: str, model_id: str, profile_id: str, system_prompt: str
    ) -> Conversation: ...

    async def get_conversation(self, conversation_id: str) -> Conversation: ...

    async def messages(self, conversation_id: str) -> list[StoredMessage]: ...

    async def add_message(
        self,
        conversation_id: str,
        role: Role,
        content: str,
        state: MessageState,
        *,
        model_id: str | None = None,
        profile_id: str | None = None,
    ) -> StoredMessage: ...

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


class InMemoryConversationStore:
    """Conversations in memory only: gone when the process ends."""

    def __init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[int, StoredMessage] = {}
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
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation:
        try:
            return self._conversations[conversation_id]
        except KeyError:
            raise ConversationNotFoundError(f"No conversation with id {conversation_id}.") from None

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        await self.get_conversation(conversation_id)
        return [m for m in self._messages.values() if m.conversation_id == conversation_id]

    async def add_message(
        self,
        conversation_id: str,
        role: Role,
        content: str,
        state: MessageState,
        *,
        model_id: str | None = None,
        profile_id: str | None = None,
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
        )
        self._messages[message.id] = message
        self._conversations[conversation_id] = replace(conversation, updated_at=message.created_at)
        return message

    async def update_message(
        self,
        message_id: int,
        *,
        content: str,
        state: MessageState,
        stats: GenerationStats | None = None,
    ) -> None:
        message = self._messages[message_id]
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
            )
        )
