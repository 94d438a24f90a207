"""Changing the model of a conversation that already has messages: the next turns use
the new model, the replies already written keep the model that wrote them. On the real
encrypted file (reopened, so what is checked reached the disk) and in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_desktop.core.conversation_store import (
    ConversationNotFoundError,
    ConversationStore,
    InMemoryConversationStore,
    MessageState,
)
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.types import Role


async def _chat_with_a_reply(store: ConversationStore) -> str:
    conversation = await store.create_conversation(
        title="Colours", model_id="first-model", profile_id="standard", system_prompt=""
    )
    await store.add_message(conversation.id, Role.USER, "Name a colour.", MessageState.COMPLETE)
    await store.add_message(
        conversation.id,
        Role.ASSISTANT,
        "Blue.",
        MessageState.COMPLETE,
        model_id="first-model",
        profile_id="standard",
    )
    return conversation.id


async def test_the_new_model_survives_a_reopen_and_old_replies_keep_theirs(
    history_path: Path, key: bytes
) -> None:
    with EncryptedConversationStore.open(history_path, key) as store:
        conversation_id = await _chat_with_a_reply(store)
        other_id = (
            await store.create_conversation(
                title="Other", model_id="first-model", profile_id="standard", system_prompt=""
            )
        ).id
        await store.set_conversation_model(conversation_id, "second-model")

    with EncryptedConversationStore.open(history_path, key) as store:
        changed = await store.get_conversation(conversation_id)
        untouched = await store.get_conversation(other_id)
        messages = await store.messages(conversation_id)
    assert changed.model_id == "second-model"
    assert (changed.title, changed.profile_id) == ("Colours", "standard")
    assert untouched.model_id == "first-model", "only the conversation named changes"
    assert [(m.content, m.model_id) for m in messages] == [
        ("Name a colour.", None),
        ("Blue.", "first-model"),
    ]


async def test_the_in_memory_store_changes_the_model_the_same_way() -> None:
    store = InMemoryConversationStore()
    conversation_id = await _chat_with_a_reply(store)
    await store.set_conversation_model(conversation_id, "second-model")
    assert (await store.get_conversation(conversation_id)).model_id == "second-model"
    assert [m.model_id for m in await store.messages(conversation_id)] == [None, "first-model"]


@pytest.mark.parametrize("kind", ["encrypted", "memory"])
async def test_an_unknown_conversation_is_an_error(
    kind: str, store: EncryptedConversationStore
) -> None:
    target: ConversationStore = store if kind == "encrypted" else InMemoryConversationStore()
    with pytest.raises(ConversationNotFoundError):
        await target.set_conversation_model("nope", "second-model")
