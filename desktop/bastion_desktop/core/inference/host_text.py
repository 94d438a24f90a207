"""The model host's work on text: control tokens spelled in a message, a judge's prompt
tokenized without its fixed head each time, and a reply's bytes made into text that is
safe to show (see host_process)."""

from __future__ import annotations

import codecs
import dataclasses
from collections.abc import Iterable
from typing import Any

ZERO_WIDTH_SPACE = "\u200b"
# A judge's prompt head shorter than this is tokenized with the rest every time.
MIN_HEAD_CHARS = 256


def broken(spelled: str) -> str:
    """A control token's spelling with a zero-width space after its first character:
    the same text to a reader, ordinary characters to the tokenizer."""
    return spelled[0] + ZERO_WIDTH_SPACE + spelled[1:]


class ControlSpellings:
    """Where a text spells one of a model's control tokens, found without tokenizing
    it: at each occurrence of a spelling's first character, the text's next few
    characters are looked up among the spellings of each length (a handful of lengths,
    even for Gemma's 6,250 control tokens). One character long, a spelling is ordinary
    text and not looked for."""

    def __init__(self, spellings: Iterable[str]) -> None:
        self.spellings = frozenset(s for s in spellings if len(s) > 1)
        self._lengths = sorted({len(s) for s in self.spellings}, reverse=True)
        self._firsts = frozenset(s[0] for s in self.spellings)

    def found_in(self, text: str) -> list[str]:
        """The spellings `text` holds, longest first (one inside another is then
        broken as part of the longer)."""
        found: set[str] = set()
        for first in self._firsts:
            at = text.find(first)
            while at >= 0:
                found.update(
                    piece
                    for length in self._lengths
                    if (piece := text[at : at + length]) in self.spellings
                )
                at = text.find(first, at + 1)
        return sorted(found, key=len, reverse=True)


@dataclasses.dataclass(frozen=True)
class _KnownHead:
    text: str
    text_and_line: str  # the head and the whole line that must follow it
    tokens: list[int]
    add_bos: bool


def _shared_start(a: str, b: str) -> str:
    for at, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return a[:at]
    return a if len(a) <= len(b) else b


class JudgePromptTokens:
    """A judge's prompts tokenized (special tokens parsed) with their fixed head (the
    instructions, about 1,000 characters: 1.2 ms a check) tokenized once.

    The head is learnt from two prompts in a row: what they share, up to the start of
    the last whole line they share (for self-check, "<user>"). It is used only when it
    was found to tokenize alone exactly as within the whole prompt, and for a prompt in
    which that same line follows it: the tokens on both sides of the cut then come from
    the same text, and no merge reaches across a whole line, so the tokens are those of
    the whole prompt. A head that failed (a tokenizer that starts every text with a
    space) is not tried again."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm  # a llama_cpp.Llama
        self._head: _KnownHead | None = None
        self._last = ""
        self._unfit = ""

    def _tokenize(self, text: str, add_bos: bool) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def tokens(self, text: str, add_bos: bool) -> list[int]:
        head = self._head
        if head is not None and head.add_bos == add_bos and text.startswith(head.text_and_line):
            return head.tokens + self._tokenize(text[len(head.text) :], False)
        tokens = self._tokenize(text, add_bos)
        shared = _shared_start(self._last, text)
        self._last = text
        line_end = shared.rfind("\n")
        cut = shared.rfind("\n", 0, line_end) + 1
        if cut >= MIN_HEAD_CHARS and line_end > cut and text[:cut] != self._unfit:
            head_tokens = self._tokenize(text[:cut], add_bos)
            if head_tokens + self._tokenize(text[cut:], False) == tokens:
                self._head = _KnownHead(text[:cut], text[: line_end + 1], head_tokens, add_bos)
            else:
                self._unfit = text[:cut]
        return tokens


class StopFilter:
    """Turns token bytes into text that is safe to show: whole UTF-8 characters only,
    cut at the first stop string, and holding back a tail that may begin one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.stopped = False
        self._longest = max((len(s) for s in stops), default=0)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> str:
        self._pending += self._decoder.decode(data)
        if not self.stops:
            ready, self._pending = self._pending, ""
            return ready
        found = [i for i in (self._pending.find(s) for s in self.stops) if i >= 0]
        if found:
            self.stopped = True
            ready, self._pending = self._pending[: min(found)], ""
            return ready
        held = self._partial_stop_length()
        split = len(self._pending) - held
        ready, self._pending = self._pending[:split], self._pending[split:]
        return ready

    def _partial_stop_length(self) -> int:
        """How many trailing characters could be the start of a stop string."""
        text = self._pending
        for size in range(min(self._longest - 1, len(text)), 0, -1):
            tail = text[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0

    def flush(self) -> str:
        if self.stopped:
            return ""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return rest
