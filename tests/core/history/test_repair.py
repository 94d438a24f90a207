"""Repairing a damaged history: one bad page costs the conversations on it, never the
rest; the damaged file is kept byte for byte; and a repair that cannot be done (a wrong
key, another window holding the file, nothing readable) changes nothing at all."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.history import database
from bastion_desktop.core.history.database import damage_marker
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.errors import (
    HistoryBusyError,
    HistoryDamagedError,
    HistoryDiskFullError,
    WrongKeyError,
)
from bastion_desktop.core.history.repair import RepairResult, repair_history
from bastion_desktop.core.inference.types import GenerationStats, Role
from bastion_guardrails.decisions import GuardDecision, Judgement, Stage, Verdict

from .conftest import conversation_with, fingerprints, sha256
from .test_database import (
    assert_one_sentence,
    cut_to_a_stub,
    damage_header,
    overwrite_a_middle_page,
    replace_with_noise,
)

NOON = 1_780_000_000.0  # the repair's clock, for the damaged copy's name


async def repair(path: Path, key: bytes, *, now: float | None = None) -> RepairResult:
    """The repair, on a thread, as the CLI runs it: it is blocking file work."""
    return await asyncio.to_thread(repair_history, path, key, now=now)


async def history_with_a_long_conversation(path: Path, key: bytes) -> None:
    """Five short conversations, with a branch, stats and a guardrail decision, and one
    whose reply fills most of the file: overwriting a page in the middle of the file
    damages that one alone, and conversations come before and after it."""
    with EncryptedConversationStore.open(path, key) as store:
        for number in range(5):
            await conversation_with(
                store, f"question {number}", f"answer {number}", title=f"Chat {number}"
            )
            if number == 2:  # conversations on either side of it
                await conversation_with(store, "the long one", "lighthouse " * 60_000, title="Long")
        await branch_with_stats_and_a_decision(store)


async def branch_with_stats_and_a_decision(store: EncryptedConversationStore) -> None:
    conversation = (await store.list_conversations())[-1]
    question, answer = await store.messages(conversation.id)
    again = await store.add_message(
        conversation.id, Role.ASSISTANT, "", MessageState.STREAMING, after=question.id
    )
    stats = GenerationStats(7, 3, 12.5, 30.0, 110.0, "stop")
    await store.update_message(
        again.id, content="another answer", state=MessageState.COMPLETE, stats=stats
    )
    judgement = Judgement("Llama Guard 3 1B", self_check=False, probability=0.2, threshold=0.5)
    decision = GuardDecision(
        Verdict.ALLOWED, Stage.OUTPUT, "standard", "not kept", latency_ms=4.0,
        judgement=judgement,
    )  # fmt: skip
    await store.record_guard_event(conversation.id, again.id, decision)
    await store.select_alternative(answer.id)  # the first answer shown, the other kept


async def everything_in(path: Path, key: bytes) -> dict[str, object]:
    """Each conversation by title, with all its messages (every branch) and decisions."""
    with EncryptedConversationStore.open(path, key) as store:
        await store.check_integrity()
        found: dict[str, object] = {}
        for conversation in await store.list_conversations(limit=100):
            messages = [await store.messages(conversation.id)]
            for message in messages[0]:
                messages.append(await store.alternatives(message.id))
            events = await store.list_guard_events(conversation.id)
            found[conversation.title] = (conversation, messages, events)
        return found


async def test_a_damaged_page_costs_only_the_conversation_on_it(
    history_path: Path, key: bytes
) -> None:
    await history_with_a_long_conversation(history_path, key)
    before = await everything_in(history_path, key)
    overwrite_a_middle_page(history_path)
    with EncryptedConversationStore.open(history_path, key) as store:
        (long,) = [c for c in await store.list_conversations() if c.title == "Long"]
        with pytest.raises(HistoryDamagedError, match="bastion history repair"):
            await store.messages(long.id)
    assert damage_marker(history_path).exists(), "the next start offers the repair"
    damaged = sha256(history_path)

    result = await repair(history_path, key, now=NOON)

    assert (result.kept, result.lost) == (5, ("Long",))
    assert result.damaged_copy is not None
    assert result.damaged_copy.parent == history_path.parent
    assert result.damaged_copy.name.startswith("history.damaged-2026")
    assert result.damaged_copy.name.endswith(".db")
    assert sha256(result.damaged_copy) == damaged, "the damaged file is kept as it was"
    assert not list(history_path.parent.glob("*.repairing*")), "nothing left behind"
    assert not damage_marker(history_path).exists()
    assert not Path(f"{history_path}-wal").exists(), "no log of the damaged file beside it"
    for written in history_path.parent.iterdir():  # encrypted, every file of it
        assert b"question" not in written.read_bytes(), written.name

    after = await everything_in(history_path, key)  # includes the integrity check
    del before["Long"]
    assert after == before, "ids, branches, the shown branch, stats and decisions kept"
    with EncryptedConversationStore.open(history_path, key) as store:
        assert [hit.conversation_title for hit in await store.search("answer 3")] == ["Chat 3"]
        assert not await store.search("lighthouse")
        # The history goes on: a new message gets an id no earlier message had.
        newest = max(m.id for _, messages, _ in after.values() for m in messages[0])
        added = await conversation_with(store, "after the repair")
        assert (await store.messages(added.id))[0].id > newest
        await store.delete_conversation(added.id)


async def test_a_history_that_is_not_damaged_is_left_as_it_was(
    history_path: Path, key: bytes
) -> None:
    await history_with_a_long_conversation(history_path, key)
    before = fingerprints(history_path.parent)
    result = await repair(history_path, key, now=NOON)
    assert (result.repaired, result.kept, result.lost) == (False, 6, ())
    assert fingerprints(history_path.parent) == before


async def test_the_commits_a_crash_left_in_the_log_are_kept(
    history_path: Path, key: bytes, tmp_path: Path
) -> None:
    """The write-ahead log beside a crashed history holds its latest commits: the repair
    reads them, the damaged copy keeps them, and none of it stays beside the new file."""
    await history_with_a_long_conversation(history_path, key)
    crashed = tmp_path / "crashed" / "history.db"
    crashed.parent.mkdir(mode=0o700)
    with EncryptedConversationStore.open(history_path, key) as store:
        latest = await conversation_with(store, "said just before the crash", title="Latest")
        await store.add_message(latest.id, Role.ASSISTANT, "half a rep", MessageState.STREAMING)
        for suffix in ("", "-wal"):  # what a killed process leaves on disk
            shutil.copyfile(f"{history_path}{suffix}", f"{crashed}{suffix}")
    assert Path(f"{crashed}-wal").stat().st_size > 0
    overwrite_a_middle_page(crashed)

    result = await repair(crashed, key, now=NOON)

    assert (result.kept, result.lost) == (6, ("Long",))
    assert result.damaged_copy is not None
    assert Path(f"{result.damaged_copy}-wal").stat().st_size > 0
    found = await everything_in(crashed, key)
    _, messages, _ = found["Latest"]  # type: ignore[misc]
    assert [(m.content, m.state) for m in messages[0]] == [
        ("said just before the crash", MessageState.COMPLETE),
        ("half a rep", MessageState.INTERRUPTED),
    ]


async def test_a_wrong_key_changes_nothing(
    history_path: Path, key: bytes, other_key: bytes
) -> None:
    await history_with_a_long_conversation(history_path, key)
    overwrite_a_middle_page(history_path)
    before = fingerprints(history_path.parent)
    with pytest.raises(WrongKeyError):
        await repair(history_path, other_key)
    assert fingerprints(history_path.parent) == before


async def test_an_open_window_keeps_the_repair_from_starting(
    history_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replacing the file under a window that has it open would lose what it writes
    next: the repair waits for the file's lock, and says so when it cannot get it."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    await history_with_a_long_conversation(history_path, key)
    overwrite_a_middle_page(history_path)
    with EncryptedConversationStore.open(history_path, key):
        before = fingerprints(history_path.parent)
        with pytest.raises(HistoryBusyError, match="in use by another Bastion") as raised:
            await repair(history_path, key)
        assert_one_sentence(raised.value)
        assert fingerprints(history_path.parent) == before


async def test_nothing_readable_means_nothing_changed(history_path: Path, key: bytes) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        await conversation_with(store, "the only one", "lighthouse " * 60_000)
    overwrite_a_middle_page(history_path)
    before = fingerprints(history_path.parent)
    with pytest.raises(HistoryDamagedError, match="would keep nothing") as raised:
        await repair(history_path, key)
    assert_one_sentence(raised.value)
    assert fingerprints(history_path.parent) == before


@pytest.mark.parametrize("damage", [damage_header, cut_to_a_stub, replace_with_noise])
async def test_a_file_whose_first_pages_are_gone_keeps_nothing_and_says_so(
    history_path: Path, key: bytes, damage: object
) -> None:
    await history_with_a_long_conversation(history_path, key)
    assert callable(damage)
    damage(history_path)
    before = fingerprints(history_path.parent)
    with pytest.raises(HistoryDamagedError, match="would keep nothing") as raised:
        await repair(history_path, key)
    assert "restore the file from a backup, or move it aside" in str(raised.value)
    assert_one_sentence(raised.value)
    assert fingerprints(history_path.parent) == before


@pytest.mark.blocks_loop("the test itself fills the disk and hashes what is on it")
async def test_a_full_disk_changes_nothing(small_disk: Path, key: bytes) -> None:
    """The rebuilt file and the damaged copy need room beside the history; without it
    the repair says so and leaves only what was there."""
    history_path = small_disk / "history.db"
    with EncryptedConversationStore.open(history_path, key) as store:
        for number in range(3):
            await conversation_with(store, f"question {number}", "tide " * 200_000)
    overwrite_a_middle_page(history_path)
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * max(free - history_path.stat().st_size // 2, 0))
    before = fingerprints(small_disk)
    with pytest.raises(HistoryDiskFullError) as raised:
        await repair(history_path, key)
    assert_one_sentence(raised.value)
    assert fingerprints(small_disk) == before


def test_the_damaged_sentence_points_to_the_repair(history_path: Path, key: bytes) -> None:
    history_path.parent.mkdir(parents=True)
    history_path.write_bytes(os.urandom(64 * 1024))
    with pytest.raises(HistoryDamagedError, match="bastion history repair"):
        EncryptedConversationStore.open(history_path, key)


def test_the_exclusive_connection_really_excludes(
    history_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the busy test relies on, from the other side: while the repair holds the
    file, a window starting up waits, then says the history is in use."""
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 200)
    EncryptedConversationStore.open(history_path, key).close()
    holder = database.connect_exclusively(history_path, key)
    try:
        with pytest.raises(HistoryBusyError):
            EncryptedConversationStore.open(history_path, key)
    finally:
        holder.close()
    EncryptedConversationStore.open(history_path, key).close()
