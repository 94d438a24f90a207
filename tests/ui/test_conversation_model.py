"""The model picker and the open conversation: the model picked answers the next turn
of the conversation shown (the stored conversation's model changes), earlier replies
keep the model that wrote them, and opening a conversation shows its model in the
picker. Real window, real encrypted history, the real starter model through llama.cpp,
registered a second time under another id as `bastion models import` does."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.hub.local_files import import_gguf
from bastion_desktop.core.inference.types import Role
from bastion_desktop.core.starter import STARTER_ID
from tests.ui.desktop_fixtures import Desktop, screenshot

pytestmark = pytest.mark.model

SECOND = "second-starter"


def stored(desktop: Desktop) -> tuple[str, list[tuple[Role, str | None]]]:
    store, engine = desktop.services.store, desktop.services.engine
    conversation_id = desktop.window.controller.conversation_id
    assert store is not None
    assert conversation_id is not None
    conversation = engine.run(store.get_conversation(conversation_id))
    messages = engine.run(store.messages(conversation_id))
    return conversation.model_id, [(m.role, m.model_id) for m in messages]


def test_picking_a_model_changes_the_open_conversations_model(
    desktop: Desktop, qtbot: QtBot, starter_path: Path
) -> None:
    context = desktop.services.context
    model = import_gguf(starter_path, context.registry, context.models_dir, name="Second starter")
    assert model.id == SECOND
    top = desktop.window.top_bar
    top.fill_models()
    assert top.model_box.findData(SECOND) >= 0

    desktop.send("Name a colour")
    first_model, _ = stored(desktop)
    assert first_model == STARTER_ID
    assert top.model_box.currentData() == STARTER_ID

    with qtbot.waitSignal(desktop.window.controller.model_set, timeout=10_000):
        top.model_box.setCurrentIndex(top.model_box.findData(SECOND))
    assert stored(desktop)[0] == SECOND, "the open conversation's model changed"
    notice = desktop.window.chat_view.notice
    assert notice.isVisible()
    assert "Second starter answers from now on in this conversation" in notice.text()
    assert top.model_box.currentData() == SECOND, "the picker still shows the choice"
    screenshot(desktop.window, "model-picked")

    desktop.send("Name another colour")
    model_id, messages = stored(desktop)
    assert model_id == SECOND
    assert messages == [
        (Role.USER, None),
        (Role.ASSISTANT, STARTER_ID),
        (Role.USER, None),
        (Role.ASSISTANT, SECOND),
    ], "the new turn was answered by the model picked; the first keeps its own"
    authors = [m.author_label.text() for m in desktop.window.chat_view.messages]
    starter_name = context.registry.get(STARTER_ID).name  # type: ignore[union-attr]
    assert authors == ["You", starter_name, "You", "Second starter"]

    # New chats use the picked model too (it became the default) ...
    assert desktop.services.context.settings.default_model == SECOND
    conversation_id = desktop.window.controller.conversation_id
    desktop.window.new_chat()
    assert top.model_box.currentData() == SECOND
    # ... and once the default is the starter again, opening the conversation shows its
    # own model, not the default.
    desktop.services.update_settings(
        desktop.services.context.settings.model_copy(update={"default_model": None})
    )
    assert top.model_box.currentData() == STARTER_ID
    with qtbot.waitSignal(desktop.window.chat_view.shown, timeout=10_000):
        desktop.window.controller.open(conversation_id)  # type: ignore[arg-type]
    assert top.model_box.currentData() == SECOND
    assert desktop.services.context.settings.default_model is None, "showing is not choosing"


def test_a_conversation_whose_model_was_removed_says_so_in_the_picker(
    desktop: Desktop, qtbot: QtBot
) -> None:
    store, engine = desktop.services.store, desktop.services.engine
    assert store is not None
    conversation = engine.run(
        store.create_conversation(
            title="Old", model_id="removed-model", profile_id="standard", system_prompt=""
        )
    )
    top = desktop.window.top_bar
    with qtbot.waitSignal(desktop.window.chat_view.shown, timeout=10_000):
        desktop.window.controller.open(conversation.id)
    assert top.model_box.currentData() == "removed-model"
    assert top.model_box.currentText() == "removed-model (not installed)"
    assert desktop.services.context.settings.default_model is None, "showing is not choosing"
    desktop.window.new_chat()
    assert top.model_box.currentData() == STARTER_ID
    assert top.model_box.findData("removed-model") < 0, "gone again with the conversation"
