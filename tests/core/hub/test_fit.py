"""Will it fit? The classifier on fixed machines, and on this one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bastion_desktop.core.hub.catalog import load_catalog
from bastion_desktop.core.hub.fit import (
    GPU_RESERVE_BYTES,
    FitKind,
    ModelShape,
    auto_gpu_layers,
    choose_gpu_layers,
    estimate_fit,
    gpu_layer_attempts,
    is_gpu_memory_failure,
    shape_from_facts,
    shape_from_metadata,
    shape_from_size,
)
from bastion_desktop.core.hub.gguf_metadata import read_gguf_metadata
from bastion_desktop.core.hub.probe import GpuInfo, HardwareProfile, probe_hardware

GB = 1000**3
GIB = 1024**3


def machine(
    ram: float, *, free_ram: float | None = None, gpus: tuple[float, ...] = (),
    offload: bool = True, unified: bool = False,
) -> HardwareProfile:  # fmt: skip
    cards = tuple(
        GpuInfo(f"GPU {i}", int(g * GIB), int(g * GIB), unified, "fixed")
        for i, g in enumerate(gpus)
    )
    return HardwareProfile(
        ram_total=int(ram * GIB),
        ram_available=int((free_ram if free_ram is not None else ram * 0.8) * GIB),
        gpus=cards,
        gpu_offload_supported=offload,
    )


def catalog_shape(model_id: str, quantization: str = "Q4_K_M") -> ModelShape:
    model = load_catalog().get(model_id)
    assert model is not None
    return shape_from_facts(model.file_for(quantization).size, model.shape)


LLAMA_8B = catalog_shape("llama-3.1-8b-instruct")


def test_an_8b_model_fits_entirely_on_a_24_gb_gpu() -> None:
    fit = estimate_fit(LLAMA_8B, 8192, machine(32, gpus=(24,)))
    assert fit.kind is FitKind.FULL_GPU
    assert fit.gpu_layers == fit.total_layers == 33
    assert fit.kv_cache_bytes == 32 * 8 * 128 * 2 * 2 * 8192  # 1 GiB at f16
    assert re.match(r"Fits entirely on the GPU: about [\d.]+ GB of GPU memory", fit.summary)
    assert choose_gpu_layers(LLAMA_8B, 8192, machine(32, gpus=(24,))) == -1


def test_an_8b_model_is_split_on_a_4_gb_gpu() -> None:
    hardware = machine(16, gpus=(4,))
    fit = estimate_fit(LLAMA_8B, 4096, hardware)
    assert fit.kind is FitKind.PARTIAL_GPU
    assert 10 < fit.gpu_layers < 30
    budget = 4 * GIB - GPU_RESERVE_BYTES
    per_layer = LLAMA_8B.layer_bytes + LLAMA_8B.kv_bytes_per_token * 4096 // 32
    assert fit.gpu_layers * per_layer <= budget < (fit.gpu_layers + 1) * per_layer
    assert f"{fit.gpu_layers} of 33 layers" in fit.summary
    assert choose_gpu_layers(LLAMA_8B, 4096, hardware) == fit.gpu_layers


def test_a_longer_context_moves_layers_off_the_gpu() -> None:
    hardware = machine(16, gpus=(8,))
    short = estimate_fit(LLAMA_8B, 2048, hardware)
    long = estimate_fit(LLAMA_8B, 65536, hardware)
    assert short.kind is FitKind.FULL_GPU
    assert long.kind is FitKind.PARTIAL_GPU
    assert long.kv_cache_bytes == 32 * short.kv_cache_bytes


def test_without_a_gpu_it_runs_on_the_cpu() -> None:
    fit = estimate_fit(LLAMA_8B, 4096, machine(16))
    assert fit.kind is FitKind.CPU_ONLY
    assert fit.gpu_layers == 0
    assert fit.ram_bytes > LLAMA_8B.file_size
    assert not fit.tight
    assert fit.summary.startswith("Runs on the CPU: about")


def test_a_gpu_this_llama_cpp_cannot_use_is_said() -> None:
    hardware = machine(16, gpus=(24,), offload=False)
    fit = estimate_fit(LLAMA_8B, 4096, hardware)
    assert fit.kind is FitKind.CPU_ONLY
    assert "this llama.cpp build has no GPU support" in fit.summary
    assert choose_gpu_layers(LLAMA_8B, 4096, hardware) == 0


def test_too_big_for_this_machine_will_not_fit() -> None:
    qwen_14b_q8 = catalog_shape("qwen3-14b", "Q8_0")
    fit = estimate_fit(qwen_14b_q8, 8192, machine(8, gpus=(4,)))
    assert fit.kind is FitKind.WILL_NOT_FIT
    assert fit.summary.startswith("Will not fit: it needs about")
    assert "Pick a smaller model" in fit.summary


def test_fitting_only_in_total_memory_is_tight() -> None:
    fit = estimate_fit(LLAMA_8B, 4096, machine(8, free_ram=3))
    assert fit.kind is FitKind.CPU_ONLY
    assert fit.tight
    assert "close other programs" in fit.summary


def test_apple_unified_memory_holds_the_whole_model() -> None:
    fit = estimate_fit(LLAMA_8B, 4096, machine(16, gpus=(10.6,), unified=True))
    assert fit.kind is FitKind.FULL_GPU
    assert fit.ram_bytes >= LLAMA_8B.file_size, "unified memory is RAM too"


def test_two_gpus_add_up() -> None:
    one = estimate_fit(LLAMA_8B, 4096, machine(32, gpus=(4,)))
    two = estimate_fit(LLAMA_8B, 4096, machine(32, gpus=(4, 4)))
    assert one.kind is FitKind.PARTIAL_GPU
    assert two.kind is FitKind.FULL_GPU


def test_unknown_gpu_memory_lets_llama_cpp_try_everything() -> None:
    hardware = HardwareProfile(
        ram_total=16 * GIB, ram_available=12 * GIB,
        gpus=(GpuInfo("Some GPU", None, None, False, "fixed"),), gpu_offload_supported=True,
    )  # fmt: skip
    assert hardware.gpu_free_bytes is None
    assert choose_gpu_layers(LLAMA_8B, 4096, hardware) == -1
    assert "free memory is unknown" in estimate_fit(LLAMA_8B, 4096, hardware).summary


def test_the_size_heuristic_is_in_the_right_range() -> None:
    shape = shape_from_size(int(4.92 * GB), "Q4_K_M")
    assert 28 <= shape.layers <= 36
    # Llama 3.1 8B needs 128 KiB a token; the heuristic may err high, not wildly.
    assert 128 * 1024 <= shape.kv_bytes_per_token <= 4 * 128 * 1024
    assert not shape.exact


def test_the_shape_of_a_real_model_from_its_metadata(starter_path: Path) -> None:
    shape = shape_from_metadata(read_gguf_metadata(starter_path))
    assert shape.exact
    assert shape.layers == 18
    assert shape.kv_bytes_per_token == 18 * 1 * (256 + 256) * 2  # one KV head of 256
    assert shape.output_bytes > 100_000_000, "tied embeddings: the output is token_embd"
    assert shape.layers * shape.layer_bytes < shape.file_size


def test_layer_attempts_after_running_out_of_gpu_memory() -> None:
    assert gpu_layer_attempts(-1, 32) == [-1, 24, 16, 8, 0]
    assert gpu_layer_attempts(20, 32) == [20, 15, 10, 5, 0]
    assert gpu_layer_attempts(2, 32) == [2, 1, 0]
    assert gpu_layer_attempts(0, 32) == [0]


@pytest.mark.parametrize(
    ("message", "memory"),
    [
        ("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 5120.00 MiB on device 0: "
         "cudaMalloc failed: out of memory", True),
        ("llama_model_load: error loading model: unable to allocate CUDA0 buffer", True),
        ("failed to allocate buffer for kv cache", True),
        ("ggml_vulkan: Device memory allocation of size 1 failed. ErrorOutOfDeviceMemory", True),
        ("llama_model_load: error loading model: tensor 'blk.0.attn_q.weight' data is not "
         "within the file bounds", False),
        ("unknown model architecture: 'mamba3'", False),
    ],
)  # fmt: skip
def test_gpu_memory_failures_are_recognised(message: str, memory: bool) -> None:
    assert is_gpu_memory_failure(message) is memory


def test_this_machine(starter_path: Path) -> None:
    hardware = probe_hardware()
    assert hardware.ram_total is None or hardware.ram_total > 256 * 1024**2
    if Path("/proc/meminfo").exists():
        assert hardware.ram_total is not None
        assert hardware.ram_available is not None
        assert 0 < hardware.ram_available <= hardware.ram_total
    assert hardware.cpu_features or hardware.notes
    fit = estimate_fit(shape_from_metadata(read_gguf_metadata(starter_path)), 4096, hardware)
    assert fit.kind is not FitKind.WILL_NOT_FIT, "the 250 MB starter fits anywhere Bastion runs"
    layers = auto_gpu_layers(starter_path, 4096, hardware)
    if not hardware.gpu_offload_supported:
        assert fit.kind is FitKind.CPU_ONLY
        assert layers == 0
    else:
        assert layers in (-1, *range(0, 20))


def test_before_download_catalog_repositories_use_their_facts() -> None:
    from bastion_desktop.core.hub.fit import shape_for_download

    entry = load_catalog().get("qwen2.5-7b-instruct")
    assert entry is not None
    known = shape_for_download(entry.repo, 4_680_000_000, "Q4_K_M")
    assert known.layers == 28
    assert known.kv_bytes_per_token == 28 * 4 * 128 * 2 * 2
    unknown = shape_for_download("someone/Unknown-7B-GGUF", 4_680_000_000, "Q4_K_M")
    assert unknown == shape_from_size(4_680_000_000, "Q4_K_M")
