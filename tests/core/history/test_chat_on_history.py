"""ChatService on the encrypted store, with the real starter model: a turn is saved as
it streams and reads back after a reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.events import DoneEvent, TokenEvent
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.types import LoadOptions, Role, SamplingParams
from bastion_desktop.core.models import ChatModelSlot

pytestmark = pytest.mark.model


async def test_a_turn_is_stored_encrypted_and_reads_back(
    starter_path: Path, history_path: Path, key: bytes
) -> None:
    slot = ChatModelSlot(LoadOptions(context_length=512))
    try:
        with EncryptedConversationStore.open(history_path, key) as store:
            service = ChatService(store, slot, lambda _ref: starter_path)
            conversation = await store.create_conversation(
                title="t", model_id="starter", profile_id="off", system_prompt=""
            )
            params = SamplingParams(seed=7, max_tokens=48)
            events = [e async for e in service.send(conversation.id, "Name a colour.", params)]
            # The second turn reads the first back from the file as its history.
            second = [e async for e in service.send(conversation.id, "Another one?", params)]
    finally:
        await slot.close()

    done = events[-1]
    assert isinstance(done, DoneEvent)
    assert isinstance(second[-1], DoneEvent)
    text = "".join(e.text for e in events if isinstance(e, TokenEvent))
    with EncryptedConversationStore.open(history_path, key) as store:
        messages = await store.messages(conversation.id)
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
    assert messages[1].content == text
    assert messages[1].id == done.message_id
    assert messages[1].state is MessageState.COMPLETE
    assert messages[1].stats is not None
    assert messages[1].stats.generated_tokens == done.tokens
    assert messages[2].parent_id == messages[1].id
