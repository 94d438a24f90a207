"""A real process killed with SIGKILL: what it committed is on disk, the reply it was
streaming is kept and marked interrupted, and a re-key cut short leaves the file under
one key or the other, whole."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.errors import WrongKeyError
from bastion_desktop.core.inference.types import Role

HERE = Path(__file__).parent


def start(script: str, path: Path, stdin: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, str(HERE / script), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    child.stdin.write(stdin + "\n")
    child.stdin.flush()
    return child


def kill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    assert child.stdout is not None
    child.stdout.close()
    assert child.stdin is not None
    child.stdin.close()


@pytest.mark.blocks_loop("the test reads its child's pipe and opens the store synchronously")
async def test_a_killed_writer_loses_nothing_it_saved(history_path: Path, key: bytes) -> None:
    child = start("streaming_writer.py", history_path, key.hex())
    assert child.stdout is not None
    conversation_id = child.stdout.readline().strip()
    saved = -1
    while saved < 300:
        line = child.stdout.readline()
        assert line, "the writer died on its own"
        saved = int(line)
    kill(child)
    assert (history_path.parent / "history.db-wal").exists(), "killed before any checkpoint"

    with EncryptedConversationStore.open(history_path, key) as store:
        assert store.interrupted_on_open == 1
        question, reply = await store.messages(conversation_id)
        await store.check_integrity()
    assert (question.role, question.content) == (Role.USER, "Tell me a story.")
    assert reply.state is MessageState.INTERRUPTED
    words = reply.content.split()
    # Everything acknowledged is there, in order; at most the saves still in the pipe
    # after it went on ahead of us.
    assert len(words) > saved
    assert words == [f"word{number}" for number in range(len(words))]


def write_export(path: Path, conversations: int, words: int) -> None:
    """A Bastion export, written directly: the quickest way to a history of some size."""
    vocabulary = [f"word{number}" for number in range(500)]
    document = {
        "format": "bastion.conversations",
        "version": 1,
        "exported_at": 1.0,
        "conversations": [
            {
                "id": f"c{number}",
                "title": f"conversation {number}",
                "model_id": "m",
                "profile_id": "p",
                "system_prompt": "",
                "created_at": 1.0,
                "updated_at": 1.0,
                "shown_message_id": 2,
                "messages": [
                    {
                        "id": message,
                        "parent_id": message - 1 or None,
                        "role": "user" if message == 1 else "assistant",
                        "content": " ".join(random.choices(vocabulary, k=words)),
                        "state": "complete",
                        "created_at": 1.0,
                    }
                    for message in (1, 2)
                ],
            }
            for number in range(conversations)
        ],
    }
    path.write_text(json.dumps(document), "utf-8")


@pytest.mark.blocks_loop("the test opens each copy of the store (a key check) synchronously")
async def test_a_rekey_cut_short_leaves_one_whole_key(
    tmp_path: Path, key: bytes, other_key: bytes
) -> None:
    base = tmp_path / "base.db"
    export = tmp_path / "export.json"
    write_export(export, conversations=100, words=6000)  # a file of about 10 MB
    with EncryptedConversationStore.open(base, key) as store:
        await store.import_json(export)
    for trial in range(6):
        path = tmp_path / f"trial{trial}" / "history.db"
        path.parent.mkdir()
        shutil.copy(base, path)
        child = start("rekeying_writer.py", path, f"{key.hex()} {other_key.hex()}")
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        await asyncio.sleep(trial * 0.02)  # from the start of the rekey to past its end
        kill(child)
        try:
            opened = EncryptedConversationStore.open(path, other_key)
        except WrongKeyError:
            opened = EncryptedConversationStore.open(path, key)  # it did not get that far
        with opened as store:
            await store.check_integrity()
            assert await store.count_conversations() == 100
            assert len(await store.search("word7", limit=500)) == 200
