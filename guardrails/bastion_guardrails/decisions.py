"""What a guardrail check decided, as plain data the UI, CLI and audit log share.

A decision holds no chat text except `rewritten`, the masked text that replaces the
user's or the model's words; it is never logged or written to the audit log. `masked`
says what was masked in words ("an email address"), and `trace` which rails ran, what
each decided and how long each took: neither holds any of the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    ALLOWED = "allowed"
    MASKED = "masked"
    BLOCKED = "blocked"


class Stage(StrEnum):
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class Judgement:
    """The judge behind a content-safety block, for the sentence and the badge (kept in
    the history with the decision: a name and two numbers, no text)."""

    judge: str  # "Llama Guard 3 1B", or the chat model's name
    self_check: bool
    probability: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class RailTrace:
    """One rail's part in a check, as NeMo's activated-rails log reports it."""

    rail: str  # the rail's flow name, e.g. "bastion mask secrets on output"
    outcome: str  # "allow", "block", "transform" or "failed"
    latency_ms: float


@dataclass(frozen=True)
class GuardDecision:
    verdict: Verdict
    stage: Stage
    profile_id: str
    explanation: str
    rail: str | None = None
    category: str | None = None
    latency_ms: float = 0.0
    rewritten: str | None = field(default=None, repr=False)
    masked: tuple[str, ...] = ()
    trace: tuple[RailTrace, ...] = ()
    judgement: Judgement | None = None  # who flagged it, for a content-safety block

    @property
    def blocked(self) -> bool:
        return self.verdict is Verdict.BLOCKED
