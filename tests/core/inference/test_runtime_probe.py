"""The runtime probe: GPU backends tried in child processes, and where models run.

The placement rules are checked on reports written here (plain data, as the probe's
children send them). The probe itself runs for real: the distribution runtime's CPU
variants, and GPU "backends" compiled here with gcc that crash, hang or are no library
at all, as broken drivers do; each must cost its flavour, never the calling process.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bastion_desktop.core.inference.backends import DeviceType, RuntimeDevice, RuntimeInfo
from bastion_desktop.core.inference.nvml import GpuInfo
from bastion_desktop.core.inference.runtime_probe import (
    AUTO,
    CPU_ONLY,
    GpuBackendCheck,
    RuntimeReport,
    device_choices,
    llama_lib_dir,
    plan_placement,
    probe_runtime,
)

GIB = 2**30


def gpu(
    name: str, description: str, backend: str, free_gib: float = 8,
    kind: DeviceType = DeviceType.GPU,
) -> RuntimeDevice:  # fmt: skip
    memory = int(free_gib * GIB)
    return RuntimeDevice(name, description, kind, backend, memory, memory)


CPU_INFO = RuntimeInfo(
    backends=("CPU",),
    devices=(RuntimeDevice("CPU", "Some CPU", DeviceType.CPU, "CPU", 16 * GIB, 16 * GIB),),
    cpu_library="libggml-cpu-haswell.so",
    cpu_variant="haswell",
    loaded_from=Path("/opt/bastion/lib"),
    system_info="CPU : SSE3 = 1 | AVX2 = 1 | F16C = 1 | OPENMP = 1 | AVX512 = 0",
)
RTX = gpu("Vulkan0", "NVIDIA GeForce RTX 4060", "Vulkan")
RTX_CUDA = gpu("CUDA0", "NVIDIA GeForce RTX 4060", "CUDA")
ARC = gpu("Vulkan1", "Intel(R) Arc(tm) A750", "Vulkan")
VULKAN = GpuBackendCheck("vulkan", Path("/lib/vulkan/libggml-vulkan.so"), (RTX, ARC))
CUDA = GpuBackendCheck("cuda_v12", Path("/lib/cuda_v12/libggml-cuda.so"), (RTX_CUDA,))
# A laptop: Vulkan lists the processor's graphics (a share of the RAM) before the GPU.
UHD = gpu("Vulkan0", "Intel(R) UHD Graphics 770", "Vulkan", 15.5, DeviceType.IGPU)
LAPTOP_RTX = gpu("Vulkan1", "NVIDIA GeForce RTX 4060 Laptop GPU", "Vulkan")
LAPTOP = GpuBackendCheck("vulkan", VULKAN.module, (UHD, LAPTOP_RTX))


def report(*checks: GpuBackendCheck, nvidia: bool = False) -> RuntimeReport:
    return RuntimeReport(CPU_INFO, False, checks, () if not nvidia else None)


def test_cpu_features_are_read_from_llama_cpp_s_system_info() -> None:
    assert report().cpu_features == ("SSE3", "AVX2", "F16C", "OPENMP")
    assert report().cpu_variant == "haswell"


def test_automatic_uses_the_vendor_backend_before_vulkan_with_all_its_gpus() -> None:
    placement = plan_placement(report(VULKAN, CUDA), AUTO, compatibility=False)
    assert placement.gpu_module == CUDA.module
    assert placement.devices == (RTX_CUDA,)
    assert placement.sentence() == "Runs on NVIDIA GeForce RTX 4060 (CUDA)."
    vulkan_only = plan_placement(report(VULKAN), AUTO, compatibility=False)
    assert vulkan_only.devices == (RTX, ARC)
    assert vulkan_only.sentence(20, 32) == (
        "Runs partly on NVIDIA GeForce RTX 4060 and Intel(R) Arc(tm) A750 (Vulkan): 20 of 33 "
        "layers, the rest on the CPU."
    )
    assert vulkan_only.worth_telling


def test_a_gpu_chosen_by_name_runs_alone_and_one_not_found_says_so() -> None:
    placement = plan_placement(report(VULKAN), "Intel(R) Arc(tm) A750", compatibility=False)
    assert (placement.gpu_module, placement.devices) == (VULKAN.module, (ARC,))
    missing = plan_placement(report(VULKAN), "Radeon RX 7600", compatibility=False)
    assert missing.gpu_module is None
    assert missing.sentence() == (
        "Runs on the CPU: the GPU “Radeon RX 7600” chosen in Settings was not found."
    )
    assert missing.worth_telling


def test_automatic_leaves_integrated_graphics_out_beside_a_discrete_gpu() -> None:
    # As llama.cpp would by itself: the integrated GPU runs no layer there.
    placement = plan_placement(report(LAPTOP), AUTO, compatibility=False)
    assert placement.devices == (LAPTOP_RTX,)
    assert placement.sentence() == "Runs on NVIDIA GeForce RTX 4060 Laptop GPU (Vulkan)."
    # Chosen by name, the integrated GPU runs the model alone.
    chosen = plan_placement(report(LAPTOP), UHD.description, compatibility=False)
    assert chosen.devices == (UHD,)
    # Without a discrete GPU, the integrated one is the GPU.
    alone = GpuBackendCheck("vulkan", VULKAN.module, (UHD,))
    assert plan_placement(report(alone), AUTO, compatibility=False).devices == (UHD,)


def test_the_fit_estimate_counts_only_the_gpus_that_run_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bastion_desktop.core.hub import probe
    from bastion_desktop.core.hub.fit import FitKind, estimate_fit, shape_from_size
    from bastion_desktop.core.inference import runtime_probe

    monkeypatch.setattr(runtime_probe, "runtime_report", lambda: report(LAPTOP))
    monkeypatch.setattr(probe, "system_memory", lambda: (32 * GIB, 24 * GIB))
    hardware = probe.probe_hardware()
    assert [(g.name, g.unified) for g in hardware.gpus] == [(LAPTOP_RTX.description, False)]
    # 12 GB of weights: more than the RTX's 8 GiB, less than 8 + 15.5 (the UHD's share of
    # the RAM), which llama.cpp would never use here.
    fit = estimate_fit(shape_from_size(12 * 10**9, "Q4_K_M"), 4096, hardware)
    assert fit.kind is FitKind.PARTIAL_GPU, fit.summary


def test_cpu_only_and_compatibility_mode() -> None:
    placement = plan_placement(report(VULKAN), CPU_ONLY, compatibility=True)
    assert placement.gpu_module is None
    assert placement.cpu_variant == "x64"
    assert placement.sentence() == (
        "Runs on the CPU (x64 instructions: compatibility mode): CPU only is set in Settings."
    )
    assert not placement.worth_telling, "the user's own choice needs no line in the chat"
    assert plan_placement(None, AUTO, compatibility=False).cpu_variant is None


def test_a_backend_that_failed_its_check_is_named_and_the_cpu_used() -> None:
    crashed = GpuBackendCheck(
        "vulkan", VULKAN.module, problem="its check failed: it was ended by SIGSEGV"
    )
    placement = plan_placement(report(crashed), AUTO, compatibility=False)
    assert placement.gpu_module is None
    assert placement.sentence() == (
        "Runs on the CPU: the Vulkan backend was skipped: its check failed: it was ended by "
        "SIGSEGV."
    )
    assert placement.skipped == ("Vulkan: its check failed: it was ended by SIGSEGV",)
    assert placement.worth_telling
    nothing = GpuBackendCheck("vulkan", VULKAN.module, problem="it found no GPU")
    quiet = plan_placement(report(nothing), AUTO, compatibility=False)
    assert quiet.sentence() == "Runs on the CPU: no GPU was found."
    assert not quiet.worth_telling, "a machine without a GPU hears nothing in every chat"
    no_backend = plan_placement(report(nvidia=True), AUTO, compatibility=False)
    assert no_backend.sentence() == "Runs on the CPU: no GPU backend in this build."


def test_device_choices_list_each_gpu_once() -> None:
    choices = device_choices(report(VULKAN, CUDA))
    assert [value for value, _ in choices] == [
        AUTO,
        "NVIDIA GeForce RTX 4060",
        "Intel(R) Arc(tm) A750",
        CPU_ONLY,
    ]
    assert choices[1][1] == "NVIDIA GeForce RTX 4060 (CUDA, 8.0 GiB free)"
    laptop = device_choices(report(LAPTOP))
    assert laptop[1] == (UHD.description, f"{UHD.description} (Vulkan, integrated, 15.5 GiB free)")
    # Two of the same GPU: each is offered, by llama.cpp's name for it.
    twins = GpuBackendCheck(
        "cuda_v12", CUDA.module, (RTX_CUDA, dataclasses.replace(RTX_CUDA, name="CUDA1"))
    )
    assert device_choices(report(twins))[1:3] == [
        ("CUDA0", "NVIDIA GeForce RTX 4060 (CUDA, CUDA0, 8.0 GiB free)"),
        ("CUDA1", "NVIDIA GeForce RTX 4060 (CUDA, CUDA1, 8.0 GiB free)"),
    ]
    assert plan_placement(report(twins), "CUDA1", compatibility=False).devices == (
        twins.devices[1],
    )
    assert plan_placement(report(twins), AUTO, compatibility=False).sentence() == (
        "Runs on 2x NVIDIA GeForce RTX 4060 (CUDA)."
    )
    assert device_choices(None) == [
        (AUTO, "Automatic (the best GPU found)"),
        (CPU_ONLY, "CPU only"),
    ]


# -- the probe's children, for real ---------------------------------------------------


def _distribution_runtime() -> Path:
    folder = llama_lib_dir()
    if folder is None or not list(folder.glob("libggml-cpu-*.so")):
        pytest.skip("the development environment has no distribution runtime (./dev installs it)")
    return folder


def _module(tmp_path: Path, flavour: str, body: str) -> Path:
    """A shared library named like a GPU backend module, whose constructor runs `body`."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the broken backends")
    folder = tmp_path / "lib" / flavour
    folder.mkdir(parents=True)
    source = tmp_path / f"{flavour}.c"
    source.write_text(
        "#include <signal.h>\n#include <unistd.h>\n"
        f"__attribute__((constructor)) static void start(void) {{ {body} }}\n",
        encoding="utf-8",
    )
    library = folder / f"libggml-{flavour}.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60
    )
    return library


# An app process: probes the hardware as the models window does, then says whether
# llama.cpp or any of its libraries ever entered it.
APP_PROCESS = """
import json, sys
from pathlib import Path
from bastion_desktop.core.hub.probe import probe_hardware
hardware = probe_hardware()
maps = Path("/proc/self/maps").read_text()
print(json.dumps({
    "imported": "llama_cpp" in sys.modules,
    "mapped": "libggml" in maps or "libllama" in maps,
    "features": hardware.cpu_features,
    "runtime": hardware.runtime,
}))
"""


@pytest.mark.model
def test_the_hardware_probe_asks_llama_cpp_in_children_only(tmp_path: Path) -> None:
    _distribution_runtime()
    done = subprocess.run(
        [sys.executable, "-c", APP_PROCESS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["imported"] is False
    assert result["mapped"] is False, "no llama.cpp library in the app process"
    assert "SSE3" in result["features"], "the CPU features came back from the child"
    assert result["runtime"].startswith("llama.cpp runs its "), result["runtime"]


@pytest.mark.model
def test_the_cpu_probe_reports_the_variant_ggml_chose() -> None:
    _distribution_runtime()
    found = probe_runtime()
    assert found.problem is None
    assert found.cpu_variant, "ggml chose one of its CPU modules in the child"
    assert "SSE3" in found.cpu_features


@pytest.mark.model
def test_crashing_hanging_and_broken_backends_are_skipped_with_their_reason(
    tmp_path: Path,
) -> None:
    _distribution_runtime()
    _module(tmp_path, "crashy", "raise(SIGSEGV);")
    _module(tmp_path, "hangs", "sleep(600);")
    broken = tmp_path / "lib" / "broken" / "libggml-broken.so"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"\x7fELF but not really a library")
    found = probe_runtime(tmp_path / "lib", timeout=10)
    problems = {check.flavour: check.problem for check in found.gpu_backends}
    assert problems["crashy"] == "its check failed: it was ended by SIGSEGV"
    assert problems["hangs"] == "its check failed: it did not answer within 10 s"
    assert (problems["broken"] or "").startswith("it did not load: "), problems
    assert "libggml-broken.so" in (problems["broken"] or ""), "llama.cpp's own reason"
    assert found.problem is None, "the CPU is still there"
    placement = plan_placement(found, AUTO, compatibility=False)
    assert placement.gpu_module is None
    assert placement.sentence().startswith("Runs on the CPU: the ")
    assert len(placement.skipped) == 3
    # The hung child was killed and every probe child reaped: none is left behind.
    left = [p.name for p in multiprocessing.active_children() if "runtime-probe" in p.name]
    assert left == []


def _loads_in_a_fresh_process(library: str) -> bool:
    code = f"import ctypes\ntry:\n    ctypes.CDLL({library!r})\nexcept OSError:\n    exit(1)"
    return subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


def _nvidia_driver(folder: Path, cuda_version: int) -> Path:
    """A stand-in for the NVIDIA driver's library (soname libcuda.so.1) that runs CUDA up
    to `cuda_version` (12080: 12.8)."""
    folder.mkdir()
    source = folder / "driver.c"
    source.write_text(
        "int cuInit(unsigned flags) { return 0; }\n"
        f"int cuDriverGetVersion(int *v) {{ *v = {cuda_version}; return 0; }}\n"
    )
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(folder / "libcuda.so.1"),
         str(source)],
        check=True, timeout=60,
    )  # fmt: skip
    (folder / "libcuda.so").symlink_to("libcuda.so.1")
    return folder


def _needs_the_nvidia_driver(tmp_path: Path, flavour: str) -> Path:
    """A module named like a CUDA backend that links the NVIDIA driver's library, as
    ggml-cuda does, with a CUDA 12.8 runtime beside it, and a stand-in for the driver's
    library (running CUDA up to 12.8) kept apart."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the modules")
    driver = _nvidia_driver(tmp_path / "driver", 12080)
    folder = tmp_path / "lib" / flavour
    folder.mkdir(parents=True)
    (tmp_path / "cudart.c").write_text(
        "int cudaRuntimeGetVersion(int *v) { *v = 12080; return 0; }\n"
    )
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libcudart.so.12", "-o",
         str(folder / "libcudart.so.12"), str(tmp_path / "cudart.c")],
        check=True, timeout=60,
    )  # fmt: skip
    (tmp_path / "module.c").write_text(
        "int cuInit(unsigned); int start(void) { return cuInit(0); }\n"
    )
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(folder / "libggml-cuda.so"),
         str(tmp_path / "module.c"), f"-L{driver}", "-lcuda"],
        check=True, timeout=60,
    )  # fmt: skip
    return driver


@pytest.mark.model
@pytest.mark.skipif(sys.platform != "linux", reason="builds ELF libraries with gcc")
def test_a_cuda_backend_without_the_nvidia_driver_is_no_gpu_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installers that carry CUDA run on machines without an NVIDIA GPU: there the module
    cannot load for want of the driver's library, which is as ordinary as Vulkan finding
    no GPU. With the driver there, a module that still fails is worth telling, and so is
    a driver older than the CUDA runtime beside the module."""
    _distribution_runtime()
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    if _loads_in_a_fresh_process("libcuda.so.1"):
        pytest.skip("this machine has the NVIDIA driver")
    driver = _needs_the_nvidia_driver(tmp_path, "cuda_v12")
    found = probe_runtime(tmp_path / "lib", timeout=30)
    (cuda,) = found.gpu_backends
    missing = "the NVIDIA driver's CUDA library (libcuda.so.1) is not installed"
    assert cuda.problem == missing
    placement = plan_placement(found, AUTO, compatibility=False)
    assert placement.sentence() == "Runs on the CPU: no GPU was found."
    assert placement.skipped == (f"CUDA: {missing}",)
    # NVML saw NVIDIA GPUs, and CUDA's library is missing: worth telling.
    seen = dataclasses.replace(
        found, nvidia=(GpuInfo("NVIDIA GeForce RTX 4060", 8 * GIB, 7 * GIB, False, "fixed"),)
    )
    told = plan_placement(seen, AUTO, compatibility=False).sentence()
    assert told == f"Runs on the CPU: the CUDA backend was skipped: {missing}.", told
    # The driver there, and the module still not a ggml backend: a failure to tell.
    monkeypatch.setenv("LD_LIBRARY_PATH", str(driver))
    found = probe_runtime(tmp_path / "lib", timeout=30)
    (cuda,) = found.gpu_backends
    assert (cuda.problem or "").startswith("it did not load: "), cuda.problem
    sentence = plan_placement(found, AUTO, compatibility=False).sentence()
    assert sentence.startswith("Runs on the CPU: the CUDA backend was skipped: "), sentence
    # A driver older than the runtime beside the module: not loaded, and the user told
    # what to do (its kernels shipped as PTX would end the model host at the first run).
    old = _nvidia_driver(tmp_path / "old-driver", 12040)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(old))
    found = probe_runtime(tmp_path / "lib", timeout=30)
    (cuda,) = found.gpu_backends
    too_old = (
        "the NVIDIA driver runs CUDA up to 12.4, older than the CUDA 12.8 it was built "
        "with; update the NVIDIA driver"
    )
    assert cuda.problem == too_old
    told = plan_placement(found, AUTO, compatibility=False).sentence()
    assert told == f"Runs on the CPU: the CUDA backend was skipped: {too_old}.", told
