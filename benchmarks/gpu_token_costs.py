"""Where a generated token's time goes on a GPU, in one process and one model: llama.cpp's
decode alone (what llama-bench's tg measures), then with the sampler chain Bastion's
default sampling builds, then llama-cpp-python's generate loop with detokenizing (the
model host's loop without the pipe to the app).

    python benchmarks/gpu_token_costs.py --packed DIR [--flavour cuda_v13] [--tokens 128]

It runs where bench_gpu.py runs, from the same pack (`bench_gpu.py --pack`), on the same
models (`--models`, default all three), every layer on the GPU. Each figure is the median
of `--rounds` runs, in milliseconds a token; bench_gpu.py's own result for the same model
adds the pipe and the app. Printed, and written to benchmarks/results/gpu-token-costs.json.
No target: it says which part to make faster when bench_gpu.py's ratio falls short.
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
from bastion_desktop.core.inference.types import SamplingParams
from bastion_desktop.core.privacy import apply_private_environment

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "gpu-token-costs.json"
CHILD_TIMEOUT_S = 600
# Freeing a context after the raw decode calls below crashed llama.cpp on lavapipe: a
# measuring process keeps its model until it leaves (without tearing down).
KEPT: list[Any] = []
PROMPT = "Write a long story about a lighthouse keeper who finds an old map."


def measure(path: Path, tokens: int, rounds: int) -> dict[str, Any]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_gpu_layers=-1, verbose=False, seed=1)
    ctx = llm._ctx.ctx
    memory = llama_cpp.llama_get_memory(ctx)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True)
    defaults = SamplingParams()
    sampling: dict[str, Any] = {
        "top_k": defaults.top_k,
        "top_p": defaults.top_p,
        "min_p": defaults.min_p,
        "temp": defaults.temperature,
        "repeat_penalty": defaults.repeat_penalty,
    }

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


def measure_host(path: Path, tokens: int, rounds: int) -> dict[str, Any]:
    """The model host's own loop (LoadedModel.generate, with whatever it samples on), in
    this process: milliseconds a token between pieces of text handed to the pipe, and how
    much of it was spent inside llama-cpp-python's generate (decode and sampling)."""
    from bastion_desktop.core.inference.host_process import LoadedModel
    from bastion_desktop.core.inference.types import ChatMessage, LoadOptions, Role

    model = LoadedModel(path, LoadOptions(context_length=2048, gpu_layers=-1))
    sampled_on_gpu = model.sample_from_gpu_top_k()  # as run_host does for the chat model
    KEPT.append(model)
    inside: list[float] = []
    original = model.llm.generate

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        steps = original(*args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                token = next(steps)
            except StopIteration:
                return
            inside.append(time.perf_counter() - started)
            yield token

    model.llm.generate = timed_generate  # type: ignore[method-assign]
    params = SamplingParams(seed=1, max_tokens=tokens + 1)
    request = ([ChatMessage(Role.USER, PROMPT)], params)
    runs: dict[str, list[float]] = {"host_loop": [], "inside_generate": []}
    for index in range(rounds + 1):  # the first warms up
        pipe, inside[:] = _Pipe(), []
        model.generate(pipe, 1, request)  # type: ignore[arg-type]
        if index and len(pipe.sent) > 2:
            span = len(pipe.sent) - 1
            runs["host_loop"].append((pipe.sent[-1] - pipe.sent[0]) / span * 1000)
            runs["inside_generate"].append(statistics.median(inside[1:]) * 1000)
    medians = {name: statistics.median(values) for name, values in runs.items() if values}
    return {"ms_per_token": medians, "runs": runs, "sampled_on_gpu": sampled_on_gpu}


def _measure_in_child(conn: Connection, module: Path, path: Path, tokens: int, rounds: int) -> None:
    """One model in a process of its own: a second model in the same process, or freeing
    the first, crashed llama.cpp on lavapipe. It leaves without tearing down."""
    try:
        load_backends(gpu_modules=[module])
        result = measure(path, tokens, rounds)
        result["host"] = measure_host(path, tokens, rounds)
        conn.send(("ok", result))
    except Exception as error:  # reported by the parent
        conn.send(("error", f"{type(error).__name__}: {error}"))
    conn.close()
    os._exit(0)


def measure_apart(module: Path, path: Path, tokens: int, rounds: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_measure_in_child, args=(theirs, module, path, tokens, rounds))
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


def main(argv: list[str] | None = None) -> int:
    apply_private_environment()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packed", type=Path, required=True, metavar="DIR")
    parser.add_argument("--flavour", default="cuda_v13")
    parser.add_argument("--models", nargs="+", default=["starter", "instruct", "random"])
    parser.add_argument("--shape", choices=sorted(bench_gpu.SHAPES), default="7b")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
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
                ms = result["ms_per_token"]
                print(
                    f"{model.key} (vocabulary {result['n_vocab']:,}): decode {ms['decode']:.3f} "
                    f"ms/token, + sampling {result['sampling_ms']:.3f}, + llama-cpp-python's "
                    f"loop {result['python_loop_ms']:.3f} = {ms['generate_loop']:.3f} ms "
                    f"({result['tokens_per_second']['generate_loop']:.0f} against "
                    f"{result['tokens_per_second']['decode']:.0f} tokens/s)",
                    flush=True,
                )
                host = result["host"]["ms_per_token"]
                print(
                    f"  the model host's loop: {host.get('host_loop', 0):.3f} ms a token, "
                    f"{host.get('inside_generate', 0):.3f} inside llama-cpp-python's generate "
                    f"(sampling on the GPU: {result['host']['sampled_on_gpu']})",
                    flush=True,
                )
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
