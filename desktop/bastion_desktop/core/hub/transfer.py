"""One file from the Hub into a partial file: ranged GETs that resume, stall detection,
retries, and the checksums computed as the bytes arrive.

Why not `hf_hub_download`: a transfer under way cannot be paused or cancelled (a thread
cannot be interrupted), progress comes only through a tqdm class, stalls are a fixed 10 s
read timeout with fixed retries, it writes into its own cache layout, and with `hf_xet`
installed it hands big files to a Rust agent none of this can reach.

Why not huggingface_hub's httpx client for the bytes either: httpcore reads 64 KiB at a
time through h11 and anyio, which tops out at 150-400 MB/s here while the same server
gives a plain GET 1.2 GB/s; with a sha256 to compute as well, a download would run at a
fraction of the link on a fast network. So huggingface_hub does what it is good at, the
resolution: `get_hf_file_metadata` sends the HEAD with the user's token, follows the
Hub's redirects only while they stay on the Hub, maps 401/403/404 to its errors, and
gives the CDN location, size and ETag. The bytes then come from that location through the
standard library's `http.client` on a worker thread, 1 MiB reads, written as they come,
while a second thread hashes them. The socket's timeout is the stall detector (no byte
for `stall_seconds`); shutting the socket down from the event loop ends a transfer at
once for a pause or a cancel. Proxies from the environment are honoured (CONNECT for
HTTPS), and the token is sent only to the Hub's own host, never to the CDN.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hashlib
import http.client
import logging
import queue
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

from bastion_desktop.core.files import disk_full_sentence
from bastion_desktop.core.hub.errors import DownloadFailedError, HubError, NotEnoughSpaceError
from bastion_desktop.core.hub.online import http_status_error, hub_error, is_online_here

log = logging.getLogger(__name__)

READ_BYTES = 1024 * 1024
HASH_QUEUE_CHUNKS = 32  # at most 32 MiB waiting for the hasher
MAX_REDIRECTS = 5
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class TransferSettings:
    stall_seconds: float = 30.0  # no byte for this long: the connection is dropped and retried
    # A connection that trickles (a byte now and then, so never "stalled") is dropped and
    # retried when less than this arrived over the last `slow_window_seconds`.
    min_bytes_per_second: float = 1024.0
    slow_window_seconds: float = 60.0
    max_retries: int = 6  # consecutive failed attempts (an attempt that made progress resets it)
    retry_delay_seconds: float = 1.0  # doubled at each consecutive failure
    max_retry_delay_seconds: float = 30.0
    progress_interval_seconds: float = 0.25


@dataclass(frozen=True)
class RetryNotice:
    attempt: int  # 1 for the first retry
    max_attempts: int
    reason: str
    delay_seconds: float
    resume_from: int


@dataclass(frozen=True)
class TransferResult:
    sha256: str
    git_sha1: str | None  # the git blob id, for a file kept in git rather than LFS


@dataclass(frozen=True)
class FileRequest:
    """What to fetch: the Hub's /resolve URL, the headers for the Hub, the size."""

    url: str
    headers: dict[str, str]
    size: int
    repo: str
    file: str
    git_blob: bool = False  # verify by git blob id (small files kept in git)


class ByteCount:
    """How many bytes of the file are on disk: written by the transfer's worker thread
    (its only writer), read by anyone at any time for progress."""

    def __init__(self) -> None:
        self.value = 0


class _Retryable(Exception):
    """This attempt failed in a way another attempt may not: say why."""


class _WriteError(Exception):
    """Writing the partial file failed: the disk's fault, not the network's."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Hasher:
    """Hashes, on its own thread, the bytes the reader hands it, in order."""

    _RESET = b""

    def __init__(self, request: FileRequest) -> None:
        self._git_size = request.size if request.git_blob else None
        self._queue: queue.Queue[bytes | None] = queue.Queue(HASH_QUEUE_CHUNKS)
        self._abandoned = False
        self._reset()
        self._thread = threading.Thread(target=self._run, name="download-hash", daemon=True)
        self._thread.start()

    def _reset(self) -> None:
        self.sha256 = hashlib.sha256()
        self.git: hashlib._Hash | None = None
        if self._git_size is not None:
            # A file kept in git is named by the sha1 of "blob <size>\0" + its bytes.
            header = f"blob {self._git_size}\0".encode()
            self.git = hashlib.sha1(header, usedforsecurity=False)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._abandoned:
                continue
            if data is self._RESET:
                self._reset()
                continue
            self.sha256.update(data)
            if self.git is not None:
                self.git.update(data)

    def feed(self, data: bytes) -> None:
        if data:
            self._queue.put(data)

    def reset(self) -> None:
        self._queue.put(self._RESET)

    def finish(self) -> TransferResult:
        self._queue.put(None)
        self._thread.join()
        return TransferResult(self.sha256.hexdigest(), self.git.hexdigest() if self.git else None)

    def abandon(self) -> None:
        """Let the thread end without hashing what is left (a failed or paused transfer)."""
        self._abandoned = True
        self._queue.put(None)


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi
    except ImportError:  # the system's certificates, then
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def _connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """A connection for `url` (through the environment's proxy, if any) and the target
    to put in the request line."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    proxy = None if urllib.request.proxy_bypass(host) else urllib.request.getproxies().get(
        parts.scheme
    )  # fmt: skip
    context = _ssl_context() if parts.scheme == "https" else None
    if proxy is None:
        if context is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=context), target
        return http.client.HTTPConnection(host, port, timeout=timeout), target
    via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    headers = {}
    if via.username:
        credentials = f"{via.username}:{via.password or ''}".encode()
        headers["Proxy-Authorization"] = f"Basic {base64.b64encode(credentials).decode()}"
    if context is not None:
        tunnel = http.client.HTTPSConnection(
            via.hostname or "", via.port, timeout=timeout, context=context
        )
        tunnel.set_tunnel(host, port, headers=headers)
        return tunnel, target
    plain = http.client.HTTPConnection(via.hostname or "", via.port, timeout=timeout)
    return plain, url  # a plain-HTTP proxy takes the absolute URL


class _Attempt:
    """One GET of the rest of the file, run on a worker thread; `abort()` (from any
    thread) ends it at once by shutting its socket down."""

    def __init__(
        self, location: str, headers: dict[str, str], hub_host: str, settings: TransferSettings
    ) -> None:
        self.location = location
        self.headers = headers
        self.hub_host = hub_host
        self.timeout = settings.stall_seconds
        self.settings = settings
        self.aborted = False
        self.off_hub = False  # the address in use is not the Hub's own (a CDN)
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    def _open(self, url: str, start: int) -> http.client.HTTPResponse:
        # The token goes to the Hub only: a redirect to a CDN is signed already.
        same_host = urlsplit(url).hostname == self.hub_host
        headers = {k: v for k, v in self.headers.items()
                   if same_host or k.lower() != "authorization"}  # fmt: skip
        headers["Accept-Encoding"] = "identity"
        if start:
            headers["Range"] = f"bytes={start}-"
        self.off_hub = not same_host
        connection, target = _connect(url, self.timeout)
        with self._lock:
            if self.aborted:
                raise _Retryable("stopped")
            self._connection = connection
        connection.request("GET", target, headers=headers)
        return connection.getresponse()

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def response(self, start: int) -> http.client.HTTPResponse:
        url = self.location
        for _ in range(MAX_REDIRECTS):
            response = self._open(url, start)
            if response.status not in (301, 302, 303, 307, 308):
                return response
            location = response.getheader("Location")
            self.close()
            if not location:
                break
            url = urljoin(url, location)
        raise _Retryable("the server kept redirecting")


def _resolve(request: FileRequest, timeout: float) -> str:
    """The URL the bytes come from (blocking): huggingface_hub's HEAD on the Hub."""
    from huggingface_hub import get_hf_file_metadata

    metadata = get_hf_file_metadata(request.url, timeout=timeout, headers=request.headers)
    if metadata.size is not None and metadata.size != request.size:
        raise HubError(
            f"{request.file} changed on the Hub while it was being downloaded; start again."
        )
    return metadata.location


class _PartialFile:
    """The partial file on disk, fed by the reader thread."""

    def __init__(
        self, path: Path, hasher: _Hasher, count: ByteCount, stop: threading.Event
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.hasher = hasher
        self.count = count
        self.handle: BinaryIO = path.open("a+b", buffering=0)
        self.size = 0
        self.handle.seek(0)
        # What an earlier session wrote is hashed again (seconds for a big partial file).
        while not stop.is_set() and (block := self.handle.read(READ_BYTES * 4)):
            self.hasher.feed(block)
            self.size += len(block)
        count.value = self.size

    def write(self, data: bytes) -> None:
        try:
            self.handle.write(data)
        except OSError as error:
            raise _WriteError(error) from error
        self.hasher.feed(data)
        self.size += len(data)
        self.count.value = self.size

    def restart(self) -> None:
        try:
            self.handle.truncate(0)
            self.handle.seek(0)
        except OSError as error:
            raise _WriteError(error) from error
        self.hasher.reset()
        self.size = self.count.value = 0

    def close(self) -> None:
        self.handle.close()


def _stream(attempt: _Attempt, partial: _PartialFile, request: FileRequest) -> None:
    """Bring the partial file up to the full size in one GET (blocking)."""
    start = partial.size
    try:
        response = attempt.response(start)
        status = response.status
        if status == 416 and start:
            partial.restart()  # what we hold is not a prefix of this file
            return
        if status in _RETRY_STATUSES:
            raise _Retryable(f"the server answered HTTP {status}")
        if status in (401, 403) and attempt.off_hub:
            # A CDN refusing its own signed address: it expired (a long pause). The
            # Hub's answer about access came with the resolution, which is redone.
            raise _Retryable("the download address expired")
        if status >= 400:
            raise http_status_error(status, response.headers, repo=request.repo, file=request.file)
        if start and status != 206:
            log.info("the server ignored the Range request for %s; starting over", request.file)
            partial.restart()
        elif start and not (response.getheader("Content-Range") or "").startswith(
            f"bytes {start}-"
        ):
            raise DownloadFailedError(
                f"The server sent the wrong part of {request.file}; try again later."
            )
        _read_body(attempt, response, partial, request)
    except TimeoutError as error:
        raise _Retryable("stalled") from error
    except ssl.SSLCertVerificationError as error:
        raise DownloadFailedError(
            f"The download server's certificate could not be verified ({error.verify_message}); "
            "check the computer's clock, or a proxy that intercepts secure connections."
        ) from error
    except (OSError, http.client.HTTPException) as error:
        if attempt.aborted:
            raise _Retryable("stopped") from error
        if isinstance(error, ConnectionRefusedError | socket.gaierror):
            raise _Retryable("the Hub could not be reached") from error
        raise _Retryable("the connection was lost") from error
    finally:
        attempt.close()


def _read_body(
    attempt: _Attempt,
    response: http.client.HTTPResponse,
    partial: _PartialFile,
    request: FileRequest,
) -> None:
    window = _RateWindow(attempt.settings)
    while partial.size < request.size:
        if attempt.aborted:  # stopped before the socket existed to be shut down
            raise _Retryable("stopped")
        data = response.read1(READ_BYTES)
        window.add(len(data))
        if not data:
            raise _Retryable("the connection was lost")
        if partial.size + len(data) > request.size:
            raise DownloadFailedError(
                f"The server sent more bytes than {request.file} has; try again later."
            )
        partial.write(data)


async def fetch_to_partial(
    request: FileRequest,
    partial_path: Path,
    *,
    settings: TransferSettings,
    count: ByteCount,
    on_retry: Callable[[RetryNotice], None],
) -> TransferResult:
    """Bring `partial_path` up to the file's size, resuming from what it holds, and
    return the checksums of the whole file; `count` follows the bytes on disk as they
    arrive. Cancelling the task stops the transfer at once and keeps what arrived."""
    if not is_online_here():
        # The bytes bypass huggingface_hub's offline gate, so this is the gate.
        raise HubError("Bastion is working offline; downloads happen only when asked for.")
    hasher = _Hasher(request)
    stop = threading.Event()
    opening = asyncio.get_running_loop().run_in_executor(
        None, _PartialFile, partial_path, hasher, count, stop
    )
    try:
        partial = await asyncio.shield(opening)
    except BaseException as error:
        hasher.abandon()
        if isinstance(error, asyncio.CancelledError):
            stop.set()  # stop hashing what is there, and close the file once open
            with contextlib.suppress(Exception):
                (await opening).close()
        if isinstance(error, OSError):
            raise _disk_error(error, partial_path) from error
        raise
    hub_host = urlsplit(request.url).hostname or ""
    try:
        failures = 0
        location: str | None = None
        while partial.size < request.size:
            start = partial.size
            try:
                if location is None:
                    location = await _resolve_or_retry(request, settings.stall_seconds)
                attempt = _Attempt(location, request.headers, hub_host, settings)
                await _run_attempt(attempt, partial, request)
                continue
            except _Retryable as error:
                reason = _describe(str(error), settings)
            # An attempt that moved the file forward starts the count again, unless it
            # only trickled: a link that never gets faster must end in a sentence.
            moved = partial.size > start and reason != _describe(_TOO_SLOW, settings)
            failures = 1 if moved else failures + 1
            if failures > settings.max_retries:
                raise DownloadFailedError(
                    f"The download of {request.file} stopped: {reason}, {settings.max_retries} "
                    f"times in a row. It resumes from {_percent(partial.size, request.size)} "
                    "when you try again."
                )
            location = None  # a signed CDN address may have expired: resolve again
            delay = min(settings.max_retry_delay_seconds,
                        settings.retry_delay_seconds * 2 ** (failures - 1))  # fmt: skip
            log.warning("download of %s: %s; retrying in %.1fs", request.file, reason, delay)
            on_retry(RetryNotice(failures, settings.max_retries, reason, delay, partial.size))
            await asyncio.sleep(delay)
    except BaseException as error:
        # Closing is instant and must not wait: a second cancel would skip an await.
        partial.close()
        hasher.abandon()
        if isinstance(error, _WriteError):
            raise _disk_error(error.error, partial_path) from error
        raise
    partial.close()
    return await asyncio.to_thread(hasher.finish)


async def _resolve_or_retry(request: FileRequest, head_seconds: float) -> str:
    """Resolve the download address: a 401/403/404 is final, a network error is not."""
    import httpx

    try:
        return await asyncio.to_thread(_resolve, request, head_seconds)
    except HubError:
        raise
    except httpx.TimeoutException as error:
        raise _Retryable("stalled") from error
    except httpx.TransportError as error:
        raise _Retryable("the Hub could not be reached") from error
    except Exception as error:  # huggingface_hub's HTTP errors (OSError subclasses)
        raise hub_error(error, repo=request.repo, file=request.file) from error


async def _run_attempt(attempt: _Attempt, partial: _PartialFile, request: FileRequest) -> None:
    """Run one attempt on a worker thread; if this task is cancelled (pause, cancel),
    stop the attempt and wait for the thread, so the partial file is left consistent."""
    future = asyncio.get_running_loop().run_in_executor(None, _stream, attempt, partial, request)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        attempt.abort()
        with contextlib.suppress(Exception):
            await future
        raise


class _RateWindow:
    """Counts the bytes of the current window; raises when a whole window brought
    fewer than the minimum rate (a trickle the stall timeout never sees)."""

    def __init__(self, settings: TransferSettings) -> None:
        self.settings = settings
        self.started = time.monotonic()
        self.bytes = 0

    def add(self, count: int) -> None:
        self.bytes += count
        elapsed = time.monotonic() - self.started
        if elapsed < self.settings.slow_window_seconds:
            return
        if self.bytes < self.settings.min_bytes_per_second * elapsed:
            raise _Retryable(_TOO_SLOW)
        self.started, self.bytes = time.monotonic(), 0


_TOO_SLOW = "too slow"


def _describe(reason: str, settings: TransferSettings) -> str:
    if reason == "stalled":
        return f"no data arrived for {settings.stall_seconds:g} s (stalled)"
    if reason == _TOO_SLOW:
        return (
            f"data arrived slower than {settings.min_bytes_per_second / 1024:g} KiB/s for "
            f"{settings.slow_window_seconds:g} s"
        )
    return reason


def _percent(done: int, total: int) -> str:
    return f"{100 * done / total:.0f}%" if total else "the start"


def _disk_error(error: OSError, path: Path) -> Exception:
    if error.errno == errno.ENOSPC:
        return NotEnoughSpaceError(
            disk_full_sentence(path.parent).replace("nothing was lost", "the download resumes")
        )
    return DownloadFailedError(f"Could not write {path}: {error.strerror or error}.")
