"""Which chat model is loaded: one host at a time, swapped when the conversation asks
for another model or other load options; and models left unused are unloaded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import LoadOptions

log = logging.getLogger(__name__)

# How often the models are looked at: a model unloads at most this late.
IDLE_CHECK_SECONDS = 30.0


class ChatModelSlot:
    """Holds the chat model's host; loading another model closes the previous one, so a
    small machine never holds two chat models in memory.

    Every reply takes `turn()` first: the window's chats and the local API's requests
    share one slot, and a reply must never see its model swapped out under it by
    another's. Turns are served in the order they were asked for."""

    def __init__(self, options: LoadOptions | None = None) -> None:
        self.options = options or LoadOptions()
        self._host: ModelHost | None = None
        self._turn: asyncio.Lock | None = None

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the model for one reply (created on first use: on the loop using it)."""
        if self._turn is None:
            self._turn = asyncio.Lock()
        async with self._turn:
            yield

    @property
    def host(self) -> ModelHost | None:
        return self._host

    def holds(self, path: Path) -> bool:
        """Whether `path` is loaded, with `options`: a reply from it needs no load first."""
        host = self._host
        return (
            host is not None
            and host.path == path
            and host.options == self.options
            and host.is_loaded
        )

    async def host_for(self, path: Path) -> ModelHost:
        """The host of `path`, loaded; loaded again first when `options` changed since
        (Settings saved: another device, context length...)."""
        if self._host is not None and self._host.path == path:
            self._host.options = self.options
            await self._host.load()
            return self._host
        await self.close()
        # Visible while it loads, so that a cancel can reach it.
        self._host = ModelHost(path, self.options)
        try:
            await self._host.load()
        except BaseException:
            self._host = None
            raise
        return self._host

    async def close(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            await host.close()


async def unload_idle(
    hosts: Iterable[ModelHost], seconds: float, now: float | None = None
) -> list[ModelHost]:
    """Unload every model that has done nothing for `seconds` (0: none ever is); returns
    the hosts stopped. Their next request loads them again, as a first one does."""
    if seconds <= 0:
        return []
    stopped = []
    for host in list(hosts):
        try:
            if await host.unload_if_idle(seconds, now):
                stopped.append(host)
        except Exception:  # one that would not stop is stopped at exit; the others go on
            log.warning("could not unload %s", host.path.name, exc_info=True)
    return stopped


async def keep_unloading_idle(
    unload: Callable[[], Awaitable[object]], every: float = IDLE_CHECK_SECONDS
) -> None:
    """Until cancelled: `unload()` (`AppContext.unload_idle_models`) every `every`
    seconds, so that a window or server left open does not hold gigabytes of RAM and GPU
    memory for models nobody uses (the setting "Unload idle models"; Ollama's keep-alive)."""
    while True:
        await asyncio.sleep(every)
        try:
            await unload()
        except Exception:  # the settings or the models could not be read: next time
            log.warning("could not look for idle models", exc_info=True)
