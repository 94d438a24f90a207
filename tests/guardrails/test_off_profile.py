from __future__ import annotations

from collections.abc import AsyncIterator

from bastion_guardrails.decisions import Stage, Verdict
from bastion_guardrails.runtime import GuardMessage, OffProfile, PassedText


async def test_off_checks_nothing_and_says_so() -> None:
    profile = OffProfile()
    decision = await profile.check_input([GuardMessage("user", "hi")], "anything at all")
    assert decision.verdict is Verdict.ALLOWED
    assert decision.stage is Stage.INPUT
    assert decision.profile_id == "off"
    assert "nothing was checked" in decision.explanation
    assert not profile.checks_anything


async def test_off_passes_the_output_through_unchanged() -> None:
    async def stream() -> AsyncIterator[str]:
        for piece in ("Hel", "lo", " world"):
            yield piece

    out = [item async for item in OffProfile().guard_output([], stream())]
    assert out == [PassedText("Hel"), PassedText("lo"), PassedText(" world")]
