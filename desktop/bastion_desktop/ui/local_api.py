"""The local API as the window runs it: one `ApiServer` on the engine loop, over the
window's own chat model slot (every reply, the window's and each client's, takes its
turn on it), started and stopped to match the settings (`settings.api`) and the
administrator's policy (AllowLocalApi).

`LocalApiController` lives on the GUI thread and owns the signals the Server panel and
the tests wait on. Starting and stopping run on the engine loop, one after another in
the order asked. The server reports each request on the engine thread; the report is
emitted into a relay that lives on the GUI thread, through a queued connection, as
engine.py does: nothing here touches a widget from the engine thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.policy import PolicyRefusedError
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.qt import QtCore, Signal

if TYPE_CHECKING:
    from bastion_desktop.api.server import ApiServer, RequestRecord
    from bastion_desktop.api.tokens import ApiTokens
    from bastion_desktop.ui.services import AppServices

log = logging.getLogger(__name__)

_QUEUED = QtCore.Qt.ConnectionType.QueuedConnection
RECENT_REQUESTS = 50  # as many as the server itself keeps
CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SeenRequest:
    """A request the server answered, and when it finished (the server's record has no
    time of its own)."""

    at: float  # time.time() when the answer went out
    record: RequestRecord
    in_progress: int  # requests still being answered or waiting, at that moment


class _Relay(QtCore.QObject):
    """Lives on the GUI thread; the engine thread emits into it."""

    seen = Signal(object)  # a SeenRequest
    in_progress = Signal(int)


class LocalApiController(QtCore.QObject):
    """Runs the local API server while the settings want it and the policy allows it."""

    started = Signal(str)  # the address clients use (server.url)
    stopped = Signal()
    failed = Signal(str)  # why it is not running, as a sentence
    changed = Signal()  # any of the above, or a change in flight began
    request_seen = Signal(object)  # a SeenRequest, newest
    in_progress_changed = Signal(int)

    def __init__(self, services: AppServices) -> None:
        super().__init__(services)
        self._services = services
        self._relay = _Relay(self)
        self._relay.seen.connect(self._seen, _QUEUED)
        self._relay.in_progress.connect(self._count, _QUEUED)
        self.url: str | None = None  # while it runs
        self.problem = ""  # why the last start failed, until the next change
        self.recent: deque[SeenRequest] = deque(maxlen=RECENT_REQUESTS)  # newest first
        self.last_block: SeenRequest | None = None
        self.in_progress = 0
        self._pending = 0  # starts and stops asked for, not yet done
        self._tokens: ApiTokens | None = None
        # Only ever touched on the engine loop:
        self._server: ApiServer | None = None
        self._lock = asyncio.Lock()  # binds to the engine loop at first use
        services.settings_changed.connect(lambda _settings: self.apply())

    # -- what is wanted ------------------------------------------------------------------------

    @property
    def refusal(self) -> str | None:
        """Why the policy keeps the server off, as the sentence `bastion serve` says;
        None when it may run."""
        policy = self._services.context.policy
        if policy.local_api_allowed:
            return None
        try:
            policy.require_local_api()
        except PolicyRefusedError as refused:
            return str(refused)
        return "Your organization does not allow Bastion's local API."  # pragma: no cover

    @property
    def wanted(self) -> bool:
        return self._services.context.settings.api.enabled and self.refusal is None

    @property
    def running(self) -> bool:
        return self.url is not None

    @property
    def busy(self) -> bool:
        """A start or stop is in flight."""
        return self._pending > 0

    @property
    def tokens(self) -> ApiTokens:
        """The client tokens; the server reads the same file (any thread may use it)."""
        if self._tokens is None:
            from bastion_desktop.api.tokens import ApiTokens

            self._tokens = ApiTokens(self._services.context.api_tokens_file)
        return self._tokens

    def resume(self) -> None:
        """At the app's start: serve again if the user left the server on (and the
        policy allows it). Nothing is imported or opened otherwise."""
        if self.wanted:
            self.apply()

    def set_enabled(self, on: bool) -> None:
        """The Server panel's switch: saved in the settings (so the server starts again
        with the app), which start or stop it. Raises a BastionError (an unwritable
        settings file) with nothing changed."""
        self._save(enabled=on)

    def set_port(self, port: int) -> None:
        """A new port; a running server moves to it."""
        self._save(port=port)

    def set_origins(self, origins: tuple[str, ...]) -> None:
        """The web origins the user allows (the administrator's list, when set, wins)."""
        self._save(allowed_origins=origins)

    def _save(self, **changes: Any) -> None:
        settings = self._services.context.settings
        api = settings.api.model_copy(update=changes)
        if api != settings.api:
            self._services.update_settings(settings.model_copy(update={"api": api}))

    def apply(self) -> None:
        """Make the server match the settings and the policy, on the engine loop."""
        if not self._services.engine.running:
            return
        on = self.wanted
        if not (on or self.running or self.busy):
            # Off and staying off: nothing to import, nothing to ask the engine, and an
            # earlier failure to start is no longer news.
            self.problem = ""
            self.changed.emit()
            return
        port = self._services.context.settings.api.port
        self._pending += 1
        if on:
            self.problem = ""
        self.changed.emit()
        handle = call(
            self._services.engine, self._settle(on, port), self, self._settled, self._failed
        )
        # One per change of settings while it runs: not kept once answered.
        handle.succeeded.connect(handle.deleteLater)
        handle.failed.connect(handle.deleteLater)

    # -- on the engine loop -----------------------------------------------------------------

    async def _settle(self, on: bool, port: int) -> str | None:
        """Stop, start or move the server as asked; its address when it runs."""
        async with self._lock:
            server = self._server
            if server is not None:
                server.service.context = self._services.context  # the settings in force now
                if not on or server.port != port:
                    self._server = None
                    server.on_request = None
                    await server.close()
                    log.info("local API stopped")
            if on and self._server is None:
                server = self._make_server()
                await server.start(port)
                self._server = server
            return None if self._server is None else self._server.url

    def _make_server(self) -> ApiServer:
        from bastion_desktop.api.server import ApiServer
        from bastion_desktop.api.service import ApiService

        services = self._services
        services.context.policy.require_local_api()  # never started against the policy
        if services.chat is None:
            raise BastionError("The local API needs the chat service, which is not running.")
        service = ApiService(services.context, services.chat.models, services.store)

        def origins() -> tuple[str, ...]:
            # The context of now (it is replaced when the settings change): an origin
            # added in the panel counts from the next request.
            return services.context.api_origins()

        server = ApiServer(service, self.tokens, origins=origins)
        server.on_request = self._report
        return server

    def _report(self, record: RequestRecord) -> None:
        # On the engine thread: only ever emit into the GUI-affine relay.
        busy = 0 if self._server is None else sum(self._server.in_progress.values())
        with contextlib.suppress(RuntimeError):  # the relay was deleted with the app
            self._relay.seen.emit(SeenRequest(time.time(), record, busy))

    def _post_count(self) -> None:
        busy = 0 if self._server is None else sum(self._server.in_progress.values())
        with contextlib.suppress(RuntimeError):
            self._relay.in_progress.emit(busy)

    async def _close(self) -> None:
        async with self._lock:
            server, self._server = self._server, None
            if server is not None:
                server.on_request = None
                await server.close()
                log.info("local API stopped")

    # -- back on the GUI thread ---------------------------------------------------------------

    def _settled(self, url: object) -> None:
        self._pending -= 1
        before, self.url = self.url, url if isinstance(url, str) else None
        if self.url is not None and self.url != before:
            self.started.emit(self.url)
        elif self.url is None and before is not None:
            self.stopped.emit()
        self.changed.emit()

    def _failed(self, error: object) -> None:
        self._pending -= 1
        before, self.url = self.url, None  # a failed move closed the old server first
        if isinstance(error, OSError) and error.strerror and not error.filename:
            sentence = error.strerror + "."  # "Port N on 127.0.0.1 cannot be used (...); ..."
        else:  # a cancellation (the engine stopping as the app closes) says nothing
            sentence = sentence_for(error, "Starting the local API")
        self.problem = sentence
        if before is not None:
            self.stopped.emit()
        if sentence:
            self.failed.emit(sentence)
        self.changed.emit()

    def _seen(self, seen: object) -> None:
        assert isinstance(seen, SeenRequest)
        self.recent.appendleft(seen)
        if seen.record.verdict == "blocked":
            self.last_block = seen
        self._count(seen.in_progress)
        self.request_seen.emit(seen)

    def _count(self, busy: int) -> None:
        if busy != self.in_progress:
            self.in_progress = busy
            self.in_progress_changed.emit(busy)

    def poll_in_progress(self) -> None:
        """Ask the engine how many requests are in progress now (`in_progress_changed`
        follows if that changed). The server reports only the ones that end."""
        if self.running and self._services.engine.running:
            self._services.engine.loop.call_soon_threadsafe(self._post_count)

    def shut_down(self) -> None:
        """Stop the server and wait for it (the app is closing). Blocks: only for
        shutdown."""
        engine = self._services.engine
        if not engine.running:
            return
        try:
            engine.run(self._close(), timeout=CLOSE_TIMEOUT_S)
        except Exception:  # the loop's cancel at stop ends whatever is left
            log.warning("the local API did not stop cleanly", exc_info=True)
        self.url = None
