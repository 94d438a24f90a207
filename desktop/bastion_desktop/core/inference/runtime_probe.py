"""Which of llama.cpp's backends this machine can run, found in child processes, and
where a model will run.

Bastion ships its GPU backends as modules, one folder per flavour beside libllama
(`vulkan/`, `cuda_v12/`; see packaging/runtime/build_gpu.py). Before a model host loads
one, each flavour is tried here in a child process of its own, as Ollama does: the child
loads the CPU backend and the module, and reports the devices it found with their free
memory. A driver that hangs or crashes while it enumerates its devices ends a child,
never the app or a model host, and its flavour is skipped with the reason. The first
child (the CPU alone) also reports the CPU variant ggml chose, the CPU features and, on
NVIDIA machines, NVML's view of the GPUs: the app process itself never imports
llama_cpp or a GPU driver library.

`plan_placement` then applies the user's (or the administrator's) device setting to the
report: which module the model host loads, which GPU it uses, and one sentence that says
where models run and why.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion_desktop.core.inference.backends import (
    DeviceType,
    LlamaLogTail,
    RuntimeDevice,
    RuntimeInfo,
    gpu_module_folders,
    load_backends,
)
from bastion_desktop.core.inference.children import describe_exit

if TYPE_CHECKING:
    from bastion_desktop.core.inference.nvml import GpuInfo

log = logging.getLogger(__name__)

# A child that has not answered by then is taken for hung and killed (a driver's first
# initialisation can compile shaders or load firmware: Ollama allows 30 s, 90 on Windows).
PROBE_TIMEOUT_SECONDS = 90.0 if sys.platform == "win32" else 30.0
# Among flavours that found GPUs, the first in this order runs models: a vendor's own
# backend before the portable one.
FLAVOUR_PREFERENCE = ("cuda_v13", "cuda_v12", "rocm", "vulkan")
FLAVOUR_NAMES = {"cuda_v13": "CUDA", "cuda_v12": "CUDA", "rocm": "ROCm", "vulkan": "Vulkan"}
# What a probe says of a flavour that found nothing to run on; neither is worth telling.
NO_GPU = "it found no GPU"
# A CUDA module cannot load without the NVIDIA driver's CUDA library, which every machine
# without an NVIDIA GPU lacks: as ordinary as Vulkan finding no GPU, unless NVML saw
# NVIDIA GPUs (a driver installed without it, a container given NVML alone).
NVIDIA_DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
NO_NVIDIA_DRIVER = f"the NVIDIA driver's CUDA library ({NVIDIA_DRIVER_LIBRARY}) is not installed"
# The CUDA runtime shipped beside a CUDA module (its version is read from it).
CUDA_RUNTIME_FILES = "cudart64_*.dll" if sys.platform == "win32" else "libcudart.so.*"
AUTO = "auto"
CPU_ONLY = "cpu"
# The CPU variant compatibility mode pins: the baseline every x86-64 CPU runs.
BASELINE_CPU_VARIANT = "x64"
GPU_TYPES = (DeviceType.GPU, DeviceType.IGPU)


@dataclass(frozen=True)
class GpuBackendCheck:
    """One GPU flavour as its probe found it."""

    flavour: str  # the folder: "vulkan", "cuda_v12"
    module: Path
    devices: tuple[RuntimeDevice, ...] = ()  # the GPUs it offers
    problem: str | None = None  # why it cannot be used, when it cannot

    @property
    def label(self) -> str:
        return FLAVOUR_NAMES.get(self.flavour, self.flavour)


@dataclass(frozen=True)
class RuntimeReport:
    """What llama.cpp can run on this machine."""

    cpu: RuntimeInfo | None  # the CPU-only probe; None when even that failed
    gpu_offload: bool  # the build offloads without a module (Metal on macOS)
    gpu_backends: tuple[GpuBackendCheck, ...] = ()
    nvidia: tuple[GpuInfo, ...] | None = None  # NVML's view; None without the driver
    problem: str | None = None  # why llama.cpp cannot run here at all

    @property
    def cpu_variant(self) -> str | None:
        return self.cpu.cpu_variant if self.cpu else None

    @property
    def cpu_features(self) -> tuple[str, ...]:
        """The CPU features llama.cpp uses ("AVX2", "F16C" ...), from its system info
        ("CPU : SSE3 = 1 | AVX2 = 1 | ...")."""
        flags = []
        for part in (self.cpu.system_info if self.cpu else "").split("|"):
            name, _, value = part.partition("=")
            if value.strip() == "1":
                flags.append(name.split(":")[-1].strip())
        return tuple(dict.fromkeys(flags))

    def usable_gpus(self) -> list[tuple[GpuBackendCheck, RuntimeDevice]]:
        """Every GPU a model could run on, by flavour in order of preference."""
        checks = sorted(self.gpu_backends, key=_preference)
        return [(c, d) for c in checks if c.problem is None for d in c.devices]


def _preference(check: GpuBackendCheck) -> int:
    try:
        return FLAVOUR_PREFERENCE.index(check.flavour)
    except ValueError:
        return len(FLAVOUR_PREFERENCE)


# -- the children ------------------------------------------------------------------------


def _probe_child(conn: Connection, module: str | None, cpu_variant: str | None) -> None:
    """A probe process: load the backends (and `module`), then report and exit."""
    from bastion_desktop.core.privacy import apply_private_environment

    apply_private_environment()
    try:
        import llama_cpp

        tail = LlamaLogTail()
        # A CUDA module: whether the driver it needs is there at all, and new enough for
        # the runtime beside it; if not, it is not loaded (nor its cuBLAS with it).
        folder = Path(module).parent if module else None
        cuda = folder is not None and folder.name.startswith("cuda")
        driver = _loads(NVIDIA_DRIVER_LIBRARY) if cuda else None
        versions = _cuda_versions(folder) if folder and cuda and driver else None
        usable = not cuda or (driver and not _driver_too_old(versions))
        modules = [Path(module)] if module and usable else []
        info = load_backends(cpu_variant=cpu_variant, gpu_modules=modules, log_tail=tail)
        gpu_offload = bool(llama_cpp.llama_supports_gpu_offload())
        nvidia = None
        if module is None:
            from bastion_desktop.core.inference.nvml import nvidia_gpus

            found = nvidia_gpus()
            nvidia = tuple(found) if found is not None else None
        conn.send(("ok", info, gpu_offload, nvidia, driver, versions))
    except Exception as error:  # any failure is this probe's answer, not a crash
        conn.send(("failed", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


def _cuda_versions(folder: Path) -> tuple[int, int] | None:
    """The newest CUDA the NVIDIA driver runs and the CUDA runtime's own, beside a CUDA
    module (cuDriverGetVersion, cudaRuntimeGetVersion: 12040 for 12.4), or None where
    either cannot be read."""
    import ctypes

    runtimes = sorted(folder.glob(CUDA_RUNTIME_FILES))
    if not runtimes:
        return None
    try:
        driver = ctypes.CDLL(NVIDIA_DRIVER_LIBRARY)
        runtime = ctypes.CDLL(str(runtimes[0]))
        driver_version, runtime_version = ctypes.c_int(0), ctypes.c_int(0)
        if driver.cuDriverGetVersion(ctypes.byref(driver_version)) != 0:
            return None
        if runtime.cudaRuntimeGetVersion(ctypes.byref(runtime_version)) != 0:
            return None
    except (OSError, AttributeError):
        return None
    return driver_version.value, runtime_version.value


def _driver_too_old(versions: tuple[int, int] | None) -> bool:
    """Whether `_cuda_versions` found a driver older than the runtime beside the module."""
    return versions is not None and versions[0] < versions[1]


def cuda_driver_too_old(driver: int, runtime: int) -> str:
    """Why a CUDA backend is skipped on a driver older than its runtime. The runtime would
    start (CUDA's minor-version compatibility), but kernels shipped as PTX, for every GPU
    but the RTX 30, 40 and 50 series, cannot be compiled by an older driver, and the
    first one to run would end the model host."""

    def version(number: int) -> str:
        return f"{number // 1000}.{number % 1000 // 10}"

    return (
        f"the NVIDIA driver runs CUDA up to {version(driver)}, older than the CUDA "
        f"{version(runtime)} it was built with; update the NVIDIA driver"
    )


def _loads(library: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


class _Probe:
    def __init__(self, module: Path | None, cpu_variant: str | None) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_probe_child,
            args=(child_conn, str(module) if module else None, cpu_variant),
            name=f"bastion-runtime-probe:{module.parent.name if module else 'cpu'}",
            daemon=True,
        )
        self.process.start()
        child_conn.close()

    def answer(self, deadline: float, timeout: float) -> tuple[Any, ...]:
        """The child's message, or ("failed", why) when it died or hung. Either way the
        child is reaped before this returns."""
        message: tuple[Any, ...] | None = None
        try:
            if self.conn.poll(max(0.0, deadline - time.monotonic())):
                message = tuple(self.conn.recv())
        except (EOFError, OSError):
            pass
        finally:
            self.conn.close()
        self.process.join(5.0 if message is not None else 1.0)  # it exits once it answered
        if message is not None:
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
            return message
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
            return ("failed", f"it did not answer within {timeout:.0f} s")
        return ("failed", describe_exit(self.process.exitcode))


def probe_runtime(
    lib_dir: Path | None = None,
    *,
    cpu_variant: str | None = None,
    timeout: float = PROBE_TIMEOUT_SECONDS,
) -> RuntimeReport:
    """Probe the CPU and every shipped GPU flavour, each in its own child, in parallel.
    Takes about as long as the slowest driver's start (a second or two)."""
    folder = lib_dir or llama_lib_dir()
    modules = gpu_module_folders(folder) if folder is not None else {}
    cpu_probe = _Probe(None, cpu_variant)
    probes = {flavour: _Probe(path, cpu_variant) for flavour, path in modules.items()}
    deadline = time.monotonic() + timeout
    base = cpu_probe.answer(deadline, timeout)
    checks = []
    for flavour, probe in probes.items():
        answer = probe.answer(deadline, timeout)
        checks.append(_check(flavour, modules[flavour], answer))
        log.info("GPU backend %s: %s", flavour, checks[-1].problem or checks[-1].devices)
    if base[0] != "ok":
        log.warning("llama.cpp cannot run here: %s", base[1])
        return RuntimeReport(None, False, tuple(checks), None, problem=base[1])
    _, info, gpu_offload, nvidia, _driver, _versions = base
    return RuntimeReport(info, gpu_offload, tuple(checks), nvidia)


def _check(flavour: str, module: Path, answer: tuple[Any, ...]) -> GpuBackendCheck:
    if answer[0] != "ok":
        return GpuBackendCheck(flavour, module, problem=f"its check failed: {answer[1]}")
    info: RuntimeInfo = answer[1]
    driver, versions = answer[4], answer[5]
    if driver is False:  # a CUDA module, and no driver to run it on
        return GpuBackendCheck(flavour, module, problem=NO_NVIDIA_DRIVER)
    if versions and _driver_too_old(versions):
        return GpuBackendCheck(flavour, module, problem=cuda_driver_too_old(*versions))
    if info.gpu_failures:
        reason = info.gpu_failures[0].split(": ", 1)[-1]
        return GpuBackendCheck(flavour, module, problem=f"it did not load: {reason}")
    devices = tuple(d for d in info.devices if d.type in GPU_TYPES and d.backend != "CPU")
    if not devices:
        return GpuBackendCheck(flavour, module, problem=NO_GPU)
    return GpuBackendCheck(flavour, module, devices)


def llama_lib_dir() -> Path | None:
    """llama_cpp's library folder, found without importing llama_cpp (which loads
    libllama and libggml into the calling process)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


_cached: dict[str, RuntimeReport] = {}
_cache_lock = threading.Lock()


def runtime_report(*, refresh: bool = False) -> RuntimeReport:
    """`probe_runtime()` once per app run (threads wait for the first answer). Blocks
    for the probe's second or two: call it off the event loop and the GUI thread."""
    with _cache_lock:
        if "report" not in _cached or refresh:
            _cached["report"] = probe_runtime()
        return _cached["report"]


def forget_runtime_report() -> None:
    """Probe again next time (after a driver or an environment variable changed)."""
    with _cache_lock:
        _cached.clear()


# -- where a model runs ------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where the model host runs a model: what it loads and uses, and why."""

    gpu_module: Path | None = None  # the GPU backend module to load
    # The GPUs the model may use, by name: the model host gives llama.cpp this list, so
    # that what Bastion plans, estimates and tells is what llama.cpp does.
    devices: tuple[RuntimeDevice, ...] = ()
    cpu_variant: str | None = None  # a pinned CPU variant (compatibility mode)
    reason: str = ""  # why the CPU, when it is the CPU: "no GPU was found"
    skipped: tuple[str, ...] = field(default=())  # "Vulkan: it found no GPU", for logs
    # The CPU as expected (no GPU here, or the user chose it): nothing to tell in a chat.
    expected: bool = False

    @property
    def worth_telling(self) -> bool:
        """Whether a chat should say where its model runs: on a GPU, or on the CPU for a
        reason the user would want to know (a backend skipped, a GPU not found)."""
        return bool(self.devices) or not self.expected

    def sentence(self, gpu_layers: int | None = None, layers: int | None = None) -> str:
        """One sentence for the user: which device runs their model and why."""
        cpu = "the CPU" + (
            f" ({self.cpu_variant} instructions: compatibility mode)" if self.cpu_variant else ""
        )
        if not self.devices or gpu_layers == 0:
            why = self.reason or ("no layer fits in GPU memory" if self.devices else "")
            return f"Runs on {cpu}{': ' + why if why else ''}."
        # Two of the same GPU: "2x NVIDIA GeForce RTX 3090".
        models = collections.Counter(d.description or d.name for d in self.devices)
        names = " and ".join(f"{n}x {model}" if n > 1 else model for model, n in models.items())
        backend = self.devices[0].backend
        if gpu_layers is not None and layers is not None and gpu_layers < layers + 1:
            return (
                f"Runs partly on {names} ({backend}): {gpu_layers} of {layers + 1} layers, "
                f"the rest on {cpu}."
            )
        return f"Runs on {names} ({backend})."


def plan_placement(report: RuntimeReport | None, device: str, compatibility: bool) -> Placement:
    """Apply the device setting ("auto", "cpu" or a GPU's name) to the runtime report.
    `report` may be None when the device setting needs no probe (CPU only)."""
    variant = BASELINE_CPU_VARIANT if compatibility else None
    if device == CPU_ONLY:
        return Placement(cpu_variant=variant, reason="CPU only is set in Settings", expected=True)
    if report is None:
        return Placement(cpu_variant=variant, expected=True)
    skipped = tuple(f"{c.label}: {c.problem}" for c in report.gpu_backends if c.problem)
    usable = report.usable_gpus()
    if device == AUTO and usable:
        check = usable[0][0]
        return Placement(check.module, default_gpus(check.devices), variant, skipped=skipped)
    for check, chosen in usable:
        if device in (chosen.description, chosen.name):
            return Placement(check.module, (chosen,), variant, skipped=skipped)
    if usable:
        reason, expected = f"the GPU “{device}” chosen in Settings was not found", False
    elif report.gpu_offload:
        # Metal, or another backend built into the library: the host decides.
        reason, expected = "", True
    else:
        reason, expected = _no_gpu_reason(report)
    return Placement(cpu_variant=variant, reason=reason, skipped=skipped, expected=expected)


def default_gpus(devices: Sequence[RuntimeDevice]) -> tuple[RuntimeDevice, ...]:
    """The GPUs llama.cpp itself would take (llama_prepare_model_devices): the ones with
    memory of their own, or the integrated ones where there is none. A laptop's Intel or
    Radeon graphics beside its discrete GPU runs no layer: counting its share of the RAM
    as GPU memory, or taking it for unified memory, would make the fit estimate promise
    what the discrete GPU cannot hold."""
    dedicated = tuple(d for d in devices if d.type is DeviceType.GPU)
    return dedicated or tuple(d for d in devices if d.type is DeviceType.IGPU)


def _no_gpu_reason(report: RuntimeReport) -> tuple[str, bool]:
    """Why no GPU runs models, and whether that is what the user would expect."""
    if not report.gpu_backends:
        if report.nvidia:
            return "this build of Bastion has no GPU backend", False
        return "no GPU backend in this build", True
    ordinary = (NO_GPU,) if report.nvidia else (NO_GPU, NO_NVIDIA_DRIVER)
    failed = [c for c in report.gpu_backends if c.problem and c.problem not in ordinary]
    if failed:
        return f"the {failed[0].label} backend was skipped: {failed[0].problem}", False
    return "no GPU was found", True


def device_choices(report: RuntimeReport | None) -> list[tuple[str, str]]:
    """(setting value, label) for a device chooser: automatic, each GPU, CPU only."""
    choices = [(AUTO, "Automatic (the best GPU found)")]
    offered: dict[str, str] = {}  # a GPU's model name: the flavour that offers it
    for check, device in report.usable_gpus() if report else []:
        model = device.description or device.name
        if offered.setdefault(model, check.flavour) != check.flavour:
            continue  # the same GPU through a backend after the preferred one
        # Two of the same GPU are told apart by llama.cpp's names for them (CUDA1).
        twins = sum((d.description or d.name) == model for d in check.devices) > 1
        details = [check.label, *([device.name] if twins else [])]
        if device.type is DeviceType.IGPU:
            details.append("integrated")
        details.append(f"{device.memory_free / 2**30:.1f} GiB free")
        choices.append((device.name if twins else model, f"{model} ({', '.join(details)})"))
    choices.append((CPU_ONLY, "CPU only"))
    return choices
