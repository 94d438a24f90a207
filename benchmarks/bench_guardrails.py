"""Bastion's guardrail engine: what a profile costs a chat turn, and each rail alone.

    .venv/bin/python benchmarks/bench_guardrails.py [--rounds N] [--max-tokens N]

(a) Standard (its model-free rails; no safety model is installed) against Off, through
    `ChatService` + `ModelHost` on the real starter model, the two alternating on one
    model host: time to first token (median of paired differences, target at most
    +15 ms) and tokens/s (median of paired ratios, target at least 0.97; the ratio of
    the two medians is reported too).
(b) every model-free rail on a 2,000-character message: median latency of one check,
    dispatched through NeMo's ActionDispatcher as the engine runs it.
(c) the input check of Standard, Strict and Workplace as the engine runs it (model-free
    rails dispatched directly) and through NeMo's Colang runtime (`check_async` on the
    same rails): median latency, the measurement behind the engine's design.
(d) the streamed-output path on a synthetic 400-token reply: microseconds per token
    added by each profile's output rails (releaser, holds, masks, NeMo dispatch).

The machine this runs on is shared and noisy, so (a) alternates the variants and
reports paired figures; every figure that matters is a ratio or difference measured in
the same run. Results are printed and written to benchmarks/results/guardrails.json.
Missing a target is reported, not failed: the exit status is non-zero only when
something did not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import InMemoryConversationStore
from bastion_desktop.core.events import BlockedEvent, DoneEvent, ErrorEvent, GuardEvent, TokenEvent
from bastion_desktop.core.inference.types import LoadOptions, SamplingParams
from bastion_desktop.core.models import ChatModelSlot
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.starter import STARTER_ID
from bench_common import add_home_argument, median, met, positive, prepare_home

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "guardrails.json"

TARGET_TTFT_EXTRA_MS = 15.0  # Standard minus Off, at most
TARGET_TPS_RATIO = 0.97  # Standard over Off, at least

PROMPT_TEXT = "Write a long story about a lighthouse keeper who finds an old map."
SEED_TRIES = 10
MESSAGE_CHARS = 2000
STREAM_TOKENS = 400


class BenchmarkError(Exception):
    """Something the benchmark needs did not work."""


@dataclass(frozen=True)
class Config:
    rounds: int
    max_tokens: int
    threads: int
    n_ctx: int
    seed: int
    rail_repeats: int

    def sampling(self, seed: int) -> SamplingParams:
        return SamplingParams(seed=seed, max_tokens=self.max_tokens)


# --- (a) a chat turn: Standard against Off -----------------------------------------------


@dataclass(frozen=True)
class Turn:
    variant: str
    ttft_ms: float
    tokens: int
    decode_s: float
    finish: str
    text: str
    input_check_ms: float
    # From the last token to the turn's end: the output checks still to finish.
    settle_ms: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        if self.tokens < 2 or self.decode_s <= 0:
            return 0.0
        return (self.tokens - 1) / self.decode_s

    def as_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "ttft_ms": round(self.ttft_ms, 3),
            "tokens": self.tokens,
            "decode_s": round(self.decode_s, 6),
            "tokens_per_second": round(self.tokens_per_second, 3),
            "finish": self.finish,
            "input_check_ms": round(self.input_check_ms, 3),
            "settle_ms": round(self.settle_ms, 3),
            "text_chars": len(self.text),
        }


async def run_turn(
    service: ChatService, store: InMemoryConversationStore, params: SamplingParams, variant: str
) -> Turn:
    conversation = await store.create_conversation(
        title="benchmark", model_id=STARTER_ID, profile_id=variant, system_prompt=""
    )
    stamps: list[float] = []
    parts: list[str] = []
    done: DoneEvent | None = None
    ended = 0.0
    check_ms = 0.0
    start = time.perf_counter()
    async for event in service.send(conversation.id, PROMPT_TEXT, params):
        now = time.perf_counter()
        if isinstance(event, TokenEvent):
            stamps.append(now)
            parts.append(event.text)
        elif isinstance(event, GuardEvent):
            check_ms = event.decision.latency_ms
        elif isinstance(event, DoneEvent):
            done, ended = event, now
        elif isinstance(event, ErrorEvent):
            raise BenchmarkError(f"the turn failed: {event.kind}: {event.message}")
        elif isinstance(event, BlockedEvent):
            raise BenchmarkError(f"{variant} blocked the benchmark prompt: {event.decision}")
    if done is None or not stamps:
        raise BenchmarkError("the turn ended without text or without its done event")
    return Turn(
        variant,
        (stamps[0] - start) * 1000.0,
        done.tokens,
        stamps[-1] - stamps[0],
        done.finish_reason,
        "".join(parts),
        check_ms,
        (ended - stamps[-1]) * 1000.0,
    )


async def measure_turns(model_path: Path, config: Config) -> dict[str, Any]:
    from bastion_guardrails.engine import GuardEngine
    from bastion_guardrails.runtime import OffProfile

    engine = GuardEngine()
    started = time.perf_counter()
    standard = await engine.open("standard")
    build_s = time.perf_counter() - started
    off = OffProfile()
    store = InMemoryConversationStore()
    slot = ChatModelSlot(LoadOptions(context_length=config.n_ctx, threads=config.threads))
    # One service and one model host for both variants: only the guard changes.
    service = ChatService(store, slot, lambda _model_id: model_path, off)
    try:
        await slot.host_for(model_path)
        print(f"  choosing a seed whose reply runs {config.max_tokens} tokens...", flush=True)
        seed, full_length = config.seed, False
        for candidate in range(config.seed, config.seed + SEED_TRIES):
            turn = await run_turn(service, store, config.sampling(candidate), "off")
            if turn.finish == "length":
                seed, full_length = candidate, True
                break
        params = config.sampling(seed)
        for guard, name in ((off, "off"), (standard, "standard")):  # warm both paths
            service.guard = guard
            await run_turn(service, store, params, name)
        turns: dict[str, list[Turn]] = {"off": [], "standard": []}
        for index in range(config.rounds):
            order = [(off, "off"), (standard, "standard")]
            if index % 2:
                order.reverse()  # neither variant always runs first
            for guard, name in order:
                service.guard = guard
                turns[name].append(await run_turn(service, store, params, name))
            o, s = turns["off"][-1], turns["standard"][-1]
            print(
                f"  round {index + 1}/{config.rounds}: "
                f"off {o.tokens_per_second:6.1f} tok/s {o.ttft_ms:6.1f} ms | "
                f"standard {s.tokens_per_second:6.1f} tok/s {s.ttft_ms:6.1f} ms",
                flush=True,
            )
    finally:
        await slot.close()
    off_runs, std_runs = turns["off"], turns["standard"]
    off_tps = median([t.tokens_per_second for t in off_runs])
    std_tps = median([t.tokens_per_second for t in std_runs])
    paired_ttft = [s.ttft_ms - o.ttft_ms for o, s in zip(off_runs, std_runs, strict=True)]
    paired_tps = [
        s.tokens_per_second / o.tokens_per_second
        for o, s in zip(off_runs, std_runs, strict=True)
        if o.tokens_per_second > 0
    ]
    ratio = std_tps / off_tps if off_tps else 0.0
    # The two turns of a round run back to back, so they share the machine's load; on a
    # shared machine the load changes far more between rounds than within one, and the
    # ratio of two medians can then compare a busy half of one variant with a quiet half
    # of the other. The target is judged on the paired ratios.
    paired_ratio = median(paired_tps)
    extra = median(paired_ttft)
    stalled = [
        t
        for runs, median in ((off_runs, off_tps), (std_runs, std_tps))
        for t in runs
        if t.tokens_per_second < median / 2
    ]
    return {
        "seed_used": seed,
        "seed_runs_full_length": full_length,
        "standard_build_s": build_s,
        "decode": {
            "off_median_tokens_per_second": off_tps,
            "standard_median_tokens_per_second": std_tps,
            "ratio_standard_over_off": ratio,
            "median_of_paired_ratios": paired_ratio,
            "paired_ratios": paired_tps,
            "target_ratio_at_least": TARGET_TPS_RATIO,
            "target_judged_on": "median_of_paired_ratios",
            "target_met": paired_ratio >= TARGET_TPS_RATIO,
        },
        "ttft": {
            "off_median_ms": median([t.ttft_ms for t in off_runs]),
            "standard_median_ms": median([t.ttft_ms for t in std_runs]),
            "median_extra_ms": extra,
            "paired_extra_ms": paired_ttft,
            "target_extra_at_most_ms": TARGET_TTFT_EXTRA_MS,
            "target_met": extra <= TARGET_TTFT_EXTRA_MS,
            "standard_input_check_median_ms": median([t.input_check_ms for t in std_runs]),
        },
        "checks": {
            "same_text_every_round": all(
                o.text == s.text for o, s in zip(off_runs, std_runs, strict=True)
            ),
            "finish_reasons": sorted({f"{t.variant}:{t.finish}" for t in off_runs + std_runs}),
            "token_counts": sorted({f"{t.variant}:{t.tokens}" for t in off_runs + std_runs}),
            "runs_under_half_the_median_speed": len(stalled),
        },
        "runs": [t.as_json() for t in off_runs + std_runs],
    }


# --- (b), (c), (d): the engine without a model -------------------------------------------

_SENTENCE = (
    "the keeper climbed the stairs every evening and lit the lamp while ships passed far "
    "out on the grey water and he wrote down the weather in a small book with a pencil "
    "that was always too short because he never bought a new one"
)
_WORDS = _SENTENCE.split()
SHORT_MESSAGE = "How do I keep the lamp of a lighthouse burning through a storm?"


def message_of(chars: int) -> str:
    """Prose of about `chars` characters with a few things the rails look for: a date,
    an email address, a phone number, a price, a version, an order number."""
    rng = random.Random(42)
    extras = [
        "on 2024-03-15",
        "write to keeper@example.org",
        "call +44 20 7946 0958",
        "it cost 12.50",
        "version 1.2.3",
        "order 4417 1234",
    ]
    words: list[str] = []
    while len(" ".join(words)) < chars:
        words.append(rng.choice(extras) if rng.random() < 0.03 else rng.choice(_WORDS))
    return " ".join(words)[:chars]


async def _timed(call: Callable[[], Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000.0)
    return times


async def measure_each_rail(engine: Any, message: str, repeats: int) -> dict[str, Any]:
    """(b) Strict holds every model-free rail the built-ins use but two (secrets blocked
    on input, in Workplace; secrets masked on output, in all). Each rail's own action,
    dispatched as the engine does, and its detector alone."""
    from bastion_guardrails.nemo_runtime import NemoProfileRuntime

    rails: dict[str, dict[str, float]] = {}
    for profile_id in ("strict", "workplace", "standard"):
        runtime = engine.runtime(profile_id)
        assert isinstance(runtime, NemoProfileRuntime)
        for stage_rails in runtime._direct.values():
            for direct in stage_rails:
                stream = direct.stream
                if stream.name in rails:
                    continue

                async def once(stream: Any = stream, runtime: Any = runtime) -> None:
                    run = await runtime._dispatch(stream, message)
                    if run.failed:
                        raise BenchmarkError(f"{stream.name} failed")

                times = await _timed(once, repeats)
                alone = await _timed(lambda s=stream: _async(s.detector.find, message), repeats)
                rails[stream.name] = {
                    "median_ms": median(times),
                    "detector_only_median_ms": median(alone),
                }
    return rails


async def measure_input_checks(engine: Any, message: str, repeats: int) -> dict[str, Any]:
    """(c) the engine's input check against NeMo's check_async on the same rails."""
    from nemoguardrails.rails.llm.options import RailType

    from bastion_guardrails.engine import build_rails
    from bastion_guardrails.library import ProfileLibrary
    from bastion_guardrails.models import ModelSet
    from bastion_guardrails.plan import plan_profile

    library = ProfileLibrary()
    inputs: dict[str, dict[str, float]] = {}
    for profile_id in ("standard", "strict", "workplace"):
        runtime = engine.runtime(profile_id)
        profile = library.get(profile_id)
        colang = build_rails(profile, plan_profile(profile, ModelSet()), every_rail=True)
        results: dict[str, float] = {}
        for label, text in (("short", SHORT_MESSAGE), ("2000_chars", message)):

            async def direct(text: str = text, runtime: Any = runtime) -> None:
                await runtime.check_input([], text)

            async def nemo(text: str = text, colang: Any = colang) -> None:
                await colang.check_async(
                    [{"role": "user", "content": text}], rail_types=[RailType.INPUT]
                )
                colang.events_history_cache.clear()

            results[f"engine_{label}_median_ms"] = median(await _timed(direct, repeats))
            # NeMo's runtime takes 100x longer: fewer repeats keep the run short.
            nemo_times = await _timed(nemo, max(5, repeats // 20))
            results[f"nemo_check_async_{label}_median_ms"] = median(nemo_times)
        results["input_rails"] = len(runtime.plan.rails(runtime.plan.input[0].flow.stage))
        inputs[profile_id] = results
    return inputs


async def measure_streams(engine: Any, message: str, repeats: int) -> dict[str, float]:
    """(d) a synthetic reply, token by token, through each profile's output rails."""
    from bastion_guardrails.runtime import GuardMessage

    reply = [(" " if i else "") + word for i, word in enumerate(message.split()[:STREAM_TOKENS])]
    history = [GuardMessage("user", SHORT_MESSAGE)]

    async def tokens() -> AsyncIterator[str]:
        for token in reply:
            yield token

    streams: dict[str, float] = {}
    for profile_id in ("off", "standard", "strict", "workplace"):
        runtime = engine.runtime(profile_id)

        async def drain(runtime: Any = runtime) -> None:
            async for _ in runtime.guard_output(history, tokens()):
                pass

        times = await _timed(drain, max(5, repeats // 20))
        streams[profile_id] = median(times) * 1000.0 / len(reply)
    return streams


async def measure_rails(config: Config) -> dict[str, Any]:
    from bastion_guardrails.engine import GuardEngine

    engine = GuardEngine()
    message = message_of(MESSAGE_CHARS)
    rails = await measure_each_rail(engine, message, config.rail_repeats)
    print(f"  (b) {len(rails)} rails, {config.rail_repeats} checks each", flush=True)
    inputs = await measure_input_checks(engine, message, config.rail_repeats)
    print("  (c) input checks done", flush=True)
    streams = await measure_streams(engine, message, config.rail_repeats)
    print("  (d) streamed output done", flush=True)
    return {
        "message_chars": len(message),
        "rails": rails,
        "input_check": inputs,
        "stream_us_per_token": streams,
        "stream_tokens": min(STREAM_TOKENS, len(message.split())),
    }


async def _async(function: Callable[[str], Any], text: str) -> None:
    function(text)


# --- report -----------------------------------------------------------------------------


def print_summary(result: dict[str, Any]) -> None:
    config, turns, rails = result["config"], result["turns"], result["rails"]
    decode, ttft, checks = turns["decode"], turns["ttft"], turns["checks"]
    print()
    print(
        f"Bastion guardrails benchmark: {config['model']}, {config['threads']} threads, "
        f"{config['max_tokens']} tokens, seed {turns['seed_used']}, {config['rounds']} rounds"
    )
    print(
        f"(a) decode speed   off {decode['off_median_tokens_per_second']:.1f} tok/s"
        f"   standard {decode['standard_median_tokens_per_second']:.1f} tok/s"
    )
    print(
        f"    standard/off = {decode['median_of_paired_ratios']:.3f} (median of paired ratios;"
        f" ratio of medians {decode['ratio_standard_over_off']:.3f})"
        f"   target >= {decode['target_ratio_at_least']:.2f}: {met(decode['target_met'])}"
    )
    print(
        f"    first token    off {ttft['off_median_ms']:.1f} ms"
        f"   standard {ttft['standard_median_ms']:.1f} ms"
        f"   (standard's input check {ttft['standard_input_check_median_ms']:.2f} ms)"
    )
    print(
        f"    standard - off = {ttft['median_extra_ms']:+.1f} ms (median of paired differences)"
        f"   target <= {ttft['target_extra_at_most_ms']:.0f} ms: {met(ttft['target_met'])}"
    )
    same = "yes" if checks["same_text_every_round"] else "NO"
    print(
        f"    checks: same text every round: {same}; finish: "
        f"{', '.join(checks['finish_reasons'])}; tokens: {', '.join(checks['token_counts'])}"
    )
    if checks["runs_under_half_the_median_speed"]:
        print(
            f"    note: {checks['runs_under_half_the_median_speed']} turns ran under half their "
            "variant's median speed: the machine was busy; the paired figures absorb most of "
            "it, more --rounds absorb more"
        )
    print(f"(b) each model-free rail on a {rails['message_chars']}-character message (median):")
    for name, figures in sorted(rails["rails"].items()):
        print(
            f"    {name:42} {figures['median_ms']:7.3f} ms"
            f"   (detector alone {figures['detector_only_median_ms']:.3f} ms)"
        )
    print("(c) input check, median: the engine | NeMo check_async on the same rails")
    for profile_id, figures in rails["input_check"].items():
        print(
            f"    {profile_id:10} {figures['input_rails']} rails"
            f"   short message {figures['engine_short_median_ms']:6.2f} ms"
            f" | {figures['nemo_check_async_short_median_ms']:7.2f} ms"
            f"   2,000 chars {figures['engine_2000_chars_median_ms']:6.2f} ms"
            f" | {figures['nemo_check_async_2000_chars_median_ms']:7.2f} ms"
        )
    print(f"(d) streamed output, {rails['stream_tokens']} tokens: microseconds added per token")
    print("    " + "   ".join(f"{p} {us:.0f} us" for p, us in rails["stream_us_per_token"].items()))
    print(f"results: {RESULTS_FILE}")


# --- entry point ------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Config, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=positive, default=16, help="turns of each variant")
    parser.add_argument("--max-tokens", type=positive, default=128, help="tokens per reply")
    parser.add_argument("--threads", type=positive, default=os.cpu_count() or 1)
    parser.add_argument("--n-ctx", type=positive, default=2048, help="context length")
    parser.add_argument("--seed", type=int, default=1, help="first seed tried")
    parser.add_argument(
        "--rail-repeats", type=positive, default=200, help="checks per rail in (b) and (c)"
    )
    add_home_argument(parser)
    args = parser.parse_args(argv)
    config = Config(
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        threads=args.threads,
        n_ctx=args.n_ctx,
        seed=args.seed,
        rail_repeats=args.rail_repeats,
    )
    return config, args.home


async def run_all(config: Config, model_path: Path) -> dict[str, Any]:
    print("(a) Standard vs Off through ChatService on the starter model, alternating:")
    turns = await measure_turns(model_path, config)
    print("(b, c, d) the engine on its own:", flush=True)
    rails = await measure_rails(config)
    import nemoguardrails

    return {
        "benchmark": "guardrails",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "nemoguardrails": getattr(nemoguardrails, "__version__", "unknown"),
        },
        "config": {**asdict(config), "model": model_path.name, "prompt": PROMPT_TEXT},
        "turns": turns,
        "rails": rails,
    }


def main(argv: Sequence[str] | None = None) -> int:
    apply_private_environment()
    config, home = parse_args(argv)
    temporary = home is None
    home = Path(tempfile.mkdtemp(prefix="bastion-bench-")) if home is None else home
    try:
        started = time.perf_counter()
        model_path = prepare_home(home.resolve())
        print(f"starter model ready in {time.perf_counter() - started:.1f} s: {model_path}")
        result = asyncio.run(run_all(config, model_path))
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        if temporary:
            shutil.rmtree(home, ignore_errors=True)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
