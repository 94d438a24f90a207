"""A test that leaves a child process, a thread or a window behind fails (the
`_nothing_left_behind` fixture of tests/conftest.py): each is a leak the app would
have too, such as a model host keeping a model in memory after its chat ended."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.inner_suite import run_inner_tests

INNER = textwrap.dedent(
    """
    import subprocess
    import sys
    import threading


    def test_leaves_a_child() -> None:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(15)"])
        child.returncode = 0  # not reaped, and Popen is told not to mind


    def test_leaves_a_thread() -> None:
        stop = threading.Event()
        threading.Thread(target=stop.wait, name="forgotten", daemon=True).start()


    def test_leaves_a_window(qtbot) -> None:
        from PySide6 import QtWidgets

        window = QtWidgets.QLabel("left open")
        window.show()
        test_leaves_a_window.kept = window  # alive, shown, owned by nobody


    def test_cleans_up(qtbot) -> None:
        from PySide6 import QtWidgets

        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        stop.set()
        thread.join()
        window = QtWidgets.QLabel("closed")
        qtbot.addWidget(window)
        window.show()
    """
)


def test_a_test_that_leaves_something_behind_fails(tmp_path: Path) -> None:
    result = run_inner_tests(tmp_path, INNER)
    summary = result.stdout.split("short test summary info")[-1]
    assert "4 passed, 3 errors" in summary, result.stdout[-3000:]
    assert "the test left behind: child process" in result.stdout
    assert "the test left behind: thread 'forgotten'" in result.stdout
    assert "the test left behind: window QLabel" in result.stdout
    assert "ERROR ::test_cleans_up" not in summary
