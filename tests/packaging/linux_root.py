"""A clean Debian root for installing Bastion's .deb as a user's fresh machine would.

mmdebstrap builds a minimal Debian 12 from the machine's apt sources: nothing of the
build environment (no Python, no Qt, no X libraries) is in it, so `apt install ./deb`
must bring everything the package declares, and nothing it forgot. Commands run in it
through chroot with /proc and a private /dev/shm mounted (Python's multiprocessing needs
both); /dev itself is never bind-mounted, so deleting the root can never reach the
host's devices.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROOT_ENV = {
    "HOME": "/root",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


class CleanRoot:
    def __init__(self, path: Path) -> None:
        self.path = path

    def run(
        self, script: str, *, offline: bool = False, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell script as root inside; `offline` gives it no network at all."""
        command = ["chroot", str(self.path), "/bin/sh", "-c", script]
        if offline:
            command = ["unshare", "--net", *command]
        return subprocess.run(
            command,
            env=CHROOT_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def file(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")


def _mounted(path: Path) -> bool:
    target = str(path.resolve())
    with Path("/proc/self/mounts").open() as mounts:
        return any(line.split()[1] == target for line in mounts)


@contextmanager
def clean_debian_root(where: Path) -> Iterator[CleanRoot]:
    """A fresh Debian 12 root under `where`, removed afterwards."""
    root = where / "root"
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=apt", "bookworm", str(root)],
        check=True,
        timeout=900,
        capture_output=True,
    )
    mounts = [(root / "proc", ["-t", "proc", "proc"]), (root / "dev/shm", ["-t", "tmpfs", "shm"])]
    done: list[Path] = []
    try:
        for target, how in mounts:
            target.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *how, str(target)], check=True)
            done.append(target)
        yield CleanRoot(root)
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "--lazy", str(target)], check=False)
        if not any(_mounted(target) for target, _ in mounts):
            shutil.rmtree(root, ignore_errors=True)


def can_build_roots() -> str | None:
    """Why a clean root cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "making a clean Debian root needs root (chroot, mount)"
    for tool in ("mmdebstrap", "chroot", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package mmdebstrap / coreutils / util-linux)"
    return None
