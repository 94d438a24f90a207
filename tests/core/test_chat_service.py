"""ChatService end to end on the real starter model, with the in-memory store."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bastion_desktop.core.chat import ChatService, NewConversation
from bastion_desktop.core.conversation_store import InMemoryConversationStore, MessageState
from bastion_desktop.core.events import (
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
from bastion_desktop.core.inference.types import ChatMessage, LoadOptions, Role, SamplingParams
from bastion_desktop.core.models import ChatModelSlot

pytestmark = pytest.mark.model


@pytest.fixture
async def service(starter_path: Path) -> AsyncIterator[ChatService]:
    slot = ChatModelSlot(LoadOptions(context_length=512))
    chat = ChatService(InMemoryConversationStore(), slot, lambda _ref: starter_path)
    yield chat
    await slot.close()


async def new_conversation(service: ChatService, system: str = "") -> str:
    conversation = await service.store.create_conversation(
        title="t", model_id="starter", profile_id="off", system_prompt=system
    )
    return conversation.id


async def run(
    service: ChatService, conversation: str | NewConversation, text: str, **params: object
) -> list[ChatEvent]:
    sampling = SamplingParams(**{"seed": 7, "max_tokens": 24, **params})  # type: ignore[arg-type]
    return [event async for event in service.send(conversation, text, sampling)]


async def test_a_turn_streams_tokens_and_ends_with_stats(service: ChatService) -> None:
    conversation = await new_conversation(service, system="You are terse.")
    events = await run(service, conversation, "Name three colours.")
    saved, guard = events[:2]
    assert isinstance(saved, MessageEvent)
    assert isinstance(guard, GuardEvent)
    assert guard.decision.verdict == "allowed"
    assert guard.decision.profile_id == "off"
    assert guard.message_id == saved.message.id  # the decision says which message
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert tokens
    assert done.tokens == 24
    assert done.finish_reason == "length"
    assert done.tokens_per_second > 0
    assert done.ttft_ms > 0

    messages = await service.store.messages(conversation)
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT]
    assert messages[0].content == "Name three colours."
    assert messages[1].content == "".join(t.text for t in tokens)
    assert messages[1].state is MessageState.COMPLETE
    assert messages[1].stats is not None
    assert messages[1].stats.generated_tokens == 24
    assert done.message_id == messages[1].id
    # Each message as saved, by id: the question, the reply's first words, its end.
    saves = [e.message for e in events if isinstance(e, MessageEvent)]
    assert [(m.id, m.role, m.state) for m in saves] == [
        (messages[0].id, Role.USER, MessageState.COMPLETE),
        (messages[1].id, Role.ASSISTANT, MessageState.STREAMING),
        (messages[1].id, Role.ASSISTANT, MessageState.COMPLETE),
    ]
    assert saves[-1] == messages[1]  # what the caller is told is what the store holds
    first_token = next(i for i, e in enumerate(events) if isinstance(e, TokenEvent))
    assert events[first_token - 1] == MessageEvent(saves[1])


async def test_send_creates_the_conversation_and_names_it_after_the_message(
    service: ChatService,
) -> None:
    new = NewConversation("starter", system_prompt="You are terse.")
    events = await run(service, new, "Name three colours.")
    created, saved, named = events[:3]
    assert isinstance(created, ConversationEvent)
    assert created.created
    assert created.conversation.title == ""  # untitled until the message is checked
    assert created.conversation.system_prompt == "You are terse."
    assert isinstance(saved, MessageEvent)
    assert isinstance(named, ConversationEvent)
    assert not named.created
    assert named.conversation.title == "Name three colours."
    conversation = named.conversation.id
    assert created.conversation.id == conversation
    assert (await service.store.get_conversation(conversation)).title == named.conversation.title
    stored = await service.store.messages(conversation)
    assert [m.id for m in stored] == [saved.message.id, stored[1].id]
    assert isinstance(events[-1], DoneEvent)
    assert events[-1].message_id == stored[1].id


async def test_a_new_conversation_keeps_the_history_a_client_brought(
    service: ChatService,
) -> None:
    earlier = (
        ChatMessage(Role.USER, "My name is Ada."),
        ChatMessage(Role.ASSISTANT, "Hello Ada."),
    )
    events = await run(service, NewConversation("starter", history=earlier), "My name?")
    conversation = next(e for e in events if isinstance(e, ConversationEvent)).conversation
    stored = await service.store.messages(conversation.id)
    assert [(m.role, m.content) for m in stored[:3]] == [
        (Role.USER, "My name is Ada."),
        (Role.ASSISTANT, "Hello Ada."),
        (Role.USER, "My name?"),
    ]
    assert stored[1].model_id == "starter"  # a reply names its model
    saved = [e.message.id for e in events if isinstance(e, MessageEvent)]
    assert saved[:3] == [m.id for m in stored[:3]]


async def test_the_second_turn_sees_the_first(service: ChatService) -> None:
    conversation = await new_conversation(service)
    await run(service, conversation, "My name is Ada.")
    events = await run(service, conversation, "What is my name?")
    done = events[-1]
    assert isinstance(done, DoneEvent)
    first = await run(service, await new_conversation(service), "What is my name?")
    first_done = first[-1]
    assert isinstance(first_done, DoneEvent)
    # The history (user turn + reply) is in the second prompt.
    assert done.prompt_tokens > first_done.prompt_tokens + 10


async def test_cancel_keeps_the_partial_reply_as_stopped(service: ChatService) -> None:
    conversation = await new_conversation(service)
    events: list[ChatEvent] = []
    sampling = SamplingParams(seed=1, max_tokens=400)
    async for event in service.send(conversation, "Tell me a long story.", sampling):
        events.append(event)
        if isinstance(event, TokenEvent) and sum(isinstance(e, TokenEvent) for e in events) == 4:
            service.cancel()
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert done.finish_reason == "cancelled"
    reply = (await service.store.messages(conversation))[-1]
    assert reply.state is MessageState.STOPPED
    assert reply.content == "".join(e.text for e in events if isinstance(e, TokenEvent))


@pytest.mark.log_warnings("the failure the test provokes is logged as a warning")
async def test_a_crashed_model_keeps_the_partial_reply_and_recovers(service: ChatService) -> None:
    conversation = await new_conversation(service)
    events: list[ChatEvent] = []
    async for event in service.send(
        conversation, "Tell me a story.", SamplingParams(max_tokens=400)
    ):
        events.append(event)
        if isinstance(event, TokenEvent) and sum(isinstance(e, TokenEvent) for e in events) == 3:
            host = service.models.host
            assert host is not None
            assert host.pid is not None
            os.kill(host.pid, signal.SIGKILL)
    saved, error = events[-2:]
    assert isinstance(error, ErrorEvent)
    assert error.kind == "model_crashed"
    assert error.partial_reply_kept
    assert "SIGKILL" in error.message
    assert "CPU only" not in error.message, "on the CPU already: nothing to suggest"
    reply = (await service.store.messages(conversation))[-1]
    assert reply.state is MessageState.INTERRUPTED
    assert reply.content
    assert saved == MessageEvent(reply)  # the window draws it as kept, without reading it

    after = await run(service, conversation, "Are you back?")
    assert isinstance(after[-1], DoneEvent)


async def test_a_reply_that_must_load_its_model_says_so_first(
    service: ChatService, starter_path: Path
) -> None:
    conversation = await new_conversation(service)
    first = await run(service, conversation, "Hello")
    loading = [e for e in first if isinstance(e, LoadingEvent)]
    assert loading == [LoadingEvent(starter_path.name)]
    first_token = next(i for i, e in enumerate(first) if isinstance(e, TokenEvent))
    checked = next(i for i, e in enumerate(first) if isinstance(e, GuardEvent))
    assert checked < first.index(loading[0]), "the message is checked before any load"
    assert first.index(loading[0]) < first_token
    done = first[-1]
    assert isinstance(done, DoneEvent)
    assert done.context_length == 512, "the window the model was loaded with"
    again = await run(service, conversation, "Hello again")
    assert not [e for e in again if isinstance(e, LoadingEvent)], "already loaded"


async def test_settings_changed_since_the_load_load_the_model_again_before_the_next_turn(
    service: ChatService, starter_path: Path
) -> None:
    conversation = await new_conversation(service)
    first = await run(service, conversation, "Hello", max_tokens=2)
    assert isinstance(first[-1], DoneEvent)
    assert first[-1].context_length == 512
    host = service.models.host
    assert host is not None
    before = host.pid
    # Settings saved: a longer context (the window hands the slot its new options).
    service.models.options = LoadOptions(context_length=1024)
    assert not service.models.holds(starter_path)
    second = await run(service, conversation, "Again", max_tokens=2)
    assert [e for e in second if isinstance(e, LoadingEvent)] == [LoadingEvent(starter_path.name)]
    assert isinstance(second[-1], DoneEvent)
    assert second[-1].context_length == 1024, "the turn ran on the model loaded anew"
    assert host.pid not in (None, before)
    third = await run(service, conversation, "And again", max_tokens=2)
    assert not [e for e in third if isinstance(e, LoadingEvent)], "loaded with them now"


@pytest.mark.log_warnings("the failure the test provokes is logged as a warning")
async def test_a_model_that_cannot_load_ends_its_loading_with_a_sentence(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    slot = ChatModelSlot(LoadOptions(context_length=512))
    service = ChatService(InMemoryConversationStore(), slot, lambda _ref: broken)
    try:
        conversation = await new_conversation(service)
        events = await run(service, conversation, "Hello")
    finally:
        await slot.close()
    assert [type(e) for e in events] == [MessageEvent, GuardEvent, LoadingEvent, ErrorEvent]
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert "broken.gguf" in error.message
    assert not error.partial_reply_kept


async def test_long_history_is_trimmed_and_the_user_is_told(service: ChatService) -> None:
    conversation = await new_conversation(service, system="Be brief.")
    for turn in range(5):
        await run(service, conversation, f"Turn {turn}: " + "tell me more " * 20, max_tokens=40)
    events = await run(service, conversation, "Last question?", max_tokens=40)
    trimmed = [e for e in events if isinstance(e, ContextTrimmedEvent)]
    assert len(trimmed) == 1
    assert trimmed[0].dropped_messages >= 2
    assert "oldest messages" in trimmed[0].sentence
    assert isinstance(events[-1], DoneEvent)
    first_token = next(i for i, e in enumerate(events) if isinstance(e, TokenEvent))
    assert events.index(trimmed[0]) < first_token, "the notice comes before the reply"


@pytest.mark.log_warnings("the failure the test provokes is logged as a warning")
async def test_a_message_too_large_is_an_error_event_not_a_crash(service: ChatService) -> None:
    conversation = await new_conversation(service)
    events = await run(service, conversation, "lighthouse " * 600)
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert error.kind == "context_overflow"
    assert "context holds 512" in error.message
    assert not error.partial_reply_kept
    # No empty assistant message was left behind.
    assert [m.role for m in await service.store.messages(conversation)] == [Role.USER]


async def test_stop_pressed_while_the_model_loads_stops_before_any_text(
    service: ChatService,
) -> None:
    conversation = await new_conversation(service)

    async def turn() -> list[ChatEvent]:
        return await run(service, conversation, "Tell me a long story.", max_tokens=400)

    task = asyncio.create_task(turn())
    await asyncio.sleep(0.3)  # the model takes over a second to load
    host = service.models.host
    assert host is not None
    assert not host.is_running, "the test must cancel during the load"
    service.cancel()
    events = await task
    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert done.finish_reason == "cancelled"
    assert done.tokens == 0
    assert not any(isinstance(e, TokenEvent) for e in events)
    # The cancel was used up: the next message gets a full answer.
    after = await run(service, conversation, "Hello?")
    assert isinstance(after[-1], DoneEvent)
    assert after[-1].finish_reason == "length"


async def test_a_gpu_note_from_the_host_reaches_the_user_once(service: ChatService) -> None:
    # No GPU here: the note the host sets after walking down GPU layers (see
    # host_process.LoadedModel) is put on the loaded host's facts by hand.
    conversation = await new_conversation(service)
    host = await service.models.host_for(service.resolve_model("starter"))
    assert host.facts is not None
    note = "GPU memory ran short: 20 of 28 layers were offloaded instead."
    host.facts = dataclasses.replace(host.facts, gpu_note=note)
    first = await run(service, conversation, "Hello", max_tokens=2)
    notices = [e for e in first if isinstance(e, NoticeEvent)]
    assert [(n.kind, n.message) for n in notices] == [("gpu", note)]
    second = await run(service, conversation, "Again", max_tokens=2)
    assert not [e for e in second if isinstance(e, NoticeEvent)], "said once per load"


async def test_an_untitled_conversation_is_named_after_its_first_message(
    service: ChatService,
) -> None:
    conversation = await service.store.create_conversation(
        title="", model_id="starter", profile_id="off", system_prompt="Be brief."
    )
    await run(service, conversation.id, "  Tell me\nabout   narwhals  ", max_tokens=2)
    named = await service.store.get_conversation(conversation.id)
    assert named.title == "Tell me about narwhals"
    await run(service, conversation.id, "And belugas?", max_tokens=2)
    assert (await service.store.get_conversation(conversation.id)).title == named.title
