"""Will this model fit, and how many layers should go to the GPU?

Memory for a model is its weights plus the KV cache at the chosen context, plus working
buffers. llama.cpp offloads the last N repeating layers to the GPU (with their share of
the KV cache, `offload_kqv`), and the output layer counts as one more; the token
embeddings stay in RAM. The estimate follows that layout:

- from GGUF metadata (exact): each layer's bytes from the tensor table, the KV cache
  from the layer count, KV heads and head sizes (f16 cache, 2 bytes per element);
- before download (from the catalog's shape facts, or from the file size alone): see
  `shape_from_size` for the heuristic and its error bars.

Sliding-window layers (Gemma 2/3) get a smaller cache in llama.cpp than counted here,
so for them the estimate errs on the safe side.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bastion_desktop.core.hub.catalog import ModelShapeFacts, load_catalog
from bastion_desktop.core.hub.filenames import format_size
from bastion_desktop.core.hub.gguf_metadata import GgufMetadata, SkippedArray, read_gguf_metadata
from bastion_desktop.core.hub.probe import HardwareProfile, probe_hardware

MIB = 1024**2
# Per GPU: the driver context (CUDA's is 300-500 MB) and llama.cpp's compute buffers
# at its default micro-batch of 512 tokens. With one output a batch and flash attention
# (token_loop.context_settings) those do not grow with the vocabulary or the context:
# the starter's were 80 MiB on the GPU at a 32,768-token context (lavapipe).
GPU_RESERVE_BYTES = 768 * MIB
# In RAM: compute buffers, the tokenizer, and the app's own model host process.
CPU_OVERHEAD_BYTES = 512 * MIB
KV_BYTES_PER_ELEMENT = 2  # llama.cpp's default f16 cache
# Heuristics for a file known only by its size (see `shape_from_size`).
KV_BYTES_PER_TOKEN_PER_BILLION = 32 * 1024
NON_REPEATING_SHARE = 0.12  # embeddings and output layer, of the file
_BITS_PER_WEIGHT = {
    "Q2_K": 3.35, "Q3_K_S": 3.5, "Q3_K_M": 3.9, "Q3_K_L": 4.3, "IQ3_XS": 3.3, "IQ3_M": 3.7,
    "Q4_0": 4.55, "Q4_K_S": 4.6, "Q4_K_M": 4.85, "IQ4_XS": 4.3, "IQ4_NL": 4.5, "Q5_0": 5.5,
    "Q5_K_S": 5.55, "Q5_K_M": 5.7, "Q6_K": 6.6, "Q8_0": 8.5, "F16": 16.0, "BF16": 16.0,
    "F32": 32.0, "MXFP4": 4.25,
}  # fmt: skip
DEFAULT_BITS_PER_WEIGHT = 5.0


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs to know about a model."""

    file_size: int
    layers: int  # repeating layers (the output layer is one more)
    layer_bytes: int  # weights of one repeating layer, on average
    output_bytes: int  # the output layer, offloaded as layer `layers + 1`
    kv_bytes_per_token: int  # K and V, all layers together
    exact: bool  # from the file's own metadata, not a pre-download estimate


class FitKind(StrEnum):
    FULL_GPU = "full_gpu"
    PARTIAL_GPU = "partial_gpu"
    CPU_ONLY = "cpu_only"
    WILL_NOT_FIT = "will_not_fit"


@dataclass(frozen=True)
class FitEstimate:
    kind: FitKind
    gpu_layers: int  # layers to offload; `total_layers` means all, output layer included
    total_layers: int  # repeating layers + 1
    context_length: int
    weights_bytes: int
    kv_cache_bytes: int
    gpu_bytes: int  # needed on the GPU(s), reserve included; 0 on the CPU
    ram_bytes: int  # needed in RAM
    tight: bool  # fits only if other programs give memory back
    exact: bool
    summary: str


def shape_from_metadata(meta: GgufMetadata) -> ModelShape:
    layers = meta.block_count or len(
        {t.name.split(".")[1] for t in meta.tensors if t.name.startswith("blk.")}
    )
    layers = max(1, layers)
    per_layer = sum(t.nbytes for t in meta.tensors if t.name.startswith("blk."))
    named = {t.name: t.nbytes for t in meta.tensors}
    output = named.get("output.weight", named.get("token_embd.weight", 0))
    head_count = meta.arch_value("attention.head_count")
    head_count_kv = meta.arch_value("attention.head_count_kv")
    if head_count_kv is None:
        head_count_kv = head_count
    embedding = meta.arch_int("embedding_length") or 0
    first_heads = _per_layer(head_count, layers)[0] if head_count is not None else 0
    default_head = embedding // first_heads if first_heads else 0
    key_length = meta.arch_int("attention.key_length") or default_head
    value_length = meta.arch_int("attention.value_length") or default_head
    kv_heads = _per_layer(head_count_kv, layers) if head_count_kv is not None else [0] * layers
    kv_per_token = sum(kv_heads) * (key_length + value_length) * KV_BYTES_PER_ELEMENT
    return ModelShape(
        file_size=meta.file_size,
        layers=layers,
        layer_bytes=per_layer // layers,
        output_bytes=output,
        kv_bytes_per_token=kv_per_token,
        exact=True,
    )


def _per_layer(value: object, layers: int) -> list[int]:
    """A head count is one number, or one per layer (models with uneven layers)."""
    if isinstance(value, list):
        counts = [int(v) for v in value[:layers]]
        return counts + [counts[-1] if counts else 0] * (layers - len(counts))
    if isinstance(value, int | float) and not isinstance(value, bool | SkippedArray):
        return [int(value)] * layers
    return [0] * layers


def shape_from_facts(file_size: int, facts: ModelShapeFacts) -> ModelShape:
    """Before download, for a catalog model: its architecture facts are known."""
    output = int(file_size * NON_REPEATING_SHARE / 2)
    return ModelShape(
        file_size=file_size,
        layers=facts.layers,
        layer_bytes=int(file_size * (1 - NON_REPEATING_SHARE)) // facts.layers,
        output_bytes=output,
        kv_bytes_per_token=facts.layers
        * facts.kv_heads
        * facts.head_dim
        * 2
        * KV_BYTES_PER_ELEMENT,
        exact=False,
    )


def shape_from_size(file_size: int, quantization: str | None) -> ModelShape:
    """Before download, knowing only the file: a documented heuristic.

    Parameters are the size over the quantization's bits per weight. The KV cache is
    taken as 32 KiB per token per billion parameters (f16): Llama 3.1 8B needs 16,
    Qwen2.5 7B 7, Gemma 2 9B 37, Phi-3.5 mini 101, so it errs high for most models and
    low for models without grouped-query attention. Layers follow the usual depth for
    a size (16 at 1B, 32 at 8B, 48 at 64B); the non-repeating part is 12% of the file.
    """
    bits = _BITS_PER_WEIGHT.get((quantization or "").upper(), DEFAULT_BITS_PER_WEIGHT)
    billions = max(0.05, file_size * 8 / bits / 1e9)
    layers = max(8, min(128, round(16 + 16 * math.log2(max(billions, 1.0)) / 3)))
    return ModelShape(
        file_size=file_size,
        layers=layers,
        layer_bytes=int(file_size * (1 - NON_REPEATING_SHARE)) // layers,
        output_bytes=int(file_size * NON_REPEATING_SHARE / 2),
        kv_bytes_per_token=int(KV_BYTES_PER_TOKEN_PER_BILLION * billions),
        exact=False,
    )


def shape_for_download(repo: str, size: int, quantization: str | None) -> ModelShape:
    """Before download: the catalog's facts for a catalog repository, else the size."""
    entry = load_catalog().for_repo(repo)
    if entry is not None:
        return shape_from_facts(size, entry.shape)
    return shape_from_size(size, quantization)


def estimate_fit(shape: ModelShape, context_length: int, hardware: HardwareProfile) -> FitEstimate:
    """Classify the model on this hardware at this context length."""
    layers = shape.layers
    kv_total = shape.kv_bytes_per_token * context_length
    kv_layer = -(-kv_total // layers)
    offloadable = layers * shape.layer_bytes + shape.output_bytes
    gpu_count = len(hardware.gpus)
    free = hardware.gpu_free_bytes if hardware.gpu_offload_supported else 0
    budget = None if free is None else max(0, free - GPU_RESERVE_BYTES * gpu_count)
    unified = any(g.unified for g in hardware.gpus)

    def result(kind: FitKind, n: int, gpu: int, ram: int, summary: str) -> FitEstimate:
        tight = (
            hardware.ram_available is not None
            and ram > hardware.ram_available
            and kind is not FitKind.WILL_NOT_FIT
        )
        if tight:
            summary += (
                f" That is more than the {format_size(hardware.ram_available)} free now: "
                "close other programs first."
            )
        return FitEstimate(
            kind, n, layers + 1, context_length, shape.file_size, kv_total, gpu, ram, tight,
            shape.exact, summary,
        )  # fmt: skip

    ram_total = hardware.ram_total
    full_need = offloadable + kv_total
    if budget is not None and gpu_count and full_need <= budget:
        # Unified memory: what the GPU holds is RAM too.
        ram = (
            shape.file_size + CPU_OVERHEAD_BYTES
            if unified
            else (shape.file_size - offloadable + CPU_OVERHEAD_BYTES)
        )
        gpu = full_need + GPU_RESERVE_BYTES * gpu_count
        return result(
            FitKind.FULL_GPU, layers + 1, gpu, ram,
            f"Fits entirely on the GPU: about {format_size(gpu)} of GPU memory at "
            f"{context_length:,} tokens of context.",
        )  # fmt: skip
    per_layer = shape.layer_bytes + kv_layer
    if budget is not None and gpu_count and not unified and budget >= per_layer:
        n = min(layers, budget // per_layer)
        ram = shape.file_size - n * shape.layer_bytes + (layers - n) * kv_layer
        ram += CPU_OVERHEAD_BYTES
        if ram_total is None or ram <= ram_total:
            return result(
                FitKind.PARTIAL_GPU, n, n * per_layer + GPU_RESERVE_BYTES * gpu_count, ram,
                f"Partly on the GPU: {n} of {layers + 1} layers fit in its free memory; the "
                f"rest runs from RAM (about {format_size(ram)}), more slowly.",
            )  # fmt: skip
    ram = shape.file_size + kv_total + CPU_OVERHEAD_BYTES
    if ram_total is not None and ram > ram_total:
        gpu_part = f" and {format_size(budget)} of usable GPU memory" if budget else ""
        return result(
            FitKind.WILL_NOT_FIT, 0, 0, ram,
            f"Will not fit: it needs about {format_size(ram)} at {context_length:,} tokens of "
            f"context, and this machine has {format_size(ram_total)} of RAM{gpu_part}. "
            "Pick a smaller model or quantization, or a shorter context.",
        )  # fmt: skip
    why = _cpu_reason(hardware, budget)
    return result(
        FitKind.CPU_ONLY, 0, 0, ram,
        f"Runs on the CPU{why}: about {format_size(ram)} of RAM at {context_length:,} tokens "
        "of context.",
    )  # fmt: skip


def _cpu_reason(hardware: HardwareProfile, budget: int | None) -> str:
    if not hardware.gpus:
        return ""
    if not hardware.gpu_offload_supported:
        return " (this llama.cpp build has no GPU support)"
    if budget is None:
        return " (the GPU's free memory is unknown)"
    return " (not even one layer fits in the GPU's free memory)"


def choose_gpu_layers(shape: ModelShape, context_length: int, hardware: HardwareProfile) -> int:
    """llama.cpp's `n_gpu_layers` for gpu_layers="auto": -1 for all, 0 for none."""
    if not hardware.gpu_offload_supported:
        return 0
    if hardware.gpu_free_bytes is None or not hardware.gpus:
        # A GPU backend but no idea of its memory: let llama.cpp try everything (with
        # no GPU device at all it runs on the CPU anyway); a load that runs out of GPU
        # memory then walks down `gpu_layer_attempts`.
        return -1
    fit = estimate_fit(shape, context_length, hardware)
    if fit.kind is FitKind.FULL_GPU:
        return -1
    if fit.kind is FitKind.PARTIAL_GPU:
        return fit.gpu_layers
    return 0


def gpu_layer_attempts(first: int, layers: int) -> list[int]:
    """The layer counts to try in turn when loads fail for lack of GPU memory: the
    first choice, then three quarters, half, a quarter, and the CPU alone."""
    start = layers + 1 if first < 0 else min(first, layers + 1)
    attempts = [first if first < 0 else start]
    previous = start
    for share in (0.75, 0.5, 0.25):
        n = int(start * share)
        if 0 < n < previous:
            attempts.append(n)
            previous = n
    if start > 0:
        attempts.append(0)
    return attempts


_GPU_MEMORY_FAILURE = re.compile(
    r"out of (device )?memory|cudaMalloc|hipMalloc|ErrorOutOfDeviceMemory|OutOfMemory"
    r"|(failed|unable) to allocate .*(buffer|memory)|insufficient memory",
    re.IGNORECASE,
)


def is_gpu_memory_failure(message: str) -> bool:
    """Whether a load failure reads like the GPU ran out of memory."""
    return bool(_GPU_MEMORY_FAILURE.search(message))


def auto_gpu_layers(
    path: Path, context_length: int, hardware: HardwareProfile | None = None
) -> int:
    """For the model host: the n_gpu_layers to load `path` with (reads its metadata)."""
    shape = shape_from_metadata(read_gguf_metadata(path))
    return choose_gpu_layers(shape, context_length, hardware or probe_hardware())
