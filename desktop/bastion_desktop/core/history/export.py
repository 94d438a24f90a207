"""Bastion's own export format (versioned JSON) and a Markdown rendering.

JSON keeps everything a conversation holds: every alternative of every message, with
the tree that links them and which branch is shown, so an import restores it exactly.
Markdown is for reading and shows the branch that was shown. Guardrail events are not
exported: they are an audit trail of this installation, not part of the conversation.

An export is plain text by the user's explicit choice; import validates the whole file
before anything is written, and says what is wrong without quoting the file's text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bastion_desktop.core.conversation_store import Conversation, MessageState, StoredMessage
from bastion_desktop.core.history.errors import HistoryImportError
from bastion_desktop.core.inference.types import FinishReason, GenerationStats, Role

FORMAT: Final = "bastion.conversations"
FORMAT_VERSION: Final = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


NonNegative = Annotated[float, Field(ge=0)]


class ExportedStats(_Model):
    prompt_tokens: int = Field(ge=0)
    generated_tokens: int = Field(ge=0)
    ttft_ms: NonNegative
    tokens_per_second: NonNegative
    total_ms: NonNegative
    finish_reason: FinishReason


class ExportedMessage(_Model):
    id: int = Field(ge=1)  # numbers messages within this file; an import gives new ids
    parent_id: int | None
    role: Role
    content: str
    state: MessageState
    created_at: NonNegative
    model_id: str | None = None
    profile_id: str | None = None
    stats: ExportedStats | None = None


class ExportedConversation(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    title: str
    model_id: str
    profile_id: str
    system_prompt: str
    created_at: NonNegative
    updated_at: NonNegative
    pinned: bool = False
    archived: bool = False
    shown_message_id: int | None
    messages: list[ExportedMessage]

    @model_validator(mode="after")
    def _tree_is_whole(self) -> Self:
        seen: set[int] = set()
        for message in self.messages:
            if message.id in seen:
                raise ValueError(f"message {message.id} appears twice")
            if message.parent_id is not None and message.parent_id not in seen:
                raise ValueError(
                    f"message {message.id} follows message {message.parent_id}, "
                    "which does not come before it"
                )
            seen.add(message.id)
        if self.shown_message_id is not None and self.shown_message_id not in seen:
            raise ValueError(f"the shown message {self.shown_message_id} is not in the file")
        if self.shown_message_id is None and self.messages:
            raise ValueError("no message is marked as shown")
        return self


class ExportDocument(_Model):
    format: Literal["bastion.conversations"]
    version: int
    exported_at: NonNegative
    conversations: list[ExportedConversation]

    @model_validator(mode="after")
    def _known_version_and_unique_ids(self) -> Self:
        if self.version != FORMAT_VERSION:
            raise ValueError(
                f"format version {self.version} is not one this Bastion reads ({FORMAT_VERSION})"
            )
        ids = [conversation.id for conversation in self.conversations]
        if len(ids) != len(set(ids)):
            raise ValueError("a conversation appears twice")
        return self


def exported_message(message: StoredMessage) -> ExportedMessage:
    stats = message.stats
    return ExportedMessage(
        id=message.id,
        parent_id=message.parent_id,
        role=message.role,
        content=message.content,
        state=message.state,
        created_at=message.created_at,
        model_id=message.model_id,
        profile_id=message.profile_id,
        stats=None
        if stats is None
        else ExportedStats(
            prompt_tokens=stats.prompt_tokens,
            generated_tokens=stats.generated_tokens,
            ttft_ms=stats.ttft_ms,
            tokens_per_second=stats.tokens_per_second,
            total_ms=stats.total_ms,
            finish_reason=stats.finish_reason,
        ),
    )


def exported_conversation(
    conversation: Conversation, messages: Sequence[StoredMessage], shown_message_id: int | None
) -> ExportedConversation:
    return ExportedConversation(
        id=conversation.id,
        title=conversation.title,
        model_id=conversation.model_id,
        profile_id=conversation.profile_id,
        system_prompt=conversation.system_prompt,
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
        pinned=conversation.pinned,
        archived=conversation.archived,
        shown_message_id=shown_message_id,
        messages=[exported_message(message) for message in messages],
    )


def stats_of(message: ExportedMessage) -> GenerationStats | None:
    stats = message.stats
    if stats is None:
        return None
    return GenerationStats(
        stats.prompt_tokens,
        stats.generated_tokens,
        stats.ttft_ms,
        stats.tokens_per_second,
        stats.total_ms,
        stats.finish_reason,
    )


def render_json(conversations: Sequence[ExportedConversation]) -> bytes:
    document = ExportDocument(
        format=FORMAT,
        version=FORMAT_VERSION,
        exported_at=time.time(),
        conversations=list(conversations),
    )
    return (document.model_dump_json(indent=2) + "\n").encode("utf-8")


def parse_export(data: bytes, source: Path) -> ExportDocument:
    """The validated document, or a `HistoryImportError` naming the first problem.

    The message names where the problem is and what kind it is, never the text found
    there: an export is full of conversation text, and errors reach logs.
    """
    try:
        return ExportDocument.model_validate_json(data)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False, include_context=False)[0]
        where = _location(first["loc"])
        problem = str(first["msg"]).removeprefix("Value error, ")
        raise HistoryImportError(
            f"{source.name} is not a Bastion conversation export that can be imported "
            f"({where}{problem}); nothing was imported."
        ) from None


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return f"at {path}: " if path else ""


_STATE_NOTES = {
    MessageState.STREAMING: "reply still being written when exported",
    MessageState.STOPPED: "reply stopped",
    MessageState.INTERRUPTED: "reply interrupted",
    MessageState.BLOCKED: "blocked by the guardrails",
}

_SPEAKERS = {Role.USER: "You", Role.ASSISTANT: "Assistant", Role.SYSTEM: "System"}


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def render_markdown(conversations: Sequence[tuple[Conversation, Sequence[StoredMessage]]]) -> str:
    """One document; each conversation's shown branch under its title."""
    parts = []
    for conversation, messages in conversations:
        lines = [
            f"# {conversation.title}",
            "",
            f"*Model {conversation.model_id} · guardrail profile {conversation.profile_id} · "
            f"started {_when(conversation.created_at)} · "
            f"last message {_when(conversation.updated_at)}*",
            "",
        ]
        if conversation.system_prompt:
            lines += ["## System prompt", "", conversation.system_prompt, ""]
        for message in messages:
            lines += [f"## {_SPEAKERS[message.role]}", ""]
            if message.content:
                lines += [message.content, ""]
            note = _STATE_NOTES.get(message.state)
            if note:
                lines += [f"*({note})*", ""]
        parts.append("\n".join(lines))
    return "\n---\n\n".join(parts)
