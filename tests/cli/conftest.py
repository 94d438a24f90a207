from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BASTION = Path(sys.executable).with_name("bastion")

RunBastion = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def bastion(cli_env: dict[str, str]) -> RunBastion:
    """Runs the installed `bastion` command as a user would, in the test's own home."""

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BASTION), *args],
            env=cli_env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    return run
