"""Regenerate and edit-and-resend on the real starter model: each keeps what it
replaces as an alternative in the store's message tree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import InMemoryConversationStore, MessageNotFoundError
from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.events import ChatEvent, DoneEvent, MessageEvent
from bastion_desktop.core.inference.types import LoadOptions, Role, SamplingParams
from bastion_desktop.core.models import ChatModelSlot

pytestmark = pytest.mark.model

PARAMS = SamplingParams(max_tokens=6, seed=11)


@pytest.fixture
async def service(starter_path: Path) -> AsyncIterator[ChatService]:
    slot = ChatModelSlot(LoadOptions(context_length=512))
    yield ChatService(InMemoryConversationStore(), slot, lambda _ref: starter_path)
    await slot.close()


async def collect(events: AsyncIterator[ChatEvent]) -> list[ChatEvent]:
    return [event async for event in events]


async def conversation_with_one_turn(service: ChatService) -> str:
    conversation = await service.store.create_conversation(
        title="t", model_id="starter", profile_id="off", system_prompt=""
    )
    events = await collect(service.send(conversation.id, "Say hello.", PARAMS))
    assert isinstance(events[-1], DoneEvent)
    return conversation.id


async def test_regenerate_adds_an_alternative_reply(service: ChatService) -> None:
    conversation = await conversation_with_one_turn(service)
    question, first = await service.store.messages(conversation)
    other = SamplingParams(max_tokens=6, seed=12)
    events = await collect(service.regenerate(conversation, first.id, other))
    done = events[-1]
    assert isinstance(done, DoneEvent)
    shown = await service.store.messages(conversation)
    assert [m.id for m in shown] == [question.id, done.message_id]
    assert shown[1].alternative_number == 2
    assert shown[1].alternative_count == 2
    alternatives = await service.store.alternatives(done.message_id)
    assert [m.id for m in alternatives] == [first.id, done.message_id]
    assert alternatives[0].content == first.content, "the first reply is kept as it was"


async def test_edit_and_resend_branches_at_the_question(service: ChatService) -> None:
    conversation = await conversation_with_one_turn(service)
    question, first = await service.store.messages(conversation)
    events = await collect(service.edit_and_resend(conversation, question.id, "Say bye.", PARAMS))
    assert isinstance(events[-1], DoneEvent)
    shown = await service.store.messages(conversation)
    assert (shown[0].role, shown[0].content) == (Role.USER, "Say bye.")
    assert shown[1].id not in (question.id, first.id)
    alternatives = await service.store.alternatives(shown[0].id)
    assert [m.content for m in alternatives] == ["Say hello.", "Say bye."]
    # The original branch, with its reply, can be shown again.
    await service.store.select_alternative(question.id)
    assert [m.id for m in await service.store.messages(conversation)] == [question.id, first.id]


async def test_regenerate_refuses_a_message_that_is_not_a_reply(service: ChatService) -> None:
    conversation = await conversation_with_one_turn(service)
    question, _reply = await service.store.messages(conversation)
    with pytest.raises(MessageNotFoundError, match="not the assistant's message"):
        await collect(service.regenerate(conversation, question.id, PARAMS))
    with pytest.raises(BastionError, match="not in the conversation"):
        await collect(service.edit_and_resend(conversation, 10_000, "x", PARAMS))


async def test_a_reply_follows_its_question_when_another_turn_came_between(
    service: ChatService, starter_path: Path
) -> None:
    """Two windows (or the window and `bastion chat`) on one conversation at once: each
    reply is saved after the question it answers, not after what was added meanwhile."""
    conversation = await conversation_with_one_turn(service)
    first = service.send(conversation, "Say one.", PARAMS)
    question = None
    async for event in first:
        if isinstance(event, MessageEvent) and event.message.role is Role.USER:
            question = event.message
            break
    assert question is not None
    other = ChatService(service.store, service.models, lambda _ref: starter_path)
    between = await collect(other.send(conversation, "Say two.", PARAMS))
    assert isinstance(between[-1], DoneEvent)
    done = (await collect(first))[-1]
    assert isinstance(done, DoneEvent)
    versions = await service.store.alternatives(done.message_id)
    reply = next(m for m in versions if m.id == done.message_id)
    assert reply.parent_id == question.id, "the reply was filed under another turn"
