"""Model output is untrusted: rendering it fetches nothing (a Markdown image pointing at
a real local server records zero requests), and a link opens only after the user says
yes. Code blocks get a Copy button."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.inference.types import Role
from bastion_desktop.ui.markdown import SECTION_CHARS, MarkdownView, split_blocks, split_sections
from bastion_desktop.ui.message_widget import MessageWidget
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    _CountingHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _CountingHandler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()


# The offscreen platform cannot size a window from its hints; it says so at WARNING.
@pytest.mark.qt_log_ignore("does not support propagateSizeHints")
def test_a_markdown_image_from_a_reply_is_never_fetched(
    qtbot: QtBot, server: tuple[str, list[str]]
) -> None:
    base, requests = server
    widget = MessageWidget(Role.ASSISTANT, "Model")
    qtbot.addWidget(widget)
    widget.resize(600, 400)
    widget.show()
    reply = (
        f"Here you go ![chart]({base}/leak.png?secret=chat-text)\n\n"
        f'<img src="{base}/html.png"> and <link rel="stylesheet" href="{base}/x.css">\n\n'
        f"```python\nprint('hi')\n```\n"
    )
    for piece in reply:
        widget.append(piece)
    widget.flush()
    widget.grab()  # lay out and paint, as the screen would
    qtbot.wait(300)
    asked = [u.toString() for v in widget.body.text_views() for u in v.resource_requests]
    assert any("leak.png" in url for url in asked), "the image was asked for, and refused"
    assert requests == [], "nothing reached the server"


def test_a_link_opens_only_after_the_user_confirms(qtbot: QtBot) -> None:
    from bastion_desktop.ui.chat_view import ChatView

    opened: list[str] = []

    class Handler(QtCore.QObject):
        @QtCore.Slot(QtCore.QUrl)
        def open(self, url: QtCore.QUrl) -> None:
            opened.append(url.toString())

    handler = Handler()
    # Qt's own hook for where openUrl goes: the test's handler instead of a browser.
    QtGui.QDesktopServices.setUrlHandler("https", handler, "open")
    try:
        view = ChatView.__new__(ChatView)  # only its link logic is needed here
        QtWidgets.QScrollArea.__init__(view)
        qtbot.addWidget(view)
        view.opened_links = []
        answers = iter([False, True])
        asked: list[str] = []

        def confirm(_parent: object, url: QtCore.QUrl) -> bool:
            asked.append(url.toString())
            return next(answers)

        view.confirm_link = confirm
        markdown = MarkdownView()
        qtbot.addWidget(markdown)
        markdown.link_requested.connect(lambda url: ChatView.open_link(view, url))
        markdown.set_markdown("See [the docs](https://example.org/docs).")
        browser = markdown.text_views()[0]
        url = QtCore.QUrl("https://example.org/docs")
        browser.anchorClicked.emit(url)
        assert asked == ["https://example.org/docs"]
        assert opened == [], "declined: nothing opened"
        browser.anchorClicked.emit(url)
        assert opened == ["https://example.org/docs"]
    finally:
        QtGui.QDesktopServices.unsetUrlHandler("https")


def test_code_blocks_have_a_copy_button_and_stream_unclosed(qtbot: QtBot) -> None:
    view = MarkdownView()
    qtbot.addWidget(view)
    view.set_markdown("Intro\n\n```python\nx = 1\n")
    (block,) = view.code_blocks()
    assert block.code == "x = 1"
    view.set_markdown("Intro\n\n```python\nx = 1\ny = 2\n```\nAfter")
    assert view.code_blocks()[0] is block, "the widget is reused while streaming"
    qtbot.mouseClick(block.copy_button, QtCore.Qt.MouseButton.LeftButton)
    assert QtWidgets.QApplication.clipboard().text() == "x = 1\ny = 2"
    assert block.copy_button.text() == "Copied"


def test_split_blocks_separates_prose_and_code() -> None:
    blocks = split_blocks("a\n```sh\nls\n```\nb\n~~~\nraw")
    assert [(b.kind, b.text, b.language, b.closed) for b in blocks] == [
        ("text", "a", "", True),
        ("code", "ls", "sh", True),
        ("text", "b", "", True),
        ("code", "raw", "", False),
    ]


# -- long replies while they stream ------------------------------------------------------


def _story(paragraphs: int) -> str:
    return "\n\n".join(
        f"Paragraph {n}: " + " ".join(f"the keeper climbed stair {k}." for k in range(20))
        for n in range(paragraphs)
    )


def test_long_prose_streams_in_sections_that_never_change_once_cut() -> None:
    story = _story(12)
    sections = split_sections(story)
    assert len(sections) > 1
    assert all(len(section) >= SECTION_CHARS for section in sections[:-1])
    assert "\n\n".join(sections) == story, "nothing lost, nothing repeated"
    # As the reply grows a character at a time, a section once cut stays as it is.
    for end in range(0, len(story), 37):
        cut = split_sections(story[:end])[:-1]
        assert cut == sections[: len(cut)]
    assert split_sections("A short reply.\n\nTwo paragraphs.") == [
        "A short reply.\n\nTwo paragraphs."
    ]


@pytest.mark.parametrize(
    "continuation",
    ["- an item", "2. the second step", "    indented code", "> a quote", "| a | table |"],
)
def test_no_section_starts_with_what_continues_the_text_before_it(continuation: str) -> None:
    long_paragraph = "word " * (SECTION_CHARS // 5 + 10)
    text = f"{long_paragraph}\n\n{continuation}\nmore\n\nAfter it.\n"
    sections = split_sections(text)
    assert not [s for s in sections[1:] if s.startswith(continuation)]


def test_a_streamed_reply_renders_in_sections_and_whole_once_complete(qtbot: QtBot) -> None:
    widget = MessageWidget(Role.ASSISTANT, "Model")
    qtbot.addWidget(widget)
    story = _story(12)
    for start in range(0, len(story), 40):
        widget.append(story[start : start + 40])
    widget._render_streamed()  # the render tick, without waiting 50 ms for it
    views = widget.body.text_views()
    assert len(views) == len(split_sections(story)) > 1
    assert [v.property("markdownSource") for v in views] == split_sections(story)
    widget.flush()
    (whole,) = widget.body.text_views()
    assert whole.property("markdownSource") == story
    assert "stair 19." in whole.toPlainText()


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")
def test_a_text_view_is_as_tall_as_its_text_at_every_width(qtbot: QtBot) -> None:
    """The view sizes itself to its document (it never scrolls): after new text, and
    after the width changes, every line is inside it and nothing below is left empty."""
    view = MarkdownView()
    qtbot.addWidget(view)
    view.resize(600, 100)
    view.show()
    paragraph = " ".join(["a word that wraps"] * 40)
    view.set_markdown(paragraph, streaming=True)
    (text,) = view.text_views()

    def fits() -> bool:
        needed = int(text.document().size().height())
        return needed <= text.height() <= needed + 8

    heights = []
    for width in (600, 300, 900):
        view.resize(width, 100)
        qtbot.waitUntil(lambda width=width: text.width() == width and fits())
        assert text.document().textWidth() == text.viewport().width()
        heights.append(text.height())
    assert heights[1] > heights[0] > heights[2], "narrower means taller"
    view.set_markdown(paragraph + "\n\n" + paragraph, streaming=True)
    qtbot.waitUntil(fits)
    assert text.height() > heights[2]


def test_a_streaming_code_block_shows_exactly_what_has_arrived(qtbot: QtBot) -> None:
    """While a code block streams only its new end is added to the view; at every step
    the view holds exactly the code so far, markup characters as they are."""
    view = MarkdownView()
    qtbot.addWidget(view)
    code = "".join(f"def f{n}(x):\n    return x < {n} and '<b>' != \"&amp;\"\n" for n in range(40))
    text = "Here it is:\n\n```python\n" + code + "```\n\nDone."
    start = text.index("```python")
    for end in range(start + 10, text.index("```\n\nDone") + 1, 13):
        view.set_markdown(text[:end], streaming=True)
        (expected,) = [b.text for b in split_blocks(text[:end]) if b.kind == "code"]
        (block,) = view.code_blocks()
        assert block.view.toPlainText() == expected
    (block,) = view.code_blocks()
    with qtbot.waitSignal(block.highlighted, timeout=10_000):  # off the GUI thread
        view.set_markdown(text)
        assert block.view.toPlainText() == code.rstrip("\n"), "plain until highlighted"
    assert block.view.toPlainText() == code.rstrip("\n")
    assert block.view.toHtml().count("color:") > 10, "highlighted once complete"
    view.set_markdown("```\nsomething else\n", streaming=True)  # the view refilled
    assert view.code_blocks()[0].view.toPlainText() == "something else"


def test_a_highlighted_block_arriving_late_never_replaces_newer_code(qtbot: QtBot) -> None:
    """The highlighter answers on its own time: a view refilled with other code in the
    meantime keeps the other code."""
    view = MarkdownView()
    qtbot.addWidget(view)
    first = "".join(f"value_{n} = compute({n})\n" for n in range(300))
    view.set_markdown(f"```python\n{first}```\n")  # asks for the highlighting
    (block,) = view.code_blocks()
    view.set_markdown("```python\nsecond = 2\n", streaming=True)  # before it arrives
    answered = []
    block._ready.connect(lambda *_args: answered.append(True))
    qtbot.waitUntil(lambda: bool(answered), timeout=10_000)
    qtbot.wait(50)
    assert block.view.toPlainText() == "second = 2"
    # Shown again later (a conversation opened anew): highlighted from memory, in steps.
    answered.clear()
    with qtbot.waitSignal(block.highlighted, timeout=10_000):
        view.set_markdown(f"```python\n{first}```\n")
    assert block.view.toHtml().count("color:") > 10
    assert block.view.toPlainText() == first.rstrip("\n")
    assert answered == [], "the highlighter was not asked again"


def _blocks(view: MarkdownView) -> list[tuple[str, bool]]:
    found = []
    for text in view.text_views():
        block = text.document().begin()
        while block.isValid():
            found.append((block.text(), block.textList() is not None))
            block = block.next()
    return found


def test_a_reply_written_one_line_per_line_is_shown_so(qtbot: QtBot) -> None:
    """Markdown joins the lines of a paragraph; a poem or an address must not be."""
    view = MarkdownView()
    qtbot.addWidget(view)
    view.set_markdown("The dragon stands tall,\nWith wings like a star.\n\nThe end.")
    assert _blocks(view) == [
        ("The dragon stands tall,", False),
        ("With wings like a star.", False),
        ("The end.", False),
    ]
    # A list item's indented continuation stays one item; a table stays a table.
    view.set_markdown("- one\n- two\n  more\n\n| a | b |\n|---|---|\n| 1 | 2 |")
    assert _blocks(view)[:2] == [("one", True), ("two more", True)]
    frames = [f for t in view.text_views() for f in t.document().rootFrame().childFrames()]
    assert any(isinstance(frame, QtGui.QTextTable) for frame in frames)
