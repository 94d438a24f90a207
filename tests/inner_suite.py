"""Running a small test file under this suite's own conftest (its rules), in a child
pytest: how the rule tests show that a rule fails a test that breaks it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def run_inner_tests(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    inner = tmp_path / "test_inner.py"
    inner.write_text(source, encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "--rootdir",
            str(REPOSITORY),
            "-c",
            str(REPOSITORY / "pyproject.toml"),
            "-p",
            "no:cacheprovider",
            "-q",
            str(inner),
        ],
        cwd=REPOSITORY,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
