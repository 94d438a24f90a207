"""`ChatService`: one user message in, a stream of plain events out. It owns the whole
turn: the CLI, the window and the local API call `send` and write nothing themselves.

    (create the conversation) -> guard the input -> persist the user message (as masked,
    if the profile masked it) -> stream from the model host through the output guard ->
    persist the reply as it grows -> done, with the stats

Every fact a caller shows is an event: the conversation created and named, each message
as saved (with its id), each guard decision with the id of the message it is about, the
tokens, the end. A window updates the widgets it shows by those ids; it never reads the
conversation back to work out which decision belongs to which message.

The input check comes before the first write so that what a profile masks (a secret,
personal data) never reaches the disk.

It runs on the engine thread's asyncio loop (or `asyncio.run` in the CLI) and knows
nothing of Qt: the desktop controllers relay its events as signals.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from bastion_desktop.core.attachments import words_of
from bastion_desktop.core.audit import AuditLog, TurnAudit, audited
from bastion_desktop.core.conversation_store import (
    Conversation,
    ConversationStore,
    MessageNotFoundError,
    MessageState,
    StoredMessage,
)
from bastion_desktop.core.errors import (
    BastionError,
    ContextOverflowError,
    ModelHostCrashedError,
    ModelLoadError,
    OutputFormatError,
)
from bastion_desktop.core.events import (
    BlockedEvent,
    ChatEvent,
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
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationStats,
    ModelFacts,
    PromptTrimmed,
    Role,
    SamplingParams,
    TokenText,
)
from bastion_desktop.core.models import ChatModelSlot
from bastion_guardrails.decisions import Verdict
from bastion_guardrails.detectors.injection import without_role_markers
from bastion_guardrails.runtime import (
    GuardMessage,
    GuardProfileRuntime,
    OffProfile,
    OutputBlocked,
)

log = logging.getLogger(__name__)

# A streaming reply is saved at least this often, so a crash loses at most this much.
SAVE_EVERY_SECONDS = 1.0
SAVE_EVERY_TOKENS = 32

# The title of a conversation whose first message the guardrails blocked.
BLOCKED_TITLE = "Blocked message"

# Replies in these states are part of the history the model sees next turn.
_HISTORY_STATES = (MessageState.COMPLETE, MessageState.STOPPED, MessageState.INTERRUPTED)


def title_from(text: str) -> str:
    """A conversation's title from its first message (its words, not the files attached
    to it): one line, at most 60 characters."""
    line = " ".join(words_of(text).split())
    return line if len(line) <= 60 else line[:59].rstrip() + "…"


def _index_of(messages: list[StoredMessage], message_id: int, role: Role) -> int:
    for index, message in enumerate(messages):
        if message.id == message_id:
            if message.role is not role:
                raise MessageNotFoundError(
                    f"Message {message_id} is not the {role.value}'s message."
                )
            return index
    raise MessageNotFoundError(f"Message {message_id} is not in the conversation being shown.")


def _error_kind(error: BastionError) -> str:
    if isinstance(error, ModelHostCrashedError):
        return "model_crashed"
    if isinstance(error, ContextOverflowError):
        return "context_overflow"
    if isinstance(error, ModelLoadError):
        return "model_load"
    if isinstance(error, OutputFormatError):
        return "output_format"
    return "error"


@dataclass(frozen=True)
class NewConversation:
    """What `send` creates a conversation from: untitled until the guardrails have
    checked its first message (then named after it), with `history`, the messages a
    client already holds (the local API's earlier messages, checked by the caller),
    saved before the new one."""

    model_id: str
    system_prompt: str = ""
    history: tuple[ChatMessage, ...] = ()


@dataclass
class _Reply:
    """The assistant message being streamed, and when it was last saved."""

    conversation_id: str
    model_id: str | None = None  # the model that writes it (a conversation's can change)
    # The question it answers: what it is saved after, even if another window (or
    # `bastion chat`) added to the conversation meanwhile.
    question_id: int | None = None
    message: StoredMessage | None = None
    alternatives: tuple[int, ...] = ()  # of `message`, when it has other versions
    text: str = ""
    stats: GenerationStats | None = None
    blocked: bool = False
    guard_ms: float = 0.0
    unsaved_tokens: int = 0
    saved_at: float = 0.0


class ChatService:
    def __init__(
        self,
        store: ConversationStore,
        models: ChatModelSlot,
        resolve_model: Callable[[str], Path],
        guard: GuardProfileRuntime | None = None,
        *,
        audit: AuditLog | None = None,
        client: str = "window",
    ) -> None:
        self.store = store
        self.models = models
        self.resolve_model = resolve_model
        self.guard: GuardProfileRuntime = guard or OffProfile()
        # The administrator's audit log (GuardrailAuditLog), and who this service's turns
        # are recorded as coming from ("window", "cli").
        self.audit = audit
        self.client = client
        self._gpu_noted: tuple[Path, str] | None = None  # the model and place last told
        self._holding_turn = False

    async def _history(self, conversation_id: str) -> list[ChatMessage]:
        conversation = await self.store.get_conversation(conversation_id)
        history = [ChatMessage(Role.SYSTEM, conversation.system_prompt)]
        history = history if conversation.system_prompt else []
        for message in await self.store.messages(conversation_id):
            shown = message.role is Role.USER or message.state in _HISTORY_STATES
            if shown and message.content and message.state is not MessageState.BLOCKED:
                history.append(ChatMessage(message.role, message.content))
        return history

    async def _audited(
        self, conversation: str | NewConversation, events: AsyncIterator[ChatEvent]
    ) -> AsyncIterator[ChatEvent]:
        """`events` as they are, or through the audit log when the policy keeps one."""
        if self.audit is None:
            async for event in events:
                yield event
            return
        if isinstance(conversation, NewConversation):
            model_id = conversation.model_id
        else:
            model_id = (await self.store.get_conversation(conversation)).model_id
        guard = self.guard
        turn = TurnAudit(self.client, model_id, guard.profile_id, guard.profile_hash)
        async for event in audited(events, self.audit, turn):
            yield event

    def send(
        self, conversation: str | NewConversation, text: str, params: SamplingParams
    ) -> AsyncIterator[ChatEvent]:
        """Send one user message and stream the reply as events: to the conversation
        with that id, or to a new one (a `ConversationEvent` says which)."""
        return self._audited(conversation, self._send(conversation, text, params))

    async def _create(self, new: NewConversation) -> AsyncIterator[ChatEvent]:
        created = await self.store.create_conversation(
            title="",
            model_id=new.model_id,
            profile_id=self.guard.profile_id,
            system_prompt=new.system_prompt,
        )
        yield ConversationEvent(created, created=True)
        for earlier in new.history:
            message = await self.store.add_message(
                created.id,
                earlier.role,
                earlier.content,
                MessageState.COMPLETE,
                model_id=new.model_id if earlier.role is Role.ASSISTANT else None,
                profile_id=self.guard.profile_id,
            )
            yield MessageEvent(message)

    async def _versions(self, message: StoredMessage) -> tuple[int, ...]:
        """The ids of all versions of `message`, when it has others."""
        if message.alternative_count <= 1:
            return ()
        return tuple(m.id for m in await self.store.alternatives(message.id))

    async def _send(
        self, conversation: str | NewConversation, text: str, params: SamplingParams
    ) -> AsyncIterator[ChatEvent]:
        if isinstance(conversation, NewConversation):
            conversation_id = ""
            async for event in self._create(conversation):
                if isinstance(event, ConversationEvent):
                    conversation_id = event.conversation.id
                yield event
        else:
            conversation_id = conversation
        history = await self._history(conversation_id)
        guard_history = [GuardMessage(m.role.value, m.content) for m in history]

        # A raw prompt's template (the local API's /v1/completions) is the client's own
        # to write: its role tokens are structure there, not an impersonation.
        checked = without_role_markers(text) if params.raw_prompt else text
        decision = await self.guard.check_input(guard_history, checked)
        if decision.verdict is Verdict.MASKED and decision.rewritten is not None:
            text = decision.rewritten  # what was masked never reaches the model or disk
        # A blocked message is kept as an empty placeholder: what an input rail stops (a
        # private key, personal data) must not reach the history either.
        user = await self.store.add_message(
            conversation_id,
            Role.USER,
            "" if decision.blocked else text,
            MessageState.BLOCKED if decision.blocked else MessageState.COMPLETE,
            profile_id=self.guard.profile_id,
        )
        yield MessageEvent(user, await self._versions(user))
        await self.store.record_guard_event(conversation_id, user.id, decision)
        title = BLOCKED_TITLE if decision.blocked else title_from(text)
        named = await self._name(conversation_id, title)
        if named is not None:
            yield ConversationEvent(named, created=False)
        yield GuardEvent(decision, user.id)
        if decision.blocked:
            yield BlockedEvent(decision, retracted=False, message_id=user.id)
            return
        asked = [*history, ChatMessage(Role.USER, text)]
        async for event in self._reply(
            conversation_id, user.id, asked, params, decision.latency_ms
        ):
            yield event

    async def _name(self, conversation_id: str, title: str) -> Conversation | None:
        """Name an untitled conversation after its first message, as checked (the title
        must not keep what the input rails masked or blocked); the renamed record."""
        if (await self.store.get_conversation(conversation_id)).title:
            return None
        await self.store.rename_conversation(conversation_id, title)
        return await self.store.get_conversation(conversation_id)

    def regenerate(
        self, conversation_id: str, reply_id: int, params: SamplingParams
    ) -> AsyncIterator[ChatEvent]:
        """A new reply to the question `reply_id` answered, kept as an alternative to
        it (the store's message tree): nothing is overwritten."""
        return self._audited(conversation_id, self._regenerate(conversation_id, reply_id, params))

    async def _regenerate(
        self, conversation_id: str, reply_id: int, params: SamplingParams
    ) -> AsyncIterator[ChatEvent]:
        messages = await self.store.messages(conversation_id)
        index = _index_of(messages, reply_id, Role.ASSISTANT)
        question = messages[index - 1] if index > 0 else None
        if question is None or question.role is not Role.USER:
            raise MessageNotFoundError("That reply has no question to answer again.")
        if question.state is MessageState.BLOCKED:
            raise BastionError("The guardrails blocked that message: there is nothing to answer.")
        await self.store.branch_from(reply_id)
        history = await self._history(conversation_id)
        async for event in self._reply(conversation_id, question.id, history, params, 0.0):
            yield event

    def edit_and_resend(
        self, conversation_id: str, message_id: int, text: str, params: SamplingParams
    ) -> AsyncIterator[ChatEvent]:
        """Send `text` in place of the user's message `message_id`; the original and the
        replies to it stay as an alternative branch."""
        return self._audited(
            conversation_id, self._edit_and_resend(conversation_id, message_id, text, params)
        )

    async def _edit_and_resend(
        self, conversation_id: str, message_id: int, text: str, params: SamplingParams
    ) -> AsyncIterator[ChatEvent]:
        messages = await self.store.messages(conversation_id)
        _index_of(messages, message_id, Role.USER)
        await self.store.branch_from(message_id)
        async for event in self._send(conversation_id, text, params):
            yield event

    async def _reply(
        self,
        conversation_id: str,
        question_id: int,
        messages: list[ChatMessage],
        params: SamplingParams,
        guard_ms: float,
    ) -> AsyncIterator[ChatEvent]:
        """Stream and save the model's answer to `messages` (ending with the user's)."""
        async with self.models.turn():  # another chat's or the API's reply goes first
            self._holding_turn = True
            try:
                replying = self._reply_in_turn(
                    conversation_id, question_id, messages, params, guard_ms
                )
                async for event in replying:
                    yield event
            finally:
                self._holding_turn = False

    async def _reply_in_turn(
        self,
        conversation_id: str,
        question_id: int,
        messages: list[ChatMessage],
        params: SamplingParams,
        guard_ms: float,
    ) -> AsyncIterator[ChatEvent]:
        conversation = await self.store.get_conversation(conversation_id)
        guard_history = [GuardMessage(m.role.value, m.content) for m in messages]
        reply = _Reply(conversation_id, conversation.model_id, question_id)
        try:
            # Off the loop: it may write the starter or hash a model file (AllowedModels).
            path = await asyncio.to_thread(self.resolve_model, conversation.model_id)
            if not self.models.holds(path):
                yield LoadingEvent(path.name)
            host = await self.models.host_for(path)
            note = _placement_note(host.facts)
            told = (path, note)
            if note and self._gpu_noted != told:
                # Once per model and place: not again when an idle model loads again.
                self._gpu_noted = told
                yield NoticeEvent("gpu", note)
            async for event in self._stream_reply(host, messages, guard_history, params, reply):
                yield event
        except BastionError as error:
            kept = bool(reply.text)
            if reply.message is not None:
                await self._save(reply, MessageState.INTERRUPTED, force=True)
                yield self._saved(reply, MessageState.INTERRUPTED)
            log.warning("reply failed: %s", type(error).__name__)
            yield ErrorEvent(_error_kind(error), str(error), partial_reply_kept=kept)
            return
        except BaseException:
            # A cancelled task or a bug: whatever arrived is kept, marked interrupted.
            if reply.message is not None:
                await asyncio.shield(self._save(reply, MessageState.INTERRUPTED, force=True))
            raise
        if reply.blocked:
            return  # the output rails stopped it: already reported
        stats = reply.stats
        if stats is None:
            raise RuntimeError("the model host ended a reply without its stats")
        state = (
            MessageState.STOPPED if stats.finish_reason == "cancelled" else MessageState.COMPLETE
        )
        await self._save(reply, state, force=True, stats=stats)
        yield self._saved(reply, state, stats)
        assert reply.message is not None
        log.info(
            "reply finished: %d tokens, %.1f tokens/s, ttft %.0f ms, %s",
            stats.generated_tokens,
            stats.tokens_per_second,
            stats.ttft_ms,
            stats.finish_reason,
        )
        yield DoneEvent(
            message_id=reply.message.id,
            finish_reason=stats.finish_reason,
            tokens=stats.generated_tokens,
            prompt_tokens=stats.prompt_tokens,
            tokens_per_second=stats.tokens_per_second,
            ttft_ms=stats.ttft_ms,
            total_ms=stats.total_ms,
            guard_ms=guard_ms + reply.guard_ms,
            context_length=host.facts.context_length if host.facts else 0,
        )

    async def _stream_reply(
        self,
        host: ModelHost,
        messages: list[ChatMessage],
        guard_history: list[GuardMessage],
        params: SamplingParams,
        reply: _Reply,
    ) -> AsyncIterator[ChatEvent]:
        """Model text through the output guard; fills `reply` as it goes."""
        notices: list[ChatEvent] = []
        writing = True  # the model's reply is still under way

        async def model_text() -> AsyncIterator[str]:
            nonlocal writing
            try:
                async for event in host.stream(messages, params):
                    if isinstance(event, TokenText):
                        yield event.text
                    elif isinstance(event, PromptTrimmed):
                        notices.append(
                            ContextTrimmedEvent(
                                event.dropped_messages, event.prompt_tokens, event.context_length
                            )
                        )
                    else:
                        reply.stats = event.stats
            finally:
                writing = False

        def pace(wait: bool) -> None:
            # Text the rails release after the reply ended must not hold the host's next
            # request (another conversation's, an API client's).
            if writing or not wait:
                host.pace(wait)

        async for item in self.guard.guard_output(guard_history, model_text(), pace=pace):
            # Notices arrive before the text they concern: pass them on first.
            while notices:
                yield notices.pop(0)
            if isinstance(item, OutputBlocked):
                host.cancel()
                reply.blocked = True
                retracted = bool(reply.text)
                # What the output rails withdrew is not kept: it may be the very secret
                # or harm they exist to stop.
                reply.text = ""
                await self._save(reply, MessageState.BLOCKED, force=True)
                assert reply.message is not None
                await self.store.record_guard_event(
                    reply.conversation_id, reply.message.id, item.decision
                )
                yield self._saved(reply, MessageState.BLOCKED)
                yield BlockedEvent(item.decision, retracted=retracted, message_id=reply.message.id)
                return
            reply.text += item.text
            reply.unsaved_tokens += 1
            first = reply.message is None
            await self._save(reply, MessageState.STREAMING)
            assert reply.message is not None
            if first:
                yield MessageEvent(reply.message, reply.alternatives)
            if item.masked is not None:
                reply.guard_ms += item.masked.latency_ms
                await self.store.record_guard_event(
                    reply.conversation_id, reply.message.id, item.masked
                )
                yield GuardEvent(item.masked, reply.message.id)
            yield TokenEvent(item.text)
        while notices:
            yield notices.pop(0)

    async def _save(
        self,
        reply: _Reply,
        state: MessageState,
        *,
        force: bool = False,
        stats: GenerationStats | None = None,
    ) -> None:
        now = time.monotonic()
        if reply.message is None:
            reply.message = await self.store.add_message(
                reply.conversation_id,
                Role.ASSISTANT,
                reply.text,
                state,
                model_id=reply.model_id,
                profile_id=self.guard.profile_id,
                after=reply.question_id,
            )
            reply.saved_at, reply.unsaved_tokens = now, 0
            reply.alternatives = await self._versions(reply.message)
            if not force:
                return
        due = (
            reply.unsaved_tokens >= SAVE_EVERY_TOKENS or now - reply.saved_at >= SAVE_EVERY_SECONDS
        )
        if force or due:
            await self.store.update_message(
                reply.message.id, content=reply.text, state=state, stats=stats
            )
            reply.saved_at, reply.unsaved_tokens = now, 0

    def _saved(
        self, reply: _Reply, state: MessageState, stats: GenerationStats | None = None
    ) -> MessageEvent:
        """The reply as `_save` has just written it, for the caller."""
        assert reply.message is not None
        message = dataclasses.replace(reply.message, content=reply.text, state=state, stats=stats)
        return MessageEvent(message, reply.alternatives)

    def cancel(self) -> None:
        """Stop the reply being generated, keeping what was written so far. A reply
        still waiting for its turn on a shared model is not this one's to stop: its
        task is cancelled instead (the window does so after a moment)."""
        host = self.models.host
        if host is not None and self._holding_turn:
            host.cancel()


def _placement_note(facts: ModelFacts | None) -> str:
    """Where a newly loaded model runs, when that is worth a line in the chat: on a GPU,
    partly, or on the CPU for a reason such as a GPU backend that failed its check."""
    if facts is None:
        return ""
    told = facts.placement if facts.placement_worth_telling else ""
    return " ".join(part for part in (told, facts.gpu_note) if part)
