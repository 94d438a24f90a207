"""Output rails over a streamed reply: masks applied across token boundaries, blocks
that stop the reply, tokens released the moment they cannot be part of anything, and
NeMo's streaming output rails for the rails of a profile's own Colang."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bastion_guardrails.bundle import ProfileOrigin, read_folder
from bastion_guardrails.decisions import Stage, Verdict
from bastion_guardrails.engine import GuardEngine
from bastion_guardrails.nemo_runtime import NemoProfileRuntime
from bastion_guardrails.profile import load_profile
from bastion_guardrails.runtime import (
    GuardMessage,
    GuardProfileRuntime,
    OutputBlocked,
    OutputEvent,
    PassedText,
)
from tests.guardrails.conftest import write_profile

pytestmark = pytest.mark.blocks_loop(
    "the test builds its guardrail runtimes synchronously on its own loop (the app "
    "builds them on a worker thread: GuardEngine.open)"
)

QUESTION = [GuardMessage("user", "Can you help me with my config?")]
KEY = "AKIA" + "IOSFODNN7EXAMPLE"


async def tokens(pieces: Sequence[str]) -> AsyncIterator[str]:
    for piece in pieces:
        yield piece


async def run(runtime: GuardProfileRuntime, pieces: Sequence[str]) -> list[OutputEvent]:
    return [event async for event in runtime.guard_output(QUESTION, tokens(pieces))]


def shown(events: Sequence[OutputEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, PassedText))


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Use ", KEY, " for that."], "Use [SECRET] for that."),
        (
            ["Use AK", "IA", "IOSF", "ODNN7", "EXAM", "PLE", " for", " that."],
            "Use [SECRET] for that.",
        ),
        ([f"Use {KEY} for that."], "Use [SECRET] for that."),
        # A single letter is a word ("A lighthouse..."), so it is shown at once; the
        # key's public type prefix may then show in part, the key itself never does.
        (["Use ", "A", "KIAIOSF", "ODNN7EXAMPLE", " for that."], "Use A[SECRET] for that."),
    ],
)
async def test_standard_masks_a_secret_however_the_tokens_split_it(
    engine: GuardEngine, pieces: list[str], expected: str
) -> None:
    events = await run(engine.runtime("standard"), pieces)
    assert shown(events) == expected
    masked = [e.masked for e in events if isinstance(e, PassedText) and e.masked]
    assert len(masked) == 1
    decision = masked[0]
    assert decision.verdict is Verdict.MASKED
    assert decision.stage is Stage.OUTPUT
    assert decision.rail == "bastion mask secrets on output"
    assert decision.masked == ("an AWS access key",)
    assert decision.explanation == "In the reply, an AWS access key was replaced with placeholders."


async def test_a_private_key_streamed_line_by_line_is_masked_whole(engine: GuardEngine) -> None:
    pieces = ["Here:\n", "-----BEGIN", " RSA PRIVATE", " KEY-----\n", "MIIEow", "IBAAKCAQ\n"]
    pieces += ["-----END RSA", " PRIVATE KEY-----", "\nDone."]
    events = await run(engine.runtime("standard"), pieces)
    assert shown(events) == "Here:\n[PRIVATE KEY]\nDone."


async def test_prose_is_released_token_by_token_before_the_next_one_is_read(
    engine: GuardEngine,
) -> None:
    """Nothing is held back when nothing could become a secret: each token is checked and
    shown before the model's next token is even asked for."""
    runtime = engine.runtime("standard")
    words = ["Once", " upon", " a", " time", ",", " a", " lighthouse", " keeper", " found", "."]
    shown_when_asked: list[int] = []
    events: list[OutputEvent] = []

    async def model() -> AsyncIterator[str]:
        for word in words:
            shown_when_asked.append(len(events))
            yield word

    async for event in runtime.guard_output(QUESTION, model()):
        events.append(event)
    assert [e.text for e in events if isinstance(e, PassedText)] == words
    assert shown_when_asked == list(range(len(words)))


async def test_strict_withdraws_a_reply_that_turns_profane(engine: GuardEngine) -> None:
    events = await run(
        engine.runtime("strict"), ["It", " was", " a", " bull", "shit", " idea", "."]
    )
    assert isinstance(events[-1], OutputBlocked)
    assert shown(events[:-1]) == "It was a "
    decision = events[-1].decision
    assert decision.verdict is Verdict.BLOCKED
    assert decision.rail == "bastion block profanity on output"
    assert decision.category == "profanity"
    assert decision.explanation == (
        "The reply was withdrawn because it contained profanity, which the Strict profile blocks."
    )


async def test_strict_masks_personal_data_in_replies(engine: GuardEngine) -> None:
    pieces = ["Write", " to", " jane", ".doe", "@", "example", ".com", " or", " call", " 415"]
    pieces += ["-555", "-2671", "."]
    events = await run(engine.runtime("strict"), pieces)
    assert shown(events) == "Write to [EMAIL] or call [PHONE]."


async def test_non_streamed_output_is_checked_whole(engine: GuardEngine) -> None:
    runtime = engine.runtime("standard")
    assert isinstance(runtime, NemoProfileRuntime)
    decision = await runtime.check_output(QUESTION, f"The key is {KEY}.")
    assert decision.verdict is Verdict.MASKED
    assert decision.rewritten == "The key is [SECRET]."


def _term_profile(tmp_path: Path, *, stream_first: bool, chunk_size: int) -> NemoProfileRuntime:
    folder = write_profile(
        tmp_path / "colang-output",
        f"""\
        rails:
          output:
            flows: [keep the castle out]
            streaming:
              chunk_size: {chunk_size}
              context_size: 1
              stream_first: {str(stream_first).lower()}
        custom_data:
          bastion:
            terms: [castle]
        """,
        rails_co="""\
        define subflow keep the castle out
          $verdict = execute bastion_terms(source="output", mode="block", text=$bot_message)
          if $verdict.is_blocked
            bot bastion refuse
            stop
        """,
    )
    runtime = GuardEngine().runtime_for(load_profile(read_folder(folder, ProfileOrigin.USER)))
    assert isinstance(runtime, NemoProfileRuntime)
    return runtime


REPLY = ["The", " king", " rode", " to", " the", " castle", " at", " dawn", "."]


async def test_nemo_streaming_rails_shown_first_then_withdrawn(tmp_path: Path) -> None:
    """A flow from the profile's Colang runs on NeMo's streaming output rails. With
    stream_first, a chunk is shown before it is checked, so the violation chunk NeMo
    sends arrives after text that must be withdrawn."""
    runtime = _term_profile(tmp_path, stream_first=True, chunk_size=2)
    events = await run(runtime, REPLY)
    assert isinstance(events[-1], OutputBlocked)
    assert shown(events) == "The king rode to the castle"
    decision = events[-1].decision
    assert decision.rail == "keep the castle out"
    assert decision.explanation == (
        "The reply was withdrawn: the profile's rail 'keep the castle out' blocked it."
    )


async def test_nemo_streaming_rails_checked_before_shown(tmp_path: Path) -> None:
    runtime = _term_profile(tmp_path, stream_first=False, chunk_size=2)
    events = await run(runtime, REPLY)
    assert isinstance(events[-1], OutputBlocked)
    # NeMo's RollingBuffer counts the context it keeps towards the next chunk, so after
    # the first chunk of two, a check comes every 2 - 1 pieces (with one of context):
    # "the" passes, and "castle" is stopped before it is shown.
    assert shown(events) == "The king rode to the"
    clean = await run(runtime, ["The", " king", " rode", " home", "."])
    assert shown(clean) == "The king rode home."
    assert not any(isinstance(e, OutputBlocked) for e in clean)


@pytest.mark.parametrize(
    ("chunk", "explanation"),
    [
        (
            '{"error": {"message": "Internal error in keep the castle out rail: Action '
            'bastion_terms failed with status: failed", "type": "internal_error", '
            '"param": "keep the castle out", "code": "rail_execution_failure"}}',
            "A guardrail check (the profile's rail 'keep the castle out') failed, so the reply "
            "was stopped, to be safe.",
        ),
        (
            '{"error": {"message": "Blocked by keep the castle out rails.", "type": '
            '"guardrails_violation", "param": "keep the castle out", "code": "content_blocked"}}',
            "The reply was withdrawn: the profile's rail 'keep the castle out' blocked it.",
        ),
        (
            "something NeMo never sends",
            "A guardrail check (the profile's rail 'keep the castle out') failed, so the reply "
            "was stopped, to be safe.",
        ),
    ],
)
def test_nemo_stop_chunks_block_and_internal_errors_fail_closed(
    tmp_path: Path, chunk: str, explanation: str
) -> None:
    from bastion_guardrails.rail_actions import VerdictRecorder

    runtime = _term_profile(tmp_path, stream_first=True, chunk_size=2)
    blocked = runtime._violation(chunk, VerdictRecorder(), 0.0)
    assert blocked.decision.verdict is Verdict.BLOCKED
    assert blocked.decision.explanation == explanation
