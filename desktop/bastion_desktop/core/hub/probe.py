"""What this machine has for running a model: RAM, GPUs with their free memory, CPU
features, and whether this llama.cpp build can offload to a GPU at all.

Each fact comes from the most direct source the OS offers, without new dependencies:
/proc/meminfo (and the cgroup limit in a container), sysctl and vm_stat on macOS,
GlobalMemoryStatusEx on Windows; the GPUs, their free memory and the CPU features from
llama.cpp's own device lists, gathered by the runtime probe in child processes (so that
a GPU driver that crashes takes down a child, never the window), with NVML's view of
NVIDIA GPUs when no llama.cpp backend can use them. What cannot be found is left as None
and said plainly in `notes`, never guessed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bastion_desktop.core.inference.nvml import GpuInfo, nvidia_gpus

if TYPE_CHECKING:
    from bastion_desktop.core.inference.runtime_probe import RuntimeReport

__all__ = ["GpuInfo", "HardwareProfile", "nvidia_gpus", "probe_hardware", "system_memory"]

log = logging.getLogger(__name__)

GIB = 1024**3
# Metal lets a process keep about this share of unified memory resident on the GPU
# (`recommendedMaxWorkingSetSize`): about two thirds on small Macs, three quarters above
# 36 GB. llama.cpp's own device list reports the exact figure when it is asked.
APPLE_GPU_SHARE_SMALL = 2 / 3
APPLE_GPU_SHARE_LARGE = 3 / 4


@dataclass(frozen=True)
class HardwareProfile:
    ram_total: int | None
    ram_available: int | None
    gpus: tuple[GpuInfo, ...] = ()
    gpu_offload_supported: bool = False  # this llama.cpp build has a GPU backend
    cpu_features: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    runtime: str = ""  # what llama.cpp runs here, in a sentence (describe_runtime)

    @property
    def gpu_free_bytes(self) -> int | None:
        """Free memory on all GPUs together (llama.cpp splits layers across them), or
        None when a GPU is present but its free memory is unknown."""
        if not self.gpus:
            return 0
        total = 0
        for gpu in self.gpus:
            free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes
            if free is None:
                return None
            total += free
        return total


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _linux_memory() -> tuple[int | None, int | None]:
    text = _read_text(Path("/proc/meminfo")) or ""
    values = {
        m[1]: int(m[2]) * 1024 for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.MULTILINE)
    }
    total, available = values.get("MemTotal"), values.get("MemAvailable", values.get("MemFree"))
    # In a container the cgroup limit, not the host's RAM, is what the process may use.
    limit = (_read_text(Path("/sys/fs/cgroup/memory.max")) or "").strip()
    if limit.isdigit() and total is not None and int(limit) < total:
        used = (_read_text(Path("/sys/fs/cgroup/memory.current")) or "").strip()
        total = int(limit)
        if used.isdigit():
            room = max(0, total - int(used))
            available = room if available is None else min(available, room)
    return total, available


def _sysctl(name: str) -> str | None:
    try:
        result = subprocess.run(
            ["/usr/sbin/sysctl", "-n", name], capture_output=True, text=True, timeout=3, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = result.stdout.strip()
    return out if result.returncode == 0 and out else None


def _mac_memory() -> tuple[int | None, int | None]:
    total_text = _sysctl("hw.memsize")
    total = int(total_text) if total_text and total_text.isdigit() else None
    try:
        out = subprocess.run(
            ["/usr/bin/vm_stat"], capture_output=True, text=True, timeout=3, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return total, None
    page = re.search(r"page size of (\d+) bytes", out)
    pages = {m[1]: int(m[2]) for m in re.finditer(r"^Pages ([\w -]+):\s+(\d+)\.", out, re.M)}
    if page is None:
        return total, None
    reclaimable = sum(pages.get(k, 0) for k in ("free", "inactive", "speculative", "purgeable"))
    return total, reclaimable * int(page[1])


class _MemoryStatusEx(ctypes.Structure):
    _fields_ = [  # the layout of MEMORYSTATUSEX
        ("dwLength", ctypes.c_ulong),
        ("dwMemoryLoad", ctypes.c_ulong),
        ("ullTotalPhys", ctypes.c_ulonglong),
        ("ullAvailPhys", ctypes.c_ulonglong),
        ("ullTotalPageFile", ctypes.c_ulonglong),
        ("ullAvailPageFile", ctypes.c_ulonglong),
        ("ullTotalVirtual", ctypes.c_ulonglong),
        ("ullAvailVirtual", ctypes.c_ulonglong),
        ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
    ]


def _windows_memory() -> tuple[int | None, int | None]:
    status = _MemoryStatusEx()
    status.dwLength = ctypes.sizeof(_MemoryStatusEx)
    kernel32 = ctypes.WinDLL("kernel32")  # type: ignore[attr-defined, unused-ignore]
    if not kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None, None
    return int(status.ullTotalPhys), int(status.ullAvailPhys)


def system_memory() -> tuple[int | None, int | None]:
    """(total, available) RAM in bytes; None where the OS would not say."""
    try:
        if sys.platform.startswith("linux"):
            return _linux_memory()
        if sys.platform == "darwin":
            return _mac_memory()
        if sys.platform == "win32":
            return _windows_memory()
    except (OSError, ValueError, AttributeError):
        log.warning("could not read the amount of RAM", exc_info=True)
    return None, None


def apple_gpu(ram_total: int | None) -> GpuInfo | None:
    if sys.platform != "darwin" or platform.machine() != "arm64":
        return None
    budget = None
    if ram_total is not None:
        share = APPLE_GPU_SHARE_LARGE if ram_total > 36 * GIB else APPLE_GPU_SHARE_SMALL
        budget = int(ram_total * share)
    brand = _sysctl("machdep.cpu.brand_string") or "Apple silicon"
    return GpuInfo(f"{brand} GPU", budget, budget, unified=True, source="apple")


def _runtime_gpus(report: RuntimeReport) -> tuple[list[GpuInfo], bool]:
    """The GPUs llama.cpp would run models on by default, and whether it can offload."""
    from bastion_desktop.core.inference.backends import DeviceType
    from bastion_desktop.core.inference.runtime_probe import AUTO, default_gpus, plan_placement

    devices = plan_placement(report, AUTO, compatibility=False).devices
    if not devices and report.gpu_offload and report.cpu is not None:
        # A backend built into the library (Metal): the devices its probe registered.
        devices = default_gpus(report.cpu.devices)
    gpus = [
        GpuInfo(
            d.description or d.name,
            d.memory_total or None,
            d.memory_free or None,
            unified=d.type is DeviceType.IGPU,
            source="llama.cpp",
        )
        for d in devices
    ]
    return gpus, bool(devices) or report.gpu_offload


def describe_runtime(report: RuntimeReport) -> str:
    """What llama.cpp runs here, for a person: "llama.cpp runs its zen4 CPU build;
    Vulkan found no GPU." """
    if report.problem:
        return f"llama.cpp cannot run here: {report.problem}."
    variant = report.cpu_variant
    parts = [f"llama.cpp runs its {variant} CPU build" if variant else "llama.cpp runs on the CPU"]
    for check in report.gpu_backends:
        if check.problem:
            parts.append(f"{check.label}: {check.problem}")
        else:
            names = ", ".join(d.description or d.name for d in check.devices)
            parts.append(f"{check.label} finds {names}")
    return "; ".join(parts) + "."


def probe_hardware() -> HardwareProfile:
    """Probe this machine. The llama.cpp and GPU driver parts run in child processes
    (runtime_probe), once per app run: about a second the first time."""
    from bastion_desktop.core.inference.runtime_probe import runtime_report

    notes: list[str] = []
    ram_total, ram_available = system_memory()
    if ram_total is None:
        notes.append("The amount of RAM is unknown on this system.")
    report = runtime_report()
    if report.problem:
        notes.append("llama.cpp is not usable here, so GPU support and CPU features are unknown.")
    gpus, supported = _runtime_gpus(report)
    if not gpus:
        # Nothing llama.cpp can use: still say what the machine has (NVML's view comes
        # from the probe's child; the Apple figure from sysctl).
        gpus.extend(report.nvidia or ())
        apple = apple_gpu(ram_total)
        if apple is not None:
            gpus.append(apple)
    if supported and not gpus:
        notes.append("This llama.cpp build can use a GPU, but no GPU or its memory was found.")
    if gpus and not supported:
        notes.append(
            "A GPU is present, but this llama.cpp build has no GPU support: models run on the CPU."
        )
    if any(g.free_bytes is None for g in gpus):
        notes.append("The free memory of the GPU is unknown.")
    return HardwareProfile(
        ram_total=ram_total,
        ram_available=ram_available,
        gpus=tuple(gpus),
        gpu_offload_supported=supported,
        cpu_features=report.cpu_features,
        notes=tuple(notes),
        runtime=describe_runtime(report),
    )
