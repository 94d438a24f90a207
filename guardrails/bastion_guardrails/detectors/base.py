"""What every model-free detector shares: findings with spans, and how far back a
streamed reply must be held because its tail may still grow into a match."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

# How far back from the end of a streamed text a hold pattern looks. Secrets and
# identifiers are far shorter; a PEM private key block is handled on its own.
HOLD_LOOKBACK = 160


@dataclass(frozen=True)
class Finding:
    """One match: where it is, what it is in words, and what replaces it when masked."""

    kind: str  # stable identifier, e.g. "aws_access_key"
    label: str  # what a user reads, e.g. "an AWS access key"
    start: int
    end: int
    placeholder: str  # e.g. "[SECRET]"


class Detector(Protocol):
    """A model-free check. `find` must be fast (a 2,000-character message in well under
    a millisecond or two) and never raise on any input."""

    @property
    def name(self) -> str: ...

    def find(self, text: str) -> list[Finding]: ...

    def hold_from(self, text: str) -> int:
        """The index from which the end of `text` could still become (part of) a match
        if more text followed; `len(text)` when nothing needs holding back."""
        ...


def hold_by_patterns(text: str, patterns: Iterable[re.Pattern[str]], group: int = 0) -> int:
    """The earliest start of any of `patterns` (each anchored with `\\Z`) matching the
    tail of `text`, looking back at most HOLD_LOOKBACK characters."""
    start = max(0, len(text) - HOLD_LOOKBACK)
    hold = len(text)
    for pattern in patterns:
        match = pattern.search(text, start)
        if match is not None:
            hold = min(hold, match.start(group))
    return hold


def without_overlaps(findings: Sequence[Finding]) -> list[Finding]:
    """Findings sorted by position, dropping any that overlap an earlier, longer one."""
    ordered = sorted(findings, key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for finding in ordered:
        if kept and finding.start < kept[-1].end:
            continue
        kept.append(finding)
    return kept


def mask(text: str, findings: Sequence[Finding]) -> str:
    """`text` with every finding replaced by its placeholder."""
    parts: list[str] = []
    position = 0
    for finding in without_overlaps(findings):
        parts.append(text[position : finding.start])
        parts.append(finding.placeholder)
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)
