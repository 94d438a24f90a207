"""The GPU benchmark's pack for a machine without a network (benchmarks/bench_gpu.py
`--pack`/`--packed`) and the CUDA flavours of packaging/runtime/build_gpu.py.

A packed run measures shape clones of the starter and the instruct model: their own head
(metadata, tokenizer, tensor table) with random weights written again on the GPU machine.
Here the clones of the real files are checked to have the same tensor table and to load
and answer on llama.cpp (the CPU); the GPU run itself needs a GPU (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bastion_desktop.core.hub.gguf_metadata import read_gguf_file
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    LoadOptions,
    Role,
    SamplingParams,
)

from .test_build_gpu import build_gpu  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench_gpu() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


async def _answer(path: Path) -> GenerationFinished:
    host = ModelHost(path, LoadOptions(context_length=256, gpu_layers="none"))
    try:
        await host.load()
        finished = None
        params = SamplingParams(seed=1, max_tokens=8)
        async for event in host.stream([ChatMessage(Role.USER, "Hello")], params):
            if isinstance(event, GenerationFinished):
                finished = event
        assert finished is not None
        return finished
    finally:
        await host.close()


@pytest.mark.parametrize("model", ["starter_path", "instruct_path"])
def test_a_shape_clone_has_the_models_tensors_and_random_weights_and_answers(
    bench_gpu: ModuleType, model: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    original: Path = request.getfixturevalue(model)
    description, head = bench_gpu.model_skeleton(original)
    assert len(head) < original.stat().st_size // 10  # the head alone travels
    clone = tmp_path / "clone.gguf"
    bench_gpu.write_clone(description, head, clone, seed=1)

    assert clone.stat().st_size == original.stat().st_size
    assert read_gguf_file(clone).tensors == read_gguf_file(original).tensors
    with original.open("rb") as a, clone.open("rb") as b:
        a.seek(description["data_offset"])
        b.seek(description["data_offset"])
        assert a.read(1 << 20) != b.read(1 << 20)  # no weight of the original in it
    finished = asyncio.run(_answer(clone))
    assert finished.stats.generated_tokens > 0


def test_a_clone_refuses_a_tensor_type_it_cannot_write(
    bench_gpu: ModuleType, tmp_path: Path
) -> None:
    description = {
        "data_offset": 32,
        "file_size": 64,
        "tensors": [["blk.0.weird", 99, 0, 32, [32]]],
    }
    with pytest.raises(bench_gpu.BenchmarkError, match="type 99 cannot be cloned"):
        bench_gpu.write_clone(description, b"\0" * 32, tmp_path / "x.gguf", seed=1)


def test_llama_bench_runs_on_the_runtimes_libraries_and_the_flavours_module(
    bench_gpu: ModuleType, tmp_path: Path
) -> None:
    module = tmp_path / "runtime" / "llama_cpp" / "lib" / "cuda_v13" / "libggml-cuda.so"
    env, cwd = bench_gpu.llama_bench_environment(tmp_path / "bench", module)
    assert cwd == module.parent.parent  # where ggml finds the CPU variants
    assert env["GGML_BACKEND_PATH"] == str(module)
    path = env["PATH" if sys.platform == "win32" else "LD_LIBRARY_PATH"].split(":")
    assert path[:2] == [str(tmp_path / "bench"), str(module.parent.parent)]
    # Its own build's copies of the runtime's libraries are left behind.
    kept = [
        n
        for n in ("libllama.so", "libggml-base.so.0", "libllama-common.so")
        if not bench_gpu._runtime_library(n)
    ]
    assert kept == ["libllama-common.so"]


def test_each_cuda_flavour_needs_its_own_releases_nvcc(
    build_gpu: ModuleType,  # noqa: F811
    bench_gpu: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = bench_gpu.nvcc_release() or ""
    major = release.split(".")[0]
    if major not in ("12", "13"):
        pytest.skip("no CUDA 12 or 13 nvcc on PATH")
    if int(release.split(".")[1]) < build_gpu.CUDA_FLAVOURS[f"cuda_v{major}"].oldest_minor:
        pytest.skip(f"nvcc {release} is older than the release's architectures need")
    other = "cuda_v12" if major == "13" else "cuda_v13"
    with pytest.raises(build_gpu.BuildError, match=f"needs CUDA {other[-2:]}'s nvcc"):
        build_gpu.flavour_cmake_args(other)
    flavour = f"cuda_v{major}"
    args = build_gpu.flavour_cmake_args(flavour)
    assert "-DGGML_CUDA=ON" in args
    assert f"-DCMAKE_CUDA_ARCHITECTURES={build_gpu.CUDA_FLAVOURS[flavour].architectures}" in args
    assert "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/.." in args  # its cudart beside it
    # A benchmark build for one GPU, with extra options: both in the arguments, and so in
    # the cache key.
    monkeypatch.setenv("BASTION_CUDA_ARCHITECTURES", "90-real")
    monkeypatch.setenv("BASTION_CUDA_CMAKE_ARGS", "-DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF")
    args = build_gpu.flavour_cmake_args(flavour)
    assert "-DCMAKE_CUDA_ARCHITECTURES=90-real" in args
    assert args[-2:] == ["-DGGML_CUDA_FA=OFF", "-DGGML_CUDA_NCCL=OFF"]
    key = build_gpu.cache_folder(flavour, "0", args)
    assert key != build_gpu.cache_folder(flavour, "0", args[:-2])
