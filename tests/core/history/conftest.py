"""Fixtures for the history tests: real encrypted files in temporary folders."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bastion_desktop.core.conversation_store import Conversation, MessageState
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.types import Role


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def other_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def history_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.db"


@pytest.fixture
async def store(history_path: Path, key: bytes) -> AsyncIterator[EncryptedConversationStore]:
    with EncryptedConversationStore.open(history_path, key) as opened:
        yield opened


@pytest.fixture
def read_only_disk(small_disk: Path) -> Iterator[Path]:
    """The small tmpfs, to be remounted read-only by `remount`. chmod stops nobody when
    the tests run as root; a read-only mount stops root too."""
    yield small_disk
    remount(small_disk, "rw")


def remount(mount_point: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mount_point)], check=True)


def fingerprints(folder: Path) -> dict[str, str]:
    """The sha256 of every file in `folder`, by name."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def conversation_with(
    store: EncryptedConversationStore, *texts: str, title: str = "A chat"
) -> Conversation:
    """A conversation of alternating user and assistant messages."""
    conversation = await store.create_conversation(
        title=title, model_id="starter", profile_id="standard", system_prompt="Be brief."
    )
    for number, text in enumerate(texts):
        role = Role.USER if number % 2 == 0 else Role.ASSISTANT
        await store.add_message(conversation.id, role, text, MessageState.COMPLETE)
    return conversation
