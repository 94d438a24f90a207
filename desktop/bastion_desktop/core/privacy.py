"""The process environment that keeps Bastion offline, untracked, and its memory off
the disk.

Every entry point calls `apply_private_environment()` before anything imports
huggingface_hub or nemoguardrails: both read these variables once, at import time.
NeMo Guardrails sends usage statistics to NVIDIA unless told not to; the Hub client
reaches the network unless it is put in offline mode. Downloads lift offline mode for
their own call only, never for the process. It also keeps the process from dumping core
(`keep_memory_off_disk`).
"""

import contextlib
import ctypes
import os
import sys
from collections.abc import MutableMapping

PRIVATE_ENVIRONMENT: dict[str, str] = {
    "NEMO_GUARDRAILS_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


_PR_SET_DUMPABLE = 4  # prctl(2)'s option for a process's "dumpable" attribute


def apply_private_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Force the variables on, overriding whatever the user's shell set; applied to
    this process (no `environ`), keep its memory off the disk too."""
    target = os.environ if environ is None else environ
    target.update(PRIVATE_ENVIRONMENT)
    if environ is None:
        keep_memory_off_disk()


def keep_memory_off_disk() -> None:
    """No core dump of this process. Its memory holds conversations in the clear (the
    history's key too, in the app), and a crash (a GPU driver's, in a model host) would
    write it all to disk unencrypted: to the working folder, or to systemd-coredump's or
    apport's store. Linux: the process is made not dumpable, so the kernel writes no
    core whatever `core_pattern` says (as KeePassXC does); this also keeps the user's
    other programs from reading its memory through ptrace. Everywhere but Windows: a
    core size limit of 0, which a child inherits. A child started with execve (a model
    host) is dumpable again, so every process calls this itself."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource  # not on Windows, where no core file is written

        _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
