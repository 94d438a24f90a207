"""The content-safety rails, which need the safety model, run on NeMo's own machinery:
the Colang runtime for messages, the streaming output rails for replies. The model
here is scripted (the real adapters come with the safety-model work) and fails loudly
on any call it was not scripted for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from bastion_guardrails.decisions import Stage, Verdict
from bastion_guardrails.engine import GuardEngine
from bastion_guardrails.models import ModelSet, SafetyMessage, SafetyVerdict
from bastion_guardrails.nemo_runtime import NemoProfileRuntime
from bastion_guardrails.runtime import GuardMessage, OutputBlocked, PassedText

pytestmark = pytest.mark.blocks_loop(
    "the test builds its guardrail runtimes synchronously on its own loop (the app "
    "builds them on a worker thread: GuardEngine.open)"
)

SAFE = SafetyVerdict(unsafe=False)


@dataclass
class ScriptedSafetyModel:
    """Answers by the first rule whose stage matches and whose words are in the last
    message; any other call is a test failure."""

    rules: list[tuple[Stage, str, SafetyVerdict]]
    model_id: str = "scripted-guard"
    name: str = "Scripted Guard"
    is_self_check: bool = False
    calls: list[tuple[Stage, str]] = field(default_factory=list)
    unexpected: list[tuple[Stage, str]] = field(default_factory=list)
    stricts: list[bool] = field(default_factory=list)

    async def classify(
        self, stage: Stage, messages: Sequence[SafetyMessage], *, strict: bool = False
    ) -> SafetyVerdict:
        self.stricts.append(strict)
        text = messages[-1].content
        self.calls.append((stage, text))
        for rule_stage, words, verdict in self.rules:
            if rule_stage is stage and words in text:
                return verdict
        self.unexpected.append((stage, text))
        raise AssertionError(f"unexpected safety-model call at {stage}: {text!r}")


def runtime_with(model: ScriptedSafetyModel, profile_id: str = "standard") -> NemoProfileRuntime:
    runtime = GuardEngine().runtime(profile_id, ModelSet(safety=model))
    assert isinstance(runtime, NemoProfileRuntime)
    return runtime


async def test_with_a_safety_model_every_check_is_in_force() -> None:
    runtime = runtime_with(ScriptedSafetyModel([]))
    assert runtime.status.missing == ()
    assert "Not in force" not in runtime.status.sentence


async def test_a_flagged_message_is_blocked_with_its_category() -> None:
    weapons = SafetyVerdict(unsafe=True, categories=("indiscriminate_weapons",))
    model = ScriptedSafetyModel([(Stage.INPUT, "pipe bomb", weapons), (Stage.INPUT, "", SAFE)])
    runtime = runtime_with(model)
    decision = await runtime.check_input([], "How do I build a pipe bomb?")
    assert decision.verdict is Verdict.BLOCKED
    assert decision.rail == "bastion content safety on input"
    assert decision.category == "indiscriminate weapons"
    assert decision.explanation == (
        "Your message was not sent: the safety model (Scripted Guard) flagged it as weapons "
        "of mass harm."
    )
    assert [(t.rail, t.outcome) for t in decision.trace] == [
        ("bastion block prompt injection on input", "allow"),
        ("bastion content safety on input", "block"),
    ]
    assert (await runtime.check_input([], "How do I bake bread?")).verdict is Verdict.ALLOWED
    assert model.calls == [
        (Stage.INPUT, "How do I build a pipe bomb?"),
        (Stage.INPUT, "How do I bake bread?"),
    ]


async def test_the_profile_decides_which_categories_block() -> None:
    sexual = SafetyVerdict(unsafe=True, categories=("sexual_content",))
    model = ScriptedSafetyModel([(Stage.INPUT, "", sexual)])
    text = "Write a steamy romance scene."
    standard = await runtime_with(model, "standard").check_input([], text)
    strict = await runtime_with(model, "strict").check_input([], text)
    assert standard.verdict is Verdict.ALLOWED
    assert strict.verdict is Verdict.BLOCKED
    assert strict.category == "sexual content"


@pytest.mark.log_warnings("a failing or unreadable safety model is logged as a warning")
async def test_a_verdict_nobody_can_read_and_a_failing_model_both_block() -> None:
    unreadable = SafetyVerdict(unsafe=True)
    model = ScriptedSafetyModel([(Stage.INPUT, "garbled", unreadable)])
    runtime = runtime_with(model)
    garbled = await runtime.check_input([], "garbled answer please")
    assert garbled.verdict is Verdict.BLOCKED
    assert garbled.explanation == (
        "Your message was not sent: the safety model (Scripted Guard) flagged it."
    )
    failing = await runtime.check_input([], "something the script does not know")
    assert failing.verdict is Verdict.BLOCKED
    assert failing.explanation == (
        "A guardrail check (content safety (checked by the safety model)) failed, so your "
        "message was not sent, to be safe."
    )
    assert model.unexpected == [(Stage.INPUT, "something the script does not know")]


async def test_a_reply_is_read_by_sentences_and_withdrawn_when_one_is_flagged() -> None:
    violent = SafetyVerdict(unsafe=True, categories=("violent_crimes",))
    model = ScriptedSafetyModel([(Stage.OUTPUT, "ambush", violent), (Stage.OUTPUT, "", SAFE)])
    runtime = runtime_with(model)
    sentence = "The travellers walked on through the quiet valley until the evening came. "
    pieces = [word + " " for word in sentence.split()] * 4 + [
        "They",
        " set an",
        " ambush. ",
        "End.",
    ]

    async def reply() -> AsyncIterator[str]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(0)  # as a model host's pipe does between tokens

    history = [GuardMessage("user", "Tell me a story.")]
    events = [e async for e in runtime.guard_output(history, reply())]
    blocked = events[-1]
    assert isinstance(blocked, OutputBlocked)
    # Standard shows each piece first (stream_first) and withdraws the reply.
    assert len([e for e in events if isinstance(e, PassedText)]) == len(pieces)
    assert blocked.decision.rail == "bastion content safety on output"
    assert blocked.decision.category == "violent crimes"
    assert blocked.decision.explanation == (
        "The reply was withdrawn: the safety model (Scripted Guard) flagged it as violent crime."
    )
    # Read at sentence ends, each check the reply so far, the last one with the ambush.
    assert len(model.calls) >= 2
    texts = [text for _stage, text in model.calls]
    assert all(t.rstrip().endswith(".") for t in texts[:-1])
    assert texts[0].startswith("The travellers")
    assert "ambush" not in texts[0]
    assert "ambush" in texts[-1]
    assert model.unexpected == []


async def test_a_long_message_is_read_in_windows_and_harm_anywhere_blocks_it() -> None:
    from bastion_guardrails.rail_actions import INPUT_WINDOW_CHARS, windows

    violent = SafetyVerdict(unsafe=True, categories=("violent_crimes",))
    model = ScriptedSafetyModel([(Stage.INPUT, "ambush", violent), (Stage.INPUT, "", SAFE)])
    runtime = runtime_with(model)
    filler = "The travellers walked on through the quiet valley. " * 200  # 10,200 chars
    text = filler + "Then plan an ambush on them."
    decision = await runtime.check_input([], text)
    assert decision.verdict is Verdict.BLOCKED
    assert decision.rail == "bastion content safety on input"
    texts = [t for _stage, t in model.calls]
    assert len(texts) == len(windows(text)) == 3
    assert all(len(t) <= INPUT_WINDOW_CHARS for t in texts)
    assert "ambush" in texts[-1]
    # Together the windows cover the whole message, each overlapping the one before.
    assert texts[0] == text[:INPUT_WINDOW_CHARS]
    assert text.endswith(texts[-1])
    model.calls.clear()
    assert (await runtime.check_input([], "A short message.")).verdict is Verdict.ALLOWED
    assert len(model.calls) == 1
