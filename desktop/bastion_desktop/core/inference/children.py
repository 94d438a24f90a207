"""How the app's child processes (model hosts, runtime probes) ended, in words."""

from __future__ import annotations

import signal


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "it stopped responding"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"it was ended by {name}"
    return f"it exited with code {exitcode}"
