"""A long conversation opens with its latest messages built and the earlier ones one
click away (building a widget for each of 2,000 messages froze the window: see
benchmarks/bench_ui.py)."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.inference.types import Role
from bastion_desktop.core.store import MessageState
from bastion_desktop.ui.chat_view import SHOWN_AT_ONCE
from tests.ui.desktop_fixtures import Desktop

pytestmark = pytest.mark.model  # the desktop fixture registers the starter model

TOTAL = 2 * SHOWN_AT_ONCE + 30


async def _fill(desktop: Desktop) -> str:
    store = desktop.services.store
    assert store is not None
    conversation = await store.create_conversation(
        title="Long", model_id="gemma-3-270m-starter", profile_id="standard", system_prompt=""
    )
    for number in range(TOTAL):
        role = Role.USER if number % 2 == 0 else Role.ASSISTANT
        await store.add_message(conversation.id, role, f"message {number}", MessageState.COMPLETE)
    return conversation.id


def test_a_long_conversation_shows_its_latest_messages_then_the_earlier_ones(
    desktop: Desktop, qtbot: QtBot
) -> None:
    conversation_id = desktop.services.engine.run(_fill(desktop), timeout=60)
    view = desktop.window.chat_view
    with qtbot.waitSignal(desktop.window.controller.loaded, timeout=30_000):
        desktop.window.controller.open(conversation_id)

    def shown() -> list[str]:
        return [m.text for m in view.messages]

    assert shown() == [f"message {n}" for n in range(TOTAL - SHOWN_AT_ONCE, TOTAL)]
    assert view.earlier.isVisibleTo(view)
    assert view.earlier.text() == f"Show earlier messages ({TOTAL - SHOWN_AT_ONCE} more messages)"

    view.earlier.click()
    assert shown() == [f"message {n}" for n in range(TOTAL - 2 * SHOWN_AT_ONCE, TOTAL)]
    view.earlier.click()
    assert shown() == [f"message {n}" for n in range(TOTAL)]
    assert not view.earlier.isVisibleTo(view), "nothing earlier is left"

    # Another conversation starts from its own latest messages again.
    desktop.window.new_chat()
    assert not view.earlier.isVisibleTo(view)
