"""Text files attached to a message: through the + button's path, a drop and a paste
onto the message box, as chips the user can take off, and then through a real turn of
the window (the starter model, the real guardrails, the real encrypted history).

The file dialog itself is the OS's and is not driven here: `attach_files` is what it
calls with the files chosen."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.attachments import Attachment, with_attachments
from bastion_desktop.core.inference.types import Role
from bastion_desktop.ui.composer import Composer
from bastion_desktop.ui.markdown import MarkdownView
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets
from tests.ui.desktop_fixtures import Desktop, open_desktop, screenshot, write_settings

# The offscreen platform cannot size a window from its hints; it says so at WARNING.
pytestmark = pytest.mark.qt_log_ignore("does not support propagateSizeHints")


@pytest.fixture
def composer(qtbot: QtBot) -> Composer:
    composer = Composer()
    qtbot.addWidget(composer)
    composer.resize(700, 160)
    composer.show()
    composer.send_button.setEnabled(True)  # as the window does once a profile is open
    return composer


def chips(composer: Composer) -> list[str]:
    found = composer.chips.findChildren(QtWidgets.QFrame, "attachmentChip")
    return [c.findChild(QtWidgets.QLabel).text() for c in found if not c.isHidden()]


def files_mime(*paths: Path) -> QtCore.QMimeData:
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(path)) for path in paths])
    mime.setText("\n".join(str(path) for path in paths))  # as file managers add it
    return mime


def test_files_are_attached_as_chips_and_sent_with_the_message(
    composer: Composer, qtbot: QtBot, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Buy milk\n")
    tool = tmp_path / "tool.py"
    tool.write_text("print(1)\n")
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.4\n")
    failures: list[str] = []
    composer.attach_failed.connect(failures.append)
    composer.text.setPlainText("Summarise these")

    composer.attach_files([notes, scan, tool, notes])
    assert [a.name for a in composer.attachments] == ["notes.txt", "tool.py"]
    assert chips(composer) == ["notes.txt · 9 bytes", "tool.py · 9 bytes"]
    assert len(failures) == 1
    assert failures[0].startswith("scan.pdf is a PDF, and Bastion attaches text files only")
    assert composer.text.toPlainText() == "Summarise these", "the text typed is kept"
    assert composer.chip_area.isVisible()
    screenshot(composer, "composer-attachments")

    remove = composer.chips.findChild(QtWidgets.QToolButton)
    assert remove.accessibleName() == "Remove notes.txt"
    qtbot.mouseClick(remove, QtCore.Qt.MouseButton.LeftButton)
    assert [a.name for a in composer.attachments] == ["tool.py"]
    qtbot.waitUntil(lambda: chips(composer) == ["tool.py · 9 bytes"])

    with qtbot.waitSignal(composer.send_requested) as sent:
        qtbot.keyClick(composer.text, QtCore.Qt.Key.Key_Return)
    assert sent.args == [with_attachments("Summarise these", [Attachment("tool.py", "print(1)\n")])]
    assert composer.attachments == []
    assert composer.chip_area.isHidden()
    assert composer.text.toPlainText() == ""


def test_a_file_alone_can_be_sent(composer: Composer, qtbot: QtBot, tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    with qtbot.assertNotEmitted(composer.send_requested):
        qtbot.keyClick(composer.text, QtCore.Qt.Key.Key_Return)  # nothing to send
    composer.attach_files([data])
    with qtbot.waitSignal(composer.send_requested) as sent:
        qtbot.keyClick(composer.text, QtCore.Qt.Key.Key_Return)
    assert sent.args == ["Attached: data.csv\n```csv\na,b\n1,2\n```"]


def drop(composer: Composer, mime: QtCore.QMimeData, *, shift: bool = False) -> QtGui.QDropEvent:
    """A drag over the message box and its drop, as a file manager makes them (with
    Shift, a file manager proposes a move)."""
    viewport = composer.text.viewport()
    at = QtCore.QPointF(viewport.rect().center())
    actions = QtCore.Qt.DropAction.CopyAction | QtCore.Qt.DropAction.MoveAction
    no_button = QtCore.Qt.MouseButton.NoButton
    keys = (
        QtCore.Qt.KeyboardModifier.ShiftModifier if shift else QtCore.Qt.KeyboardModifier.NoModifier
    )
    enter = QtGui.QDragEnterEvent(at.toPoint(), actions, mime, no_button, keys)
    QtWidgets.QApplication.sendEvent(viewport, enter)
    move = QtGui.QDragMoveEvent(at.toPoint(), actions, mime, no_button, keys)
    if shift:
        move.setDropAction(QtCore.Qt.DropAction.MoveAction)
    QtWidgets.QApplication.sendEvent(viewport, move)
    assert move.isAccepted()
    dropped = QtGui.QDropEvent(at, actions, mime, no_button, keys)
    if shift:
        dropped.setDropAction(QtCore.Qt.DropAction.MoveAction)
    QtWidgets.QApplication.sendEvent(viewport, dropped)
    return dropped


def test_files_dropped_or_pasted_on_the_box_are_attached_not_typed(
    composer: Composer, qtbot: QtBot, tmp_path: Path
) -> None:
    first = tmp_path / "first.md"
    first.write_text("# One\n")
    second = tmp_path / "second.md"
    second.write_text("# Two\n")
    third = tmp_path / "third.md"
    third.write_text("# Three\n")
    composer.text.setPlainText("Compare")

    dropped = drop(composer, files_mime(first), shift=True)
    assert dropped.isAccepted()
    # Never a move: Windows' Explorer deletes the file a drop target says it moved.
    assert dropped.dropAction() == QtCore.Qt.DropAction.CopyAction
    assert [a.name for a in composer.attachments] == ["first.md"]

    # A paste of a file copied in a file manager.
    QtWidgets.QApplication.clipboard().setMimeData(files_mime(second))
    composer.text.paste()
    assert [a.name for a in composer.attachments] == ["first.md", "second.md"]
    assert composer.text.toPlainText() == "Compare", "no path was typed into the message"

    # While a reply streams the box is read-only, and files still attach.
    composer.set_busy(True)
    drop(composer, files_mime(third))
    assert [a.name for a in composer.attachments] == ["first.md", "second.md", "third.md"]
    composer.remove_attachment(second)
    QtWidgets.QApplication.clipboard().setMimeData(files_mime(second))
    qtbot.keyClick(composer.text, "v", QtCore.Qt.KeyboardModifier.ControlModifier)
    assert [a.name for a in composer.attachments] == ["first.md", "third.md", "second.md"]
    composer.set_busy(False)

    # Text is still pasted as text.
    QtWidgets.QApplication.clipboard().setText(" them")
    composer.text.moveCursor(QtGui.QTextCursor.MoveOperation.End)
    composer.text.paste()
    assert composer.text.toPlainText() == "Compare them"


def test_every_refusal_is_said_and_many_files_do_not_widen_the_window(
    composer: Composer, tmp_path: Path
) -> None:
    failures: list[str] = []
    composer.attach_failed.connect(failures.append)
    names = [f"quarterly-report-section-{n:02}-final-v2.md" for n in range(12)]
    for name in names:
        (tmp_path / name).write_text(f"# {name}\n")
    (tmp_path / "a.pdf").write_bytes(b"%PDF")
    (tmp_path / "b.png").write_bytes(b"\x89PNG")
    paths = [tmp_path / "a.pdf", *(tmp_path / name for name in names), tmp_path / "b.png"]
    composer.attach_files(paths)
    assert len(composer.attachments) == 12
    [said] = failures
    assert said.startswith("a.pdf is a PDF")
    assert " b.png is an image" in said
    assert composer.minimumSizeHint().width() < 600
    [label, *_] = chips(composer)
    assert "…" in label, "a long name is shortened on its chip"
    assert label.endswith("final-v2.md · 42 bytes")


def test_a_user_message_shows_closed_fences_as_code_and_the_rest_as_written(
    qtbot: QtBot,
) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    view.set_plain("Rules:\n~~~~~~~~\nbe *kind*")  # a divider, never closed
    assert view.code_blocks() == []
    assert [v.toPlainText() for v in view.text_views()] == ["Rules:", "~~~~~~~~\nbe *kind*"]
    view.set_plain("See:\n```py\nx = 1\n```\nthanks")
    [block] = view.code_blocks()
    assert block.view.toPlainText() == "x = 1"
    view.set_markdown("See:\n```py\nx = 1\n```\nthanks")  # the same text as a reply
    assert view.text_views()[-1].toMarkdown().strip() == "thanks"


@pytest.mark.model
def test_an_attached_file_goes_through_a_turn_and_the_history(
    qtbot: QtBot, desktop: Desktop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = desktop.window
    recipe = tmp_path / "recipe.md"
    recipe.write_text("# Bread\n\n- flour\n- water\n- salt\n")
    # Ctrl+O (File > Attach files) asks the OS's file dialog, which cannot be driven
    # here: it answers with the file a user would pick.
    asked: list[tuple[str, str]] = []

    def pick(_parent: object, caption: str, folder: str, filters: str) -> tuple[list[str], str]:
        asked.append((caption, filters))
        return [str(recipe)], ""

    monkeypatch.setattr(QtWidgets.QFileDialog, "getOpenFileNames", pick)
    qtbot.keyClick(window, "o", QtCore.Qt.KeyboardModifier.ControlModifier)
    assert [caption for caption, _f in asked] == ["Attach text files"]
    assert asked[0][1].endswith(";;All files (*)")
    assert [a.name for a in window.composer.attachments] == ["recipe.md"]
    window.composer.text.setPlainText("What do I need?")
    screenshot(window, "attachment-chip")
    desktop.send("What do I need?")

    question, reply = window.chat_view.messages
    assert question.role is Role.USER
    assert reply.text, "the model answered"
    assert question.text == (
        "What do I need?\n\nAttached: recipe.md\n```markdown\n# Bread\n\n- flour\n- water\n"
        "- salt\n```"
    )
    # The user's words as written, the file as a code block with its Copy button.
    [prose] = [v for v in question.body.text_views() if v.parent() is question.body]
    assert prose.toPlainText() == "What do I need?\n\nAttached: recipe.md"
    [block] = question.body.code_blocks()
    assert block.view.toPlainText() == "# Bread\n\n- flour\n- water\n- salt"
    assert question.badge is not None
    assert question.badge.verdict == "passed"
    screenshot(window, "attachment-turn")

    # The history holds the message as sent, file and all.
    store = desktop.services.store
    assert store is not None
    [conversation] = desktop.services.engine.run(store.list_conversations())
    assert conversation.title == "What do I need?"
    saved = desktop.services.engine.run(store.messages(conversation.id))
    assert saved[0].content == question.text


@pytest.mark.model
def test_a_secret_in_an_attached_file_is_held_back_by_the_workplace_profile(
    qtbot: QtBot, desktop_home: Path, passphrase_file: Path, tmp_path: Path
) -> None:
    write_settings(desktop_home, guard_profile="workplace")
    desktop = open_desktop(qtbot, passphrase_file)
    try:
        window = desktop.window
        config = tmp_path / "deploy.env"
        config.write_text("REGION=eu-west-1\nAWS_ACCESS_KEY_ID=" + "AKIA" + "IOSFODNN7EXAMPLE\n")
        window.composer.attach_files([config])
        desktop.send("Why does this fail?")
        question = window.chat_view.messages[0]
        assert question.badge is not None
        assert question.badge.verdict == "blocked"
        assert question.badge.category == "secrets", question.badge
        assert "IOSFODNN7EXAMPLE" not in "".join(desktop.tokens)
    finally:
        desktop.close()


@pytest.mark.model
@pytest.mark.log_warnings("the failed turn is logged as a warning")
def test_a_file_too_long_for_the_context_is_refused_plainly(
    qtbot: QtBot, desktop_home: Path, passphrase_file: Path, tmp_path: Path
) -> None:
    write_settings(desktop_home, inference={"context_length": 256})
    desktop = open_desktop(qtbot, passphrase_file)
    try:
        window = desktop.window
        log = tmp_path / "server.log"
        log.write_text("GET /index.html 200\n" * 200)
        window.composer.attach_files([log])
        desktop.send("Any errors?")
        assert window.chat_view.notice.text().startswith("Your message is 2,0")
        assert "but this model's context holds 256" in window.chat_view.notice.text()
        # Nothing is lost: the message, file and all, is kept, to be edited or resent.
        [question] = window.chat_view.messages
        assert question.text.startswith("Any errors?\n\nAttached: server.log\n```\nGET")
        assert question.edit_button.isEnabled()
    finally:
        desktop.close()
