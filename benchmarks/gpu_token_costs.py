"""Where a generated token's time goes, in one process and one model: llama.cpp's decode
alone (what llama-bench's tg measures), then with the sampler chain Bastion's default
sampling builds, then llama-cpp-python's generate loop with detokenizing; and the model
host's own loop (LoadedModel.generate without the pipe to the app) against sampling and
decoding alone on the same loaded model (with the GPU's top-k where it has one).

    python benchmarks/gpu_token_costs.py --packed DIR [--flavour cuda_v13] [--tokens 128]
    python benchmarks/gpu_token_costs.py --model FILE.gguf|tiny [--gpu-layers 0]

With `--packed` it runs where bench_gpu.py runs, from the same pack (`bench_gpu.py
--pack`), on the same models (`--models`, default all three), every layer on the GPU.
With `--model` it runs on this machine's runtime (the CPU unless layers are offloaded):
the host loop's own cost shows best with a model that decodes in about a millisecond,
such as bench_gpu.py's random `tiny` shape (`--model tiny` writes it once, with gguf-py).
Each figure is the median of `--rounds` runs, in milliseconds a token; bench_gpu.py's own
result for the same model adds the pipe and the app. Printed, and written to
benchmarks/results/gpu-token-costs.json (token-costs-here.json with `--model`). No
target: it says which part to make faster when bench_gpu.py's ratio falls short.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import bench_gpu
from bastion_desktop.core.inference.backends import load_backends
from bastion_desktop.core.inference.token_loop import context_settings, sampler_settings
from bastion_desktop.core.inference.types import SamplingParams
from bastion_desktop.core.privacy import apply_private_environment

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "gpu-token-costs.json"
# --model's results, kept apart from a GPU machine's.
RESULTS_HERE_FILE = RESULTS_FILE.with_name("token-costs-here.json")
CHILD_TIMEOUT_S = 600
# Freeing a context after the raw decode calls below crashed llama.cpp on lavapipe: a
# measuring process keeps its model until it leaves (without tearing down).
KEPT: list[Any] = []
PROMPT = "Write a long story about a lighthouse keeper who finds an old map."


def measure(path: Path, tokens: int, rounds: int, gpu_layers: int = -1) -> dict[str, Any]:
    import llama_cpp

    from bastion_desktop.core.inference.hardware import physical_cores

    # As the model host makes its context: one output a batch, flash attention "auto"
    # where layers are on a GPU (llama-bench's default too).
    with context_settings(flash_attention_auto=gpu_layers != 0) as settings:
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=2048,
            n_gpu_layers=gpu_layers,
            n_threads=physical_cores(),  # as the model host runs
            verbose=False,
            seed=1,
            **settings,
        )
    ctx = llm._ctx.ctx
    memory = llama_cpp.llama_get_memory(ctx)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True)
    sampling = sampler_settings(SamplingParams())

    def decode_only(sample: bool) -> float:
        llama_cpp.llama_memory_clear(memory, True)
        llm.reset()  # type: ignore[no-untyped-call]
        llm.eval(prompt)
        sampler = llm._init_sampler(**sampling) if sample else None
        token = llama_cpp.llama_token(prompt[-1])
        started = time.perf_counter()
        for _ in range(tokens):
            if sampler is not None:
                token = llama_cpp.llama_token(sampler.sample(llm._ctx, -1))
            batch = llama_cpp.llama_batch_get_one(ctypes.pointer(token), 1)
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            llama_cpp.llama_synchronize(ctx)
        return (time.perf_counter() - started) / tokens * 1000

    def generate_loop() -> float:
        llm.reset()  # type: ignore[no-untyped-call]
        llm.set_seed(1)
        started = 0.0
        for count, token in enumerate(llm.generate(prompt, **sampling)):
            if count == 0:
                started = time.perf_counter()  # after the prompt and the first token
            llm.detokenize([token])
            if count >= tokens:
                break
        return (time.perf_counter() - started) / tokens * 1000

    runs: dict[str, list[float]] = {"decode": [], "decode_and_sample": [], "generate_loop": []}
    decode_only(True)  # warm-up
    for _ in range(rounds):
        runs["decode"].append(decode_only(False))
        runs["decode_and_sample"].append(decode_only(True))
        runs["generate_loop"].append(generate_loop())
    medians = {name: statistics.median(values) for name, values in runs.items()}
    KEPT.append(llm)
    return {
        "n_vocab": llm.n_vocab(),
        "ms_per_token": medians,
        "tokens_per_second": {name: 1000 / ms for name, ms in medians.items()},
        "sampling_ms": medians["decode_and_sample"] - medians["decode"],
        "python_loop_ms": medians["generate_loop"] - medians["decode_and_sample"],
        "runs": runs,
    }


class _Pipe:
    """The model host's pipe to the app, kept in memory: when each piece of text left."""

    def __init__(self) -> None:
        self.sent: list[float] = []

    def send(self, message: tuple[Any, ...]) -> None:
        if message[0] == "text":
            self.sent.append(time.perf_counter())

    def poll(self) -> bool:
        return False


def measure_host(path: Path, tokens: int, rounds: int, gpu_layers: int = -1) -> dict[str, Any]:
    """The model host's own loop (LoadedModel.generate, with whatever it samples on), in
    this process: milliseconds a token between pieces of text handed to the pipe, against
    the same sampler chain and decode alone on the same model, with nothing else in the
    loop (its floor). Both draw the same seeded tokens."""
    import llama_cpp

    from bastion_desktop.core.inference.host_process import LoadedModel
    from bastion_desktop.core.inference.token_loop import eval_reusing_prefix
    from bastion_desktop.core.inference.types import ChatMessage, LoadOptions, Role

    model = LoadedModel(path, LoadOptions(context_length=2048, gpu_layers=gpu_layers))
    sampled_on_gpu = model.sample_from_gpu_top_k()  # as run_host does for the chat model
    KEPT.append(model)
    params = SamplingParams(seed=1, max_tokens=tokens + 1)
    messages = [ChatMessage(Role.USER, PROMPT)]
    prompt, _rendered, _dropped = model.fit_prompt(messages, params)
    llm = model.llm

    def host_loop() -> float | None:
        pipe = _Pipe()
        model.generate(pipe, 1, (messages, params))  # type: ignore[arg-type]
        if len(pipe.sent) < tokens // 2:
            return None  # the reply ended early: too few tokens to time
        return (pipe.sent[-1] - pipe.sent[0]) / (len(pipe.sent) - 1) * 1000

    def floor() -> float:
        llm.reset()  # type: ignore[no-untyped-call]
        llm.set_seed(1)
        eval_reusing_prefix(llm, prompt)
        sampler = llm._init_sampler(**sampler_settings(params))
        ctx, token = llm._ctx.ctx, llama_cpp.llama_token(0)
        batch = llama_cpp.llama_batch_get_one(ctypes.pointer(token), 1)
        started = time.perf_counter()
        for _ in range(tokens):
            token.value = llama_cpp.llama_sampler_sample(sampler.sampler, ctx, -1)
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
        llama_cpp.llama_synchronize(ctx)
        return (time.perf_counter() - started) / tokens * 1000

    runs: dict[str, list[float]] = {"host_loop": [], "sample_and_decode": []}
    for index in range(rounds + 1):  # the first warms up
        ms = host_loop()
        floor_ms = floor()
        if index and ms is not None:
            runs["host_loop"].append(ms)
            runs["sample_and_decode"].append(floor_ms)
    medians = {name: statistics.median(values) for name, values in runs.items() if values}
    overhead = medians["host_loop"] - medians["sample_and_decode"] if len(medians) == 2 else None
    return {
        "ms_per_token": medians,
        "host_loop_ms": overhead,
        "runs": runs,
        "sampled_on_gpu": sampled_on_gpu,
    }


def _measure_in_child(
    conn: Connection, module: Path | None, path: Path, tokens: int, rounds: int, *, gpu_layers: int
) -> None:
    """One model in a process of its own: a second model in the same process, or freeing
    the first, crashed llama.cpp on lavapipe. It leaves without tearing down."""
    try:
        load_backends(gpu_modules=[module] if module else ())
        result = measure(path, tokens, rounds, gpu_layers)
        result["host"] = measure_host(path, tokens, rounds, gpu_layers)
        conn.send(("ok", result))
    except Exception as error:  # reported by the parent
        conn.send(("error", f"{type(error).__name__}: {error}"))
    conn.close()
    os._exit(0)


def measure_apart(
    module: Path | None, path: Path, tokens: int, rounds: int, gpu_layers: int = -1
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(
        target=_measure_in_child,
        args=(theirs, module, path, tokens, rounds),
        kwargs={"gpu_layers": gpu_layers},
    )
    child.start()
    theirs.close()
    try:
        if not ours.poll(CHILD_TIMEOUT_S):
            raise bench_gpu.BenchmarkError(f"no result in {CHILD_TIMEOUT_S} s")
        status, result = ours.recv()
    except EOFError as error:
        raise bench_gpu.BenchmarkError(f"the measuring process died ({child.exitcode})") from error
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    if status != "ok":
        raise bench_gpu.BenchmarkError(result)
    return dict(result)


def report(key: str, result: dict[str, Any]) -> None:
    ms = result["ms_per_token"]
    print(
        f"{key} (vocabulary {result['n_vocab']:,}): decode {ms['decode']:.3f} "
        f"ms/token, + sampling {result['sampling_ms']:.3f}, + llama-cpp-python's "
        f"loop {result['python_loop_ms']:.3f} = {ms['generate_loop']:.3f} ms "
        f"({result['tokens_per_second']['generate_loop']:.0f} against "
        f"{result['tokens_per_second']['decode']:.0f} tokens/s)",
        flush=True,
    )
    host = result["host"]
    timed = host["ms_per_token"]
    if host["host_loop_ms"] is None:
        print("  the model host's loop: its replies ended too early to time", flush=True)
        return
    print(
        f"  the model host's loop: {timed['host_loop']:.3f} ms a token, of which sampling "
        f"and decoding alone {timed['sample_and_decode']:.3f}: the loop's own "
        f"{host['host_loop_ms']:.3f} ms ({timed['sample_and_decode'] / timed['host_loop']:.3f} "
        f"of its floor's speed; sampling on the GPU: {host['sampled_on_gpu']})",
        flush=True,
    )


def _measure_here(args: argparse.Namespace) -> dict[str, Any]:
    """--model: one file, or a random model of one of bench_gpu's shapes ("tiny"), on this
    machine's runtime."""
    path = Path(args.model)
    if args.model in bench_gpu.SHAPES and not path.is_file():
        with tempfile.TemporaryDirectory(prefix="bastion-token-costs-") as scratch:
            source = bench_gpu.Source(Path(scratch))
            path = bench_gpu.random_model(bench_gpu.SHAPES[args.model], "q4_0", 1, source)
    result = measure_apart(None, path.resolve(), args.tokens, args.rounds, args.gpu_layers)
    report(path.name, result)
    return {"flavour": "this machine", "models": {path.name: result}}


def main(argv: list[str] | None = None) -> int:
    apply_private_environment()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--packed", type=Path, metavar="DIR")
    where.add_argument(
        "--model", metavar="FILE", help=f"a GGUF, or a random {'/'.join(bench_gpu.SHAPES)} one"
    )
    parser.add_argument("--gpu-layers", type=int, default=0, help="with --model (default 0)")
    parser.add_argument("--flavour", default="cuda_v13")
    parser.add_argument("--models", nargs="+", default=["starter", "instruct", "random"])
    parser.add_argument("--shape", choices=sorted(bench_gpu.SHAPES), default="7b")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.model is not None:
        try:
            here = _measure_here(args)
        except bench_gpu.BenchmarkError as error:
            print(f"failed: {error}", file=sys.stderr)
            return 1
        _write(here, RESULTS_HERE_FILE)
        return 0
    packed = args.packed.resolve()
    config = bench_gpu.Config(
        flavours=(args.flavour,),
        models=tuple(args.models),
        shape=args.shape,
        quant="q4_0",
        rounds=args.rounds,
        max_tokens=args.tokens,
        pp_tokens=16,
        n_ctx=2048,
        seed=1,
        reference=False,
    )
    results: dict[str, Any] = {"flavour": args.flavour, "models": {}}
    with tempfile.TemporaryDirectory(prefix="bastion-token-costs-") as scratch:
        try:
            bench_gpu.read_pack(packed)
            runtime = bench_gpu.packed_runtime(packed, args.flavour, Path(scratch))
            models = bench_gpu.packed_models(packed, config)
        except bench_gpu.BenchmarkError as error:
            print(f"failed: {error}", file=sys.stderr)
            return 1
        module = bench_gpu.shipped_module(runtime["root"], args.flavour)
        with bench_gpu.runtime_on_path(runtime["root"]):
            for model in models:
                try:
                    result = measure_apart(module, model.path, args.tokens, args.rounds)
                except bench_gpu.BenchmarkError as error:
                    print(f"{model.key}: not measured: {error}", flush=True)
                    results["models"][model.key] = {"error": str(error)}
                    continue
                results["models"][model.key] = result
                report(model.key, result)
    _write(results, RESULTS_FILE)
    return 0


def _write(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
