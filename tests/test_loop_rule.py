"""The rule "nothing blocks the engine loop" is enforced (tests/conftest.py): an asyncio
test whose loop is held past the limit fails, unless it says why it may."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.inner_suite import run_inner_tests

INNER = textwrap.dedent(
    """
    import asyncio
    import time

    import pytest


    async def test_holds_the_loop() -> None:
        time.sleep(0.4)  # what a file hash or an import on the loop does
        await asyncio.sleep(0)


    @pytest.mark.blocks_loop("this one says why")
    async def test_excused() -> None:
        time.sleep(0.4)
        await asyncio.sleep(0)


    async def test_yields_in_time() -> None:
        await asyncio.to_thread(time.sleep, 0.4)  # the same work, on a worker thread
    """
)


def test_a_test_that_holds_its_loop_fails(tmp_path: Path) -> None:
    result = run_inner_tests(tmp_path, INNER)
    # The blocking test's body passes; its teardown is the error (one per test here).
    summary = result.stdout.split("short test summary info")[-1]
    assert "3 passed, 1 error" in summary, result.stdout[-3000:]
    assert "ERROR ::test_holds_the_loop" in summary
    assert "asyncio: Executing" in result.stdout
    assert "mark the test blocks_loop" in result.stdout
