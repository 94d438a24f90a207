"""The interface the chat service uses to apply a guardrail profile.

`check_input` looks at the user's message before the model sees it; `guard_output`
wraps the model's token stream and may hold text back, rewrite it, or stop it with a
block. `OffProfile` is the pass-through profile "Off"; the NeMo Guardrails engine
(`bastion_guardrails.engine.GuardEngine`) gives a `NemoProfileRuntime` for every other
profile, implementing the same protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion_guardrails.decisions import GuardDecision, Stage, Verdict


@dataclass(frozen=True)
class GuardMessage:
    role: str
    content: str


@dataclass(frozen=True)
class PassedText:
    """Model text cleared for display. When the output rails masked something in it,
    `masked` is that decision (to record and to tell the user); `text` is then the
    masked text."""

    text: str
    masked: GuardDecision | None = None


@dataclass(frozen=True)
class OutputBlocked:
    """The output rails stopped the reply; what was shown must be retracted."""

    decision: GuardDecision


OutputEvent = PassedText | OutputBlocked
# Asks the model writing a reply to wait between two tokens (True), or to go on (False).
Pace = Callable[[bool], None]


class GuardProfileRuntime(Protocol):
    @property
    def profile_id(self) -> str: ...

    @property
    def profile_name(self) -> str: ...

    @property
    def profile_hash(self) -> str | None:
        """The profile's content sha256 (what an administrator pins), when known."""
        ...

    @property
    def checks_anything(self) -> bool: ...

    async def check_input(self, history: Sequence[GuardMessage], text: str) -> GuardDecision: ...

    async def check_output(self, history: Sequence[GuardMessage], text: str) -> GuardDecision:
        """The output rails over a whole reply (one that was not streamed)."""
        ...

    def guard_output(
        self,
        history: Sequence[GuardMessage],
        stream: AsyncIterator[str],
        *,
        pace: Pace | None = None,
    ) -> AsyncIterator[OutputEvent]:
        """`history` is the conversation the reply answers, ending with the user's
        (possibly masked) message; output rails that weigh a reply against the question
        (content safety) read that last user message. `pace`, where the model can wait,
        lets a profile that holds text until it is checked make the reply wait for its
        checks (see judged.py)."""
        ...


class OffProfile:
    """The "Off" profile: nothing is checked, and every decision says so plainly."""

    profile_id = "off"
    profile_name = "Off"
    checks_anything = False

    def __init__(self, profile_hash: str | None = None) -> None:
        self.profile_hash = profile_hash

    async def check_input(self, history: Sequence[GuardMessage], text: str) -> GuardDecision:
        return GuardDecision(
            verdict=Verdict.ALLOWED,
            stage=Stage.INPUT,
            profile_id=self.profile_id,
            explanation="Guardrails are off: nothing was checked.",
        )

    async def check_output(self, history: Sequence[GuardMessage], text: str) -> GuardDecision:
        return GuardDecision(
            verdict=Verdict.ALLOWED,
            stage=Stage.OUTPUT,
            profile_id=self.profile_id,
            explanation="Guardrails are off: nothing was checked.",
        )

    async def guard_output(
        self,
        history: Sequence[GuardMessage],
        stream: AsyncIterator[str],
        *,
        pace: Pace | None = None,
    ) -> AsyncIterator[OutputEvent]:
        async for text in stream:
            yield PassedText(text)
