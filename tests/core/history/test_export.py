"""Export as JSON and Markdown, and import of our own JSON: a round trip restores every
branch, and a damaged or foreign file changes nothing at all."""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from bastion_desktop.core.conversation_store import ConversationNotFoundError, MessageState
from bastion_desktop.core.files import DiskFullError
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore, ImportResult
from bastion_desktop.core.history.errors import HistoryImportError
from bastion_desktop.core.inference.types import GenerationStats, Role

from .conftest import conversation_with, sha256

STATS = GenerationStats(5, 7, 12.5, 40.0, 200.0, "stop")


async def rich_history(store: EncryptedConversationStore) -> tuple[str, str]:
    """Two conversations: one with a regenerated reply, stats, a stopped reply, a pin."""
    first = await conversation_with(store, "What is a quokka?", title="Quokkas")
    reply = await store.add_message(first.id, Role.ASSISTANT, "", MessageState.STREAMING)
    await store.update_message(
        reply.id, content="A small wallaby.", state=MessageState.COMPLETE, stats=STATS
    )
    await store.branch_from(reply.id)
    await store.add_message(
        first.id, Role.ASSISTANT, "A marsupial from Rottnest.", MessageState.STOPPED
    )
    await store.set_pinned(first.id, True)
    second = await conversation_with(store, "Hello", "Hi there", title="Greetings")
    await store.set_archived(second.id, True)
    return first.id, second.id


async def snapshot(store: EncryptedConversationStore, conversation_id: str) -> Any:
    """What a user sees of a conversation, ids aside (an import gives new ones)."""
    conversation = await store.get_conversation(conversation_id)
    shown = await store.messages(conversation_id)
    alternatives = await store.alternatives(shown[-1].id)
    return (
        conversation,
        [(m.role, m.content, m.state, m.stats, m.alternative_number) for m in shown],
        [m.content for m in alternatives],
    )


async def test_json_round_trip_restores_every_branch(
    store: EncryptedConversationStore, tmp_path: Path, key: bytes
) -> None:
    first, second = await rich_history(store)
    export = tmp_path / "export.json"
    assert await store.export_json(export) == 2
    document = json.loads(export.read_text("utf-8"))
    assert (document["format"], document["version"]) == ("bastion.conversations", 1)

    with EncryptedConversationStore.open(tmp_path / "other" / "history.db", key) as other:
        assert await other.import_json(export) == ImportResult(imported=2, skipped=0)
        for conversation_id in (first, second):
            assert await snapshot(other, conversation_id) == await snapshot(store, conversation_id)
        assert len(await other.alternatives((await other.messages(first))[-1].id)) == 2
        assert [hit.conversation_id for hit in await other.search("Rottnest")] == [first]
        # Importing the same file again adds nothing.
        assert await other.import_json(export) == ImportResult(imported=0, skipped=2)
        assert (
            await other.count_conversations() + await other.count_conversations(archived=True) == 2
        )


async def test_export_of_chosen_conversations(
    store: EncryptedConversationStore, tmp_path: Path
) -> None:
    first, _second = await rich_history(store)
    export = tmp_path / "one.json"
    assert await store.export_json(export, [first]) == 1
    (conversation,) = json.loads(export.read_text("utf-8"))["conversations"]
    assert conversation["title"] == "Quokkas"
    with pytest.raises(ConversationNotFoundError):
        await store.export_json(tmp_path / "none.json", ["missing"])
    assert not (tmp_path / "none.json").exists()


async def test_markdown_shows_the_shown_branch(
    store: EncryptedConversationStore, tmp_path: Path
) -> None:
    first, _second = await rich_history(store)
    path = tmp_path / "quokkas.md"
    assert await store.export_markdown(path, [first]) == 1
    text = path.read_text("utf-8")
    assert text.startswith("# Quokkas\n")
    assert "## System prompt\n\nBe brief." in text
    assert "## You\n\nWhat is a quokka?" in text
    assert "## Assistant\n\nA marsupial from Rottnest.\n\n*(reply stopped)*" in text
    assert "A small wallaby." not in text  # the other alternative is not the one shown
    everything = tmp_path / "all.md"
    assert await store.export_markdown(everything) == 2
    assert "\n---\n\n# Greetings" in everything.read_text("utf-8")


def _break_parent(document: dict[str, Any]) -> None:
    document["conversations"][0]["messages"][1]["parent_id"] = 999


def _break_role(document: dict[str, Any]) -> None:
    document["conversations"][1]["messages"][0]["role"] = "wizard"


def _future_version(document: dict[str, Any]) -> None:
    document["version"] = 2


def _extra_field(document: dict[str, Any]) -> None:
    document["conversations"][0]["surprise"] = True


def _duplicate_conversation(document: dict[str, Any]) -> None:
    document["conversations"].append(document["conversations"][0])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_break_parent, "does not come before it"),
        (_break_role, r"at conversations\[1\]\.messages\[0\]\.role"),
        (_future_version, "format version 2"),
        (_extra_field, "surprise"),
        (_duplicate_conversation, "appears twice"),
    ],
)
async def test_an_invalid_export_changes_nothing(
    tmp_path: Path, key: bytes, damage: Any, reason: str
) -> None:
    with EncryptedConversationStore.open(tmp_path / "source.db", key) as source:
        await rich_history(source)
        export = tmp_path / "export.json"
        await source.export_json(export)
    document = json.loads(export.read_text("utf-8"))
    # A new conversation first in the file: it must not get in either.
    document["conversations"].insert(
        0, {**copy.deepcopy(document["conversations"][0]), "id": "f" * 32}
    )
    damage(document)
    export.write_text(json.dumps(document), "utf-8")

    target = tmp_path / "target" / "history.db"
    with EncryptedConversationStore.open(target, key) as store:
        await conversation_with(store, "already here")
        before = await store.list_conversations()
    fingerprint = sha256(target)
    with EncryptedConversationStore.open(target, key) as store:
        with pytest.raises(HistoryImportError, match=reason) as raised:
            await store.import_json(export)
        assert "nothing was imported" in str(raised.value)
        assert await store.list_conversations() == before
        assert await store.count_conversations(archived=True) == 0
    assert sha256(target) == fingerprint


async def test_a_cut_short_or_foreign_file_changes_nothing(
    store: EncryptedConversationStore, tmp_path: Path
) -> None:
    await rich_history(store)
    export = tmp_path / "export.json"
    await store.export_json(export)
    data = export.read_bytes()
    export.write_bytes(data[: len(data) // 2])
    with pytest.raises(HistoryImportError, match="Invalid JSON"):
        await store.import_json(export)
    export.write_bytes(b'{"some": "other app"}')
    with pytest.raises(HistoryImportError, match="not a Bastion conversation export"):
        await store.import_json(export)
    with pytest.raises(HistoryImportError, match="could not read"):
        await store.import_json(tmp_path / "missing.json")
    assert await store.count_conversations() == 1


async def test_import_errors_never_quote_the_file(
    store: EncryptedConversationStore, tmp_path: Path
) -> None:
    secret = f"secret-{secrets.token_hex(8)}"
    await conversation_with(store, secret)
    export = tmp_path / "export.json"
    await store.export_json(export)
    document = json.loads(export.read_text("utf-8"))
    document["conversations"][0]["messages"][0]["content"] = {"text": secret}
    export.write_text(json.dumps(document), "utf-8")
    with pytest.raises(HistoryImportError) as raised:
        await store.import_json(export)
    assert secret not in str(raised.value)
    assert raised.value.__cause__ is None


async def test_a_reply_exported_mid_stream_is_imported_as_interrupted(
    store: EncryptedConversationStore, tmp_path: Path, key: bytes
) -> None:
    conversation = await conversation_with(store, "question")
    await store.add_message(conversation.id, Role.ASSISTANT, "half", MessageState.STREAMING)
    export = tmp_path / "export.json"
    await store.export_json(export)
    with EncryptedConversationStore.open(tmp_path / "other.db", key) as other:
        await other.import_json(export)
        assert (await other.messages(conversation.id))[-1].state is MessageState.INTERRUPTED


async def test_an_import_that_fills_the_disk_changes_nothing(
    small_disk: Path, tmp_path: Path, key: bytes
) -> None:
    export = tmp_path / "big.json"

    def write_export() -> None:
        conversations = [
            {
                "id": secrets.token_hex(16),
                "title": f"conversation {number}",
                "model_id": "m",
                "profile_id": "p",
                "system_prompt": "",
                "created_at": 1.0,
                "updated_at": 1.0,
                "shown_message_id": 1,
                "messages": [
                    {
                        "id": 1,
                        "parent_id": None,
                        "role": "user",
                        "content": " ".join(secrets.token_hex(4) for _ in range(250_000)),
                        "state": "complete",
                        "created_at": 1.0,
                    }
                ],
            }
            for number in range(5)
        ]
        document = {
            "format": "bastion.conversations",
            "version": 1,
            "exported_at": 1.0,
            "conversations": conversations,
        }
        export.write_text(json.dumps(document), "utf-8")

    # Made off the loop (about a second): the rule holds the import itself to it.
    await asyncio.to_thread(write_export)
    target = small_disk / "history.db"
    with EncryptedConversationStore.open(target, key) as store:
        await conversation_with(store, "already here")
        before = await store.list_conversations()
        # The first conversations fit; the file as a whole does not.
        with pytest.raises(DiskFullError, match="is full"):
            await store.import_json(export)
        assert await store.list_conversations() == before
        assert await store.search("conversation") == []


async def test_a_reply_saved_during_an_import_waits_for_it_and_loses_nothing(
    store: EncryptedConversationStore, tmp_path: Path
) -> None:
    """A large import runs on a worker thread (it held the loop that streams replies for
    as long as it took); a message saved meanwhile waits for the write connection
    instead of using it beside the import, and both are kept."""
    from tests.core.history.test_crash import write_export

    export = tmp_path / "export.json"
    await asyncio.to_thread(write_export, export, 40, 3000)
    chat = await conversation_with(store, "Hello")
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    importing = asyncio.create_task(store.import_json(export))
    await asyncio.sleep(0)  # the import has the connection now
    saved = await store.add_message(chat.id, Role.ASSISTANT, "Hi!", MessageState.COMPLETE)
    assert importing.done(), "the save waited for the import"
    ticker.cancel()
    assert (await importing).imported == 40
    assert ticks > 1, "the loop ran other work while the import wrote"
    assert (await store.messages(chat.id))[-1] == saved
    assert await store.count_conversations() == 41
