"""What one API request does, in Bastion's terms: the profile in force, the model, every
message of the request through the input rails, then the same `ChatService.send` the
window and `bastion chat` use for the last message and the reply.

A client sends the whole conversation with every request, so each earlier message is
checked too (a system or tool message an IDE plugin adds, an assistant message a client
wrote itself); a message already checked under the same profile (an earlier request's
question, or a reply this server wrote and its output rails passed) is remembered by
its hash, in memory only, and not checked again.

What the rails block in the system message or in this turn (every message after the
last assistant one) blocks the request. What they block in an earlier, answered turn
is left out of what the model reads, with the reply to it, as the window leaves out a
blocked message, and a notice says so: chat clients send a blocked question back with
every later request, which would otherwise block the rest of the conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass

from bastion_desktop.api.protocol import ApiError, ChatRequest, RequestMessage
from bastion_desktop.api.tokens import ApiClient
from bastion_desktop.context import AppContext
from bastion_desktop.core.audit import AuditError, TurnAudit, audited, new_request_id
from bastion_desktop.core.chat import ChatService, NewConversation
from bastion_desktop.core.conversation_store import ConversationStore, InMemoryConversationStore
from bastion_desktop.core.errors import BastionError, GuardProfileError
from bastion_desktop.core.events import (
    BlockedEvent,
    ChatEvent,
    DoneEvent,
    GuardEvent,
    NoticeEvent,
    TokenEvent,
)
from bastion_desktop.core.inference.types import ChatMessage, Role, SamplingParams
from bastion_desktop.core.installed_models import RegisteredModel
from bastion_desktop.core.models import ChatModelSlot
from bastion_desktop.core.policy import PolicyRefusedError, ProfileChoice
from bastion_desktop.core.starter import STARTER_ID
from bastion_guardrails.decisions import GuardDecision, Stage, Verdict
from bastion_guardrails.detectors.injection import without_role_markers
from bastion_guardrails.runtime import GuardMessage, GuardProfileRuntime

log = logging.getLogger(__name__)

# Hashes of messages the input rails passed, per profile in use.
CHECKED_MEMORY = 4096

_NOT_RETRIED = {"x-should-retry": "false"}


@dataclass(frozen=True)
class Waited:
    """How long the request waited for the model (others' requests ahead of it)."""

    type = "waited"
    ms: float


ApiEvent = ChatEvent | Waited


class _Checked:
    """Messages a profile's input rails already decided on, by hash: the decision
    (and, for a masked one, the text that replaces it), in memory only."""

    def __init__(self) -> None:
        self._known: OrderedDict[str, GuardDecision] = OrderedDict()

    @staticmethod
    def key(role: str, text: str) -> str:
        return hashlib.sha256(f"{role}\0{text}".encode()).hexdigest()

    def get(self, role: str, text: str) -> GuardDecision | None:
        key = self.key(role, text)
        decision = self._known.get(key)
        if decision is not None:
            self._known.move_to_end(key)
        return decision

    def remember(self, role: str, text: str, decision: GuardDecision) -> None:
        self._known[self.key(role, text)] = decision
        while len(self._known) > CHECKED_MEMORY:
            self._known.popitem(last=False)


class ApiService:
    """The local API's side of the core: one per server. Requests take turns on the
    model in arrival order (the slot holds one model at a time)."""

    def __init__(
        self,
        context: AppContext,
        slot: ChatModelSlot,
        history: ConversationStore | None = None,
    ) -> None:
        self.context = context
        self.slot = slot
        self.history = history
        self._guards: dict[tuple[str, str, int], GuardProfileRuntime] = {}
        self._checked: dict[tuple[str, str | None], _Checked] = {}
        self._turn = asyncio.Lock()

    # -- what may be used ------------------------------------------------------------------

    def chat_models(self) -> list[RegisteredModel]:
        return [m for m in self.context.registry.list() if m.role == "chat"]

    def sampling_defaults(self) -> SamplingParams:
        return self.context.sampling()

    async def model_for(self, requested: str | None) -> str:
        """The installed chat model a request names (by id only: never a path, so no
        client can make Bastion open a file of its choosing), else the default."""
        chosen = requested or self.context.settings.default_model or STARTER_ID
        model = self.context.registry.get(chosen)
        if model is None or model.role != "chat":
            known = ", ".join(m.id for m in self.chat_models()) or "none"
            raise ApiError(
                404,
                f"No installed chat model is called {chosen!r}. Installed: {known}.",
                code="model_not_found",
                param="model",
            )
        try:
            # AllowedModels decides what runs; off the loop, as it may hash the file.
            await asyncio.to_thread(self.context.resolve_model, model.id)
        except Exception as error:
            raise _refusal(error) from error
        return model.id

    def profile_choice(self, requested: str | None) -> ProfileChoice:
        """The profile a request runs under. The administrator's LocalApiProfile, else
        their locked GuardrailProfile, cannot be changed by a client; without a lock a
        client may ask for any profile the policy allows. Reads profiles from disk."""
        policy = self.context.policy
        locked = policy.local_api_profile
        if locked is not None:
            if requested and requested != locked:
                raise _profile_refused(requested, locked)
            return ProfileChoice(locked)
        settings = self.context.settings
        choice = self.context.guard_choice(requested or settings.api.profile)
        if requested and choice.profile_id != requested:
            raise _profile_refused(requested, choice.profile_id)
        return choice

    def _choice_and_stamp(self, requested: str | None) -> tuple[ProfileChoice, int]:
        try:
            stamp = self.context.profiles_dir.stat().st_mtime_ns
        except OSError:
            stamp = 0
        return self.profile_choice(requested), stamp

    async def guard_for(self, requested: str | None, model_id: str) -> GuardProfileRuntime:
        choice, stamp = await asyncio.to_thread(self._choice_and_stamp, requested)
        # A profile imported again under the same id changes the folder's stamp: the
        # runtime is opened afresh (the engine reuses it if the content is the same).
        key = (choice.profile_id, model_id, stamp)
        guard = self._guards.get(key)
        if guard is None:
            try:
                guard = await self.context.open_guard(choice.profile_id, model_id, choice=choice)
            except Exception as error:
                raise _refusal(error) from error
            self._guards[key] = guard
        return guard

    # -- a request ---------------------------------------------------------------------------

    async def answer(
        self,
        request: ChatRequest,
        client: ApiClient,
        model_id: str,
        guard: GuardProfileRuntime,
        request_id: str | None = None,
    ) -> AsyncGenerator[ApiEvent, None]:
        """Check the request (for `model_id`, from `model_for`, under `guard`, from
        `guard_for`), then stream the reply to its last message as events; recorded in
        the administrator's audit log (if any) under `request_id`."""
        events = self._answer(request, client, model_id, guard)
        audit = self.context.audit_log()
        if audit is None:
            async for event in events:
                yield event
            return
        turn = TurnAudit(
            f"api:{client.name}",
            model_id,
            guard.profile_id,
            guard.profile_hash,
            request_id=request_id or new_request_id(),
        )
        try:
            async for event in audited(events, audit, turn):
                yield event
        except AuditError as error:  # raised before the first event: nothing was sent
            raise ApiError(
                503, str(error), type="server_error", code="audit_log_unavailable"
            ) from error

    async def _answer(
        self,
        request: ChatRequest,
        client: ApiClient,
        model_id: str,
        guard: GuardProfileRuntime,
    ) -> AsyncIterator[ApiEvent]:
        store = self._store_for(client)
        checked = self._checked.setdefault((guard.profile_id, guard.profile_hash), _Checked())
        asked = time.perf_counter()
        async with self._turn:
            yield Waited((time.perf_counter() - asked) * 1000)
            earlier: list[GuardMessage] = []
            system = request.system
            if system:
                # The client's own system prompt: its role headers are not impersonation.
                read = without_role_markers(system)
                decision = await self._check(guard, checked, earlier, "system", read)
                if decision.blocked or decision.verdict is Verdict.MASKED:
                    yield GuardEvent(decision)
                if decision.blocked:
                    yield BlockedEvent(decision, retracted=False)
                    return
                system = decision.rewritten if decision.rewritten is not None else system
                earlier.append(GuardMessage("system", system))
            history: list[ChatMessage] = []
            last_answer = _answered(request.messages[:-1])
            leaving_out = False
            for index, message in enumerate(request.messages[:-1]):
                if leaving_out and message.role is Role.ASSISTANT:
                    continue  # the reply to a message left out
                decision = await self._check(
                    guard, checked, earlier, message.role.value, message.content
                )
                leaving_out = decision.blocked and index <= last_answer
                if leaving_out:
                    yield NoticeEvent("left_out", _left_out(decision))
                    continue
                if decision.blocked or decision.verdict is Verdict.MASKED:
                    yield GuardEvent(decision)
                if decision.blocked:
                    yield BlockedEvent(decision, retracted=False)
                    return
                text = decision.rewritten if decision.rewritten is not None else message.content
                earlier.append(GuardMessage(message.role.value, text))
                history.append(ChatMessage(message.role, text))
            conversation = NewConversation(model_id, system, tuple(history))
            async for event in self._send(store, conversation, guard, checked, request):
                yield event

    async def _send(
        self,
        store: ConversationStore,
        conversation: NewConversation,
        guard: GuardProfileRuntime,
        checked: _Checked,
        request: ChatRequest,
    ) -> AsyncIterator[ChatEvent]:
        service = ChatService(
            store, self.slot, lambda ref: self.context.registry.resolve(ref)[1], guard
        )
        last: RequestMessage = request.messages[-1]
        reply: list[str] = []
        async for event in service.send(conversation, last.content, request.params):
            if isinstance(event, GuardEvent) and event.decision.stage is Stage.INPUT:
                checked.remember(last.role.value, last.content, event.decision)
            elif isinstance(event, TokenEvent):
                reply.append(event.text)
            elif isinstance(event, DoneEvent):
                # The output rails passed it: when the client sends it back as history,
                # it need not be checked again.
                passed = GuardDecision(
                    Verdict.ALLOWED, Stage.OUTPUT, guard.profile_id, "Passed as a reply."
                )
                checked.remember(Role.ASSISTANT.value, "".join(reply), passed)
            yield event

    async def _check(
        self,
        guard: GuardProfileRuntime,
        checked: _Checked,
        earlier: list[GuardMessage],
        role: str,
        text: str,
    ) -> GuardDecision:
        known = checked.get(role, text)
        if known is not None:
            return known
        decision = await guard.check_input(earlier, text)
        checked.remember(role, text, decision)
        return decision

    def _store_for(self, client: ApiClient) -> ConversationStore:
        """Where the request's conversation is kept: in memory only (gone when the
        request ends), unless the client's token says to keep it in the history."""
        if not client.keep_history:
            return InMemoryConversationStore()
        if self.history is None:
            raise ApiError(
                503,
                f"The token {client.name!r} keeps its conversations in the history, which "
                "this server has not opened: restart it (the history opens at start).",
                type="server_error",
                code="history_closed",
            )
        return self.history


def _answered(messages: Sequence[RequestMessage]) -> int:
    """The index of the last assistant message in `messages` (-1 if none): the turns up
    to it were answered; the messages after it (a question, tool results) are this
    turn's."""
    return max((i for i, m in enumerate(messages) if m.role is Role.ASSISTANT), default=-1)


def _left_out(decision: GuardDecision) -> str:
    why = decision.category or decision.rail or "a rail"
    return (
        "An earlier message of this conversation was left out of what the model read, "
        f"with any reply to it: the guardrails block it ({why})."
    )


def _profile_refused(requested: str, chosen: str) -> ApiError:
    return ApiError(
        403,
        f"This server's guardrail profile is managed: requests use {chosen!r}, and "
        f"{requested!r} is not allowed.",
        type="permission_error",
        code="profile_not_allowed",
        param="bastion.profile",
        headers=dict(_NOT_RETRIED),
    )


def _refusal(error: Exception) -> Exception:
    """A policy refusal or a profile that does not open, as the client should see it."""
    if isinstance(error, PolicyRefusedError):
        return ApiError(
            403, str(error), type="permission_error", code="policy", headers=dict(_NOT_RETRIED)
        )
    if isinstance(error, GuardProfileError):
        return ApiError(503, str(error), type="server_error", code="profile_unavailable")
    if isinstance(error, BastionError):
        return ApiError(503, str(error), type="server_error", code="unavailable")
    return error
