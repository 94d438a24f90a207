"""What `ChatService.send` yields: plain, frozen data with a `type` tag, so the CLI can
print it as JSON and the UI can relay it as Qt signals without the core knowing Qt."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from bastion_desktop.core.conversation_store import Conversation, StoredMessage
from bastion_guardrails.decisions import GuardDecision


@dataclass(frozen=True)
class ConversationEvent:
    """The conversation the turn writes to: when `send` creates it (`created`), and again
    once it is named after its first message (after the guardrails checked that)."""

    type: ClassVar[str] = "conversation"
    conversation: Conversation
    created: bool


@dataclass(frozen=True)
class MessageEvent:
    """A message as it was saved: the user's when it is written, the reply when its first
    words are written and again as it ends (complete, stopped, blocked, interrupted).
    `alternatives` are the ids of all its versions, oldest first, when it has others (a
    regenerated reply, an edited question)."""

    type: ClassVar[str] = "message"
    message: StoredMessage
    alternatives: tuple[int, ...] = ()


@dataclass(frozen=True)
class GuardEvent:
    """A guardrail decision, and the saved message it is about (None for what is checked
    but not saved as a message, such as an API request's system prompt)."""

    type: ClassVar[str] = "guard"
    decision: GuardDecision
    message_id: int | None = None


@dataclass(frozen=True)
class TokenEvent:
    type: ClassVar[str] = "token"
    text: str


@dataclass(frozen=True)
class ContextTrimmedEvent:
    type: ClassVar[str] = "context_trimmed"
    dropped_messages: int
    prompt_tokens: int
    context_length: int

    @property
    def sentence(self) -> str:
        plural = "s" if self.dropped_messages != 1 else ""
        return (
            f"The {self.dropped_messages} oldest message{plural} of this conversation were "
            f"left out so it fits the model's {self.context_length:,}-token context."
        )


@dataclass(frozen=True)
class DoneEvent:
    type: ClassVar[str] = "done"
    message_id: int
    finish_reason: str
    tokens: int
    prompt_tokens: int
    tokens_per_second: float
    ttft_ms: float
    total_ms: float
    guard_ms: float
    # The model's context window: prompt_tokens + tokens of it are now in use, and the
    # next turn reads all of that again (older messages are left out once it is full).
    context_length: int


@dataclass(frozen=True)
class BlockedEvent:
    type: ClassVar[str] = "blocked"
    decision: GuardDecision
    retracted: bool
    message_id: int | None = None  # the blocked message or withdrawn reply, as saved


@dataclass(frozen=True)
class ErrorEvent:
    type: ClassVar[str] = "error"
    kind: str
    message: str
    partial_reply_kept: bool


@dataclass(frozen=True)
class NoticeEvent:
    """Something the user should know about how the reply is made, e.g. that the model
    was loaded with fewer GPU layers than planned because GPU memory ran short."""

    type: ClassVar[str] = "notice"
    kind: str
    message: str


@dataclass(frozen=True)
class LoadingEvent:
    """The model is being loaded for this reply (the first of a session, or another
    model): seconds for a large one, during which nothing else would show."""

    type: ClassVar[str] = "loading"
    model: str  # the model file's name


ChatEvent = (
    ConversationEvent
    | MessageEvent
    | GuardEvent
    | LoadingEvent
    | TokenEvent
    | ContextTrimmedEvent
    | DoneEvent
    | BlockedEvent
    | ErrorEvent
    | NoticeEvent
)


def event_to_json(event: ChatEvent) -> dict[str, Any]:
    if isinstance(event, ConversationEvent):
        conversation = event.conversation
        return {
            "type": event.type,
            "id": conversation.id,
            "title": conversation.title,
            "created": event.created,
        }
    if isinstance(event, MessageEvent):
        message = event.message
        return {
            "type": event.type,
            "id": message.id,
            "role": message.role.value,
            "state": message.state.value,
            "alternatives": list(event.alternatives),
        }
    payload: dict[str, Any] = {"type": event.type}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if isinstance(value, GuardDecision):
            value = {
                "verdict": value.verdict.value,
                "stage": value.stage.value,
                "profile": value.profile_id,
                "rail": value.rail,
                "category": value.category,
                "explanation": value.explanation,
                "latency_ms": round(value.latency_ms, 3),
            }
        elif isinstance(value, float):
            value = round(value, 3)
        payload[field.name] = value
    if isinstance(event, ContextTrimmedEvent):
        payload["message"] = event.sentence
    return payload
