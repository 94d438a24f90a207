"""Opening the history file: every way it can fail gives a sentence and leaves the file
exactly as it was (compared by sha256), and a fresh database is only made where no file
was."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import apsw
import pytest

from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.files import DiskFullError
from bastion_desktop.core.history import database
from bastion_desktop.core.history.database import UNENCRYPTED, HistoryDatabase
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.errors import (
    HistoryBusyError,
    HistoryDamagedError,
    HistoryError,
    HistoryPartlyReadError,
    HistoryReadOnlyError,
    HistoryTooNewError,
    WrongKeyError,
)
from bastion_desktop.core.history.schema import SCHEMA_VERSION
from bastion_desktop.core.inference.types import Role
from bastion_guardrails.decisions import GuardDecision, Judgement, Stage, Verdict

from .conftest import conversation_with, fingerprints, remount, sha256


async def make_history(path: Path, key: bytes, conversations: int = 3) -> None:
    with EncryptedConversationStore.open(path, key) as store:
        for number in range(conversations):
            await conversation_with(store, f"question {number}", f"answer {number}")


def raw_connection(path: Path, key: bytes) -> apsw.Connection:
    connection = apsw.Connection(str(path))
    connection.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    return connection


def assert_one_sentence(error: BaseException) -> None:
    text = str(error)
    assert text.endswith("."), text
    assert "\n" not in text
    assert "apsw" not in text.lower()


def test_a_new_history_is_encrypted_wal_and_private(history_path: Path, key: bytes) -> None:
    HistoryDatabase.open(history_path, key).close()
    data = history_path.read_bytes()
    assert not data.startswith(b"SQLite format 3")
    assert stat.S_IMODE(history_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(history_path.parent.stat().st_mode) == 0o700

    db = HistoryDatabase.open(history_path, key)
    try:
        writer = db.writer
        assert writer.execute("PRAGMA journal_mode").get == "wal"
        assert writer.execute("PRAGMA secure_delete").get == 1
        assert writer.execute("PRAGMA foreign_keys").get == 1
        assert writer.execute("PRAGMA temp_store").get == 2  # memory
        assert writer.execute("PRAGMA user_version").get == SCHEMA_VERSION
        assert writer.execute("PRAGMA cipher").get == "chacha20"
    finally:
        db.close()


async def test_it_cannot_be_read_without_the_key(history_path: Path, key: bytes) -> None:
    await make_history(history_path, key)
    connection = apsw.Connection(str(history_path))
    with pytest.raises(apsw.NotADBError):
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    connection.close()


async def test_a_wrong_key_is_refused_and_the_file_kept(
    history_path: Path, key: bytes, other_key: bytes
) -> None:
    await make_history(history_path, key)
    before = fingerprints(history_path.parent)
    with pytest.raises(WrongKeyError, match="could not be unlocked with this key") as raised:
        EncryptedConversationStore.open(history_path, other_key)
    assert_one_sentence(raised.value)
    assert fingerprints(history_path.parent) == before
    with EncryptedConversationStore.open(history_path, key) as store:
        assert len(await store.list_conversations()) == 3


async def test_a_newer_schema_is_refused_without_a_write(history_path: Path, key: bytes) -> None:
    await make_history(history_path, key)
    connection = raw_connection(history_path, key)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    before = fingerprints(history_path.parent)
    with pytest.raises(HistoryTooNewError, match="newer Bastion") as raised:
        EncryptedConversationStore.open(history_path, key)
    assert_one_sentence(raised.value)
    assert fingerprints(history_path.parent) == before


async def test_a_version_1_history_gains_the_judge_and_keeps_its_decisions(
    history_path: Path, key: bytes
) -> None:
    """The first schema change: a history written before it opens, keeps every decision,
    and records which judge flagged a message from then on."""
    # A history as version 1 wrote it: this version's, less what version 2 added.
    await make_history(history_path, key, conversations=0)
    connection = raw_connection(history_path, key)
    for column in ("judge", "self_check", "probability", "threshold"):
        connection.execute(f"ALTER TABLE guard_events DROP COLUMN {column}")
    connection.execute("PRAGMA user_version = 1")
    connection.execute(
        "INSERT INTO conversations (id, title, model_id, profile_id, system_prompt, "
        "created_at, updated_at) VALUES ('c1', 'Old', 'starter', 'standard', '', 1.0, 1.0)"
    )
    connection.execute(
        "INSERT INTO guard_events (conversation_id, message_id, verdict, stage, profile_id, "
        "rail, category, latency_ms, created_at) VALUES "
        "('c1', NULL, 'blocked', 'input', 'standard', 'safety', 'violent crime', 5.0, 1.0)"
    )
    connection.close()
    judgement = Judgement("Llama Guard 3 1B", self_check=False, probability=0.97, threshold=0.31)
    with EncryptedConversationStore.open(history_path, key) as store:
        (old,) = await store.list_guard_events("c1")
        assert (old.verdict, old.category, old.judgement) == ("blocked", "violent crime", None)
        decision = GuardDecision(
            Verdict.BLOCKED, Stage.INPUT, "standard", "not kept", rail="safety",
            category="violent crime", judgement=judgement,
        )  # fmt: skip
        await store.record_guard_event("c1", None, decision)
        await store.record_guard_event("c1", None, replace(decision, judgement=None))
        events = await store.list_guard_events("c1")
    assert [e.judgement for e in events] == [None, judgement, None]
    connection = raw_connection(history_path, key)
    assert connection.execute("PRAGMA user_version").get == SCHEMA_VERSION
    connection.close()


def damage_header(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.write(os.urandom(100))


def damage_first_page(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(200)
        handle.write(os.urandom(64))


def cut_in_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def cut_mid_page(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 1000)


def cut_to_a_stub(path: Path) -> None:
    os.truncate(path, 100)


def overwrite_a_middle_page(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(os.urandom(4096))


def replace_with_noise(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (damage_header, HistoryDamagedError),
        # Page 1 is authenticated like every page: a damaged one looks like a wrong key,
        # and the sentence says it may be either.
        (damage_first_page, WrongKeyError),
        (cut_in_half, HistoryDamagedError),
        (cut_mid_page, HistoryDamagedError),
        (cut_to_a_stub, HistoryDamagedError),
        (replace_with_noise, HistoryDamagedError),
    ],
)
async def test_a_damaged_file_is_refused_and_kept(
    history_path: Path, key: bytes, damage: object, expected: type[HistoryError]
) -> None:
    await make_history(history_path, key, conversations=30)
    assert callable(damage)
    damage(history_path)
    before = sha256(history_path)
    with pytest.raises(expected) as raised:
        EncryptedConversationStore.open(history_path, key)
    assert_one_sentence(raised.value)
    assert sha256(history_path) == before, "never a fresh database over the old file"


async def test_damage_deep_in_the_file_is_found_by_the_check(
    history_path: Path, key: bytes
) -> None:
    await make_history(history_path, key, conversations=40)
    overwrite_a_middle_page(history_path)
    before = sha256(history_path)
    store = EncryptedConversationStore.open(history_path, key)
    with store, pytest.raises(HistoryDamagedError, match="is damaged"):
        await store.check_integrity()
    assert sha256(history_path) == before


def make_empty_file(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.touch()


def file_size(path: Path) -> int:
    return path.stat().st_size


def test_a_plain_sqlite_file_is_not_taken_for_a_history(history_path: Path, key: bytes) -> None:
    history_path.parent.mkdir(parents=True)
    plain = apsw.Connection(str(history_path))
    plain.execute("CREATE TABLE notes (text); INSERT INTO notes VALUES ('mine')")
    plain.close()
    before = sha256(history_path)
    with pytest.raises(HistoryDamagedError, match="plain, unencrypted SQLite file"):
        EncryptedConversationStore.open(history_path, key)
    assert sha256(history_path) == before


async def test_an_empty_file_becomes_a_history(history_path: Path, key: bytes) -> None:
    # What a crash before the first commit leaves: nothing to lose.
    make_empty_file(history_path)
    with EncryptedConversationStore.open(history_path, key) as store:
        assert await store.list_conversations() == []
    assert file_size(history_path) > 0


async def test_a_read_only_folder_is_a_sentence(read_only_disk: Path, key: bytes) -> None:
    path = read_only_disk / "history.db"
    await make_history(path, key)
    before = fingerprints(read_only_disk)
    remount(read_only_disk, "ro")
    with pytest.raises(HistoryReadOnlyError, match="read-only") as raised:
        EncryptedConversationStore.open(path, key)
    assert_one_sentence(raised.value)
    with pytest.raises(HistoryReadOnlyError, match="read-only"):
        EncryptedConversationStore.open(read_only_disk / "new" / "history.db", key)
    remount(read_only_disk, "rw")
    assert fingerprints(read_only_disk) == before


async def test_a_full_disk_while_writing_keeps_what_was_saved(small_disk: Path, key: bytes) -> None:
    path = small_disk / "history.db"
    with EncryptedConversationStore.open(path, key) as store:
        conversation = await conversation_with(store, "kept question", "kept answer")
        saved = await store.messages(conversation.id)
        filler = small_disk / "filler"
        with pytest.raises(OSError):  # noqa: PT011  (fill it to the last byte)
            filler.write_bytes(b"\0" * (17 * 1024 * 1024))
        with pytest.raises(DiskFullError, match="is full") as raised:
            await store.add_message(
                conversation.id, Role.USER, "x" * 2_000_000, MessageState.COMPLETE
            )
        assert isinstance(raised.value, HistoryError)
        assert await store.messages(conversation.id) == saved
        filler.unlink()
        await store.add_message(conversation.id, Role.USER, "after", MessageState.COMPLETE)
        assert [m.content for m in await store.messages(conversation.id)] == [
            "kept question",
            "kept answer",
            "after",
        ]


async def test_opening_on_a_full_disk_is_a_sentence(small_disk: Path, key: bytes) -> None:
    path = small_disk / "history.db"
    await make_history(path, key)
    before = sha256(path)
    with pytest.raises(OSError):  # noqa: PT011
        (small_disk / "filler").write_bytes(b"\0" * (17 * 1024 * 1024))
    with pytest.raises(DiskFullError, match="is full"):
        EncryptedConversationStore.open(path, key)
    assert sha256(path) == before
    with pytest.raises(DiskFullError, match="is full"):
        EncryptedConversationStore.open(small_disk / "new.db", key)
    assert not [name for name in fingerprints(small_disk) if name.startswith("new.db")]


async def test_another_writer_holding_the_lock_is_a_sentence(
    history_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "BUSY_TIMEOUT_MS", 50)
    with EncryptedConversationStore.open(history_path, key) as store:
        conversation = await conversation_with(store, "hello")
        other = raw_connection(history_path, key)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(HistoryBusyError, match="in use by another Bastion"):
                await store.add_message(conversation.id, Role.USER, "no", MessageState.COMPLETE)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await store.add_message(conversation.id, Role.USER, "later", MessageState.COMPLETE)
        assert [m.content for m in await store.messages(conversation.id)] == ["hello", "later"]


async def test_rekey_changes_the_key_in_place(
    history_path: Path, key: bytes, other_key: bytes
) -> None:
    await make_history(history_path, key)
    with EncryptedConversationStore.open(history_path, key) as store:
        await store.list_conversations()  # the read connection is open: rekey closes it
        await store.rekey(other_key)
        assert len(await store.list_conversations()) == 3
        conversation = await conversation_with(store, "written after the rekey")
    with pytest.raises(WrongKeyError):
        EncryptedConversationStore.open(history_path, key)
    with EncryptedConversationStore.open(history_path, other_key) as store:
        assert len(await store.list_conversations()) == 4
        messages = await store.messages(conversation.id)
        assert [m.content for m in messages] == ["written after the rekey"]
        await store.check_integrity()


def test_keys_must_be_32_bytes(history_path: Path) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        HistoryDatabase.open(history_path, b"short")
    assert not history_path.exists()


def test_an_unencrypted_database_is_plain_sqlite(history_path: Path) -> None:
    # Only for the benchmark's baseline: the same schema without the cipher.
    HistoryDatabase.open(history_path, UNENCRYPTED).close()
    assert history_path.read_bytes().startswith(b"SQLite format 3\x00")


async def test_an_export_of_a_damaged_history_saves_what_can_still_be_read(
    history_path: Path, key: bytes, tmp_path: Path
) -> None:
    """One damaged page must not cost the conversations the history can still read:
    the export is how they are saved before the file is moved aside."""
    with EncryptedConversationStore.open(history_path, key) as store:
        for number in range(5):
            await conversation_with(store, f"question {number}", f"answer {number}")
        # Its reply fills most of the file, overflow pages the others never touch.
        await conversation_with(store, "the long one", "lighthouse " * 60_000)
    overwrite_a_middle_page(history_path)
    export = tmp_path / "export.json"
    store = EncryptedConversationStore.open(history_path, key)
    with store, pytest.raises(HistoryPartlyReadError) as raised:
        await store.export_json(export)
    assert_one_sentence(raised.value)
    assert str(raised.value).startswith(f"Exported 5 conversations to {export}; 1 could not")
    assert "damaged: 'A chat'." in str(raised.value)  # named by its title
    written = json.loads(export.read_text("utf-8"))
    questions = sorted(c["messages"][0]["content"] for c in written["conversations"])
    assert questions == [f"question {n}" for n in range(5)]
