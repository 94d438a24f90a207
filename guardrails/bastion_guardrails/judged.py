"""The content-safety output rail over a streamed reply, checked at sentence and
paragraph boundaries.

NeMo's streaming output rails hold back the first `chunk_size` pieces of a reply (its
`RollingBuffer` yields nothing before a chunk is full, even with `stream_first`): with
a judge in force, the first token of every reply waited for 32 more, about a second on
a small model on two cores. Here the pieces the model-free rails cleared go on at once
and the judge reads the reply as it grows, one check at a time, each covering whole
sentences:

- a check starts at a sentence end once `MIN_NEW_CHARS` of unchecked text have come
  (at a paragraph end once `MIN_PARAGRAPH_CHARS` have), and at the end of the reply;
- each check reads the reply so far (from the start of its window), so the judge's
  host finds the earlier text in its context and reads only what is new;
- while one check runs the reply keeps streaming; the next starts when it is done;
- `stream_first` (Standard): pieces are shown at once and the reply is withdrawn if a
  check flags it; otherwise (Strict) a piece is shown only once a check covering it
  has passed;
- held text (Strict) waits no further than `HOLD_AFTER_CHARS` behind the reply: past
  that, while a check runs, the model is asked to wait (`pace`) until it ends. A judge
  that gets only idle cores (see host_process.yield_to_the_app) cannot check a reply the
  CPU is busy writing; without the wait Strict showed a reply only once it had ended.

A check that fails (the judge crashed) stops the reply, as every output rail fails
closed. The reply is complete only after its last piece has been checked.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from bastion_guardrails.runtime import OutputBlocked, OutputEvent, Pace, PassedText

# A sentence ends at ., !, ? or an ellipsis (closing quotes and brackets included)
# followed by white space, or at a line end.
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]]*\s|\n")
_PARAGRAPH_END = re.compile(r"\n\s*\n")
MIN_NEW_CHARS = 160
MIN_PARAGRAPH_CHARS = 40
# The most reply text one check reads (about 750 tokens: with the rules and the user's
# message it fits a 2,048-token judge); past it the window moves to what was checked.
MAX_WINDOW_CHARS = 3000
# How far held text may run ahead of what has passed while a check runs (Strict).
HOLD_AFTER_CHARS = 2 * MIN_NEW_CHARS

Judge = Callable[[str], Awaitable[OutputBlocked | None]]


def next_cut(reply: str, checked: int) -> int | None:
    """Where the next check should end: the last sentence or paragraph end after
    `checked` that leaves enough new text, or None to wait for more."""
    cut = None
    for match in _SENTENCE_END.finditer(reply, checked):
        if match.end() - checked >= MIN_NEW_CHARS:
            cut = match.end()
    for match in _PARAGRAPH_END.finditer(reply, checked):
        if match.end() - checked >= MIN_PARAGRAPH_CHARS and (cut is None or match.end() > cut):
            cut = match.end()
    return cut


class _Reply:
    """The reply as it streams: its text, how far it has passed, the check running."""

    def __init__(self, judge: Judge, stream_first: bool, pace: Pace | None = None) -> None:
        self.judge = judge
        self.stream_first = stream_first
        # Only held text waits for a check: Standard shows its text at once.
        self.pace = None if stream_first else pace
        self.waiting = False  # the model was asked to wait for the running check
        self.text = ""
        self.checked = 0  # the text up to here has passed
        self.window = 0  # where the text a check reads starts
        self.running: asyncio.Task[OutputBlocked | None] | None = None
        self.running_end = 0
        self.held: deque[tuple[int, PassedText]] = deque()  # (end offset, piece)

    def add(self, piece: PassedText) -> list[OutputEvent]:
        self.text += piece.text
        ready: list[OutputEvent] = []
        if self.stream_first:
            ready.append(piece)
        else:
            self.held.append((len(self.text), piece))
        if self.running is not None and self.running.done():
            ready += self._settled(self.running.result())
            if self._blocked(ready):
                return ready  # withdrawn: no further check
        if self.running is None and (cut := next_cut(self.text, self.checked)) is not None:
            self._start(cut)
        if (
            self.pace is not None
            and not self.waiting
            and self.running is not None
            and len(self.text) - self.checked >= HOLD_AFTER_CHARS
        ):
            self.waiting = True
            self.pace(True)
            self.running.add_done_callback(lambda _check: self._go())
        return ready

    def _go(self) -> None:
        if self.waiting and self.pace is not None:
            self.waiting = False
            self.pace(False)

    async def finish(self) -> list[OutputEvent]:
        ready: list[OutputEvent] = []
        if self.running is not None:
            ready += self._settled(await self.running)
        if self._blocked(ready):
            return ready
        if self.text[self.checked :].strip():
            self._start(len(self.text))
            assert self.running is not None
            ready += self._settled(await self.running)
            if self._blocked(ready):
                return ready
        return ready + self._passed(len(self.text))

    def cancel(self) -> None:
        if self.running is not None and not self.running.done():
            self.running.cancel()
        self._go()

    @staticmethod
    def _blocked(events: list[OutputEvent]) -> bool:
        return bool(events) and isinstance(events[-1], OutputBlocked)

    def _start(self, end: int) -> None:
        if end - self.window > MAX_WINDOW_CHARS:
            self.window = self.checked
        self.running = asyncio.ensure_future(self.judge(self.text[self.window : end]))
        self.running_end = end

    def _settled(self, blocked: OutputBlocked | None) -> list[OutputEvent]:
        self.running = None
        return [blocked] if blocked is not None else self._passed(self.running_end)

    def _passed(self, end: int) -> list[OutputEvent]:
        self.checked = max(self.checked, end)
        ready: list[OutputEvent] = []
        while self.held and self.held[0][0] <= self.checked:
            ready.append(self.held.popleft()[1])
        return ready


async def judged(
    released: AsyncIterator[OutputEvent],
    judge: Judge,
    *,
    stream_first: bool,
    pace: Pace | None = None,
) -> AsyncIterator[OutputEvent]:
    """`released` (the model-free rails' output) with `judge` checking the reply text
    at boundaries; see the module. `pace` asks the model to wait for a check, or to
    go on."""
    reply = _Reply(judge, stream_first, pace)
    try:
        async for event in released:
            ready = [event] if isinstance(event, OutputBlocked) else reply.add(event)
            for item in ready:
                yield item
                if isinstance(item, OutputBlocked):
                    return
        for item in await reply.finish():
            yield item
    finally:
        reply.cancel()
