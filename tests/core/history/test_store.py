"""Round trips of every store operation on a real encrypted file, reopened where it
matters, so what is checked is what reached the disk."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from bastion_desktop.core.conversation_store import (
    ConversationNotFoundError,
    ConversationStore,
    InMemoryConversationStore,
    MessageNotFoundError,
    MessageState,
)
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.types import GenerationStats, Role
from bastion_guardrails.decisions import GuardDecision, Stage, Verdict

from .conftest import conversation_with

STATS = GenerationStats(
    prompt_tokens=12,
    generated_tokens=34,
    ttft_ms=56.5,
    tokens_per_second=78.25,
    total_ms=910.0,
    finish_reason="length",
)


def test_it_is_a_conversation_store(store: EncryptedConversationStore) -> None:
    stores: list[ConversationStore] = [store, InMemoryConversationStore()]
    assert len(stores) == 2  # mypy checks both against the protocol


async def test_a_conversation_and_its_messages_survive_a_reopen(
    history_path: Path, key: bytes
) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        conversation = await store.create_conversation(
            title="Colours", model_id="gemma", profile_id="strict", system_prompt="Be terse."
        )
        user = await store.add_message(
            conversation.id, Role.USER, "Name three colours.", MessageState.COMPLETE
        )
        reply = await store.add_message(
            conversation.id,
            Role.ASSISTANT,
            "",
            MessageState.STREAMING,
            model_id="gemma",
            profile_id="strict",
        )
        await store.update_message(reply.id, content="Red,", state=MessageState.STREAMING)
        await store.update_message(
            reply.id, content="Red, green, blue.", state=MessageState.COMPLETE, stats=STATS
        )
        # A later update without stats keeps the ones saved.
        await store.update_message(
            reply.id, content="Red, green, blue.", state=MessageState.COMPLETE
        )

    with EncryptedConversationStore.open(history_path, key) as store:
        assert store.interrupted_on_open == 0
        reread = await store.get_conversation(conversation.id)
        first, second = await store.messages(conversation.id)
    assert reread == dataclasses.replace(conversation, updated_at=reply.created_at)
    assert first == user
    assert (first.role, first.content, first.state) == (
        Role.USER,
        "Name three colours.",
        MessageState.COMPLETE,
    )
    assert second.parent_id == user.id
    assert (second.role, second.content, second.state) == (
        Role.ASSISTANT,
        "Red, green, blue.",
        MessageState.COMPLETE,
    )
    assert (second.model_id, second.profile_id, second.stats) == ("gemma", "strict", STATS)


async def test_adding_a_message_makes_the_conversation_recent(
    store: EncryptedConversationStore,
) -> None:
    older = await conversation_with(store, "first")
    newer = await conversation_with(store, "second")
    await store.add_message(older.id, Role.ASSISTANT, "reply", MessageState.COMPLETE)
    listed = await store.list_conversations()
    assert [c.id for c in listed] == [older.id, newer.id]
    assert listed[0].updated_at > older.updated_at


async def test_unknown_ids_are_errors_not_crashes(store: EncryptedConversationStore) -> None:
    with pytest.raises(ConversationNotFoundError):
        await store.get_conversation("nope")
    with pytest.raises(ConversationNotFoundError):
        await store.messages("nope")
    with pytest.raises(ConversationNotFoundError):
        await store.add_message("nope", Role.USER, "hi", MessageState.COMPLETE)
    with pytest.raises(ConversationNotFoundError):
        await store.rename_conversation("nope", "title")
    with pytest.raises(ConversationNotFoundError):
        await store.delete_conversation("nope")
    with pytest.raises(MessageNotFoundError):
        await store.update_message(999, content="x", state=MessageState.COMPLETE)
    with pytest.raises(MessageNotFoundError):
        await store.alternatives(999)
    with pytest.raises(MessageNotFoundError):
        await store.branch_from(999)
    with pytest.raises(MessageNotFoundError):
        await store.select_alternative(999)


async def test_the_list_pages_pinned_first_then_newest(store: EncryptedConversationStore) -> None:
    conversations = [await conversation_with(store, f"chat {n}", title=f"#{n}") for n in range(7)]
    await store.set_pinned(conversations[2].id, True)
    await store.set_archived(conversations[6].id, True)

    first = await store.list_conversations(limit=3)
    second = await store.list_conversations(limit=3, offset=3)
    assert [c.title for c in first] == ["#2", "#5", "#4"]
    assert [c.title for c in second] == ["#3", "#1", "#0"]
    assert first[0].pinned
    assert await store.count_conversations() == 6
    archived = await store.list_conversations(archived=True)
    assert [(c.title, c.archived) for c in archived] == [("#6", True)]
    assert await store.count_conversations(archived=True) == 1

    await store.set_pinned(conversations[2].id, False)
    await store.set_archived(conversations[6].id, False)
    assert [c.title for c in await store.list_conversations(limit=2)] == ["#6", "#5"]


async def test_rename(store: EncryptedConversationStore) -> None:
    conversation = await conversation_with(store, "hi")
    await store.rename_conversation(conversation.id, "Renamed")
    assert (await store.get_conversation(conversation.id)).title == "Renamed"


async def test_delete_takes_messages_events_and_search_entries(
    store: EncryptedConversationStore,
) -> None:
    kept = await conversation_with(store, "keep this walrus")
    doomed = await conversation_with(store, "forget this walrus")
    messages = await store.messages(doomed.id)
    decision = GuardDecision(Verdict.ALLOWED, Stage.INPUT, "standard", "fine")
    await store.record_guard_event(doomed.id, messages[0].id, decision)

    await store.delete_conversation(doomed.id)

    with pytest.raises(ConversationNotFoundError):
        await store.get_conversation(doomed.id)
    assert [hit.conversation_id for hit in await store.search("walrus")] == [kept.id]
    assert await store.list_guard_events(doomed.id) == []
    with pytest.raises(MessageNotFoundError):
        await store.update_message(messages[0].id, content="x", state=MessageState.COMPLETE)


async def test_retention_deletes_what_was_untouched_for_n_days(
    history_path: Path, key: bytes
) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        old = await conversation_with(store, "old")
        pinned_old = await conversation_with(store, "old but pinned")
        await store.set_pinned(pinned_old.id, True)
        fresh = await conversation_with(store, "fresh")
        last_old = (await store.get_conversation(pinned_old.id)).updated_at
        last_fresh = (await store.get_conversation(fresh.id)).updated_at
        # Move the clock rather than the data: 30 days after a moment between the two.
        now = (last_old + last_fresh) / 2 + 30 * 86_400
        assert await store.delete_older_than(31, now=now) == 0
        assert await store.delete_older_than(30, now=now) == 2
    with EncryptedConversationStore.open(history_path, key) as store:
        assert [c.id for c in await store.list_conversations()] == [fresh.id]
        with pytest.raises(ConversationNotFoundError):
            await store.messages(old.id)
        assert await store.search("old") == []
        with pytest.raises(ValueError, match="positive"):
            await store.delete_older_than(0)


async def test_retention_keeps_recent_conversations(store: EncryptedConversationStore) -> None:
    recent = await conversation_with(store, "recent")
    assert await store.delete_older_than(1) == 0
    assert [c.id for c in await store.list_conversations()] == [recent.id]


async def test_regenerated_replies_are_kept_as_alternatives(
    store: EncryptedConversationStore,
) -> None:
    conversation = await conversation_with(store, "Tell me a joke.", "First joke.")
    question, first = await store.messages(conversation.id)

    await store.branch_from(first.id)  # regenerate: the next reply is a sibling
    assert await store.messages(conversation.id) == [question]
    second = await store.add_message(
        conversation.id, Role.ASSISTANT, "Second joke.", MessageState.COMPLETE
    )
    assert (second.parent_id, second.alternative_number, second.alternative_count) == (
        question.id,
        2,
        2,
    )
    shown = await store.messages(conversation.id)
    assert [m.content for m in shown] == ["Tell me a joke.", "Second joke."]

    alternatives = await store.alternatives(first.id)
    assert [(m.content, m.alternative_number) for m in alternatives] == [
        ("First joke.", 1),
        ("Second joke.", 2),
    ]
    await store.select_alternative(first.id)
    assert [m.content for m in await store.messages(conversation.id)] == [
        "Tell me a joke.",
        "First joke.",
    ]


async def test_a_reply_is_kept_after_the_question_it_names(
    store: EncryptedConversationStore,
) -> None:
    """Another writer added a turn meanwhile (a second window, `bastion chat`)."""
    conversation = await conversation_with(store, "One?")
    (question,) = await store.messages(conversation.id)
    await store.add_message(conversation.id, Role.USER, "Two?", MessageState.COMPLETE)
    reply = await store.add_message(
        conversation.id, Role.ASSISTANT, "One.", MessageState.COMPLETE, after=question.id
    )
    assert reply.parent_id == question.id
    assert [m.content for m in await store.messages(conversation.id)] == ["One?", "One."]
    assert [m.content for m in await store.alternatives(reply.id)] == ["Two?", "One."]


async def test_an_edited_question_starts_a_new_branch_and_the_old_one_stays(
    history_path: Path, key: bytes
) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        conversation = await conversation_with(store, "Q1", "A1", "Q2 typo", "A2", "Q3", "A3")
        q1, a1, q2, _a2, _q3, _a3 = await store.messages(conversation.id)

        await store.branch_from(q2.id)  # edit Q2: its replacement follows A1
        await store.add_message(conversation.id, Role.USER, "Q2 fixed", MessageState.COMPLETE)
        await store.add_message(conversation.id, Role.ASSISTANT, "A2'", MessageState.COMPLETE)
        assert [m.content for m in await store.messages(conversation.id)] == [
            "Q1",
            "A1",
            "Q2 fixed",
            "A2'",
        ]
    with EncryptedConversationStore.open(history_path, key) as store:
        shown = await store.messages(conversation.id)
        assert [m.content for m in shown] == ["Q1", "A1", "Q2 fixed", "A2'"]
        assert (shown[2].alternative_number, shown[2].alternative_count) == (2, 2)
        # Going back to the old question shows the rest of its branch, to the end.
        await store.select_alternative(q2.id)
        assert [m.content for m in await store.messages(conversation.id)] == [
            "Q1",
            "A1",
            "Q2 typo",
            "A2",
            "Q3",
            "A3",
        ]
        assert [m.id for m in await store.messages(conversation.id)][:2] == [q1.id, a1.id]


async def test_the_in_memory_store_keeps_alternatives_the_same_way() -> None:
    store = InMemoryConversationStore()
    conversation = await store.create_conversation(
        title="t", model_id="m", profile_id="p", system_prompt=""
    )
    question = await store.add_message(conversation.id, Role.USER, "Q", MessageState.COMPLETE)
    first = await store.add_message(conversation.id, Role.ASSISTANT, "A", MessageState.COMPLETE)
    await store.branch_from(first.id)
    await store.add_message(conversation.id, Role.ASSISTANT, "B", MessageState.COMPLETE)
    assert [m.content for m in await store.messages(conversation.id)] == ["Q", "B"]
    assert [m.content for m in await store.alternatives(first.id)] == ["A", "B"]
    await store.select_alternative(first.id)
    shown = await store.messages(conversation.id)
    assert [(m.content, m.alternative_number, m.alternative_count) for m in shown] == [
        ("Q", 1, 1),
        ("A", 1, 2),
    ]
    assert shown[1].parent_id == question.id


async def test_guard_events_hold_no_text(store: EncryptedConversationStore) -> None:
    conversation = await conversation_with(store, "my card is 4111 1111 1111 1111")
    (message,) = await store.messages(conversation.id)
    decision = GuardDecision(
        Verdict.MASKED,
        Stage.INPUT,
        "workplace",
        "A card number (4111 1111 1111 1111) was masked.",
        rail="card-numbers",
        category="pii",
        latency_ms=3.5,
        rewritten="my card is [CARD]",
    )
    await store.record_guard_event(conversation.id, message.id, decision)
    (event,) = await store.list_guard_events(conversation.id)
    assert (event.verdict, event.stage, event.profile_id, event.rail, event.category) == (
        "masked",
        "input",
        "workplace",
        "card-numbers",
        "pii",
    )
    assert (event.message_id, event.latency_ms) == (message.id, 3.5)
    assert "4111" not in repr(event)
    assert "[CARD]" not in repr(event)


async def test_replies_left_streaming_are_marked_interrupted_on_open(
    history_path: Path, key: bytes
) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        conversation = await conversation_with(store, "question")
        reply = await store.add_message(conversation.id, Role.ASSISTANT, "", MessageState.STREAMING)
        await store.update_message(reply.id, content="half a repl", state=MessageState.STREAMING)
    with EncryptedConversationStore.open(history_path, key) as store:
        assert store.interrupted_on_open == 1
        _question, kept = await store.messages(conversation.id)
        assert (kept.content, kept.state) == ("half a repl", MessageState.INTERRUPTED)
        assert store.recover_interrupted_replies() == 0


async def test_history_reads_run_beside_a_writer(store: EncryptedConversationStore) -> None:
    conversation = await conversation_with(store, "question")
    reply = await store.add_message(conversation.id, Role.ASSISTANT, "", MessageState.STREAMING)

    async def stream() -> None:
        for count in range(200):
            text = "token " * count
            await store.update_message(reply.id, content=text, state=MessageState.STREAMING)
            await asyncio.sleep(0)

    async def browse() -> int:
        pages = 0
        for _ in range(50):
            await store.list_conversations()
            await store.search("token")
            pages += 1
        return pages

    _, pages = await asyncio.gather(stream(), browse())
    assert pages == 50
    await store.update_message(reply.id, content="last token", state=MessageState.COMPLETE)
    (hit,) = await store.search("token")
    assert hit.message_id == reply.id
