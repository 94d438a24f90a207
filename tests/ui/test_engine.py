"""The engine bridge: work runs on the engine thread, results come back on the GUI
thread, in order, and a cancel ends a stream cleanly."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.errors import BastionError
from bastion_desktop.ui.engine import Engine, EngineStoppedError, call, stream
from bastion_desktop.ui.qt import QtCore


@pytest.fixture
def engine() -> Iterator[Engine]:
    running = Engine()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def owner(qtbot: QtBot) -> Iterator[QtCore.QObject]:
    parent = QtCore.QObject()
    yield parent
    parent.deleteLater()


def test_run_executes_on_the_engine_thread(engine: Engine) -> None:
    async def where() -> str:
        return threading.current_thread().name

    assert engine.run(where(), timeout=5) == "bastion-engine"
    assert threading.current_thread().name != "bastion-engine"


def test_call_delivers_the_result_on_the_gui_thread(
    engine: Engine, owner: QtCore.QObject, qtbot: QtBot
) -> None:
    seen: list[tuple[object, bool]] = []
    gui = threading.current_thread()

    async def work() -> int:
        await asyncio.sleep(0.01)
        return 42

    handle = call(
        engine,
        work(),
        owner,
        on_result=lambda r: seen.append((r, gui is threading.current_thread())),
    )
    with qtbot.waitSignal(handle.succeeded, timeout=5000):
        pass
    assert seen == [(42, True)]


def test_call_reports_a_user_error_as_the_exception(
    engine: Engine, owner: QtCore.QObject, qtbot: QtBot
) -> None:
    async def work() -> None:
        raise BastionError("The disk is full.")

    errors: list[object] = []
    handle = call(engine, work(), owner, on_error=errors.append)
    with qtbot.waitSignal(handle.failed, timeout=5000):
        pass
    assert len(errors) == 1
    assert isinstance(errors[0], BastionError)
    assert str(errors[0]) == "The disk is full."


def test_stream_relays_every_item_in_order_on_the_gui_thread(
    engine: Engine, owner: QtCore.QObject, qtbot: QtBot
) -> None:
    gui = threading.current_thread()
    items: list[int] = []
    on_gui: list[bool] = []

    async def numbers() -> AsyncIterator[int]:
        for number in range(2000):
            yield number
            if number % 100 == 0:
                await asyncio.sleep(0)

    handle = stream(engine, numbers, owner)
    handle.item.connect(
        lambda n: (items.append(n), on_gui.append(threading.current_thread() is gui))
    )
    with qtbot.waitSignal(handle.finished, timeout=10000):
        pass
    assert items == list(range(2000))
    assert all(on_gui)


def test_stream_failure_arrives_after_the_items_before_it(
    engine: Engine, owner: QtCore.QObject, qtbot: QtBot
) -> None:
    items: list[str] = []

    async def breaks() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        raise BastionError("The model stopped working.")

    handle = stream(engine, breaks, owner)
    handle.item.connect(items.append)
    with qtbot.waitSignal(handle.failed, timeout=5000) as blocker:
        pass
    assert items == ["a", "b"]
    assert str(blocker.args[0]) == "The model stopped working."


def test_cancel_stops_the_iterating_task_and_finishes(
    engine: Engine, owner: QtCore.QObject, qtbot: QtBot
) -> None:
    started = threading.Event()
    cleaned_up = threading.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            number = 0
            while True:
                started.set()
                yield number
                number += 1
                await asyncio.sleep(0.005)
        finally:
            cleaned_up.set()

    handle = stream(engine, endless, owner)
    assert started.wait(5)
    with qtbot.waitSignal(handle.finished, timeout=5000):
        handle.cancel()
    assert cleaned_up.wait(5)
    assert handle.cancelled


def test_stop_cancels_pending_work_and_refuses_more() -> None:
    engine = Engine()
    engine.start()
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    future = engine.submit(forever())
    engine.stop(timeout=5)
    assert cancelled.is_set()
    assert future.cancelled()
    coro = asyncio.sleep(0)
    with pytest.raises(EngineStoppedError):
        engine.submit(coro)


def test_work_a_slot_starts_after_the_engine_stopped_is_dropped(
    qtbot: QtBot, owner: QtCore.QObject
) -> None:
    """What a late result does as the app closes (the starter's check ending after the
    window closed, then listing the models): neither callback, and nothing raised into
    the slot, where the app's hook would open a crash dialog."""
    engine = Engine()
    engine.start()
    engine.stop(timeout=5)
    seen: list[object] = []
    handle = call(engine, asyncio.sleep(0, "late"), owner, seen.append, seen.append)
    qtbot.wait(50)
    assert handle.finished
    assert handle.future is None
    assert seen == []
