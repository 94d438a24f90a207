"""The history sidebar's list model over the real encrypted store: a valid Qt model
(qtmodeltester), pinned first then newest, and rename and pin through the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.commands.passphrase import passphrase_prompt
from bastion_desktop.context import AppContext
from bastion_desktop.ui.conversations import (
    JSON_FILES,
    MARKDOWN_FILES,
    ConversationSidebar,
    export_path,
    file_stem,
)
from bastion_desktop.ui.engine import Engine
from bastion_desktop.ui.services import AppServices


@pytest.fixture
def services(passphrase_file: Path) -> Iterator[AppServices]:
    context = AppContext.start()
    store = context.open_history(passphrase_prompt(passphrase_file))
    engine = Engine()
    engine.start()
    built = AppServices.assemble(context, engine, store)
    yield built
    built.shut_down()


def titles(sidebar: ConversationSidebar) -> list[str]:
    return [sidebar.model.row(i).title for i in range(sidebar.model.rowCount())]


def test_list_is_a_valid_model_pinned_first_then_newest(
    services: AppServices, qtbot: QtBot, qtmodeltester: object
) -> None:
    store = services.store
    assert store is not None
    ids = []
    for title in ("first", "second", "third"):
        conversation = services.engine.run(
            store.create_conversation(title=title, model_id="m", profile_id="off", system_prompt="")
        )
        ids.append(conversation.id)
    sidebar = ConversationSidebar(services)
    qtbot.addWidget(sidebar)
    with qtbot.waitSignal(sidebar.refreshed, timeout=10_000):
        sidebar.refresh()
    assert titles(sidebar) == ["third", "second", "first"]
    qtmodeltester.check(sidebar.model)  # type: ignore[attr-defined]

    with qtbot.waitSignal(sidebar.refreshed, timeout=10_000):
        sidebar.pin(ids[0], True)
    assert titles(sidebar) == ["first", "third", "second"]
    assert "📌" in sidebar.model.data(sidebar.model.index(0, 0))

    with qtbot.waitSignal(sidebar.refreshed, timeout=10_000):
        sidebar.rename(ids[1], "renamed")
    assert "renamed" in titles(sidebar)
    qtmodeltester.check(sidebar.model)  # type: ignore[attr-defined]


def test_export_writes_the_conversation_as_markdown(
    services: AppServices, qtbot: QtBot, tmp_path: Path
) -> None:
    store = services.store
    assert store is not None
    conversation = services.engine.run(
        store.create_conversation(
            title="Exported", model_id="m", profile_id="off", system_prompt=""
        )
    )
    sidebar = ConversationSidebar(services)
    qtbot.addWidget(sidebar)
    target = tmp_path / "out.md"
    with qtbot.waitSignal(sidebar.exported, timeout=10_000) as told:
        sidebar.export(conversation.id, target)
    assert told.args == [target]
    assert "Exported" in target.read_text("utf-8")


@pytest.mark.parametrize(
    ("chosen", "kind", "written"),
    [
        ("notes", JSON_FILES, "notes.json"),  # the kind chosen, for a name without one
        ("notes", MARKDOWN_FILES, "notes.md"),
        ("notes.md", JSON_FILES, "notes.md"),  # a suffix typed wins
        ("v1.2 notes", JSON_FILES, "v1.2 notes.json"),
    ],
)
def test_the_export_format_is_the_one_chosen(chosen: str, kind: str, written: str) -> None:
    assert export_path(f"/tmp/{chosen}", kind) == Path("/tmp") / written


def test_the_default_export_name_is_the_conversations_title() -> None:
    assert file_stem("Trip: Paris / Rome?") == "Trip Paris Rome"
    assert file_stem("...") == "conversation"


# Shown offscreen: the platform cannot size the widget from its hints.
@pytest.mark.qt_log_ignore("does not support propagateSizeHints")
def test_an_empty_list_says_why(services: AppServices, qtbot: QtBot) -> None:
    sidebar = ConversationSidebar(services)
    qtbot.addWidget(sidebar)
    sidebar.show()
    with qtbot.waitSignal(sidebar.refreshed, timeout=10_000):
        sidebar.refresh()
    assert sidebar.empty.isVisible()
    assert sidebar.empty.text() == "No conversations yet."
    store = services.store
    assert store is not None
    services.engine.run(
        store.create_conversation(title="Paris", model_id="m", profile_id="off", system_prompt="")
    )
    with qtbot.waitSignal(sidebar.refreshed, timeout=10_000):
        sidebar.refresh()
    assert not sidebar.empty.isVisible()
    with qtbot.waitSignal(sidebar.refreshed, timeout=10_000):
        sidebar.search.setText("zebra")  # searched after a pause, as typed
    assert sidebar.empty.isVisible()
    assert sidebar.empty.text() == "No conversation mentions “zebra”."
