"""The content-safety output rail over a streamed reply, at sentence and paragraph
boundaries (bastion_guardrails.judged), with a scripted judge whose every call the
test controls."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from bastion_guardrails.decisions import GuardDecision, Stage, Verdict
from bastion_guardrails.judged import HOLD_AFTER_CHARS, MIN_NEW_CHARS, judged, next_cut
from bastion_guardrails.runtime import OutputBlocked, OutputEvent, PassedText

SENTENCE = "The river ran slowly past the mill, and the miller watched it from his door. "
BLOCK = OutputBlocked(GuardDecision(Verdict.BLOCKED, Stage.OUTPUT, "standard", "withdrawn"))


async def pieces(words: list[str], seen: list[str]) -> AsyncIterator[OutputEvent]:
    for word in words:
        seen.append(word)
        yield PassedText(word)
        await asyncio.sleep(0)


def words_of(text: str) -> list[str]:
    return [word + " " for word in text.split()]


def test_cuts_fall_at_sentence_ends_with_enough_new_text() -> None:
    text = SENTENCE * 3
    cut = next_cut(text, 0)
    assert cut is not None
    assert text[:cut].endswith(". ")
    assert cut >= MIN_NEW_CHARS
    assert next_cut(text[:40], 0) is None  # too little yet
    paragraph = "A first paragraph of a reply, short but not tiny.\n\nAnd more"
    assert next_cut(paragraph, 0) == paragraph.index("And")


async def test_stream_first_shows_the_first_piece_before_any_check() -> None:
    calls: list[str] = []

    async def judge(text: str) -> OutputBlocked | None:
        calls.append(text)
        return None

    seen: list[str] = []
    stream = judged(pieces(words_of(SENTENCE * 4), seen), judge, stream_first=True)
    first = await anext(stream)
    assert isinstance(first, PassedText)
    assert calls == []
    rest = [event async for event in stream]
    assert all(isinstance(e, PassedText) for e in rest)
    assert len(calls) >= 2
    # Each check reads the reply so far: the judge's host reuses what it read before.
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(calls))
    assert calls[-1] == (SENTENCE * 4)


async def test_without_stream_first_nothing_is_shown_before_its_check_passed() -> None:
    checked: list[str] = []

    async def judge(text: str) -> OutputBlocked | None:
        checked.append(text)
        return BLOCK if "poison" in text else None

    seen: list[str] = []
    words = words_of(SENTENCE * 3 + "Then he mixed the poison into the well. " + SENTENCE)
    shown = ""
    async for event in judged(pieces(words, seen), judge, stream_first=False):
        if isinstance(event, OutputBlocked):
            assert event is BLOCK
            break
        shown += event.text
        # Whatever is shown was inside a text a check passed.
        assert any(text.startswith(shown) or shown.startswith(text) for text in checked)
        assert len(shown) <= max(len(t) for t in checked)
    else:
        raise AssertionError("the reply was not withdrawn")
    assert "poison" not in shown
    assert shown.startswith(SENTENCE)


async def test_a_failing_judge_stops_the_reply_and_a_block_upstream_passes_through() -> None:
    async def failing(text: str) -> OutputBlocked | None:
        return BLOCK

    events = [e async for e in judged(pieces(words_of(SENTENCE), []), failing, stream_first=True)]
    assert events[-1] is BLOCK

    async def upstream() -> AsyncIterator[OutputEvent]:
        yield PassedText("Hello ")
        yield BLOCK
        yield PassedText("never shown")

    async def never(text: str) -> OutputBlocked | None:
        raise AssertionError("no check after a block")

    events = [e async for e in judged(upstream(), never, stream_first=True)]
    assert events == [PassedText("Hello "), BLOCK]


async def test_a_reply_abandoned_midway_cancels_its_check() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(text: str) -> OutputBlocked | None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    stream = judged(pieces(words_of(SENTENCE * 5), []), slow, stream_first=True)
    async for _event in stream:
        if started.is_set():
            break
    await stream.aclose()
    await asyncio.wait_for(cancelled.wait(), 5)


async def test_no_check_starts_after_one_blocked() -> None:
    calls: list[str] = []

    async def blocks(text: str) -> OutputBlocked | None:
        calls.append(text)
        return BLOCK

    words = words_of(SENTENCE * 6)
    events = []
    async for event in judged(pieces(words, []), blocks, stream_first=True):
        events.append(event)
        await asyncio.sleep(0)  # the consumer awaits too: a task started now would run
    assert events[-1] is BLOCK
    assert len(calls) == 1


class PacedModel:
    """A model that waits between two pieces when asked to (as ModelHost.pace does)."""

    def __init__(self, text: str) -> None:
        self.words = words_of(text)
        self.written = 0  # characters produced so far
        self.calls: list[bool] = []
        self._go = asyncio.Event()
        self._go.set()

    def pace(self, wait: bool) -> None:
        self.calls.append(wait)
        if wait:
            self._go.clear()
        else:
            self._go.set()

    async def pieces(self) -> AsyncIterator[OutputEvent]:
        for word in self.words:
            await self._go.wait()
            self.written += len(word)
            yield PassedText(word)
            await asyncio.sleep(0)


async def slow_judge(text: str) -> OutputBlocked | None:
    for _ in range(200):  # a check takes as long as 200 pieces (a starved judge)
        await asyncio.sleep(0)
    return None


async def furthest_ahead(model: PacedModel, *, stream_first: bool, paced: bool) -> int:
    """How far the model's text ran ahead of the text shown, at most."""
    shown, ahead = 0, 0
    pace = model.pace if paced else None
    async for event in judged(model.pieces(), slow_judge, stream_first=stream_first, pace=pace):
        assert isinstance(event, PassedText)
        shown += len(event.text)
        ahead = max(ahead, model.written - shown)
    assert shown == sum(len(word) for word in model.words)
    return ahead


async def test_held_text_makes_the_model_wait_for_its_checks() -> None:
    """Strict: a judge slower than the model would otherwise show the reply only once
    it ended; asked to wait, the model stays at most HOLD_AFTER_CHARS (and a check's
    text) ahead of what is shown, and every wait is followed by a go."""
    text = SENTENCE * 12
    unpaced = PacedModel(text)
    assert await furthest_ahead(unpaced, stream_first=False, paced=False) > 2 * HOLD_AFTER_CHARS
    paced = PacedModel(text)
    ahead = await furthest_ahead(paced, stream_first=False, paced=True)
    assert ahead <= HOLD_AFTER_CHARS + MIN_NEW_CHARS + len(SENTENCE)
    assert paced.calls
    assert paced.calls == [True, False] * (len(paced.calls) // 2)
    # Standard shows text at once: its model never waits.
    standard = PacedModel(text)
    await furthest_ahead(standard, stream_first=True, paced=True)
    assert standard.calls == []
