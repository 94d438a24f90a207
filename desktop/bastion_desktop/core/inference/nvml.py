"""NVIDIA GPUs as the driver's NVML library sees them (name, total and free memory),
through ctypes and without a new dependency. The runtime probe reads them in its child
process, so a driver that crashes takes down a child, never the window."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_bytes: int | None
    free_bytes: int | None
    unified: bool  # shares the system RAM (Apple silicon, integrated GPUs)
    source: str  # "nvml", "apple", "llama.cpp", or "fixed" in tests


class _NvmlMemory(ctypes.Structure):
    _fields_ = [  # the layout of nvmlMemory_t
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    ]


def _load_nvml() -> ctypes.CDLL | None:
    if sys.platform == "win32":
        candidates = ["nvml.dll", r"C:\Program Files\NVIDIA Corporation\NVSMI\nvml.dll"]
    else:
        candidates = ["libnvidia-ml.so.1", ctypes.util.find_library("nvidia-ml") or ""]
    for name in filter(None, candidates):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def nvidia_gpus() -> list[GpuInfo] | None:
    """NVIDIA GPUs through NVML; None when the driver library is absent."""
    nvml = _load_nvml()
    if nvml is None:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint()
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        gpus = []
        for index in range(count.value):
            handle = ctypes.c_void_p()
            if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            nvml.nvmlDeviceGetName(handle, name, ctypes.c_uint(96))
            memory = _NvmlMemory()
            known = nvml.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) == 0
            gpus.append(
                GpuInfo(
                    name=name.value.decode("utf-8", errors="replace") or f"NVIDIA GPU {index}",
                    total_bytes=int(memory.total) if known else None,
                    free_bytes=int(memory.free) if known else None,
                    unified=False,
                    source="nvml",
                )
            )
        return gpus
    finally:
        nvml.nvmlShutdown()
