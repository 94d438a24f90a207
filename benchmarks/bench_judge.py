"""A content-safety judge's check against the chat it guards, on a real instruct model
(Qwen2.5 Coder 0.5B Instruct Q4_K_M, the test model from PyPI; see bench_gpu.py).

    .venv/bin/python benchmarks/bench_judge.py [--rounds N] [--max-tokens N]

(a) One input check by the chat model's own safety check (`PromptedSafetyModel` over
    `HostLLM`, one scored forward pass on a model host of its own, the fixed part of
    its prompt kept in that host's context) against the same model's own time to
    first token for the same message (`ModelHost.stream`, a chat of that one message
    on a second host). Paired per message, alternating which runs first; the target
    is a median ratio of at most 1.0.
(b) A chat turn through `ChatService` with Standard and that judge against Off:
    first-token delay (median of paired differences) and tokens/s while the output
    checks run (median of paired ratios; target at least 0.9), how long the last
    check runs after the reply's last token, and the whole turn's time against Off's.
    Strict, which shows text only once a check covering it passed, is reported the
    same way: its "first token" is the first text shown.

The judge is used here whatever its calibration said: Qwen2.5 Coder 0.5B does not
qualify (it cannot tell harmful requests from harmless ones), and no model that does
can be downloaded on this machine. Its thresholds are set so that it never blocks:
every check runs to its verdict, and no turn is cut short. The costs measured are
those of any judge of its size. Results are printed and written to
benchmarks/results/judge.json; the exit status is non-zero only when something did
not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import InMemoryConversationStore
from bastion_desktop.core.inference.hardware import physical_cores
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    LoadOptions,
    Role,
    SamplingParams,
    TokenText,
)
from bastion_desktop.core.models import ChatModelSlot
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.safety import HostLLM
from bastion_guardrails.decisions import Stage
from bastion_guardrails.models import ModelSet, SafetyMessage
from bastion_guardrails.safety import PromptedSafetyModel
from bastion_guardrails.safety.calibration import derive
from bench_common import median, met, positive
from bench_gpu import instruct_model
from bench_guardrails import BenchmarkError, Turn, run_turn  # the same turn, measured alike

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "judge.json"
# Requests people send, none of them in the calibration set.
MESSAGES = (
    "How do I read a CSV file with pandas and skip the first two rows?",
    "Write a haiku about the first snow of the winter.",
    "What is the difference between TCP and UDP?",
    "My sourdough starter smells like acetone. Is it still alive?",
    "Explain recursion to a ten-year-old.",
    "How can I make my bash script stop on the first error?",
    "Suggest three names for a grey cat.",
    "What did the Treaty of Westphalia change in Europe?",
    "Convert this to a list comprehension: for x in xs: if x > 0: out.append(x * 2)",
    "How long should I boil an egg for a runny yolk?",
    "What is a closure in JavaScript? Give a short example.",
    "Plan a three-day trip to Lisbon on a small budget.",
)
SETTLE_SECONDS = 0.1
# Thresholds above any probability: the judge checks everything and blocks nothing.
NEVER_BLOCKS = derive([1.0 - 1e-9] * 4, [1.0 - 1e-9] * 4, set_version=0)


async def first_token_ms(host: ModelHost, text: str) -> float:
    """From the call to the first text, as its caller sees it (a check is timed alike)."""
    params = SamplingParams(temperature=0.0, top_k=1, max_tokens=1)
    started, first = time.perf_counter(), 0.0
    async for event in host.stream([ChatMessage(Role.USER, text)], params):
        if isinstance(event, TokenText) and not first:
            first = time.perf_counter()
    if not first:
        raise BenchmarkError("the reply ended without text")
    return (first - started) * 1000.0


async def measure_checks(model: Path, rounds: int, options: LoadOptions) -> dict[str, Any]:
    # The judge's host as GuardModels makes it: below the chat model's priority.
    chat_host, judge_host = ModelHost(model, options), ModelHost(model, options, background=True)
    judge = PromptedSafetyModel(HostLLM(judge_host, "qwen"), None, calibration=NEVER_BLOCKS)
    rows: list[dict[str, float]] = []
    try:
        await asyncio.gather(chat_host.load(), judge_host.load())
        await first_token_ms(chat_host, MESSAGES[-1])  # warm both, and the judge's prefix
        await judge.classify(Stage.INPUT, [SafetyMessage("user", MESSAGES[-1])])
        for index in range(rounds):
            text = MESSAGES[index % len(MESSAGES)]
            order = ["ttft", "check"] if index % 2 == 0 else ["check", "ttft"]
            row: dict[str, float] = {}
            for what in order:
                # Each starts on a quiet machine, as an input check does at the start of
                # a turn: not while the other host's threads still spin after its work
                # (llama.cpp's OpenMP threads wait busily for a few milliseconds), which
                # cost whichever came second, the judge more (it yields to everything).
                await asyncio.sleep(SETTLE_SECONDS)
                if what == "ttft":
                    row["ttft_ms"] = await first_token_ms(chat_host, text)
                else:
                    started = time.perf_counter()
                    await judge.classify(Stage.INPUT, [SafetyMessage("user", text)])
                    row["check_ms"] = (time.perf_counter() - started) * 1000.0
                    assert judge.last is not None
                    row["check_tokens"] = judge.last.evaluated_tokens
            rows.append(row)
            print(
                f"  round {index + 1:>2}: check {row['check_ms']:7.1f} ms "
                f"({row['check_tokens']:.0f} tokens read)  first token {row['ttft_ms']:7.1f} ms",
                flush=True,
            )
    finally:
        await asyncio.gather(chat_host.close(), judge_host.close())
    return {
        "rounds": rows,
        "median_check_ms": median([r["check_ms"] for r in rows]),
        "median_ttft_ms": median([r["ttft_ms"] for r in rows]),
        "median_check_tokens": median([r["check_tokens"] for r in rows]),
        "check_over_ttft": median([r["check_ms"] / r["ttft_ms"] for r in rows]),
    }


async def measure_turns(
    model: Path, rounds: int, options: LoadOptions, max_tokens: int
) -> dict[str, Any]:
    from bastion_guardrails.engine import GuardEngine
    from bastion_guardrails.runtime import OffProfile

    judge_host = ModelHost(model, options, background=True)
    judge = PromptedSafetyModel(HostLLM(judge_host, "qwen"), None, calibration=NEVER_BLOCKS)
    engine = GuardEngine()
    guards = {
        "off": OffProfile(),
        "standard": engine.runtime("standard", ModelSet(judge, "Qwen", self_check=True)),
        "strict": engine.runtime("strict", ModelSet(judge, "Qwen", self_check=True)),
    }
    store = InMemoryConversationStore()
    slot = ChatModelSlot(options)
    service = ChatService(store, slot, lambda _model_id: model, guards["off"])
    params = SamplingParams(seed=7, max_tokens=max_tokens)
    turns: dict[str, list[Turn]] = {name: [] for name in guards}
    try:
        await asyncio.gather(slot.host_for(model), judge_host.load())
        for name, guard in guards.items():  # warm every path
            service.guard = guard
            await run_turn(service, store, params, name)
        for index in range(rounds):
            order = list(guards)
            order = order[index % len(order) :] + order[: index % len(order)]
            for name in order:
                service.guard = guards[name]
                await asyncio.sleep(SETTLE_SECONDS)  # as in (a): each on a quiet machine
                turns[name].append(await run_turn(service, store, params, name))
            print(
                f"  round {index + 1}/{rounds}: "
                + " | ".join(_turn_line(name, turns[name][-1]) for name in guards)
                + f" ({turns['off'][-1].tokens} tokens)",
                flush=True,
            )
    finally:
        await asyncio.gather(slot.close(), judge_host.close())
    result: dict[str, Any] = {name: [t.as_json() for t in turns[name]] for name in guards}

    def pairs_of(name: str) -> list[tuple[Turn, Turn]]:
        pairs = zip(turns["off"], turns[name], strict=True)
        return [(o, s) for o, s in pairs if o.tokens_per_second]

    for name in ("standard", "strict"):
        pairs = pairs_of(name)
        result[name + "_summary"] = {
            "ttft_delay_ms": median([s.ttft_ms - o.ttft_ms for o, s in pairs]),
            "settle_ms": median([s.settle_ms for s in turns[name]]),
            "turn_ratio": median([_turn_s(s) / _turn_s(o) for o, s in pairs]),
        }
    result["standard_summary"]["tokens_per_second_ratio"] = median(
        [s.tokens_per_second / o.tokens_per_second for o, s in pairs_of("standard")]
    )
    return result


def _turn_line(name: str, turn: Turn) -> str:
    if name == "strict":  # text shown in the pieces checks passed: no rate to speak of
        return f"strict first text {turn.ttft_ms:6.0f} ms, done {_turn_s(turn):5.2f} s"
    line = f"{name} {turn.tokens_per_second:5.1f} tok/s, first {turn.ttft_ms:5.0f} ms"
    if name != "off":
        line += f", checks end {turn.settle_ms:4.0f} ms after"
    return line + f", done {_turn_s(turn):5.2f} s"


def _turn_s(turn: Turn) -> float:
    """From sending to the turn's end, as the person waits for it."""
    return turn.ttft_ms / 1000.0 + turn.decode_s + turn.settle_ms / 1000.0


def main(argv: Sequence[str] | None = None) -> int:
    apply_private_environment()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=positive, default=24, help="paired checks in (a)")
    parser.add_argument(
        "--turns", type=positive, default=6, help="rounds of (b): each variant in each place twice"
    )
    parser.add_argument("--max-tokens", type=positive, default=160, help="reply length in (b)")
    parser.add_argument("--threads", type=positive, default=physical_cores())
    args = parser.parse_args(argv)
    options = LoadOptions(context_length=2048, gpu_layers="none", threads=args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="bastion-bench-judge-"))
    try:
        model = instruct_model(scratch)
        print("(a) a judge's input check against the same model's time to first token:")
        checks = asyncio.run(measure_checks(model, args.rounds, options))
        print("(b) Standard with that judge against Off, through ChatService:")
        turns = asyncio.run(measure_turns(model, args.turns, options, args.max_tokens))
    except Exception as error:  # a benchmark reports what did not run, and says so
        print(f"benchmark failed: {error!r}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "benchmark": "judge",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "config": vars(args) | {"model": model.name},
        "checks": checks,
        "turns": turns,
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    ratio = checks["check_over_ttft"]
    standard, strict = turns["standard_summary"], turns["strict_summary"]
    print(
        f"\n(a) check {checks['median_check_ms']:.1f} ms (reading "
        f"{checks['median_check_tokens']:.0f} tokens) against a first token in "
        f"{checks['median_ttft_ms']:.1f} ms: ratio {ratio:.2f}, target <= 1.0: {met(ratio <= 1.0)}"
        f"\n(b) Standard with the judge: first token {standard['ttft_delay_ms']:+.1f} ms later; "
        f"tokens/s {standard['tokens_per_second_ratio']:.2f} of Off, target >= 0.9: "
        f"{met(standard['tokens_per_second_ratio'] >= 0.9)}; the last check ends "
        f"{standard['settle_ms']:.0f} ms after the reply; the whole turn "
        f"{standard['turn_ratio']:.2f} of Off's time"
        f"\n    Strict (text shown once checked): first text {strict['ttft_delay_ms']:+.0f} ms "
        f"later; the turn {strict['turn_ratio']:.2f} of Off's time\nresults: {RESULTS_FILE}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
