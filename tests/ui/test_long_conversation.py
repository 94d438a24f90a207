"""A long conversation opens with its latest messages built and the earlier ones one
click away (building a widget for each of 2,000 messages froze the window: see
benchmarks/bench_ui.py)."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.conversation_store import MessageState
from bastion_desktop.core.inference.types import Role
from bastion_desktop.ui.chat_view import SHOWN_AT_ONCE, ChatView
from bastion_desktop.ui.message_widget import MessageWidget
from bastion_desktop.ui.qt import QtCore
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
    with qtbot.waitSignal(desktop.window.chat_view.shown, timeout=30_000):
        desktop.window.controller.open(conversation_id)

    def shown() -> list[str]:
        return [m.text for m in view.messages]

    assert shown() == [f"message {n}" for n in range(TOTAL - SHOWN_AT_ONCE, TOTAL)]
    assert view.earlier.isVisibleTo(view)
    assert view.earlier.text() == f"Show earlier messages ({TOTAL - SHOWN_AT_ONCE} more messages)"

    # The user scrolled up to the button: the message under it stays where it is
    # while the earlier ones are built above it.
    bar = view.verticalScrollBar()
    settle(qtbot, view)
    bar.setValue(0)
    reading = view.messages[0]

    def reading_at() -> int:
        return reading.mapTo(view.viewport(), QtCore.QPoint(0, 0)).y()

    before, height = reading_at(), bar.maximum()
    with qtbot.waitSignal(view.shown):
        view.earlier.click()
    assert shown() == [f"message {n}" for n in range(TOTAL - 2 * SHOWN_AT_ONCE, TOTAL)]
    qtbot.waitUntil(lambda: bar.maximum() > height)  # laid out: the earlier ones are in
    settle(qtbot, view)
    assert reading_at() == before
    assert bar.value() > 0, "the earlier messages are above the view"
    with qtbot.waitSignal(view.shown):
        view.earlier.click()
    assert shown() == [f"message {n}" for n in range(TOTAL)]
    assert not view.earlier.isVisibleTo(view), "nothing earlier is left"

    # Another conversation starts from its own latest messages again.
    desktop.window.new_chat()
    assert not view.earlier.isVisibleTo(view)


def settle(qtbot: QtBot, view: ChatView) -> None:
    """Until the messages' heights stop changing: a text view takes its final height
    over a few layout passes after it is shown."""
    heights: list[int] = []

    def steady() -> bool:
        heights.append(view.widget().height())
        return len(heights) >= 3 and heights[-1] == heights[-2] == heights[-3]

    qtbot.waitUntil(steady)


@pytest.fixture
def one_message_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The view builds one message per step of the event loop, whatever the machine."""
    from bastion_desktop.ui import chat_view

    monkeypatch.setattr(chat_view, "BUILD_STEP_MS", 0.0)


def _conversation(desktop: Desktop, count: int, *, checked: bool, word: str) -> str:
    """A saved conversation of `count` messages (see `_write_conversation`)."""
    return desktop.services.engine.run(
        _write_conversation(desktop, count, checked=checked, word=word), timeout=60
    )


async def _write_conversation(desktop: Desktop, count: int, *, checked: bool, word: str) -> str:
    """`count` messages; with `checked`, each has a profile (a badge) and each reply
    its stats, as a chat turn leaves them."""
    from bastion_desktop.core.inference.types import GenerationStats

    store = desktop.services.store
    assert store is not None
    conversation = await store.create_conversation(
        title=word, model_id="gemma-3-270m-starter", profile_id="standard", system_prompt=""
    )
    for number in range(count):
        role = Role.USER if number % 2 == 0 else Role.ASSISTANT
        profile = "standard" if checked else None
        message = await store.add_message(
            conversation.id, role, f"{word} {number}", MessageState.COMPLETE, profile_id=profile
        )
        if checked and role is Role.ASSISTANT:
            stats = GenerationStats(12, 34, 56.0, 7.8, 900.0, "stop")
            await store.update_message(
                message.id, content=message.content, state=MessageState.COMPLETE, stats=stats
            )
    return conversation.id


@pytest.mark.usefixtures("one_message_per_step")
def test_a_conversation_fills_in_newest_first_while_the_window_keeps_running(
    desktop: Desktop, qtbot: QtBot
) -> None:
    conversation_id = _conversation(desktop, 12, checked=False, word="line")
    view = desktop.window.chat_view
    at_loaded: list[tuple[list[str], bool]] = []
    # Connected after the view's own slot: this sees what that slot left built.
    desktop.window.controller.loaded.connect(
        lambda _loaded: at_loaded.append(([m.text for m in view.messages], view.building))
    )
    with qtbot.waitSignal(view.shown, timeout=30_000):
        desktop.window.controller.open(conversation_id)
    # The view built the newest message and handed the event loop back.
    assert at_loaded == [(["line 11"], True)]
    assert not view.building
    assert [m.text for m in view.messages] == [f"line {n}" for n in range(12)]
    qtbot.waitUntil(lambda: view.verticalScrollBar().maximum() > 0)
    bar = view.verticalScrollBar()
    assert bar.value() == bar.maximum(), "the view stays on the newest message"


def test_switching_conversations_reuses_widgets_and_carries_nothing_over(
    desktop: Desktop, qtbot: QtBot
) -> None:
    checked = _conversation(desktop, 6, checked=True, word="checked")
    plain = _conversation(desktop, 6, checked=False, word="plain")
    view = desktop.window.chat_view
    with qtbot.waitSignal(view.shown, timeout=30_000):
        desktop.window.controller.open(checked)
    before = {id(widget) for widget in view.messages}
    assert all(m.badge is not None for m in view.messages)
    assert all("tokens/s" in m.stats_label.text() for m in view.messages[1::2])

    with qtbot.waitSignal(view.shown, timeout=30_000):
        desktop.window.controller.open(plain)
    assert {id(widget) for widget in view.messages} == before, "the same widgets, refilled"
    assert [m.text for m in view.messages] == [f"plain {n}" for n in range(6)]
    for message in view.messages:
        assert message.badge is None
        assert not message.badge_button.isVisibleTo(message)
        assert not message.stats_label.isVisibleTo(message)
        assert message.stats_label.text() == ""
        assert not message.alternative_label.isVisibleTo(message)
        assert message.edit_button.isVisibleTo(message) is (message.role is Role.USER)


@pytest.mark.usefixtures("one_message_per_step")
def test_opening_another_conversation_while_one_fills_in_shows_only_the_other(
    desktop: Desktop, qtbot: QtBot
) -> None:
    first = _conversation(desktop, 12, checked=True, word="first")
    second = _conversation(desktop, 8, checked=False, word="second")
    view = desktop.window.chat_view
    controller = desktop.window.controller
    building_when_switched: list[bool] = []

    def switch(loaded: object) -> None:
        # Right after the first conversation's first step: the user clicks the other.
        if not building_when_switched:
            building_when_switched.append(view.building)
            controller.open(second)

    controller.loaded.connect(switch)
    controller.open(first)
    # The first may finish its steps before the second arrives from the engine thread.
    qtbot.waitUntil(
        lambda: (
            view._loaded is not None
            and view._loaded.conversation.id == second
            and not view.building
        ),
        timeout=30_000,
    )
    controller.loaded.disconnect(switch)
    assert building_when_switched == [True], "the first was still filling in"
    assert [m.text for m in view.messages] == [f"second {n}" for n in range(8)]
    assert all(m.badge is None and not m.stats_label.text() for m in view.messages)
    shown_widgets = {id(m) for m in view.messages}
    layout = view.widget().layout()
    in_layout = {id(layout.itemAt(i).widget()) for i in range(layout.count())}
    assert shown_widgets <= in_layout
    visible = [w for w in view.widget().findChildren(MessageWidget) if w.isVisibleTo(view)]
    assert len(visible) == 8, "nothing of the first conversation is left on screen"
