"""Downloads that never stall silently, are verified, and resume.

A planned download (`download_plan`) is queued, then transferred part by part into
`<models>/.downloads/<sha256>.part` (named by content, so any later download of the
same bytes resumes it, also after a restart). Each part's checksum is computed as the
bytes arrive and compared with the Hub's before anything moves; then every part is
moved into `<models>/<owner>/<repo>/` by an atomic rename, its GGUF metadata is read,
and only then is the model registered. A half-downloaded file is never in the models
folder proper, and never in the registry, so it can never be loaded.

Use a `DownloadManager` from one asyncio loop (the engine loop); the listener gets
plain event dataclasses on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.files import disk_full_sentence, write_atomically
from bastion_desktop.core.hub.catalog import ModelRole
from bastion_desktop.core.hub.download_events import (
    DownloadCancelled,
    DownloadEvent,
    DownloadFailed,
    DownloadFinished,
    DownloadPaused,
    DownloadProgress,
    DownloadQueued,
    DownloadRetrying,
    DownloadStarted,
    DownloadVerifying,
)
from bastion_desktop.core.hub.download_plan import DownloadPlan, PlannedFile, plan_download
from bastion_desktop.core.hub.errors import (
    ChecksumMismatchError,
    DownloadCancelledError,
    DownloadFailedError,
    GgufFormatError,
    HubError,
    NotEnoughSpaceError,
)
from bastion_desktop.core.hub.filenames import format_size, slug
from bastion_desktop.core.hub.gguf_metadata import GgufFile, GgufMetadata, read_gguf_file
from bastion_desktop.core.hub.online import hub_endpoint, hub_error, hub_online
from bastion_desktop.core.hub.transfer import (
    ByteCount,
    FileRequest,
    RetryNotice,
    TransferSettings,
    fetch_to_partial,
)
from bastion_desktop.core.installed_models import ModelPart, ModelRegistry, RegisteredModel

log = logging.getLogger(__name__)

DOWNLOADS_FOLDER = ".downloads"
# GGUF metadata (with a 262k-token vocabulary) takes about 6 MB; read the head early.
HEAD_READ_BYTES = 32 * 1024 * 1024
RATE_WINDOW_SECONDS = 5.0


class DownloadState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class UnfinishedDownload:
    plan: DownloadPlan
    done_bytes: int


class _Rate:
    """Bytes per second over the last few seconds."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > RATE_WINDOW_SECONDS:
            self.samples.popleft()
        first_time, first_done = self.samples[0]
        elapsed = now - first_time
        return max(0.0, (done - first_done) / elapsed) if elapsed > 0 else 0.0


class _PartsProgress:
    """Bytes on disk across the parts of a download, the current part counted live."""

    def __init__(self, on_disk: list[int]) -> None:
        self.on_disk = on_disk  # per part: bytes held before it is transferred
        self.current = -1
        self.count = ByteCount()

    def start(self, index: int) -> ByteCount:
        self.current = index
        self.count = ByteCount()
        self.count.value = self.on_disk[index]
        return self.count

    def on_disk_now(self, index: int) -> int:
        return self.count.value if index == self.current else self.on_disk[index]

    def finish(self, index: int, size: int) -> None:
        self.on_disk[index] = size
        self.current = -1

    @property
    def done(self) -> int:
        return sum(
            self.count.value if i == self.current else held for i, held in enumerate(self.on_disk)
        )


class Download:
    """One queued, running or paused download. Control it from the manager's loop."""

    def __init__(self, manager: DownloadManager, plan: DownloadPlan) -> None:
        self.plan = plan
        self.state = DownloadState.QUEUED
        self._progress: _PartsProgress | None = None
        self.model: RegisteredModel | None = None
        self.error: BaseException | None = None
        self._manager = manager
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()
        self._stop_as: DownloadState | None = None

    @property
    def id(self) -> str:
        return self.plan.id

    @property
    def done_bytes(self) -> int:
        """Bytes of the model on disk so far (exact, even in the middle of a stall)."""
        if self._progress is None:
            return self._manager._bytes_on_disk(self.plan)
        return self._progress.done

    @property
    def is_active(self) -> bool:
        return self.state in (DownloadState.QUEUED, DownloadState.RUNNING)

    def _launch(self) -> None:
        self.state = DownloadState.QUEUED
        self._stop_as = None
        self.error = None
        self._settled.clear()
        self._task = asyncio.get_running_loop().create_task(
            self._manager._run(self), name=f"download:{self.plan.name}"
        )

    def pause(self) -> None:
        """Stop transferring and keep the partial file; `resume()` continues from it."""
        if self.is_active and self._task is not None:
            self._stop_as = DownloadState.PAUSED
            self._task.cancel()

    def resume(self) -> None:
        if self.state in (DownloadState.PAUSED, DownloadState.FAILED):
            self._launch()

    def cancel(self) -> None:
        """Stop and delete the partial file."""
        if self.is_active and self._task is not None:
            self._stop_as = DownloadState.CANCELLED
            self._task.cancel()
        elif self.state in (DownloadState.PAUSED, DownloadState.FAILED):
            self._manager._discard(self.plan)
            self._settle(DownloadState.CANCELLED, DownloadCancelled(self.id))

    def _settle(self, state: DownloadState, event: DownloadEvent) -> None:
        self.state = state
        self._manager._emit(event)
        if state is not DownloadState.PAUSED:
            self._settled.set()

    async def wait(self) -> RegisteredModel:
        """The registered model once done. Raises the failure (a `BastionError` for
        anything the user can act on), or `DownloadCancelledError`; a pause keeps
        waiting for the resume."""
        await self._settled.wait()
        if self.model is not None:
            return self.model
        if self.state is DownloadState.CANCELLED:
            raise DownloadCancelledError(f"The download of {self.plan.name} was cancelled.")
        assert self.error is not None
        raise self.error


class DownloadManager:
    def __init__(
        self,
        registry: ModelRegistry,
        models_dir: Path,
        *,
        settings: TransferSettings | None = None,
        max_parallel: int = 1,
        listener: Callable[[DownloadEvent], None] | None = None,
    ) -> None:
        self.registry = registry
        self.models_dir = models_dir
        self.settings = settings or TransferSettings()
        self.listener = listener
        self.downloads: dict[str, Download] = {}
        self._slots = asyncio.Semaphore(max_parallel)
        self._registry_lock = threading.Lock()

    @property
    def downloads_dir(self) -> Path:
        return self.models_dir / DOWNLOADS_FOLDER

    def _emit(self, event: DownloadEvent) -> None:
        if self.listener is not None:
            try:
                self.listener(event)
            except Exception:
                log.exception("a download listener failed on %r", event)

    async def plan(
        self, repo: str, file: str, *, revision: str | None = None, role: ModelRole = "chat"
    ) -> DownloadPlan:
        return await asyncio.to_thread(plan_download, repo, file, revision=revision, role=role)

    def start(self, plan: DownloadPlan) -> Download:
        """Queue a download; the same plan while it is active gives the same download."""
        existing = self.downloads.get(plan.id)
        if existing is not None and (existing.is_active or existing.state is DownloadState.PAUSED):
            existing.resume()
            return existing
        download = Download(self, plan)
        self.downloads[plan.id] = download
        write_atomically(self.downloads_dir / f"{plan.id}.json", plan.model_dump_json().encode())
        self._emit(DownloadQueued(plan.id, plan.name, plan.total_size))
        download._launch()
        return download

    async def download(
        self, repo: str, file: str, *, revision: str | None = None, role: ModelRole = "chat"
    ) -> RegisteredModel:
        """Plan, queue and wait: a whole download in one call."""
        plan = await self.plan(repo, file, revision=revision, role=role)
        return await self.start(plan).wait()

    def unfinished(self) -> list[UnfinishedDownload]:
        """Downloads begun earlier (in this session or a previous one) and not finished."""
        found = []
        for file in sorted(self.downloads_dir.glob("*.json")):
            try:
                plan = DownloadPlan.model_validate_json(file.read_text(encoding="utf-8"))
            except (OSError, ValidationError):
                log.warning("ignoring an unreadable download plan %s", file)
                continue
            found.append(UnfinishedDownload(plan, self._bytes_on_disk(plan)))
        return found

    async def close(self) -> None:
        """Pause every download; the partial files stay for the next session."""
        tasks = []
        for download in self.downloads.values():
            if download._task is not None and not download._task.done():
                download.pause()
                tasks.append(download._task)
        await asyncio.gather(*tasks, return_exceptions=True)

    def target_path(self, plan: DownloadPlan, file: PlannedFile) -> Path:
        owner, _, name = plan.repo.partition("/")
        parts = PurePosixPath(file.path).parts
        if not parts or any(p in ("", ".", "..") or "\\" in p for p in (owner, name, *parts)):
            raise HubError(f"The Hub gave an unsafe file name ({file.path!r}); not downloading.")
        return self.models_dir.joinpath(owner, name, *parts)

    def _bytes_on_disk(self, plan: DownloadPlan) -> int:
        return sum(self._part_on_disk(f) for f in plan.files)

    def _discard(self, plan: DownloadPlan) -> None:
        for file in plan.files:
            (self.downloads_dir / file.partial_name).unlink(missing_ok=True)
        (self.downloads_dir / f"{plan.id}.json").unlink(missing_ok=True)

    async def _run(self, download: Download) -> None:
        plan = download.plan
        try:
            async with self._slots:
                download.state = DownloadState.RUNNING
                with hub_online():
                    model = await self._fetch_and_install(download)
        except asyncio.CancelledError:
            if download._stop_as is DownloadState.PAUSED:
                paused = DownloadPaused(plan.id, download.done_bytes, plan.total_size)
                download._settle(DownloadState.PAUSED, paused)
                return
            if download._stop_as is DownloadState.CANCELLED:
                self._discard(plan)
                download._settle(DownloadState.CANCELLED, DownloadCancelled(plan.id))
                return
            raise
        except BastionError as error:
            self._fail(download, error)
            return
        except Exception as error:
            import httpx
            from huggingface_hub import errors as hf

            if isinstance(error, httpx.HTTPError | hf.HfHubHTTPError | hf.OfflineModeIsEnabled):
                self._fail(download, hub_error(error, repo=plan.repo, file=plan.files[0].path))
            elif isinstance(error, OSError):  # the models folder: moving, creating folders
                self._fail(download, self._disk_failure(error))
            else:
                # A bug: it reaches the caller as itself (a crash report), not a sentence.
                log.exception("download of %s failed", plan.name)
                download.error = error
                sentence = "Bastion hit an internal error; see the log."
                failed = DownloadFailed(plan.id, sentence, False)
                download._settle(DownloadState.FAILED, failed)
            return
        download.model = model
        download._settle(DownloadState.DONE, DownloadFinished(plan.id, model))

    def _fail(self, download: Download, error: BastionError) -> None:
        download.error = error
        kept = self._bytes_on_disk(download.plan) > 0
        resumable = kept and not isinstance(error, ChecksumMismatchError)
        if not resumable:
            # Nothing to resume from: the download is not listed as unfinished.
            self._discard(download.plan)
        download._settle(DownloadState.FAILED, DownloadFailed(download.id, str(error), resumable))

    def _disk_failure(self, error: OSError) -> BastionError:
        if error.errno == errno.ENOSPC:
            return NotEnoughSpaceError(disk_full_sentence(self.models_dir))
        where = error.filename or self.models_dir
        return DownloadFailedError(
            f"Could not write to {where}: {error.strerror or error}. Check that the models "
            "folder is writable."
        )

    def _check_space(self, plan: DownloadPlan) -> None:
        self.downloads_dir.mkdir(parents=True, exist_ok=True)
        needed = plan.total_size - self._bytes_on_disk(plan)
        free = shutil.disk_usage(self.downloads_dir).free
        # A little room beyond the file, for the registry and the file system itself.
        reserve = 1024 * 1024 + needed // 1000
        if needed + reserve > free:
            raise NotEnoughSpaceError(
                f"{plan.name} needs {format_size(needed + reserve)} of free space on the disk "
                f"holding {self.models_dir}, but only {format_size(free)} is free. Free some "
                "space or choose another models folder in settings."
            )

    async def _fetch_and_install(self, download: Download) -> RegisteredModel:
        from huggingface_hub import hf_hub_url

        # Public, but exported through a lazy `__all__` that mypy cannot see.
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

        plan = download.plan
        installed = self._installed_model(plan)
        if installed is not None:
            return installed
        await asyncio.to_thread(self._check_space, plan)
        headers = build_hf_headers()
        progress = _PartsProgress([self._part_on_disk(f) for f in plan.files])
        download._progress = progress
        self._emit(DownloadStarted(plan.id, progress.done, plan.total_size))

        def on_retry(notice: RetryNotice) -> None:
            retrying = DownloadRetrying(
                plan.id, notice.attempt, notice.max_attempts, notice.reason,
                notice.delay_seconds, progress.done,
            )  # fmt: skip
            self._emit(retrying)

        loop = asyncio.get_running_loop()
        ticker = loop.create_task(self._report_progress(plan, progress))
        first = plan.files[0]
        # The metadata sits at the head of the file: read it while the rest arrives (it
        # is used only once the checksum has verified those bytes).
        early = loop.create_task(
            _read_head_when_there(self.downloads_dir / first.partial_name, first.size,
                                  lambda: progress.on_disk_now(0))
        )  # fmt: skip
        digests = []
        head: GgufFile | None = None
        try:
            for index, file in enumerate(plan.files):
                partial = self.downloads_dir / file.partial_name
                url = hf_hub_url(
                    plan.repo, file.path, revision=plan.revision, endpoint=hub_endpoint()
                )
                request = FileRequest(
                    url, headers, file.size, plan.repo, file.path, git_blob=file.sha256 is None
                )
                result = await fetch_to_partial(
                    request, partial, settings=self.settings, count=progress.start(index),
                    on_retry=on_retry,
                )  # fmt: skip
                progress.finish(index, file.size)
                if index == 0:
                    head = await early  # done with the file before it may be deleted
                _verify(file, partial, result.sha256, result.git_sha1)
                digests.append(result.sha256)
        finally:
            for task in (ticker, early):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._emit(DownloadVerifying(plan.id))
        return await asyncio.to_thread(self._install, plan, digests, head)

    async def _report_progress(self, plan: DownloadPlan, progress: _PartsProgress) -> None:
        """Progress events at a steady pace, read from the byte counts: the transfer
        threads never wait for the event loop."""
        rate = _Rate()
        interval = max(0.01, self.settings.progress_interval_seconds)
        last = -1

        def tick() -> None:
            nonlocal last
            done = progress.done
            speed = rate.add(time.monotonic(), done)
            if done != last:
                last = done
                eta = (plan.total_size - done) / speed if speed > 0 else None
                self._emit(DownloadProgress(plan.id, done, plan.total_size, speed, eta))

        try:
            while True:
                await asyncio.sleep(interval)
                tick()
        finally:
            tick()  # the last bytes, when the transfer ends between two ticks

    def _part_on_disk(self, file: PlannedFile) -> int:
        try:
            return min(file.size, (self.downloads_dir / file.partial_name).stat().st_size)
        except OSError:
            return 0

    def _installed_model(self, plan: DownloadPlan) -> RegisteredModel | None:
        first = plan.files[0]
        for model in self.registry.list():
            same = model.repo == plan.repo and model.file == first.path
            if same and model.path.is_file() and first.sha256 in (None, model.sha256):
                (self.downloads_dir / f"{plan.id}.json").unlink(missing_ok=True)
                return model
        return None

    def _install(
        self, plan: DownloadPlan, digests: list[str], head: GgufFile | None
    ) -> RegisteredModel:
        """Read the metadata, move every part into place, register. Blocking."""
        partials = [self.downloads_dir / f.partial_name for f in plan.files]
        try:
            metadata = _metadata_of(partials, head)
        except GgufFormatError as error:
            self._discard(plan)
            raise GgufFormatError(
                f"{plan.name} from {plan.repo} downloaded intact but is not a usable GGUF "
                f"model ({error}); it was deleted."
            ) from error
        targets = [self.target_path(plan, f) for f in plan.files]
        for partial, target in zip(partials, targets, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            partial.replace(target)
        parts = tuple(
            ModelPart(file=f.path, path=t, sha256=d, size=f.size)
            for f, t, d in zip(plan.files, targets, digests, strict=True)
        )
        with self._registry_lock:  # installs of parallel downloads run on worker threads
            model = self._register(plan, targets, digests, metadata, parts)
        (self.downloads_dir / f"{plan.id}.json").unlink(missing_ok=True)
        return model

    def _register(
        self,
        plan: DownloadPlan,
        targets: list[Path],
        digests: list[str],
        metadata: GgufMetadata,
        parts: tuple[ModelPart, ...],
    ) -> RegisteredModel:
        quantization = metadata.quantization or plan.quantization
        name = f"{metadata.name} {quantization or ''}".strip() if metadata.name else plan.name
        license_name = plan.license or _text(metadata.values.get("general.license"))
        model = RegisteredModel(
            id=self._model_id(plan),
            name=name,
            path=targets[0],
            sha256=digests[0],
            size=plan.total_size,
            source="hub",
            role=plan.role,
            repo=plan.repo,
            file=plan.files[0].path,
            license=license_name,
            revision=plan.revision,
            owns_file=True,
            parts=parts if len(parts) > 1 else (),
            quantization=quantization,
            architecture=metadata.architecture,
            context_length=metadata.context_length,
            parameters=metadata.parameters or None,
            has_chat_template=metadata.has_chat_template,
        )
        self.registry.add(model)
        return model

    def _model_id(self, plan: DownloadPlan) -> str:
        candidate = slug(plan.name)
        existing = self.registry.get(candidate)
        if existing is None or (existing.repo == plan.repo and existing.file == plan.files[0].path):
            return candidate
        return slug(f"{plan.repo.split('/')[0]}-{plan.name}")


def _verify(file: PlannedFile, partial: Path, sha256: str, git_sha1: str | None) -> None:
    expected, actual = (file.sha256, sha256) if file.sha256 else (file.blob_id, git_sha1)
    if expected is None or actual != expected.lower():
        partial.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"The downloaded {PurePosixPath(file.path).name} does not match the checksum the "
            "Hub published: it was damaged on the way. It was deleted and nothing was "
            "installed; download it again."
        )


async def _read_head_when_there(
    path: Path, size: int, on_disk: Callable[[], int]
) -> GgufFile | None:
    """The first part's metadata, read once its first megabytes are on disk; None if
    they do not hold it all (a huge vocabulary), and it is read after the transfer."""
    wanted = min(size, HEAD_READ_BYTES)
    while on_disk() < wanted:  # noqa: ASYNC110  (a count a worker thread moves: polled)
        await asyncio.sleep(0.05)
    try:
        return await asyncio.to_thread(read_gguf_file, path)
    except GgufFormatError:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _metadata_of(parts: list[Path], head: GgufFile | None = None) -> GgufMetadata:
    """Metadata of a model whose parts are not yet under their final names."""
    files = [head or read_gguf_file(parts[0]), *(read_gguf_file(p) for p in parts[1:])]
    return GgufMetadata(
        paths=tuple(parts),
        values=files[0].values,
        tensors=tuple(t for f in files for t in f.tensors),
        file_size=sum(f.file_size for f in files),
    )
