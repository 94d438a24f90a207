"""Bastion's GPU offload on a real NVIDIA GPU whose memory is mostly taken: the fit estimate
from the free memory the runtime reports, partial offload, and the walk-down after an
out-of-memory load.

    python benchmarks/gpu_offload_check.py --packed DIR [--flavour cuda_v13] [--free-gib 2]

A check, not a benchmark (no timing): it runs where bench_gpu.py runs, from the same pack
(`bench_gpu.py --pack`) or the same builds. This process takes all but `--free-gib` of
the first GPU's memory with plain cudaMalloc calls (through the flavour's own cudart), then
a model host loads the 7B-shaped random model (3.5 GiB, bench_gpu.py's) twice:

1. `gpu_layers="auto"`: the fit estimate must choose part of the layers from the free
   memory the runtime reports, the placement must say "Runs partly on ...", and the
   reply must come.
2. `gpu_layers=-1` (every layer): the load must run out of GPU memory, walk down to
   fewer layers, say so in `gpu_note`, and answer.

Prints what each load reported and writes benchmarks/results/gpu-offload.json; the exit
status is non-zero when an expectation above is not met.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_gpu
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    LoadOptions,
    Role,
    SamplingParams,
)
from bastion_desktop.core.privacy import apply_private_environment

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "gpu-offload.json"
CHUNK = 256 * 2**20  # memory is taken in pieces of this size


class GpuMemory:
    """GPU memory held by this process through cudart's cudaMalloc."""

    def __init__(self, cudart: Path) -> None:
        self.lib = ctypes.CDLL(str(cudart))
        self.held: list[ctypes.c_void_p] = []

    def free_and_total(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        status = self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))
        if status != 0:
            raise bench_gpu.BenchmarkError(f"cudaMemGetInfo failed ({status})")
        return free.value, total.value

    def leave_free(self, keep: int) -> int:
        """Take memory until about `keep` bytes are free; the bytes taken."""
        taken = 0
        while True:
            free, _ = self.free_and_total()
            size = min(CHUNK, free - keep)
            if size < 16 * 2**20:
                return taken
            pointer = ctypes.c_void_p()
            if self.lib.cudaMalloc(ctypes.byref(pointer), ctypes.c_size_t(size)) != 0:
                return taken
            self.held.append(pointer)
            taken += size

    def release(self) -> None:
        for pointer in self.held:
            self.lib.cudaFree(pointer)
        self.held.clear()


async def load_and_answer(path: Path, gpu_layers: Any) -> dict[str, Any]:
    host = ModelHost(path, LoadOptions(context_length=2048, gpu_layers=gpu_layers))
    started = time.perf_counter()
    facts = await host.load()
    loaded_s = time.perf_counter() - started
    try:
        finished = None
        params = SamplingParams(seed=1, max_tokens=16)
        async for event in host.stream([ChatMessage(Role.USER, "Hello")], params):
            if isinstance(event, GenerationFinished):
                finished = event
    finally:
        await host.close()
    return {
        "asked": gpu_layers,
        "gpu_layers": facts.gpu_layers,
        "layers_and_output": facts.layers + 1,
        "placement": facts.placement,
        "gpu_note": facts.gpu_note,
        "load_s": round(loaded_s, 2),
        "generated_tokens": finished.stats.generated_tokens if finished else 0,
        "tokens_per_second": finished.stats.tokens_per_second if finished else 0.0,
    }


def check(packed: Path, flavour: str, free_gib: float, scratch: Path) -> dict[str, Any]:
    bench_gpu.read_pack(packed)
    runtime = bench_gpu.packed_runtime(packed, flavour, scratch)
    cudart = next(Path(p) for p in runtime["cuda_runtime"] if "cudart" in Path(p).name)
    config = bench_gpu.Config(
        flavours=(flavour,),
        models=("random",),
        shape="7b",
        quant="q4_0",
        rounds=1,
        max_tokens=16,
        pp_tokens=16,
        n_ctx=2048,
        seed=1,
        reference=False,
    )
    (model,) = bench_gpu.packed_models(packed, config)
    memory = GpuMemory(cudart)
    free_before, total = memory.free_and_total()
    taken = memory.leave_free(int(free_gib * 2**30))
    free_after, _ = memory.free_and_total()
    print(
        f"GPU memory: {total / 2**30:.1f} GiB, {free_before / 2**30:.1f} free; took "
        f"{taken / 2**30:.1f} GiB, {free_after / 2**30:.2f} GiB left free",
        flush=True,
    )
    loads = []
    try:
        with bench_gpu.runtime_on_path(runtime["root"]):
            for asked in ("auto", -1):
                result = asyncio.run(load_and_answer(model.path, asked))
                print(json.dumps(result), flush=True)
                loads.append(result)
    finally:
        memory.release()
    auto, every = loads
    expectations = {
        "auto offloads part of the layers": 0 < auto["gpu_layers"] < auto["layers_and_output"],
        "auto's placement says partly": "partly" in auto["placement"],
        "every layer walks down and says so": (
            every["gpu_layers"] < every["layers_and_output"] and "ran out" in every["gpu_note"]
        ),
        "both answer": all(load["generated_tokens"] > 0 for load in loads),
    }
    return {
        "flavour": flavour,
        "model": str(model.path),
        "gpu_memory_total_gib": round(total / 2**30, 2),
        "gpu_memory_free_during_gib": round(free_after / 2**30, 2),
        "loads": loads,
        "expectations": expectations,
    }


def main(argv: list[str] | None = None) -> int:
    apply_private_environment()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packed", type=Path, required=True, metavar="DIR")
    parser.add_argument("--flavour", default="cuda_v13")
    parser.add_argument("--free-gib", type=float, default=2.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bastion-offload-") as scratch:
        try:
            result = check(args.packed.resolve(), args.flavour, args.free_gib, Path(scratch))
        except bench_gpu.BenchmarkError as error:
            print(f"check failed: {error}", file=sys.stderr)
            return 1
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, met in result["expectations"].items():
        print(f"{'met' if met else 'NOT MET'}: {name}")
    return 0 if all(result["expectations"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
