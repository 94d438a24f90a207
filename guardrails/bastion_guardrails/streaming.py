"""Releasing a streamed reply piece by piece through the model-free output rails.

NeMo's streaming output rails buffer `chunk_size` tokens before anything is shown and
cannot rewrite text (a TRANSFORM outcome is ignored while streaming: see
`nemoguardrails.actions.rail_outcome`). Masking a secret in a reply, without delaying
every token, needs something else: this releaser.

Each token is appended to the pending text. Every rail's detector says from where the
end of the text could still grow into a match (the start of a token after "ghp_", the
digits of what may become a card number, the value after "password="); everything
before the earliest such point is released at once: the rails run on it (with the last
few hundred characters already shown as context), masks are applied, a block stops the
reply, and the piece is cleared for display. Ordinary prose has nothing to hold, so a
token is released the moment it arrives, checked, before it is shown.

A rail's action is dispatched (through NeMo, which decides block or mask and may fail)
only when its detector finds something the piece adds: the action runs that same
detector, built from the same settings, and allows whatever it finds nothing in. On a
plain token that skips NeMo's dispatch and the outcome objects, which were most of the
per-token cost on the app's side while the model competes for the same cores.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bastion_guardrails.detectors import Detector, Finding, without_overlaps
from bastion_guardrails.rail_actions import findings_of

CONTEXT_CHARS = 256
# A tail held longer than this is released anyway (masked as far as the rails can see):
# a private key block is a few kilobytes; nothing legitimate is held for longer.
MAX_HOLD_CHARS = 16_384


@dataclass(frozen=True)
class StreamRail:
    name: str
    title: str
    category: str
    masks: bool
    detector: Detector


@dataclass(frozen=True)
class RailRun:
    """One dispatch of a rail's action: its RailOutcome, or None if the action failed."""

    outcome: Any
    latency_ms: float

    @property
    def failed(self) -> bool:
        return self.outcome is None


Dispatch = Callable[[StreamRail, str], Awaitable[RailRun]]


@dataclass(frozen=True)
class Cleared:
    text: str
    masked: tuple[str, ...]  # labels of what was masked in this piece
    masking_rails: tuple[StreamRail, ...]
    latency_ms: float


@dataclass(frozen=True)
class Stopped:
    rail: StreamRail
    labels: tuple[str, ...]
    failed: bool
    latency_ms: float


Release = Cleared | Stopped


class OutputReleaser:
    def __init__(self, rails: Sequence[StreamRail], dispatch: Dispatch) -> None:
        self.rails = tuple(rails)
        self.dispatch = dispatch
        self.context = ""  # the end of what was released, as the model wrote it
        self.pending = ""

    async def feed(self, text: str) -> Release | None:
        self.pending += text
        if not self.rails:
            return await self._release(len(self.pending))
        window = self.context + self.pending
        hold = min(rail.detector.hold_from(window) for rail in self.rails)
        releasable = max(0, hold - len(self.context))
        if len(self.pending) - releasable > MAX_HOLD_CHARS:
            releasable = len(self.pending)
        if releasable == 0:
            return None
        return await self._release(releasable)

    async def finish(self) -> Release | None:
        if not self.pending:
            return None
        return await self._release(len(self.pending))

    async def _release(self, size: int) -> Release:
        piece = self.pending[:size]
        offset = len(self.context)
        window = self.context + piece
        to_mask: list[Finding] = []
        masking: list[StreamRail] = []
        latency = 0.0
        for rail in self.rails:
            started = time.perf_counter()
            quiet = _finds_nothing_new(rail.detector, window, offset)
            latency += (time.perf_counter() - started) * 1000.0
            if quiet:
                continue
            run = await self.dispatch(rail, window)
            latency += run.latency_ms
            if run.failed:
                return Stopped(rail, (), True, latency)
            findings = findings_of(run.outcome.metadata)
            # Only what this piece adds counts: the context was checked when it was shown.
            new = [f for f in findings or () if f.end > offset]
            if run.outcome.is_blocked and (new or findings is None):
                return Stopped(rail, tuple(f.label for f in new), False, latency)
            if run.outcome.is_transform and new:
                to_mask += new
                masking.append(rail)
        self.pending = self.pending[size:]
        self.context = window[-CONTEXT_CHARS:]
        text = _mask_piece(piece, offset, to_mask)
        labels = tuple(dict.fromkeys(f.label for f in to_mask))
        return Cleared(text, labels, tuple(masking), latency)


def _finds_nothing_new(detector: Detector, window: str, offset: int) -> bool:
    """Whether `detector` finds nothing ending past `offset` in `window` (what was
    shown before it was checked when it was shown). A detector that raises has not
    found nothing: the dispatch then reports the rail as failed."""
    try:
        return all(finding.end <= offset for finding in detector.find(window))
    except Exception:
        return False


def _mask_piece(piece: str, offset: int, findings: Sequence[Finding]) -> str:
    """`piece` with every finding's part inside it replaced by the placeholder. A finding
    that began in the context (already shown) is masked from the piece's start."""
    parts: list[str] = []
    position = 0
    for finding in without_overlaps(findings):
        start = max(finding.start - offset, position)
        end = finding.end - offset
        if end <= start:
            continue
        parts.append(piece[position:start])
        parts.append(finding.placeholder)
        position = end
    parts.append(piece[position:])
    return "".join(parts)
