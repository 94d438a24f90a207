"""How ChatService acts on guardrail decisions, on the real starter model.

The NeMo engine is a separate piece of work; `WordListProfile` below is a small, real
implementation of the same protocol (not a mock): it blocks or masks by fixed words and
can stop the output after a number of chunks, so each path of the service is exercised.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import InMemoryConversationStore, MessageState
from bastion_desktop.core.events import (
    BlockedEvent,
    DoneEvent,
    GuardEvent,
    MessageEvent,
    TokenEvent,
)
from bastion_desktop.core.inference.types import LoadOptions, Role, SamplingParams
from bastion_desktop.core.models import ChatModelSlot
from bastion_guardrails.decisions import GuardDecision, Stage, Verdict
from bastion_guardrails.runtime import GuardMessage, OutputBlocked, OutputEvent, PassedText

pytestmark = pytest.mark.model


class WordListProfile:
    profile_id = "word-list"
    profile_name = "Word list (test)"
    checks_anything = True

    def __init__(self, block_after_chunks: int | None = None, mask_output: bool = False) -> None:
        self.block_after_chunks = block_after_chunks
        self.mask_output = mask_output
        self.output_history: list[GuardMessage] = []

    async def check_input(self, history: Sequence[GuardMessage], text: str) -> GuardDecision:
        if "forbidden" in text:
            return GuardDecision(
                Verdict.BLOCKED,
                Stage.INPUT,
                self.profile_id,
                "Your message asks for something this profile does not allow.",
                rail="word list",
                category="test",
            )
        if "hunter2" in text:
            return GuardDecision(
                Verdict.MASKED,
                Stage.INPUT,
                self.profile_id,
                "A password was masked before the model saw it.",
                rail="secrets",
                category="secrets",
                rewritten=text.replace("hunter2", "[PASSWORD]"),
            )
        return GuardDecision(Verdict.ALLOWED, Stage.INPUT, self.profile_id, "Nothing found.")

    async def guard_output(
        self,
        history: Sequence[GuardMessage],
        stream: AsyncIterator[str],
        *,
        pace: Callable[[bool], None] | None = None,
    ) -> AsyncIterator[OutputEvent]:
        self.output_history = list(history)
        count = 0
        async for text in stream:
            count += 1
            if self.mask_output and count == 1:
                masked = GuardDecision(
                    Verdict.MASKED,
                    Stage.OUTPUT,
                    self.profile_id,
                    "Something was masked in the reply.",
                    rail="first piece",
                    category="test",
                    masked=("the first piece",),
                )
                yield PassedText("[MASKED]", masked=masked)
                continue
            if self.block_after_chunks is not None and count > self.block_after_chunks:
                yield OutputBlocked(
                    GuardDecision(
                        Verdict.BLOCKED,
                        Stage.OUTPUT,
                        self.profile_id,
                        "The reply went somewhere this profile does not allow.",
                        rail="output length",
                        category="test",
                    )
                )
                return
            yield PassedText(text)


async def make_service(
    starter_path: Path, profile: WordListProfile
) -> tuple[ChatService, InMemoryConversationStore, str]:
    store = InMemoryConversationStore()
    service = ChatService(
        store, ChatModelSlot(LoadOptions(context_length=512)), lambda _: starter_path, profile
    )
    conversation = await store.create_conversation(
        title="t", model_id="starter", profile_id=profile.profile_id, system_prompt=""
    )
    return service, store, conversation.id


async def test_a_blocked_message_never_reaches_the_model(starter_path: Path) -> None:
    service, store, conversation = await make_service(starter_path, WordListProfile())
    params = SamplingParams(max_tokens=8)
    events = [e async for e in service.send(conversation, "something forbidden", params)]
    assert [type(e) for e in events] == [MessageEvent, GuardEvent, BlockedEvent]
    saved, guard, blocked = events
    assert isinstance(saved, MessageEvent)
    assert isinstance(guard, GuardEvent)
    assert isinstance(blocked, BlockedEvent)
    assert saved.message.state is MessageState.BLOCKED
    assert saved.message.content == ""
    assert guard.message_id == blocked.message_id == saved.message.id
    assert blocked.decision.rail == "word list"
    assert not blocked.retracted
    assert service.models.host is None, "no model was loaded for a blocked message"
    messages = await store.messages(conversation)
    assert [(m.role, m.state) for m in messages] == [(Role.USER, MessageState.BLOCKED)]
    assert messages[0].content == "", "what an input rail blocks is not kept either"
    assert [e.verdict for e in store.guard_events] == ["blocked"]
    await service.models.close()


async def test_output_rails_see_the_question_and_masks_are_recorded(starter_path: Path) -> None:
    profile = WordListProfile(mask_output=True)
    service, store, conversation = await make_service(starter_path, profile)
    params = SamplingParams(max_tokens=6, seed=2)
    events = [e async for e in service.send(conversation, "Name a colour.", params)]
    await service.models.close()
    assert profile.output_history[-1] == GuardMessage("user", "Name a colour.")
    guards = [e for e in events if isinstance(e, GuardEvent)]
    assert [g.decision.stage for g in guards] == [Stage.INPUT, Stage.OUTPUT]
    assert guards[1].decision.verdict is Verdict.MASKED
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    assert tokens[0] == "[MASKED]"
    question, reply = await store.messages(conversation)
    assert reply.content.startswith("[MASKED]")
    assert [g.message_id for g in guards] == [question.id, reply.id]
    recorded = [(e.stage, e.verdict, e.message_id) for e in store.guard_events]
    assert recorded[1] == ("output", "masked", reply.id)


async def test_masked_text_is_what_the_model_and_the_history_get(starter_path: Path) -> None:
    service, store, conversation = await make_service(starter_path, WordListProfile())
    params = SamplingParams(max_tokens=4, seed=1)
    events = [e async for e in service.send(conversation, "my password is hunter2", params)]
    await service.models.close()
    saved, guard = events[:2]
    assert isinstance(guard, GuardEvent)
    assert guard.decision.verdict is Verdict.MASKED
    # The window is told the masked text, as saved, never the original.
    assert isinstance(saved, MessageEvent)
    assert saved.message.content == "my password is [PASSWORD]"
    assert isinstance(events[-1], DoneEvent)
    user = (await store.messages(conversation))[0]
    assert user.content == "my password is [PASSWORD]"
    assert all("hunter2" not in repr(event) for event in store.guard_events)


async def test_a_block_mid_stream_retracts_the_reply(starter_path: Path) -> None:
    service, store, conversation = await make_service(
        starter_path, WordListProfile(block_after_chunks=5)
    )
    params = SamplingParams(max_tokens=200, seed=3)
    events = [e async for e in service.send(conversation, "Tell me a story.", params)]
    shown = [e for e in events if isinstance(e, TokenEvent)]
    assert len(shown) == 5
    blocked = events[-1]
    assert isinstance(blocked, BlockedEvent)
    assert blocked.retracted
    reply = (await store.messages(conversation))[-1]
    assert reply.state is MessageState.BLOCKED
    assert reply.content == "", "withdrawn text is not kept"
    assert [e.stage for e in store.guard_events] == ["input", "output"]
    # The host stopped generating for nobody and answers the next message.
    after = [e async for e in service.send(conversation, "Hello", SamplingParams(max_tokens=3))]
    assert isinstance(after[-1], DoneEvent)
    await service.models.close()
