"""Writing files so that a crash or a full disk never leaves a half-written one."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from bastion_desktop.core.errors import BastionError


class DiskFullError(BastionError):
    """The disk filled up while Bastion was writing; the old file is untouched."""


def disk_full_sentence(folder: Path) -> str:
    return f"The disk holding {folder} is full. Free some space and try again; nothing was lost."


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise DiskFullError(disk_full_sentence(path.parent)) from error
        raise
