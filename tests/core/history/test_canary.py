"""Chat text never reaches the disk readable: a unique string stored, streamed and
searched appears in no file of the history folder (database, -wal, -shm), not while the
store is open with an uncheckpointed WAL, not after it closes; and what is deleted is
gone from the file itself, not only hidden by the cipher."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

import apsw
import pytest

from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.history import encrypted_store as history_store
from bastion_desktop.core.history.database import UNENCRYPTED
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.errors import WrongKeyError
from bastion_desktop.core.inference.types import Role

from .conftest import conversation_with, fingerprints


def encodings(canary: str) -> list[bytes]:
    return [canary.encode("utf-8"), canary.encode("utf-16-le"), canary.encode("utf-16-be")]


def files_containing(folder: Path, canary: str, since: float = 0.0) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        try:
            if not path.is_file() or path.stat().st_mtime < since:
                continue
            data = path.read_bytes()
        except OSError:
            continue  # a file that went away while we looked
        if any(needle in data for needle in encodings(canary)):
            found.append(path)
    return found


@pytest.mark.blocks_loop(
    "the test closes, reopens and scans the files (the temp folder too) itself"
)
async def test_a_canary_is_in_no_file_of_the_history_folder(
    history_path: Path, key: bytes, other_key: bytes
) -> None:
    started = time.time() - 1
    canary = f"zq{secrets.token_hex(12)}"
    folder = history_path.parent
    store = EncryptedConversationStore.open(history_path, key)
    try:
        for number in range(20):
            await conversation_with(
                store, f"My code word is {canary} ({number}).", f"Noted: {canary}.", title=canary
            )
        conversation = await conversation_with(store, "Stream it back")
        reply = await store.add_message(conversation.id, Role.ASSISTANT, "", MessageState.STREAMING)
        for part in range(10):
            await store.update_message(
                reply.id, content=f"{canary} " * part, state=MessageState.STREAMING
            )
        await store.update_message(reply.id, content=canary, state=MessageState.COMPLETE)
        assert len(await store.search(canary, limit=100)) == 41

        # Open, with the WAL holding everything not yet checkpointed.
        names = sorted(path.name for path in folder.iterdir())
        assert names == ["history.db", "history.db-shm", "history.db-wal"]
        assert (folder / "history.db-wal").stat().st_size > 0
        assert files_containing(folder, canary) == []
    finally:
        store.close()

    assert [path.name for path in folder.iterdir()] == ["history.db"]
    assert files_containing(folder, canary) == []
    assert files_containing(Path(tempfile.gettempdir()), canary, since=started) == []

    connection = apsw.Connection(str(history_path))
    with pytest.raises(apsw.NotADBError):
        connection.execute("SELECT count(*) FROM messages").fetchall()
    connection.close()
    with pytest.raises(WrongKeyError):
        EncryptedConversationStore.open(history_path, other_key)


@pytest.mark.parametrize(
    "break_even",
    [
        pytest.param(0, id="entries-deleted-one-by-one"),
        pytest.param(10**9, id="index-rewritten"),
    ],
)
async def test_deleted_text_is_gone_from_the_file_itself(
    tmp_path: Path, break_even: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unencrypted, so that the bytes can be read: this checks secure_delete, both ways
    # of purging the search index, and the WAL truncation, all of which the cipher would
    # otherwise hide.
    monkeypatch.setattr(history_store, "_REWRITE_INDEX_BREAK_EVEN", break_even)
    path = tmp_path / "plain" / "history.db"
    canary = f"zq{secrets.token_hex(12)}"
    with EncryptedConversationStore.open(path, UNENCRYPTED) as store:
        for number in range(30):
            await conversation_with(store, f"filler {number} " * 20, "more filler " * 20)
        doomed = await conversation_with(store, f"forget {canary}", f"forgotten {canary}")
        reply = await store.add_message(doomed.id, Role.ASSISTANT, "", MessageState.STREAMING)
        for part in range(1, 6):
            await store.update_message(
                reply.id, content=f"{canary} " * part, state=MessageState.STREAMING
            )
        old = await conversation_with(store, f"old {canary}")
        assert await store.search(canary)
        assert files_containing(path.parent, canary), "the plain file shows the text"

        await store.delete_conversation(doomed.id)
        newest = (await store.get_conversation(old.id)).updated_at
        assert await store.delete_older_than(1, now=newest + 86_400 + 1) == 31
        assert await store.search(canary) == []
        assert files_containing(path.parent, canary) == []
    assert files_containing(path.parent, canary) == []
    assert list(fingerprints(path.parent)) == ["history.db"]
