"""The desktop app, as a process, asked to leave by a signal: Ctrl+C in its terminal
(SIGINT), `kill` or a logout (SIGTERM). It closes as its Quit does, saving the window's
place and stopping its model hosts; by default SIGTERM would end it on the spot, and
Ctrl+C would wait for the next Python callback Qt happened to make."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BASTION = Path(sys.executable).with_name("bastion")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_the_window_as_quit_does(
    cli_env: dict[str, str], home_with_starter: Path, signum: signal.Signals
) -> None:
    env = {**cli_env, "QT_QPA_PLATFORM": "offscreen", "BASTION_TRACE_STARTUP": "1"}
    log = home_with_starter / "logs" / "bastion.log"
    process = subprocess.Popen(
        [str(BASTION)], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert json.loads(first)["first_paint_monotonic"] > 0, first
        # Started behind the painted window: settings, policy, then the history.
        deadline = time.monotonic() + 120
        while not (home_with_starter / "data" / "history.db").exists():
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the app never opened its history"
            time.sleep(0.1)
        time.sleep(1)  # idle in Qt's event loop, where only a wake-up reaches Python
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert (home_with_starter / "config" / "window.json").exists(), "the window's place kept"
    assert f"leaving on {signum.name}" in log.read_text(encoding="utf-8")
