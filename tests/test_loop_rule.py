"""The rule "nothing blocks the engine loop" is enforced (tests/conftest.py): an asyncio
test whose loop is held past the limit fails, unless it says why it may."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.inner_suite import run_inner_tests

INNER = textwrap.dedent(
    """
    import asyncio
    import gc
    import hashlib
    import time

    import pytest


    def compute(seconds: float) -> None:
        \"\"\"What a file hash or an import on the loop does: the thread's own CPU.\"\"\"
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            hashlib.sha256(bytes(4096)).digest()


    async def test_holds_the_loop() -> None:
        compute(0.4)
        await asyncio.sleep(0)


    async def test_waits_on_the_loop() -> None:
        time.sleep(1.2)  # no CPU, but far longer than any wait for the GIL
        await asyncio.sleep(0)


    @pytest.mark.blocks_loop("this one says why")
    async def test_excused() -> None:
        compute(0.4)
        await asyncio.sleep(0)


    async def test_yields_in_time() -> None:
        await asyncio.to_thread(compute, 0.4)  # the same work, on a worker thread


    async def test_a_short_wait_is_not_a_hold() -> None:
        time.sleep(0.4)  # a GIL held elsewhere looks like this from the loop's thread
        await asyncio.sleep(0)


    async def test_the_garbage_collector_is_not_a_hold() -> None:
        # A big heap, built off the loop; then collector passes on it, as a long test
        # session's heap gets them wherever an allocation makes one due.
        heap = await asyncio.to_thread(lambda: [[i] for i in range(200_000)])
        end = time.thread_time() + 0.4
        while time.thread_time() < end:
            gc.collect()
        await asyncio.sleep(0)
        assert heap
    """
)


def test_a_test_that_holds_its_loop_fails(tmp_path: Path) -> None:
    result = run_inner_tests(tmp_path, INNER)
    # The blocking test's body passes; its teardown is the error (one per test here).
    summary = result.stdout.split("short test summary info")[-1]
    assert "6 passed, 2 errors" in summary, result.stdout[-3000:]
    assert "ERROR ::test_holds_the_loop" in summary
    assert "ERROR ::test_waits_on_the_loop" in summary
    assert "seconds of the loop thread's CPU" in result.stdout
    assert "asyncio: Executing" in result.stdout
    assert "mark the test blocks_loop" in result.stdout
