"""Run by test_crash.py as a child process: streams one reply into the history, saving
it the way ChatService does, until it is killed. Prints each save once it returned."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.types import Role


async def stream(path: Path, key: bytes) -> None:
    store = EncryptedConversationStore.open(path, key)
    conversation = await store.create_conversation(
        title="Crash", model_id="starter", profile_id="off", system_prompt=""
    )
    await store.add_message(conversation.id, Role.USER, "Tell me a story.", MessageState.COMPLETE)
    reply = await store.add_message(conversation.id, Role.ASSISTANT, "", MessageState.STREAMING)
    print(conversation.id, flush=True)
    text = ""
    for number in itertools.count():
        text += f" word{number}"
        await store.update_message(reply.id, content=text, state=MessageState.STREAMING)
        print(number, flush=True)


if __name__ == "__main__":
    asyncio.run(stream(Path(sys.argv[1]), bytes.fromhex(sys.stdin.readline())))
