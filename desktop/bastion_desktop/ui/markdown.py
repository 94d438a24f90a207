"""Rendering model output, which is untrusted.

A reply is Markdown split into prose and fenced code blocks. Prose goes to a
`SafeTextBrowser`: Qt's own Markdown parser with raw HTML switched off, and a
`loadResource` that returns nothing, so a Markdown image pointing at someone's server
(a known way to leak a conversation) is never fetched, and no stylesheet or script is
ever loaded. Links are not followed: the view asks the user first (`link_requested`).
Code blocks get a monospace view with a Copy button and, when the block is complete and
small, pygments highlighting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import re
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal

log = logging.getLogger(__name__)

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)")
# Highlighting costs about 4 ms per KiB (pygments), on a thread of its own; past this a
# block stays plain.
HIGHLIGHT_LIMIT = 20_000
_MARKDOWN = (
    QtGui.QTextDocument.MarkdownFeature.MarkdownDialectGitHub
    | QtGui.QTextDocument.MarkdownFeature.MarkdownNoHTML
)


# A newline inside a paragraph: Markdown would join the two lines; chats keep them. An
# indented next line continues a list item, and stays joined.
_SOFT_BREAK = re.compile(r"(?<=\S)[ \t]*\n(?=\S)")


def keep_line_breaks(prose: str) -> str:
    """Every newline within a paragraph made a hard line break: models write a poem,
    an address or steps one per line, and chat apps show them so, where Markdown
    would run them together. Blank lines still part paragraphs."""
    return _SOFT_BREAK.sub("  \n", prose)


@dataclass(frozen=True)
class Block:
    kind: str  # "text" or "code"
    text: str
    language: str = ""
    closed: bool = True  # a code block whose closing fence has not streamed in yet: False
    source: str = ""  # an unclosed code block's lines as written, its fence among them


def split_blocks(markdown: str) -> list[Block]:
    """Prose and fenced code blocks, in order; an unclosed fence runs to the end."""
    blocks: list[Block] = []
    prose: list[str] = []
    code: list[str] = []
    fence = ""
    language = ""
    opening = ""
    for line in markdown.split("\n"):
        if not fence:
            opened = _FENCE.match(line)
            if opened:
                if prose and "".join(prose).strip():
                    blocks.append(Block("text", "\n".join(prose)))
                prose = []
                fence, language, code = opened.group(1), opened.group(2), []
                opening = line
            else:
                prose.append(line)
            continue
        stripped = line.strip()
        if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            blocks.append(Block("code", "\n".join(code), language))
            fence = ""
        else:
            code.append(line)
    if fence:
        source = "\n".join([opening, *code])
        blocks.append(Block("code", "\n".join(code).rstrip("\n"), language, False, source))
    elif prose and "".join(prose).strip():
        blocks.append(Block("text", "\n".join(prose)))
    return blocks


# While a reply streams, its prose is shown in sections of about this many characters,
# so each render re-lays out the last section only: re-rendering a whole 8,000-character
# reply took about 11 ms, every 50 ms. The finished reply is shown whole again (one view,
# so a selection can span it).
SECTION_CHARS = 1200
# A line that continues what came before it across a blank line: an indented line, a
# list item, a quote, a table row. No section starts with one.
_CONTINUES = re.compile(r"^(?:[ \t]|[-*+](?:[ \t]|$)|\d{1,9}[.)](?:[ \t]|$)|>|\|)")


def split_sections(prose: str) -> list[str]:
    """`prose` cut at paragraph breaks into sections of at least SECTION_CHARS. A cut
    depends only on the text before it and on the whole first line after it, so a
    section, once cut, stays the same as the text grows."""
    sections: list[str] = []
    start = search = 0
    while True:
        brk = prose.find("\n\n", search)
        if brk < 0:
            break
        after = brk + 2
        while after < len(prose) and prose[after] == "\n":
            after += 1
        search = after
        if brk - start < SECTION_CHARS:
            continue
        line_end = prose.find("\n", after)
        if line_end < 0:
            break  # the next paragraph's first line is not whole yet
        if _CONTINUES.match(prose[after:line_end]):
            continue
        sections.append(prose[start:brk])
        start = after
    sections.append(prose[start:])
    return sections


def is_dark(palette: QtGui.QPalette) -> bool:
    return palette.color(QtGui.QPalette.ColorRole.Window).lightness() < 128


# The highlighter lets the GUI thread take the interpreter after this many tokens (about
# a millisecond of pygments' work): otherwise each of the window's calls into Qt waited
# up to the 5 ms switch interval to get it back, and a 10 ms render took 40.
TOKENS_PER_TURN = 10

Style = tuple[str, bool, bool]  # colour ("#rrggbb" or ""), bold, italic


@dataclass(frozen=True)
class Run:
    """A stretch of code in one style, in the document's characters (UTF-16 units)."""

    start: int
    length: int
    style: Style


def highlight_runs(code: str, language: str, dark: bool) -> list[Run] | None:
    """The styled stretches of `code` (its plain stretches left out), or None when
    pygments does not know the language. Run off the GUI thread: the runs are applied
    to the text already shown, a step at a time (`CodeBlockView`). Shown as pygments'
    HTML instead, a dense 12,000-character block took 50 ms of setHtml."""
    from pygments.lexers import get_lexer_by_name  # type: ignore[import-untyped]
    from pygments.styles import get_style_by_name  # type: ignore[import-untyped]
    from pygments.util import ClassNotFound  # type: ignore[import-untyped]

    try:
        lexer = get_lexer_by_name(language)
    except ClassNotFound:
        return None
    style = get_style_by_name("monokai" if dark else "default")
    styles: dict[Any, Style] = {}
    # Qt counts a character beyond U+FFFF as two: where there are any, shift by them.
    wide = list(itertools.accumulate(ord(c) > 0xFFFF for c in code))
    if not wide or not wide[-1]:
        wide = []

    def shift(i: int) -> int:
        return wide[i - 1] if wide and i else 0

    runs: list[Run] = []
    tokens = lexer.get_tokens_unprocessed(code)
    for count, (index, kind, value) in enumerate(tokens, 1):
        if count % TOKENS_PER_TURN == 0:
            time.sleep(0)  # releases the GIL: a waiting thread runs
        if kind not in styles:
            found = style.style_for_token(kind)
            colour = f"#{found['color']}" if found["color"] else ""
            styles[kind] = (colour, bool(found["bold"]), bool(found["italic"]))
        shown = styles[kind]
        if shown == ("", False, False) or not value:
            continue
        start = index + shift(index)
        length = len(value) + shift(index + len(value)) - shift(index)
        if runs and runs[-1].style == shown and runs[-1].start + runs[-1].length == start:
            runs[-1] = Run(runs[-1].start, runs[-1].length + length, shown)
        else:
            runs.append(Run(start, length, shown))
    return runs


@functools.cache
def _char_format(style: Style) -> QtGui.QTextCharFormat:
    colour, bold, italic = style
    fmt = QtGui.QTextCharFormat()
    if colour:
        fmt.setForeground(QtGui.QColor(colour))
    if bold:
        fmt.setFontWeight(QtGui.QFont.Weight.Bold)
    if italic:
        fmt.setFontItalic(True)
    return fmt


# Highlighted code by (code, language, dark), kept for the views that show it again (a
# conversation opened anew). Read and written on the GUI thread only.
HighlightKey = tuple[str, str, bool]
_HIGHLIGHTED: OrderedDict[HighlightKey, list[Run] | None] = OrderedDict()
_HIGHLIGHTED_KEPT = 256
# Runs applied per step of the event loop at first; then as many as fit APPLY_STEP_MS.
APPLY_FIRST = 100
APPLY_STEP_MS = 3.0


def _remember(key: HighlightKey, rendered: list[Run] | None) -> None:
    _HIGHLIGHTED[key] = rendered
    _HIGHLIGHTED.move_to_end(key)
    while len(_HIGHLIGHTED) > _HIGHLIGHTED_KEPT:
        _HIGHLIGHTED.popitem(last=False)


@functools.cache
def _highlighter() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-highlight")


def _highlight_later(key: HighlightKey) -> Future[list[Run] | None]:
    """Highlight on a thread of its own: pygments took 60 ms of the GUI thread for a
    12,000-character block, a visible freeze as a long code reply finished."""
    return _highlighter().submit(highlight_runs, *key)


# Parts of each kind a view keeps hidden for its next text.
SPARE_PARTS = 4
# Looked up ahead of time (see `warm_up`): the languages replies use most.
COMMON_LANGUAGES = ("python", "bash", "javascript", "json")


async def warm_up() -> None:
    """Import pygments and its most used lexers, for the engine thread to run after the
    window's first paint: done on the GUI thread at the first code block, that took
    about 80 ms, a visible stall when a conversation opens. On a worker thread, not the
    engine loop: 80 ms there would stall every reply streaming."""
    await asyncio.to_thread(_import_pygments)


def _import_pygments() -> None:
    from pygments.lexers import get_lexer_by_name
    from pygments.styles import get_style_by_name

    get_style_by_name("default")
    get_style_by_name("monokai")
    for language in COMMON_LANGUAGES:
        get_lexer_by_name(language)


class SafeTextBrowser(QtWidgets.QTextBrowser):
    """A read-only rich-text view that loads nothing and follows no link by itself."""

    link_requested = Signal(QtCore.QUrl)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.resource_requests: list[QtCore.QUrl] = []  # for tests and the curious
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(self.link_requested.emit)
        self.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed
        )
        self.setTextInteractionFlags(
            QtCore.Qt.TextInteractionFlag.TextBrowserInteraction
            | QtCore.Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.viewport().setAutoFillBackground(False)
        self.document().setDocumentMargin(2)
        self.document().contentsChanged.connect(self._fit_height)

    def loadResource(self, type: int, name: QtCore.QUrl | str) -> Any:
        # Untrusted text may name any URL (an image, a stylesheet): nothing is loaded,
        # local or remote. The document shows a broken-image placeholder instead.
        self.resource_requests.append(QtCore.QUrl(name))
        return None

    def set_markdown(self, text: str) -> None:
        self.document().setMarkdown(keep_line_breaks(text), _MARKDOWN)
        self._fit_height()

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_height()

    def _fit_height(self) -> None:
        document = self.document()
        width = self.viewport().width()
        # Setting a width lays the whole document out again, even the same width: about
        # a millisecond per section while a reply streams, several times per render.
        if document.textWidth() != width:
            document.setTextWidth(width)
        height = int(document.size().height()) + 2 * self.frameWidth() + 2
        if height != self.height():
            self.setFixedHeight(height)


class CodeBlockView(QtWidgets.QFrame):
    """A fenced code block: its language, a Copy button, monospace text."""

    highlighted = Signal()  # the complete block now shows highlighted
    _ready = Signal(object, object)  # (HighlightKey, its runs or None), from the highlighter

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("codeBlock")
        self._ready.connect(self._show_highlighted)
        # Styling a highlighted block, a step at a time: (key, runs, done, per step).
        self._applying: tuple[HighlightKey, list[Run], int, int] | None = None
        self._asked: HighlightKey | None = None  # waiting for the highlighter's runs
        self._apply_timer = QtCore.QTimer(self)
        self._apply_timer.setSingleShot(True)
        self._apply_timer.setInterval(0)
        self._apply_timer.timeout.connect(self._apply_step)
        self.code = ""
        self.language = ""
        self._shown: tuple[str, str, bool] | None = None
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        header = QtWidgets.QHBoxLayout()
        header.setContentsMargins(8, 2, 4, 2)
        self.language_label = QtWidgets.QLabel(self)
        self.language_label.setObjectName("codeLanguage")
        self.copy_button = QtWidgets.QToolButton(self)
        self.copy_button.setText("Copy")
        self.copy_button.setAccessibleName("Copy code")
        self.copy_button.setToolTip("Copy this code block")
        self.copy_button.clicked.connect(self.copy)
        header.addWidget(self.language_label)
        header.addStretch(1)
        header.addWidget(self.copy_button)
        layout.addLayout(header)
        self.view = SafeTextBrowser(self)
        self.view.setObjectName("codeText")
        self.view.setAccessibleName("Code")
        self.view.setLineWrapMode(QtWidgets.QTextEdit.LineWrapMode.NoWrap)
        self.view.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.view.document().setDocumentMargin(8)
        font = QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont)
        self.view.setFont(font)
        self.view.document().setDefaultFont(font)
        layout.addWidget(self.view)

    def set_code(self, code: str, language: str, closed: bool) -> None:
        self.code, self.language = code, language
        self.language_label.setText(language or "code")
        shown, self._shown = self._shown, (code, language, closed)
        if shown == self._shown:
            return
        self._applying = None
        if shown is not None and shown[2] is False and code.startswith(shown[0]):
            # Streaming: only the new end goes in. Setting the whole block again took
            # about 1.1 ms per 1,000 characters at every render (18 ms at 16,000).
            cursor = QtGui.QTextCursor(self.view.document())
            cursor.movePosition(QtGui.QTextCursor.MoveOperation.End)
            cursor.insertText(code[len(shown[0]) :])
        else:
            self.view.setPlainText(code)
        self._fit_height()
        # While the block streams it stays plain: highlighting every 50 ms is wasted work.
        # Complete, it is highlighted once, off the GUI thread, then styled in steps.
        if closed and language and len(code) <= HIGHLIGHT_LIMIT:
            key = (code, language.lower(), is_dark(self.palette()))
            if key in _HIGHLIGHTED:
                _HIGHLIGHTED.move_to_end(key)
                self._show_highlighted(key, _HIGHLIGHTED[key])
            else:
                self._ask_highlighted(key)

    @property
    def highlighting(self) -> bool:
        """Whether highlighting is under way (`highlighted` follows, unless the code
        changes or the language is unknown)."""
        asked = self._asked is not None and self._showing(self._asked)
        return asked or self._applying is not None

    def _ask_highlighted(self, key: HighlightKey) -> None:
        self._asked = key
        ready = self._ready

        def deliver(future: Future[list[Run] | None]) -> None:  # on the highlighter's thread
            try:
                runs = future.result()
            except Exception:  # a lexer's bug: the block stays plain
                log.exception("highlighting a %s code block failed", key[1])
                runs = None
            with contextlib.suppress(RuntimeError):  # the view was closed meanwhile
                ready.emit(key, runs)

        _highlight_later(key).add_done_callback(deliver)

    def _showing(self, key: HighlightKey) -> bool:
        code, language, closed = self._shown or ("", "", False)
        return closed and (code, language.lower(), is_dark(self.palette())) == key

    def _show_highlighted(self, key: HighlightKey, runs: list[Run] | None) -> None:
        _remember(key, runs)
        if key == self._asked:
            self._asked = None
        if runs is not None and self._showing(key):
            self._applying = (key, runs, 0, APPLY_FIRST)
            self._apply_timer.start()

    def _apply_step(self) -> None:
        """Style the next runs, as many as take about APPLY_STEP_MS with their layout."""
        if self._applying is None:
            return
        key, runs, done, count = self._applying
        if not self._showing(key):  # other code is shown now
            self._applying = None
            return
        began = time.perf_counter()
        cursor = QtGui.QTextCursor(self.view.document())
        cursor.beginEditBlock()
        for run in runs[done : done + count]:
            cursor.setPosition(run.start)
            cursor.setPosition(run.start + run.length, QtGui.QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(_char_format(run.style))
        cursor.endEditBlock()
        done += count
        if done < len(runs):
            spent = max((time.perf_counter() - began) * 1000.0, 0.1)
            count = max(10, min(int(count * APPLY_STEP_MS / spent), 4 * count))
            self._applying = (key, runs, done, count)
            self._apply_timer.start()
        else:
            self._applying = None
            self._fit_height()  # bold text can be wider
            self.highlighted.emit()

    def _fit_height(self) -> None:
        bar = self.view.horizontalScrollBar()
        extra = bar.sizeHint().height() if self.view.document().idealWidth() > self.width() else 0
        self.view.setFixedHeight(int(self.view.document().size().height()) + 4 + extra)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_height()

    def copy(self) -> None:
        QtWidgets.QApplication.clipboard().setText(self.code)
        self.copy_button.setText("Copied")
        # With the button as context: the timer dies with it if the reply is re-rendered.
        button = self.copy_button
        QtCore.QTimer.singleShot(1500, button, lambda: button.setText("Copy"))


class MarkdownView(QtWidgets.QWidget):
    """A whole reply: prose and code blocks, re-rendered in place as text streams in
    (widgets are reused, so the view does not flicker)."""

    link_requested = Signal(QtCore.QUrl)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QtWidgets.QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(6)
        self._parts: list[tuple[str, QtWidgets.QWidget]] = []
        # Parts no longer shown, kept by kind for the next text: a message widget is
        # refilled with another message (see ChatView), whose prose and code blocks fall
        # elsewhere, and building a text view costs more than refilling one.
        self._spare_parts: dict[str, list[QtWidgets.QWidget]] = {"text": [], "code": []}
        self._markdown = ""
        self._streaming = False
        self._plain = False  # shown by set_plain, which set_markdown must redo

    @property
    def markdown(self) -> str:
        return self._markdown

    def text_views(self) -> list[SafeTextBrowser]:
        found: list[SafeTextBrowser] = []
        for _kind, widget in self._parts:
            if isinstance(widget, SafeTextBrowser):
                found.append(widget)
            elif isinstance(widget, CodeBlockView):
                found.append(widget.view)
        return found

    def code_blocks(self) -> list[CodeBlockView]:
        return [w for _k, w in self._parts if isinstance(w, CodeBlockView)]

    def set_plain(self, text: str) -> None:
        """The user's own words: shown as written, never as Markdown. Only a closed
        fenced block (an attached file, pasted code) is shown as code, with its Copy
        button."""
        self._markdown, self._plain = text, True
        blocks = split_blocks(text) or [Block("text", "")]
        if blocks[-1].kind == "code" and not blocks[-1].closed:
            blocks[-1] = Block("text", blocks[-1].source)  # a fence never closed: words
        for index, block in enumerate(blocks):
            widget = self._part(index, block.kind)
            if isinstance(widget, CodeBlockView):
                widget.set_code(block.text, block.language, block.closed)
            else:
                assert isinstance(widget, SafeTextBrowser)
                widget.setProperty("markdownSource", None)  # what set_markdown compares
                widget.setPlainText(block.text if len(blocks) == 1 else block.text.strip("\n"))
        self._trim(len(blocks))

    def set_markdown(self, text: str, *, streaming: bool = False) -> None:
        """Show `text`; `streaming` while it grows: long prose then shows in sections
        (see SECTION_CHARS), re-rendering only the one that changed."""
        if (
            text == self._markdown
            and self._parts
            and streaming == self._streaming
            and not self._plain
        ):
            return
        self._markdown, self._streaming, self._plain = text, streaming, False
        blocks = split_blocks(text) or [Block("text", "")]
        if streaming:
            blocks = [
                Block("text", section) if block.kind == "text" else block
                for block in blocks
                for section in (split_sections(block.text) if block.kind == "text" else [""])
            ]
        for index, block in enumerate(blocks):
            widget = self._part(index, block.kind)
            if isinstance(widget, CodeBlockView):
                widget.set_code(block.text, block.language, block.closed)
            elif (
                isinstance(widget, SafeTextBrowser)
                and widget.property("markdownSource") != block.text
            ):
                widget.setProperty("markdownSource", block.text)
                widget.set_markdown(block.text)
        self._trim(len(blocks))

    def _part(self, index: int, kind: str) -> QtWidgets.QWidget:
        if index < len(self._parts) and self._parts[index][0] == kind:
            return self._parts[index][1]
        self._trim(index)
        widget: QtWidgets.QWidget
        if self._spare_parts[kind]:
            widget = self._spare_parts[kind].pop()
            widget.show()
        elif kind == "code":
            widget = CodeBlockView(self)
            widget.view.link_requested.connect(self.link_requested.emit)
        else:
            widget = SafeTextBrowser(self)
            widget.setAccessibleName("Message text")
            widget.link_requested.connect(self.link_requested.emit)
        self._layout.addWidget(widget)
        self._parts.append((kind, widget))
        return widget

    def _trim(self, keep: int) -> None:
        while len(self._parts) > keep:
            kind, widget = self._parts.pop()
            self._layout.removeWidget(widget)
            if len(self._spare_parts[kind]) < SPARE_PARTS:
                widget.hide()
                self._spare_parts[kind].append(widget)
            else:
                widget.deleteLater()
