"""What this machine offers llama.cpp: for now, the CPU cores to decode on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_CPU_ROOT = Path("/sys/devices/system/cpu")


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores this process may run on: the best thread count for decoding.

    Hyper-threads share a core's arithmetic units, so llama.cpp decodes no faster (often
    slower) with one thread per logical CPU. llama-cpp-python's own default is half the
    logical CPUs, which guesses two threads a core and halves the speed on machines
    without hyper-threading, such as most small cloud VMs.
    """
    if sys.platform.startswith("linux"):
        cores = _linux_physical_cores()
        if cores:
            return cores
    elif sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["/usr/sbin/sysctl", "-n", "hw.perflevel0.physicalcpu", "hw.physicalcpu"],
                capture_output=True,
                text=True,
                timeout=2,
                check=False,
            ).stdout.split()
            # Apple silicon: the performance cores; efficiency cores slow a decode down.
            if out and out[0].isdigit():
                return max(1, int(out[0]))
        except OSError:
            pass
    return max(1, usable_cpus() // 2)


def _linux_physical_cores() -> int:
    allowed = os.sched_getaffinity(0)
    cores: set[str] = set()
    for cpu in allowed:
        topology = _CPU_ROOT / f"cpu{cpu}" / "topology"
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                cores.add((topology / name).read_text().strip())
                break
            except OSError:
                continue
    return len(cores)
