"""Full-text search over the encrypted history: ranked, with snippets, safe with any
query text, and kept in step with edits and deletions."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.search import match_expression, split_snippet
from bastion_desktop.core.inference.types import Role

from .conftest import conversation_with


async def test_hits_are_ranked_with_highlighted_snippets(
    store: EncryptedConversationStore,
) -> None:
    await conversation_with(
        store, "The harbour had boats. " * 8 + "One walrus slept on the pier.", title="Long"
    )
    best = await conversation_with(store, "Walrus, walrus: a walrus story.", title="Walruses")
    await conversation_with(store, "Nothing about that animal here.", title="Other")

    hits = await store.search("walrus")
    assert [hit.conversation_title for hit in hits] == ["Walruses", "Long"]
    assert hits[0].conversation_id == best.id
    assert hits[0].score > hits[1].score
    assert hits[0].role is Role.USER
    for hit in hits:
        assert hit.highlights
        for start, end in hit.highlights:
            assert hit.snippet[start:end].lower() == "walrus"
        assert "\x02" not in hit.snippet
        assert "\x03" not in hit.snippet
    assert hits[1].snippet.startswith("…"), "a long message is cut around the match"


async def test_every_word_must_match_and_the_last_is_a_prefix(
    store: EncryptedConversationStore,
) -> None:
    await conversation_with(store, "purple elephants dance")
    await conversation_with(store, "purple rain")
    assert len(await store.search("purple")) == 2
    assert len(await store.search("purple eleph")) == 1
    assert await store.search("eleph purple") == []  # only the last word is a prefix
    assert len(await store.search("Purple   ELEPHANTS")) == 1


async def test_accents_and_case_do_not_matter(store: EncryptedConversationStore) -> None:
    await conversation_with(store, "Un café crème à Genève")
    assert len(await store.search("cafe creme geneve")) == 1
    assert len(await store.search("CAFÉ")) == 1


@pytest.mark.parametrize(
    "query",
    ['"', "AND", "OR NOT", "NEAR(", "*", "-walrus", "title:walrus", ")(", "^", "", "   ", "'"],
)
async def test_no_query_text_is_an_error(store: EncryptedConversationStore, query: str) -> None:
    await conversation_with(store, "walrus AND friends")
    await store.search(query)


async def test_paging(store: EncryptedConversationStore) -> None:
    for number in range(5):
        await conversation_with(store, f"ticket {number}")
    first = await store.search("ticket", limit=2)
    rest = await store.search("ticket", limit=10, offset=2)
    assert len(first) == 2
    assert len(rest) == 3
    assert not {h.message_id for h in first} & {h.message_id for h in rest}


async def test_a_reply_is_searchable_once_it_stops_streaming(
    store: EncryptedConversationStore,
) -> None:
    conversation = await conversation_with(store, "question")
    reply = await store.add_message(conversation.id, Role.ASSISTANT, "", MessageState.STREAMING)
    await store.update_message(reply.id, content="draft mongoose", state=MessageState.STREAMING)
    assert await store.search("mongoose") == []  # not re-indexed at every save
    await store.update_message(reply.id, content="final meerkat", state=MessageState.COMPLETE)
    assert await store.search("mongoose") == []
    assert [h.message_id for h in await store.search("meerkat")] == [reply.id]
    await store.update_message(reply.id, content="edited aardvark", state=MessageState.STOPPED)
    assert await store.search("meerkat") == []
    assert [h.message_id for h in await store.search("aardvark")] == [reply.id]


async def test_a_reply_a_crash_cut_short_is_searchable(history_path: Path, key: bytes) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        conversation = await conversation_with(store, "question")
        reply = await store.add_message(
            conversation.id, Role.ASSISTANT, "partial pangolin", MessageState.STREAMING
        )
    with EncryptedConversationStore.open(history_path, key) as store:
        assert [h.message_id for h in await store.search("pangolin")] == [reply.id]


async def test_the_index_stays_in_step_with_the_messages(
    history_path: Path, key: bytes, tmp_path: Path
) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        keep = await conversation_with(store, "alpha beta", "gamma")
        doomed = await conversation_with(store, "delta", "epsilon")
        for text in ("one", "one two", "one two three"):
            reply = await store.add_message(keep.id, Role.ASSISTANT, "", MessageState.STREAMING)
            await store.update_message(reply.id, content=text, state=MessageState.STREAMING)
            await store.update_message(reply.id, content=text, state=MessageState.COMPLETE)
        await store.add_message(doomed.id, Role.ASSISTANT, "left streaming", MessageState.STREAMING)
        await store.export_json(tmp_path / "export.json", [keep.id])
        await store.delete_conversation(keep.id)
        await store.import_json(tmp_path / "export.json")
        await store.check_integrity()  # includes FTS5's own check against the messages
    with EncryptedConversationStore.open(history_path, key) as store:
        await store.check_integrity()
        assert len(await store.search("one")) == 3
        assert len(await store.search("streaming")) == 1


async def test_search_survives_a_reopen(history_path: Path, key: bytes) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        conversation = await conversation_with(store, "quokka selfies")
    with EncryptedConversationStore.open(history_path, key) as store:
        (hit,) = await store.search("quokka")
    assert hit.conversation_id == conversation.id


def test_match_expression_quotes_every_word() -> None:
    assert match_expression('say "hi" AND bye*') == '"say" "hi" "AND" "bye"*'
    assert match_expression("e-mail_address") == '"e" "mail" "address"*'
    assert match_expression(" ,;() ") is None


def test_split_snippet_finds_the_marks() -> None:
    assert split_snippet("a \x02bc\x03 d \x02e\x03") == ("a bc d e", ((2, 4), (7, 8)))
    assert split_snippet("no marks") == ("no marks", ())
