"""The distribution llama.cpp runtime against a native build, on the starter model.

    .venv/bin/python benchmarks/bench_runtime.py [--rounds N] [--variant NAME]

Issue 14: the distribution build (packaging/runtime/build_runtime.py: GGML_BACKEND_DL,
every CPU variant as a module, ggml choosing the best one this CPU runs) must be as fast
as a build made for this very machine (`-march=native`): same model, seed, threads,
n_ctx and greedy sampling, distribution ÷ native at least 0.98 for

(a) prompt processing: tokens/s of `llm.eval(tokens)` over a fixed prompt of
    `--pp-tokens` tokens, after `llm.reset()` (three evaluations a round, their median);
(b) generation: tokens/s of `create_completion(stream=True)`, greedy, measured from the
    first streamed chunk to the last, as bench_pipeline.py does.

`--variant NAME` pins the distribution's CPU variant (`load_backends(cpu_variant=NAME)`,
Bastion's compatibility mode), e.g. `--variant haswell` against native.

Each build is unpacked (zipfile) into a folder of its own and runs in a child process of
its own with that folder first on PYTHONPATH (a process can hold only one llama.cpp):
this script with `--child`, which imports llama_cpp, calls Bastion's `load_backends()`
(the distribution build registers no backend until then; for the native build, whose CPU
backend is built in, it loads nothing) and answers the parent's requests on a pipe. Both
children stay loaded; the parent has them measure alternately, round by round, each
round in the other order, so that both see the same noise.

Each run also records the child's CPU time (all its threads) over wall time x threads,
its CPU share: 0.97-1.00 here when the cores were its own, 0.5-0.9 when another process
took one (ggml's threads then wait for each other, and a run can be ten times slower). A
round is undisturbed when both runs have a share of at least 0.95. The targets are judged
on the median of the paired ratios (distribution ÷ native, round by round) over the
undisturbed rounds, when there are at least three, else over all rounds; the medians of
each build, their ratio and the ratio of the fastest runs are printed beside it.

The distribution wheel is build_runtime.py's cached one (the script is run to find it,
and builds it if it is missing: many minutes). The native wheel is built here on first
use, with pip and the pinned llama-cpp-python sdist, and cached in
`~/.cache/bastion-build/wheels/llama-cpp-python-native-<version>-<key>/` (`BASTION_WHEEL_CACHE`
moves it); the key covers the version, the CMake arguments, the platform and Python,
and this CPU's model and flags, since a `-march=native` build is only valid for the CPU
it was made on. Build parallelism follows CMAKE_BUILD_PARALLEL_LEVEL.

Why AMX is off in the native build: on an AMX-capable Xeon (this project's build
machines) a plain `GGML_NATIVE=ON` build enables ggml's AMX code, and GCC 12 drops the
stores that fill the AMX tile configuration (see build_runtime.py's docstring): the
first tile instruction of a generation raises SIGILL. Under GGML_NATIVE, ggml's
GGML_AMX_TILE/INT8/BF16 options do nothing (ggml-cpu/CMakeLists.txt adds only
`-march=native` then); its AMX code is compiled when the compiler defines
`__AMX_INT8__`, which `-march=native` does on such a CPU. So the native build passes
`-mno-amx-tile -mno-amx-int8 -mno-amx-bf16` in CMAKE_C_FLAGS and CMAKE_CXX_FLAGS: GCC
honours an explicit `-mno-*` whatever its place relative to `-march=native`, and the
compiler then defines no `__AMX_*__`. Everything else `-march=native` enables stays
(AVX-512 with VNNI, BF16, VBMI, FP16, AVX-VNNI...). The distribution does the same
(it does not ship its one AMX variant), so both lack AMX; the summary says so if the
native build's `llama_print_system_info()` reports AMX all the same.

Results are printed and written to benchmarks/results/bench_runtime.json. Missing a
target is reported, not failed: the exit status is non-zero only when something did not
run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from bastion_desktop.core.privacy import apply_private_environment
from bench_common import PP_TEXT, add_home_argument, median, met, positive, prepare_home

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "bench_runtime.json"
BUILD_RUNTIME = ROOT / "packaging" / "runtime" / "build_runtime.py"

TARGET_PP_RATIO = 0.98  # distribution prompt tokens/s over native, at least
TARGET_TG_RATIO = 0.98  # distribution generated tokens/s over native, at least

# What turns ggml's AMX code off under GGML_NATIVE (see the docstring).
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
NATIVE_CMAKE_ARGS = (
    "-DGGML_NATIVE=ON",
    f"-DCMAKE_C_FLAGS={NO_AMX_FLAGS}",
    f"-DCMAKE_CXX_FLAGS={NO_AMX_FLAGS}",
)

GENERATION_PROMPT = (
    "<start_of_turn>user\nWrite a long story about a lighthouse keeper who finds an old "
    "map.<end_of_turn>\n<start_of_turn>model\n"
)
GEMMA_STOP = "<end_of_turn>"
# Prompt processing reads PP_TEXT, repeated and cut to --pp-tokens tokens.
PP_EVALS_PER_ROUND = 3
# A run is undisturbed when the child's CPU time reached this share of wall time x
# threads (0.97-1.00 on a quiet machine here; a neighbour taking a core shows as 0.5-0.9).
QUIET_CPU_SHARE = 0.95
# The targets are judged on the undisturbed rounds when there are this many, else on all.
MIN_QUIET_ROUNDS = 3

VARIANTS = ("native", "distribution")


class BenchmarkError(Exception):
    """Something the benchmark needs did not work."""


def log(message: str) -> None:
    print(message, flush=True)


# --- the native wheel -------------------------------------------------------------------


def wheel_cache() -> Path:
    configured = os.environ.get("BASTION_WHEEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "bastion-build" / "wheels"


def pinned_version() -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for requirement in data["project"]["dependencies"]:
        match = re.fullmatch(r"llama-cpp-python==([\w.]+)", str(requirement).strip())
        if match:
            return match.group(1)
    raise BenchmarkError("pyproject.toml does not pin llama-cpp-python exactly")


def cpu_identity() -> str:
    """This CPU's model name and feature flags: what `-march=native` compiles for."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', '')}|{fields.get('flags', '')}"


def native_cache_folder(version: str) -> Path:
    hasher = hashlib.sha256()
    for part in (
        version,
        shlex.join(NATIVE_CMAKE_ARGS),
        sys.platform,
        platform.machine(),
        sys.version[:4],
        cpu_identity(),
    ):
        hasher.update(part.encode() + b"\0")
    return wheel_cache() / f"llama-cpp-python-native-{version}-{hasher.hexdigest()[:16]}"


def native_wheel() -> Path:
    """The native wheel for this CPU, built (many minutes) the first time."""
    version = pinned_version()
    folder = native_cache_folder(version)
    found = sorted(folder.glob("llama_cpp_python-*.whl"))
    if found:
        return found[0]
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # scikit-build-core splits CMAKE_ARGS with shlex, so the quoted flags stay whole.
    env = {**os.environ, "CMAKE_ARGS": shlex.join(NATIVE_CMAKE_ARGS), "FORCE_CMAKE": "1"}
    env.pop("SOURCE_DATE_EPOCH", None)  # it turns ggml's native default off
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-cache-dir",
        "--no-binary",
        "llama-cpp-python",
        "--wheel-dir",
        str(partial),
        f"llama-cpp-python=={version}",
    ]
    log(f"building the native llama-cpp-python {version} (many minutes), CMAKE_ARGS:")
    log(f"  {env['CMAKE_ARGS']}")
    started = time.monotonic()
    result = subprocess.run(command, env=env, check=False)
    if result.returncode != 0:
        raise BenchmarkError(f"building the native wheel failed ({result.returncode})")
    log(f"native wheel built in {time.monotonic() - started:.0f} s")
    wheel = sorted(partial.glob("llama_cpp_python-*.whl"))[0]
    partial.replace(folder)
    return folder / wheel.name


def distribution_wheel() -> Path:
    """build_runtime.py's wheel: it prints the cached one (and builds it if missing)."""
    result = subprocess.run(
        [sys.executable, str(BUILD_RUNTIME)], capture_output=True, text=True, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise BenchmarkError(
            f"build_runtime.py failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return Path(lines[-1])


def unpack(wheel: Path, target: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    if not (target / "llama_cpp" / "__init__.py").is_file():
        raise BenchmarkError(f"{wheel} holds no llama_cpp package")
    return target


# --- the child: one build of llama.cpp, measuring on request ----------------------------


def child_main() -> int:
    """Answer the parent: one JSON request a line on stdin, one JSON reply a line on the
    original stdout (llama.cpp's own output goes to stderr)."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    setup = json.loads(sys.stdin.readline())
    try:
        state = ChildState(setup)
        replies.write(json.dumps({"ok": True, "info": state.info}) + "\n")
        replies.flush()
        for line in sys.stdin:
            request = json.loads(line)
            if request["do"] == "quit":
                break
            reply = state.measure(int(request["max_tokens"]))
            replies.write(json.dumps({"ok": True, **reply}) + "\n")
            replies.flush()
    except Exception as error:  # the parent reports it
        replies.write(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}))
        replies.write("\n")
        replies.flush()
        return 1
    return 0


class ChildState:
    def __init__(self, setup: dict[str, Any]) -> None:
        import llama_cpp

        from bastion_desktop.core.inference.backends import load_backends

        expected = Path(setup["package_root"]).resolve()
        actual = Path(llama_cpp.__file__).resolve()
        if expected not in actual.parents:
            raise RuntimeError(f"imported llama_cpp from {actual}, not from {expected}")
        started = time.perf_counter()
        runtime = load_backends(cpu_variant=setup["cpu_variant"])
        self.llm = llama_cpp.Llama(
            model_path=setup["model"],
            n_ctx=setup["n_ctx"],
            n_gpu_layers=0,
            n_threads=setup["threads"],
            n_threads_batch=setup["threads"],
            seed=setup["seed"],
            verbose=False,
        )
        load_s = time.perf_counter() - started
        self.llama_cpp = llama_cpp
        self.seed = int(setup["seed"])
        text = PP_TEXT * (1 + setup["pp_tokens"] // 50)
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=True)
        if len(tokens) < setup["pp_tokens"]:
            raise RuntimeError(f"the prompt has only {len(tokens)} tokens")
        self.pp_tokens = tokens[: setup["pp_tokens"]]
        self.gen_prompt_tokens = len(
            self.llm.tokenize(GENERATION_PROMPT.encode("utf-8"), add_bos=True, special=True)
        )
        self.info = {
            "llama_cpp_file": str(actual),
            "llama_cpp_version": llama_cpp.__version__,
            "backends": list(runtime.backends),
            "cpu_library": runtime.cpu_library,
            "cpu_variant": runtime.cpu_variant,
            "loaded_from": str(runtime.loaded_from) if runtime.loaded_from else None,
            "system_info": runtime.system_info,
            "load_s": load_s,
            "pp_tokens_sha256": hashlib.sha256(
                json.dumps(self.pp_tokens).encode("utf-8")
            ).hexdigest()[:16],
            "generation_prompt_tokens": self.gen_prompt_tokens,
        }

    def perf(self) -> dict[str, float]:
        """llama.cpp's own counters since the last reset (a cross-check)."""
        data = self.llama_cpp.llama_perf_context(self.llm.ctx)
        return {
            "prompt_ms": float(data.t_p_eval_ms),
            "prompt_tokens": int(data.n_p_eval),
            "eval_ms": float(data.t_eval_ms),
            "eval_tokens": int(data.n_eval),
        }

    def measure(self, max_tokens: int) -> dict[str, Any]:
        pp_s: list[float] = []
        pp_cpu_s: list[float] = []
        pp_perf: list[dict[str, float]] = []
        for _ in range(PP_EVALS_PER_ROUND):
            self.llm.reset()
            self.llama_cpp.llama_perf_context_reset(self.llm.ctx)
            cpu = time.process_time()
            started = time.perf_counter()
            self.llm.eval(self.pp_tokens)
            pp_s.append(time.perf_counter() - started)
            pp_cpu_s.append(time.process_time() - cpu)
            pp_perf.append(self.perf())
        generation = self.generate(max_tokens)
        return {"pp_s": pp_s, "pp_cpu_s": pp_cpu_s, "pp_perf": pp_perf, **generation}

    def generate(self, max_tokens: int) -> dict[str, Any]:
        self.llm.reset()
        self.llama_cpp.llama_perf_context_reset(self.llm.ctx)
        stamps: list[float] = []
        cpu_stamps: list[float] = []
        parts: list[str] = []
        finish = "unknown"
        stream = self.llm.create_completion(
            GENERATION_PROMPT,
            max_tokens=max_tokens,
            temperature=0.0,  # greedy
            repeat_penalty=1.0,
            seed=self.seed,
            stop=[GEMMA_STOP],
            stream=True,
        )
        for chunk in stream:
            now, cpu = time.perf_counter(), time.process_time()
            choice = chunk["choices"][0]
            if choice["text"]:
                stamps.append(now)
                cpu_stamps.append(cpu)
                parts.append(choice["text"])
            if choice["finish_reason"] is not None:
                finish = str(choice["finish_reason"])
        if not stamps:
            raise RuntimeError("the generation streamed no text")
        if finish == "length":
            tokens = min(max_tokens, self.llm.n_ctx() - self.gen_prompt_tokens)
        else:
            # As bench_pipeline.py: exact for an end-of-generation token.
            tokens = int(self.llm.n_tokens) - self.gen_prompt_tokens
        return {
            "tg_tokens": tokens,
            "tg_s": stamps[-1] - stamps[0],
            "tg_cpu_s": cpu_stamps[-1] - cpu_stamps[0],
            "tg_chunks": len(stamps),
            "tg_finish": finish,
            "tg_text": "".join(parts),
            "tg_perf": self.perf(),
        }


# --- the parent -------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    rounds: int
    max_tokens: int
    pp_tokens: int
    threads: int
    n_ctx: int
    seed: int
    variant: str | None


class Child:
    """One build of llama.cpp, loaded in its own process."""

    def __init__(self, name: str, package_root: Path, setup: dict[str, Any], stderr: Path) -> None:
        self.name = name
        self.stderr_path = stderr
        env = dict(os.environ)
        env.pop("LLAMA_CPP_LIB_PATH", None)  # llama_cpp must load its own lib folder
        env["PYTHONPATH"] = os.pathsep.join(
            [str(package_root), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        # llama.cpp's messages go to a file: a pipe nobody reads could fill and block it.
        with stderr.open("w", encoding="utf-8") as errors:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                env=env,
            )
        self.info = self.request({**setup, "package_root": str(package_root)})["info"]

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self._pipes()
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            code = self.process.wait()
            stderr = self.stderr_path.read_text(encoding="utf-8", errors="replace")
            raise BenchmarkError(
                f"the {self.name} child exited ({code}) without an answer: {stderr[-3000:]}"
            )
        reply = json.loads(line)
        if not reply.get("ok"):
            raise BenchmarkError(f"the {self.name} child failed: {reply.get('error')}")
        return reply

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        if self.process.stdin is None or self.process.stdout is None:
            raise BenchmarkError("the child has no pipes")
        return self.process.stdin, self.process.stdout

    def close(self, *, at_once: bool = False) -> None:
        """Ask the child to quit (it may first finish a measurement); `at_once` kills it."""
        if self.process.poll() is None and at_once:
            self.process.kill()
            self.process.wait()
        elif self.process.poll() is None:
            try:
                stdin, _ = self._pipes()
                stdin.write(json.dumps({"do": "quit"}) + "\n")
                stdin.flush()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


@dataclass(frozen=True)
class Round:
    variant: str
    index: int
    order: int  # 0: measured first in its round
    pp_s: list[float]
    pp_cpu_s: list[float]  # the child's CPU time (all threads) over each evaluation
    tg_tokens: int
    tg_s: float
    tg_cpu_s: float
    tg_chunks: int
    tg_finish: str
    tg_text: str
    pp_perf: list[dict[str, float]]
    tg_perf: dict[str, float]
    load_average: float

    def pp_tokens_per_second(self, pp_tokens: int) -> float:
        return pp_tokens / median(self.pp_s)

    @property
    def tg_tokens_per_second(self) -> float:
        if self.tg_tokens < 2 or self.tg_s <= 0:
            return 0.0
        return (self.tg_tokens - 1) / self.tg_s

    @property
    def tg_llama_tokens_per_second(self) -> float:
        """llama.cpp's own count: tokens decoded one by one over their decode time."""
        ms = self.tg_perf["eval_ms"]
        return self.tg_perf["eval_tokens"] / ms * 1000.0 if ms > 0 else 0.0

    def pp_cpu_share(self, threads: int) -> float:
        """CPU time over wall time x threads: about 1 when the child had its cores to
        itself (ggml's threads work or spin), less when another process took them."""
        return sum(self.pp_cpu_s) / sum(self.pp_s) / threads

    def tg_cpu_share(self, threads: int) -> float:
        return self.tg_cpu_s / self.tg_s / threads if self.tg_s > 0 else 0.0


def measure(children: dict[str, Child], config: Config) -> list[Round]:
    # Warm both (weights paged in, threads started) before any timing.
    for name in VARIANTS:
        children[name].request({"do": "measure", "max_tokens": config.max_tokens})
    rounds: list[Round] = []
    for index in range(config.rounds):
        order = VARIANTS if index % 2 == 0 else tuple(reversed(VARIANTS))
        line = []
        for position, name in enumerate(order):
            reply = children[name].request({"do": "measure", "max_tokens": config.max_tokens})
            run = Round(
                variant=name,
                index=index,
                order=position,
                pp_s=reply["pp_s"],
                pp_cpu_s=reply["pp_cpu_s"],
                tg_tokens=reply["tg_tokens"],
                tg_s=reply["tg_s"],
                tg_cpu_s=reply["tg_cpu_s"],
                tg_chunks=reply["tg_chunks"],
                tg_finish=reply["tg_finish"],
                tg_text=reply["tg_text"],
                pp_perf=reply["pp_perf"],
                tg_perf=reply["tg_perf"],
                load_average=os.getloadavg()[0],
            )
            rounds.append(run)
            line.append(
                f"{name} pp {run.pp_tokens_per_second(config.pp_tokens):7.1f} tok/s "
                f"tg {run.tg_tokens_per_second:6.1f} tok/s"
            )
        log(f"  round {index + 1}/{config.rounds}: " + " | ".join(line))
    return rounds


def compare(native: Sequence[float], dist: Sequence[float]) -> dict[str, Any]:
    """Tokens/s of the two builds, round by round: medians, their ratio, the paired
    ratios and the fastest run of each."""
    if not native:
        return {"rounds": 0}
    native_median, dist_median = median(native), median(dist)
    paired = [d / n for n, d in zip(native, dist, strict=True) if n > 0]
    native_best, dist_best = max(native), max(dist)
    return {
        "rounds": len(native),
        "native_median_tokens_per_second": native_median,
        "distribution_median_tokens_per_second": dist_median,
        "ratio_distribution_over_native": dist_median / native_median if native_median else 0.0,
        "median_of_paired_ratios": median(paired),
        "paired_ratios": paired,
        # Another process only ever slows a run down: the fastest run of each is the
        # figure least touched by a neighbour (shown, not judged).
        "native_best_tokens_per_second": native_best,
        "distribution_best_tokens_per_second": dist_best,
        "ratio_of_best": dist_best / native_best if native_best > 0 else 0.0,
    }


def first_difference(a: str, b: str) -> int | None:
    for position, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return position
    return None if len(a) == len(b) else min(len(a), len(b))


def summarize(
    config: Config,
    model: Path,
    wheels: dict[str, Path],
    children: dict[str, Child],
    rounds: list[Round],
) -> dict[str, Any]:
    def of(name: str) -> list[Round]:
        return [r for r in rounds if r.variant == name]

    native, dist = of("native"), of("distribution")
    pp = {name: [r.pp_tokens_per_second(config.pp_tokens) for r in of(name)] for name in VARIANTS}
    tg = {name: [r.tg_tokens_per_second for r in of(name)] for name in VARIANTS}
    tg_llama = {name: [r.tg_llama_tokens_per_second for r in of(name)] for name in VARIANTS}
    threads = config.threads
    shares = {
        "prompt_processing": {n: [r.pp_cpu_share(threads) for r in of(n)] for n in VARIANTS},
        "generation": {n: [r.tg_cpu_share(threads) for r in of(n)] for n in VARIANTS},
    }
    shares["generation_llama_cpp_counters"] = shares["generation"]
    figures: dict[str, Any] = {}
    for key, values, target in (
        ("prompt_processing", pp, TARGET_PP_RATIO),
        ("generation", tg, TARGET_TG_RATIO),
        ("generation_llama_cpp_counters", tg_llama, None),
    ):
        everything = compare(values["native"], values["distribution"])
        # The rounds in which neither build lost its cores to another process.
        quiet = [
            index
            for index in range(config.rounds)
            if min(shares[key]["native"][index], shares[key]["distribution"][index])
            >= QUIET_CPU_SHARE
        ]
        undisturbed = compare(
            [values["native"][i] for i in quiet], [values["distribution"][i] for i in quiet]
        )
        judged = undisturbed if len(quiet) >= MIN_QUIET_ROUNDS else everything
        # The two runs of a round share the machine's load; from one round to the next
        # it drifts (a neighbour's job starts), and the ratio of the two medians can set
        # a busy round of one against a quiet round of the other. So the paired ratios.
        ratio = judged["median_of_paired_ratios"]
        figures[key] = {
            **everything,
            "undisturbed_rounds": quiet,
            "undisturbed": undisturbed,
            "judged_on": "undisturbed rounds" if judged is undisturbed else "all rounds",
            "judged_ratio": ratio,
            "native_tokens_per_second": values["native"],
            "distribution_tokens_per_second": values["distribution"],
            **(
                {"target_ratio_at_least": target, "target_met": ratio >= target}
                if target is not None
                else {}
            ),
        }
    texts = {name: sorted({r.tg_text for r in of(name)}) for name in VARIANTS}
    same_text = len(texts["native"]) == 1 and texts["native"] == texts["distribution"]
    difference = first_difference(native[0].tg_text, dist[0].tg_text)
    infos = {name: children[name].info for name in VARIANTS}
    cpu_share = {
        name: {
            "prompt_processing_median": median([r.pp_cpu_share(threads) for r in of(name)]),
            "generation_median": median([r.tg_cpu_share(threads) for r in of(name)]),
        }
        for name in VARIANTS
    }
    return {
        "benchmark": "runtime",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "cpu": cpu_identity().split("|", 1)[0],
            "load_average_at_end": os.getloadavg(),
        },
        "config": {
            **asdict(config),
            "model": model.name,
            "generation_prompt": GENERATION_PROMPT,
            "sampling": "greedy (temperature 0, repeat penalty 1.0)",
            "pp_evals_per_round": PP_EVALS_PER_ROUND,
        },
        "builds": {
            "native": {
                "wheel": str(wheels["native"]),
                "cmake_args": list(NATIVE_CMAKE_ARGS),
                **infos["native"],
            },
            "distribution": {
                "wheel": str(wheels["distribution"]),
                "cpu_variant_pinned": config.variant,
                **infos["distribution"],
            },
        },
        **figures,
        "checks": {
            "same_prompt_tokens": infos["native"]["pp_tokens_sha256"]
            == infos["distribution"]["pp_tokens_sha256"],
            "same_greedy_text_every_round": same_text,
            "distinct_texts": {name: len(texts[name]) for name in VARIANTS},
            "first_difference_at_char": difference,
            "texts": {name: texts[name][0] for name in VARIANTS},
            "token_counts": sorted({f"{r.variant}:{r.tg_tokens}" for r in rounds}),
            "finish_reasons": sorted({f"{r.variant}:{r.tg_finish}" for r in rounds}),
            "native_has_amx": "AMX_INT8 = 1" in infos["native"]["system_info"],
            "cpu_share": cpu_share,
            "cpu_share_meaning": (
                "the measuring child's CPU time over wall time x threads: about 1.0 when it "
                "had its cores, less when other processes took them"
            ),
        },
        "verdicts": {
            "prompt_processing": met(figures["prompt_processing"]["target_met"]),
            "generation": met(figures["generation"]["target_met"]),
        },
        "rounds": [
            {
                **{k: v for k, v in asdict(r).items() if k != "tg_text"},
                "pp_tokens_per_second": r.pp_tokens_per_second(config.pp_tokens),
                "tg_tokens_per_second": r.tg_tokens_per_second,
                "tg_llama_tokens_per_second": r.tg_llama_tokens_per_second,
                "pp_cpu_share": r.pp_cpu_share(threads),
                "tg_cpu_share": r.tg_cpu_share(threads),
            }
            for r in rounds
        ],
    }


def print_summary(result: dict[str, Any]) -> None:
    config, builds, checks = result["config"], result["builds"], result["checks"]
    dist = builds["distribution"]
    pinned = " (pinned with --variant)" if dist["cpu_variant_pinned"] else " (ggml's choice)"
    log("")
    log(
        f"Runtime benchmark: {config['model']}, {config['threads']} threads, "
        f"n_ctx {config['n_ctx']}, seed {config['seed']}, greedy, {config['rounds']} rounds"
    )
    log(f"native:       {builds['native']['cpu_library']}: {builds['native']['system_info']}")
    log(f"distribution: variant {dist['cpu_variant']}{pinned}: {dist['system_info']}")
    for label, key in (
        (f"(a) prompt processing, {config['pp_tokens']} tokens", "prompt_processing"),
        (f"(b) generation, {config['max_tokens']} tokens", "generation"),
    ):
        figure = result[key]
        log(f"{label}:")
        for title, part in (("all rounds", figure), ("undisturbed", figure["undisturbed"])):
            if not part["rounds"]:
                log(f"    {title:<11} none")
                continue
            log(
                f"    {title:<11} {part['rounds']:>2} rounds: native "
                f"{part['native_median_tokens_per_second']:6.1f} tok/s, distribution "
                f"{part['distribution_median_tokens_per_second']:6.1f} tok/s (medians); ratio "
                f"of medians {part['ratio_distribution_over_native']:.3f}, median of paired "
                f"ratios {part['median_of_paired_ratios']:.3f}, fastest runs "
                f"{part['ratio_of_best']:.3f}"
            )
        log(
            f"    distribution/native = {figure['judged_ratio']:.3f} (median of the paired "
            f"ratios, {figure['judged_on']})"
            f"   target >= {figure['target_ratio_at_least']:.2f}: {result['verdicts'][key]}"
            + (" (on disturbed runs: unreliable)" if figure["judged_on"] == "all rounds" else "")
        )
    counters = result["generation_llama_cpp_counters"]
    log(
        f"    llama.cpp's own decode counters: native "
        f"{counters['native_median_tokens_per_second']:.1f} tok/s, distribution "
        f"{counters['distribution_median_tokens_per_second']:.1f} tok/s, ratio "
        f"{counters['ratio_distribution_over_native']:.3f}"
    )
    share = checks["cpu_share"]
    if any(result[key]["judged_on"] == "all rounds" for key in ("prompt_processing", "generation")):
        log(
            f"note: fewer than {MIN_QUIET_ROUNDS} rounds ran undisturbed (CPU share >= "
            f"{QUIET_CPU_SHARE}): the verdicts rest on disturbed runs; run again, or with more "
            "--rounds"
        )
    log(
        "CPU share (CPU time / wall time x threads; lower when others took the cores): "
        + ", ".join(
            f"{name} pp {share[name]['prompt_processing_median']:.2f} "
            f"tg {share[name]['generation_median']:.2f}"
            for name in VARIANTS
        )
    )
    same = "yes" if checks["same_greedy_text_every_round"] else "NO"
    log(
        f"checks: same greedy text from both every round: {same}; tokens: "
        f"{', '.join(checks['token_counts'])}; finish: {', '.join(checks['finish_reasons'])}"
    )
    if not checks["same_greedy_text_every_round"]:
        log(
            f"note: the texts first differ at character {checks['first_difference_at_char']}: "
            "different SIMD paths (instruction sets, kernels) round differently, and greedy "
            "decoding follows the first different argmax; the two did not do the same work"
        )
    if not checks["same_prompt_tokens"]:
        log("note: the two builds tokenized the prompt differently")
    if checks["native_has_amx"]:
        log("note: the native build reports AMX: its AMX flags did not take")
    log(f"results: {RESULTS_FILE}")


def parse_args(argv: Sequence[str] | None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=positive, default=5, help="timed rounds of each build")
    parser.add_argument("--max-tokens", type=positive, default=128, help="generated tokens")
    parser.add_argument("--pp-tokens", type=positive, default=384, help="prompt tokens read")
    parser.add_argument(
        "--threads", type=positive, default=os.cpu_count() or 1, help="n_threads for both"
    )
    parser.add_argument("--n-ctx", type=positive, default=4096, help="context length for both")
    parser.add_argument("--seed", type=int, default=1, help="seed for both")
    parser.add_argument(
        "--variant", help="pin the distribution's CPU variant (haswell, zen4...); default: best"
    )
    parser.add_argument("--native-wheel", type=Path, help="use this native wheel")
    parser.add_argument("--distribution-wheel", type=Path, help="use this distribution wheel")
    add_home_argument(parser)
    args = parser.parse_args(argv)
    config = Config(
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        pp_tokens=args.pp_tokens,
        threads=args.threads,
        n_ctx=args.n_ctx,
        seed=args.seed,
        variant=args.variant,
    )
    return config, args


def run(config: Config, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    wheels = {
        "native": args.native_wheel or native_wheel(),
        "distribution": args.distribution_wheel or distribution_wheel(),
    }
    for name in VARIANTS:
        log(f"{name} wheel: {wheels[name]}")
    home = args.home.resolve() if args.home else scratch / "home"
    started = time.perf_counter()
    model = prepare_home(home)
    log(f"starter model ready in {time.perf_counter() - started:.1f} s: {model}")
    setup = {
        "model": str(model),
        "n_ctx": config.n_ctx,
        "threads": config.threads,
        "seed": config.seed,
        "pp_tokens": config.pp_tokens,
    }
    children: dict[str, Child] = {}
    try:
        for name in VARIANTS:
            root = unpack(wheels[name], scratch / name)
            variant = config.variant if name == "distribution" else None
            children[name] = Child(
                name, root, {**setup, "cpu_variant": variant}, scratch / f"{name}.stderr"
            )
            info = children[name].info
            log(
                f"{name}: {info['cpu_library']} (variant {info['cpu_variant']}), "
                f"loaded in {info['load_s']:.1f} s"
            )
        log("measuring, the builds alternating (after one untimed round each):")
        rounds = measure(children, config)
    except BaseException:
        for child in children.values():
            child.close(at_once=True)
        raise
    finally:
        for child in children.values():
            child.close()
    return summarize(config, model, wheels, children, rounds)


def main(argv: Sequence[str] | None = None) -> int:
    apply_private_environment()
    # Ended from outside: still stop the children and remove the unpacked builds.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    config, args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bastion-bench-runtime-"))
    try:
        result = run(config, args, scratch)
    except BenchmarkError as error:
        print(f"benchmark failed: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(child_main() if sys.argv[1:] == ["--child"] else main())
