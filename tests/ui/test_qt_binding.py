"""The Qt binding survives a long streamed reply's worth of signals.

PySide6 6.12.0 on CPython 3.11 drops a reference to `True` on every signal emit and
aborts with "Fatal Python error: bool_dealloc" after a few hundred emits (DESIGN.md).
The dependency pin avoids that release; this test fails if a pin change brings it back.
It runs in a child process because the failure is an abort, not an exception.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

EMITS = 25_000

SCRIPT = textwrap.dedent(
    f"""
    import threading
    from bastion_desktop.ui.qt import QtCore, Signal

    class Relay(QtCore.QObject):
        flag = Signal(bool)
        token = Signal(str, bool)

    app = QtCore.QCoreApplication([])
    relay = Relay()
    seen = {{"flag": 0, "token": 0}}

    def on_flag(value):
        seen["flag"] += 1

    def on_token(text, last):
        seen["token"] += 1
        if last:
            app.quit()

    relay.flag.connect(on_flag)
    relay.token.connect(on_token, QtCore.Qt.ConnectionType.QueuedConnection)

    # Direct emits on the GUI thread, then queued emits from a worker thread, as the
    # engine thread relays streamed tokens to the window.
    for index in range({EMITS}):
        relay.flag.emit(index % 2 == 0)

    def stream():
        for index in range({EMITS}):
            relay.token.emit("tok", index == {EMITS} - 1)

    worker = threading.Thread(target=stream)
    worker.start()
    app.exec()
    worker.join()
    print(seen["flag"], seen["token"])
    """
)


def test_tens_of_thousands_of_signal_emits_do_not_crash_the_process() -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split() == [str(EMITS), str(EMITS)]
