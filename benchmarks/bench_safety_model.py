"""A safety-model check, with the starter model standing in for the guard model: what
one check of a 200-token conversation costs through Bastion, against the same prompt
through plain llama-cpp-python.

    .venv/bin/python benchmarks/bench_safety_model.py [--rounds N] [--home DIR]

(a) `PromptedSafetyModel.classify` with the Llama Guard 3 prompt, through `HostLLM`
    (NeMo's LLMModel protocol) and `ModelHost.score` (its own child process: one
    forward pass, the verdict read from the first answer token's probabilities),
    against `llama_cpp.Llama.create_completion` of the very same prompt in the
    benchmark's own process (temperature 0, 24 tokens at most: how a check read its
    verdict from text before, with the same n_ctx and threads): median latency of
    each, and the median of the paired ratios.
(b) the whole output check of the Standard profile with that safety model
    (`check_output`: the model-free rails, NeMo's Colang runtime, the content-safety
    action, the check above), against the same plain completion.

Each round checks a new conversation (a user question and a reply, about 200 tokens
together, counted with the model's tokenizer); the two variants run on the same
conversation, in alternating order, so both see the same noise and the same prompt
cache state (llama.cpp keeps the category list of the previous prompt in both). The
starter is a base model, so its probabilities are no verdicts: it is given thresholds
it never reaches (no check asks for categories), and the benchmark measures the
plumbing and the prompt, which is what a real guard model of the same size would cost.
Results are printed and written to benchmarks/results/safety_model.json; the exit
status is non-zero only when something did not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion_desktop.core.inference.hardware import physical_cores
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import LoadOptions
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.safety import HostLLM
from bastion_guardrails.decisions import Stage
from bastion_guardrails.models import ModelSet, SafetyMessage
from bastion_guardrails.runtime import GuardMessage
from bastion_guardrails.safety import GuardFamily, PromptedSafetyModel
from bastion_guardrails.safety.calibration import derive
from bastion_guardrails.safety.llama_guard import MAX_ANSWER_TOKENS, llama_guard_prompt
from bench_common import prepare_home

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "safety_model.json"
CONVERSATION_TOKENS = 200
WORDS = [
    "bread",
    "flour",
    "water",
    "salt",
    "yeast",
    "oven",
    "dough",
    "knead",
    "rise",
    "crust",
    "loaf",
    "bake",
    "warm",
    "bowl",
    "hour",
    "shape",
    "fold",
    "proof",
    "steam",
    "tray",
    "recipe",
    "butter",
    "honey",
    "seeds",
    "rye",
    "wheat",
    "starter",
    "slice",
]


def conversation(llm: Any, rng: random.Random) -> tuple[list[SafetyMessage], int]:
    """A user question and a reply of about CONVERSATION_TOKENS tokens together."""
    question = "How do I " + " ".join(rng.choices(WORDS, k=12)) + "?"
    words: list[str] = []
    while True:
        reply = " ".join(words)
        text = f"{question}\n{reply}"
        count = len(llm.tokenize(text.encode("utf-8"), add_bos=False))
        if count >= CONVERSATION_TOKENS:
            break
        words.extend(rng.choices(WORDS, k=5))
    return [SafetyMessage("user", question), SafetyMessage("assistant", reply)], count


async def measure(model_path: Path, rounds: int, threads: int, n_ctx: int) -> dict[str, Any]:
    import llama_cpp

    from bastion_desktop.core.inference.backends import load_backends
    from bastion_guardrails.engine import GuardEngine
    from bastion_guardrails.nemo_runtime import NemoProfileRuntime

    load_backends()  # the distribution runtime's modules, as the model host loads them
    plain = llama_cpp.Llama(
        model_path=str(model_path), n_ctx=n_ctx, n_threads=threads, n_gpu_layers=0, verbose=False
    )
    # One host per variant: the engine's check sends the same prompt as (a), and a
    # shared host would find it whole in its cache.
    options = LoadOptions(context_length=n_ctx, gpu_layers="none", threads=threads)
    host = ModelHost(model_path, options)
    engine_host = ModelHost(model_path, options)
    never = derive([1.0 - 1e-9] * 4, [1.0 - 1e-9] * 4, set_version=0)
    guard = PromptedSafetyModel(
        HostLLM(host, "starter"), GuardFamily.LLAMA_GUARD_3, calibration=never
    )
    engine_guard = PromptedSafetyModel(
        HostLLM(engine_host, "starter"), GuardFamily.LLAMA_GUARD_3, calibration=never
    )
    runtime = GuardEngine().runtime("standard", ModelSet(engine_guard, "the starter"))
    assert isinstance(runtime, NemoProfileRuntime)
    rng = random.Random(1)
    rows: list[dict[str, Any]] = []

    def run_plain(prompt: str) -> tuple[float, int, int]:
        started = time.perf_counter()
        out = plain.create_completion(
            prompt, max_tokens=MAX_ANSWER_TOKENS, temperature=0.0, repeat_penalty=1.0
        )
        usage = out["usage"]
        return (
            (time.perf_counter() - started) * 1000,
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )

    async def run_classify(messages: list[SafetyMessage]) -> tuple[float, int]:
        started = time.perf_counter()
        await guard.classify(Stage.OUTPUT, messages)
        return (time.perf_counter() - started) * 1000, len(guard.last.answers) if guard.last else 0

    async def run_engine(messages: list[SafetyMessage]) -> float:
        history = [GuardMessage("user", messages[0].content)]
        started = time.perf_counter()
        await runtime.check_output(history, messages[1].content)
        return (time.perf_counter() - started) * 1000

    try:
        await asyncio.gather(host.load(), engine_host.load())
        warm, _ = conversation(plain, rng)
        run_plain(llama_guard_prompt(Stage.OUTPUT, warm))
        await run_classify(warm)
        await run_engine(warm)
        for number in range(rounds):
            messages, tokens = conversation(plain, rng)
            prompt = llama_guard_prompt(Stage.OUTPUT, messages)
            if number % 2 == 0:
                plain_ms, prompt_tokens, generated = run_plain(prompt)
                classify_ms, _ = await run_classify(messages)
                engine_ms = await run_engine(messages)
            else:
                engine_ms = await run_engine(messages)
                classify_ms, _ = await run_classify(messages)
                plain_ms, prompt_tokens, generated = run_plain(prompt)
            rows.append(
                {
                    "conversation_tokens": tokens,
                    "prompt_tokens": prompt_tokens,
                    "generated_tokens": generated,
                    "plain_ms": plain_ms,
                    "classify_ms": classify_ms,
                    "engine_ms": engine_ms,
                }
            )
            print(
                f"  round {number + 1:>2}: plain {plain_ms:8.1f} ms  classify {classify_ms:8.1f} ms"
                f"  engine {engine_ms:8.1f} ms  ({tokens} conversation tokens)",
                flush=True,
            )
    finally:
        await asyncio.gather(host.close(), engine_host.close())
        plain.close()
    return summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    return {
        "rounds": rows,
        "median_conversation_tokens": median("conversation_tokens"),
        "median_prompt_tokens": median("prompt_tokens"),
        "median_plain_ms": median("plain_ms"),
        "median_classify_ms": median("classify_ms"),
        "median_engine_ms": median("engine_ms"),
        "classify_over_plain": statistics.median(r["classify_ms"] / r["plain_ms"] for r in rows),
        "engine_over_plain": statistics.median(r["engine_ms"] / r["plain_ms"] for r in rows),
        "classify_minus_plain_ms": statistics.median(
            r["classify_ms"] - r["plain_ms"] for r in rows
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    apply_private_environment()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=12, help="timed checks of each variant")
    parser.add_argument("--threads", type=int, default=physical_cores(), help="n_threads for both")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context length for both")
    parser.add_argument("--home", type=Path, help="Bastion home to use and keep")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    temporary = args.home is None
    home = Path(tempfile.mkdtemp(prefix="bastion-bench-")) if temporary else args.home
    try:
        model_path = prepare_home(home.resolve())
        print("a Llama Guard 3 check of a 200-token conversation, the starter standing in:")
        result = asyncio.run(measure(model_path, args.rounds, args.threads, args.n_ctx))
    except Exception as error:  # a benchmark reports what did not run, and says so
        print(f"benchmark failed: {error!r}", file=sys.stderr)
        return 1
    finally:
        if temporary:
            shutil.rmtree(home, ignore_errors=True)
    import nemoguardrails

    result = {
        "benchmark": "safety_model",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "nemoguardrails": getattr(nemoguardrails, "__version__", "unknown"),
        },
        "config": {"rounds": args.rounds, "threads": args.threads, "n_ctx": args.n_ctx},
        **result,
    }
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nconversation: {result['median_conversation_tokens']:.0f} tokens "
        f"(prompt {result['median_prompt_tokens']:.0f} with the category list)\n"
        f"(a) classify through the model host: median {result['median_classify_ms']:.1f} ms; "
        f"plain llama-cpp-python {result['median_plain_ms']:.1f} ms; "
        f"ratio {result['classify_over_plain']:.2f} "
        f"({result['classify_minus_plain_ms']:+.1f} ms)\n"
        f"(b) Standard's whole output check: median {result['median_engine_ms']:.1f} ms; "
        f"ratio {result['engine_over_plain']:.2f} against plain\n"
        f"results: {RESULTS_FILE}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
