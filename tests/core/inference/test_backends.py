"""llama.cpp's backends: the ordinary build untouched, the distribution build made to run.

Each model run is its own process (backend_probe_script.py): a process can load backends only
once, and the distribution build must not meet the development build's libraries.

The distribution build's tests need its wheel, which takes 15-25 minutes to build:
    CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 19 .venv/bin/python packaging/runtime/build_runtime.py
They are skipped without it. The qemu-user runs (marked `qemu`) are only run with
BASTION_QEMU_TESTS=1, as CI does, or =all for the slow emulated Haswell too (and
Debian's qemu-user installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bastion_desktop.core.inference.backends import cpu_variant_of, libraries_beside
from tests.packaging.scripts import load_script

ROOT = Path(__file__).resolve().parents[3]
PROBE = Path(__file__).with_name("backend_probe_script.py")
BUILD_HINT = (
    "no distribution runtime wheel; build it with `CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 19 "
    ".venv/bin/python packaging/runtime/build_runtime.py`"
)


def probe(
    model: Path,
    *args: str,
    cwd: Path,
    pythonpath: Path | None = None,
    emulated_cpu: str | None = None,
    timeout: float = 120,
) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    command = [sys.executable, str(PROBE), str(model), *args]
    if emulated_cpu is not None:
        command = ["qemu-x86_64", "-cpu", emulated_cpu, *command]
    # The working folder is one of ggml's own search paths: keep it free of modules.
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("library", "variant"),
    [
        ("libggml-cpu-haswell.so", "haswell"),
        ("libggml-cpu-x64.so", "x64"),
        ("ggml-cpu-sse42.dll", "sse42"),
        ("libggml-cpu-armv8.2_1.so", "armv8.2_1"),
        ("libggml-cpu.so.0", None),  # the ordinary build: one CPU target, linked in
        ("libggml-cpu.so", None),
        ("libggml-base.so.0", None),
        (None, None),
    ],
)
def test_cpu_variant_is_read_from_the_library_name(
    library: str | None, variant: str | None
) -> None:
    assert cpu_variant_of(library) == variant


def test_on_windows_a_gpu_modules_own_dlls_are_loaded_before_it(tmp_path: Path) -> None:
    # Windows cannot run here: `load` records what ctypes.WinDLL would be given.
    folder = tmp_path / "cuda_v12"
    folder.mkdir()
    for name in ("ggml-cuda.dll", "cudart64_12.dll", "cublas64_12.dll", "cublasLt64_12.dll"):
        (folder / name).write_bytes(b"")
    (folder / "NOTICE.txt").write_text("")
    loaded: list[str] = []
    handles = libraries_beside(folder / "ggml-cuda.dll", load=loaded.append, windows=True)
    assert len(handles) == 3
    assert sorted(Path(p).name for p in loaded) == [
        "cublas64_12.dll",
        "cublasLt64_12.dll",
        "cudart64_12.dll",
    ]
    assert all(Path(p).is_absolute() for p in loaded), "by full path, never by name"
    # Elsewhere the module finds them itself (RUNPATH $ORIGIN).
    assert libraries_beside(folder / "ggml-cuda.dll", load=loaded.append, windows=False) == []


@pytest.mark.model
def test_backends_already_registered_are_left_alone(starter_path: Path, tmp_path: Path) -> None:
    # What the ordinary build (one CPU target linked in, as on macOS) always is, and any
    # build after its first load: load_backends() must load nothing more.
    result = probe(starter_path, "--twice", cwd=tmp_path)
    runtime = result["second"]
    assert result["after_second"] == result["after"], "nothing may be loaded a second time"
    assert runtime["loaded_from"] is None
    assert "CPU" in runtime["backends"]
    assert runtime["cpu_variant"] == result["runtime"]["cpu_variant"]
    assert runtime["system_info"].startswith("CPU :")
    cpu = next(device for device in runtime["devices"] if device["type"] == "cpu")
    assert 0 < cpu["memory_free"] <= cpu["memory_total"]
    assert cpu["description"]
    assert "error" not in result
    assert result["text"].strip(), "the model still answers after load_backends()"


# -- the distribution build ----------------------------------------------------------------


def _build_runtime() -> ModuleType:
    return load_script(Path("packaging/runtime/build_runtime.py"))


@pytest.fixture(scope="module")
def runtime_script() -> ModuleType:
    return _build_runtime()


@pytest.fixture(scope="module")
def distribution_wheel(runtime_script: ModuleType) -> Path:
    wheel: Path | None = runtime_script.cached_wheel()
    if wheel is None:
        pytest.skip(BUILD_HINT)
    return wheel


@pytest.fixture(scope="module")
def distribution_runtime(
    distribution_wheel: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A folder holding the distribution build's llama_cpp, to put first on PYTHONPATH
    (its dependencies come from this environment)."""
    target = tmp_path_factory.mktemp("distribution-runtime")
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run(
        [*install, "--target", str(target), str(distribution_wheel)],
        check=True,
        capture_output=True,
    )
    return target


def _cpu_flags() -> set[str]:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


@pytest.mark.model
def test_distribution_build_has_no_backend_until_bastion_loads_them(
    starter_path: Path, distribution_runtime: Path, tmp_path: Path
) -> None:
    result = probe(
        starter_path, "--skip-load-backends", cwd=tmp_path, pythonpath=distribution_runtime
    )
    assert result["llama_cpp"] == str(distribution_runtime / "llama_cpp")
    assert "error" in result
    assert any("no backends are loaded" in line for line in result["log_errors"])


@pytest.mark.model
def test_distribution_build_runs_the_best_cpu_variant(
    starter_path: Path, distribution_runtime: Path, tmp_path: Path
) -> None:
    result = probe(starter_path, cwd=tmp_path, pythonpath=distribution_runtime)
    runtime = result["runtime"]
    lib = distribution_runtime / "llama_cpp" / "lib"
    assert result["llama_cpp"] == str(distribution_runtime / "llama_cpp")
    # Both copies of libggml are loaded; the backends must go to libllama's.
    assert {str(lib / "libggml.so"), str(lib / "libggml.so.0")} <= set(result["before"])
    assert runtime["loaded_from"] == str(lib)
    assert runtime["backends"] == ["CPU"]
    variant = runtime["cpu_variant"]
    assert runtime["cpu_library"] == f"libggml-cpu-{variant}.so"
    assert (lib / runtime["cpu_library"]).is_file()
    # Only the chosen variant stays loaded; the others were opened to be scored.
    assert [p for p in result["after"] if "ggml-cpu" in p] == [str(lib / runtime["cpu_library"])]
    if "avx2" in _cpu_flags():
        assert variant not in {"x64", "sse42", "sandybridge", "ivybridge"}, "not full speed"
    cpu = next(device for device in runtime["devices"] if device["type"] == "cpu")
    assert 0 < cpu["memory_free"] <= cpu["memory_total"]
    assert "error" not in result, result
    assert result["text"].strip()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("objdump") is None,
    reason="the gate reads x86-64 ELF libraries with objdump",
)
def test_distribution_build_needs_no_avx_outside_its_avx_variants(
    runtime_script: ModuleType, distribution_wheel: Path
) -> None:
    shipped = runtime_script.library_names(distribution_wheel)
    assert "libggml-cpu-sapphirerapids.so" not in shipped, "its AMX code is miscompiled"
    names = [name for name in shipped if ".so" in name and runtime_script.must_run_anywhere(name)]
    assert {"libllama.so", "libggml.so", "libggml-base.so", "libggml-cpu-x64.so"} <= set(names)
    counts = runtime_script.avx_counts(distribution_wheel, names)
    assert {name: c for name, c in counts.items() if c != (0, 0)} == {}


# CI runs these (BASTION_QEMU_TESTS=1, about 30 s) but for the emulated Haswell: AVX2
# under emulation made it 160 s of a CI run; BASTION_QEMU_TESTS=all runs it too.
_QEMU_WANTED = os.environ.get("BASTION_QEMU_TESTS", "")
NEEDS_QEMU = pytest.mark.skipif(
    _QEMU_WANTED not in ("1", "all") or shutil.which("qemu-x86_64") is None,
    reason="slow: set BASTION_QEMU_TESTS=1 (needs Debian's qemu-user)",
)
QEMU = [pytest.mark.qemu, NEEDS_QEMU]
SLOW_QEMU = pytest.mark.skipif(
    _QEMU_WANTED != "all", reason="about 160 s: set BASTION_QEMU_TESTS=all"
)


@pytest.mark.model
@pytest.mark.parametrize(
    ("emulated_cpu", "variant"),
    [
        pytest.param("Nehalem", "sse42", marks=QEMU),
        pytest.param("Haswell", "haswell", marks=[*QEMU, SLOW_QEMU]),
    ],
)
def test_distribution_build_answers_on_older_cpus(
    starter_path: Path,
    distribution_runtime: Path,
    tmp_path: Path,
    emulated_cpu: str,
    variant: str,
) -> None:
    result = probe(
        starter_path,
        cwd=tmp_path,
        pythonpath=distribution_runtime,
        emulated_cpu=emulated_cpu,
        timeout=280,
    )
    assert result["runtime"]["cpu_variant"] == variant
    assert "error" not in result, result
    assert result["text"].strip()


@pytest.mark.qemu
@NEEDS_QEMU
def test_distribution_build_has_a_variant_for_the_first_x86_64_cpus(
    distribution_runtime: Path, tmp_path: Path
) -> None:
    """Below x86-64-v2 numpy 2.4 (its baseline) cannot be imported, so neither can
    llama_cpp nor Bastion: only ggml's own choice is checked there, through ctypes."""
    lib = distribution_runtime / "llama_cpp" / "lib"
    done = subprocess.run(
        ["qemu-x86_64", "-cpu", "qemu64", sys.executable, str(PROBE), "--ggml-only", str(lib)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == {"backends": 1, "cpu_libraries": ["libggml-cpu-x64.so"]}
