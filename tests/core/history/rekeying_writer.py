"""Run by test_crash.py as a child process: re-keys the history, to be killed during it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore


async def rekey(path: Path, old: bytes, new: bytes) -> None:
    with EncryptedConversationStore.open(path, old) as store:
        print("ready", flush=True)
        await store.rekey(new)
        print("done", flush=True)
        await asyncio.sleep(60)


if __name__ == "__main__":
    old_hex, new_hex = sys.stdin.readline().split()
    asyncio.run(rekey(Path(sys.argv[1]), bytes.fromhex(old_hex), bytes.fromhex(new_hex)))
