"""The bridge between the GUI thread and the engine thread.

`Engine` runs one asyncio loop on a daemon thread: the chat service, the guardrail
engine (NeMo Guardrails is asyncio-based) and the store's single writer all live on it,
so nothing slow ever runs on the GUI thread (DESIGN.md, "Threads and processes").

`call` and `stream` hand work to that loop and bring results back as Qt signals. The
engine thread never emits a widget-facing signal itself: it emits into a relay object
that lives on the GUI thread through a queued connection, and the `Call` or `Stream`
re-emits from there. Tests that `waitSignal` on them therefore never race a worker
thread's deliveries (pytest-qt's known trap).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from bastion_desktop.ui.qt import QtCore, Signal

log = logging.getLogger(__name__)

T = TypeVar("T")

_QUEUED = QtCore.Qt.ConnectionType.QueuedConnection


class EngineStoppedError(RuntimeError):
    """Work was submitted to an engine that is not running (a bug in the caller)."""


class Engine:
    """One asyncio loop on a daemon thread: ChatService, the guardrail engine, the
    store's writer."""

    def __init__(self, name: str = "bastion-engine") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None and self._thread is not None and self._thread.is_alive()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise EngineStoppedError("the engine is not running")
        return self._loop

    def start(self) -> None:
        if self.running:
            return
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        # A daemon thread: a hung model host must never keep the app from quitting.
        self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel pending work, let it finish its cleanup, and close the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def wind_down() -> None:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout)
            await loop.shutdown_asyncgens()

        if thread.is_alive():
            done = asyncio.run_coroutine_threadsafe(wind_down(), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                done.result(timeout + 1.0)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
        if not thread.is_alive():
            loop.close()
        else:  # pragma: no cover - only a wedged task gets here
            log.warning("the engine thread did not stop within %.1f s", timeout)
        self._loop, self._thread = None, None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `coro` on the engine loop; callable from any thread."""
        if not self.running:
            coro.close()
            raise EngineStoppedError("the engine is not running")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` and wait for it. Blocks the caller: only for startup, shutdown and
        tests, never from a GUI slot."""
        return self.submit(coro).result(timeout)


class _Relay(QtCore.QObject):
    """Lives on the GUI thread; the engine thread emits into it (queued)."""

    item = Signal(object)
    done = Signal(object, object)  # (result, error): one of them is None


class Call(QtCore.QObject):
    """One coroutine on the engine loop; its outcome is re-emitted on the GUI thread."""

    succeeded = Signal(object)
    failed = Signal(object)  # the exception (a BastionError: show its sentence)

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._relay = _Relay(self)
        self._relay.done.connect(self._finish, _QUEUED)
        self.future: concurrent.futures.Future[Any] | None = None
        self.finished = False

    def _deliver(self, future: concurrent.futures.Future[Any]) -> None:
        # On the engine thread: only ever emit into the GUI-affine relay.
        if future.cancelled():
            error: BaseException | None = asyncio.CancelledError()
            result = None
        else:
            error = future.exception()
            result = None if error is not None else future.result()
        with contextlib.suppress(RuntimeError):  # the relay was deleted with its parent
            self._relay.done.emit(result, error)

    def _finish(self, result: object, error: object) -> None:
        self.finished = True
        if error is not None:
            self.failed.emit(error)
        else:
            self.succeeded.emit(result)

    def cancel(self) -> None:
        if self.future is not None:
            self.future.cancel()


def call(
    engine: Engine,
    coro: Coroutine[Any, Any, Any],
    parent: QtCore.QObject,
    on_result: Callable[[Any], object] | None = None,
    on_error: Callable[[BaseException], object] | None = None,
) -> Call:
    """Run `coro` on the engine; `on_result` or `on_error` runs on the GUI thread.

    The engine stops only as the app closes. Work that a late result starts after that
    (the starter's check ending just after the window closed, then listing the models)
    is dropped, neither result nor error: raised from a slot, it opened a crash dialog
    over a closing app."""
    handle = Call(parent)
    if on_result is not None:
        handle.succeeded.connect(on_result)
    if on_error is not None:
        handle.failed.connect(on_error)
    else:
        handle.failed.connect(_log_unhandled)
    try:
        handle.future = engine.submit(coro)
    except EngineStoppedError:
        log.debug("the app is closing: work started after the engine stopped is dropped")
        handle.finished = True
        return handle
    handle.future.add_done_callback(handle._deliver)
    return handle


def _log_unhandled(error: object) -> None:
    """A failure of work started without a handler of its own: a bug by definition (work
    that can fail for the user's reasons says so where it is started)."""
    from bastion_desktop.ui.errors import is_user_error, sentence_for

    sentence = sentence_for(error, "Background work")
    if sentence and is_user_error(error):  # nobody shows it: the log keeps it
        log.warning("background work stopped: %s", sentence)


class Stream(QtCore.QObject):
    """Relays an async iterator's items to the GUI thread, in order."""

    item = Signal(object)
    finished = Signal()
    failed = Signal(object)

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._relay = _Relay(self)
        # One queued connection from one thread keeps the items in order.
        self._relay.item.connect(self.item.emit, _QUEUED)
        self._relay.done.connect(self._finish, _QUEUED)
        self.future: concurrent.futures.Future[None] | None = None
        self.done = False
        self.cancelled = False
        self._ended = False
        self._end_lock = threading.Lock()

    async def _pump(self, make: Callable[[], AsyncIterator[Any]]) -> None:
        error: BaseException | None = None
        try:
            async for value in make():
                if self._ended:  # cancelled: nothing may follow `finished`
                    break
                self._relay.item.emit(value)
        except asyncio.CancelledError:
            pass  # a cancel is a normal end: the service kept what was written
        except Exception as exc:
            error = exc
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        """Emit the end exactly once: from the pump, or from the future's callback when
        a cancel came before the pump ever ran."""
        with self._end_lock:
            if self._ended:
                return
            self._ended = True
        with contextlib.suppress(RuntimeError):  # the relay was deleted with its parent
            self._relay.done.emit(None, error)

    def _on_future_done(self, future: concurrent.futures.Future[None]) -> None:
        if future.cancelled():
            self._end(None)
        elif (error := future.exception()) is not None:
            self._end(error)

    def _finish(self, _result: object, error: object) -> None:
        self.done = True
        if error is not None:
            self.failed.emit(error)
        else:
            self.finished.emit()

    def cancel(self) -> None:
        """Cancel the iterating task on the engine loop; `finished` still follows."""
        self.cancelled = True
        if self.future is not None:
            self.future.cancel()


def stream(
    engine: Engine, make: Callable[[], AsyncIterator[Any]], parent: QtCore.QObject
) -> Stream:
    """Iterate `make()` on the engine loop, each item re-emitted on the GUI thread."""
    handle = Stream(parent)
    handle.future = engine.submit(handle._pump(make))
    handle.future.add_done_callback(handle._on_future_done)
    return handle
