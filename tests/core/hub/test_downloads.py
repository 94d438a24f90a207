"""Downloads against the local Hub emulator: verified, resumable, and never silent."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from bastion_desktop.core.hub.download_events import (
    DownloadCancelled,
    DownloadEvent,
    DownloadFailed,
    DownloadFinished,
    DownloadPaused,
    DownloadProgress,
    DownloadRetrying,
    DownloadStarted,
    describe_event,
)
from bastion_desktop.core.hub.download_plan import describe_plan, plan_download
from bastion_desktop.core.hub.downloads import DownloadManager, DownloadState
from bastion_desktop.core.hub.errors import (
    ChecksumMismatchError,
    DownloadCancelledError,
    DownloadFailedError,
    GgufFormatError,
    HubAccessError,
    HubNotFoundError,
    HubUnreachableError,
    NotEnoughSpaceError,
)
from bastion_desktop.core.hub.transfer import TransferSettings
from bastion_desktop.core.installed_models import ModelRegistry
from tests.core.hub.gguf_files import write_tiny_gguf
from tests.core.hub.hub_emulator import Fault, HubEmulator

REPO = "tester/Tiny-GGUF"
FILE = "Tiny-Test-Q4_K_M.gguf"
E = TypeVar("E")


def made_up_gguf(folder: Path, name: str = FILE, vocab: int = 40_000) -> Path:
    """A made-up GGUF; 40k tokens make about 16 MB, enough to cut in the middle."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_tiny_gguf(folder / name, vocab=vocab, embedding=64)[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Session:
    """One app session's download side: its registry, models folder and events."""

    registry: ModelRegistry
    models_dir: Path
    settings: TransferSettings
    events: list[DownloadEvent] = field(default_factory=list)

    def manager(self, settings: TransferSettings | None = None) -> DownloadManager:
        return DownloadManager(
            self.registry, self.models_dir, settings=settings or self.settings,
            listener=self.events.append,
        )  # fmt: skip

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def partials(self) -> list[Path]:
        return sorted((self.models_dir / ".downloads").glob("*"))


@pytest.fixture
def session(registry: ModelRegistry, models_dir: Path, fast: TransferSettings) -> Session:
    return Session(registry, models_dir, fast)


@pytest.fixture
def tiny_repo(hub: HubEmulator, tmp_path: Path) -> Path:
    path = made_up_gguf(tmp_path / "source")
    hub.add_repo(REPO, {FILE: path, "README.md": b"# Tiny\n"})
    return path


async def until_half(download_bytes: object, size: int) -> None:
    for _ in range(250):  # at most 5 s
        await asyncio.sleep(0.02)
        if getattr(download_bytes, "done_bytes", 0) >= size // 2:
            return
    raise AssertionError("the transfer never reached the middle")


async def test_a_download_is_verified_moved_and_registered(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    model = await session.manager().download(REPO, FILE)
    assert model.sha256 == sha256(tiny_repo)
    assert model.path == session.models_dir / "tester" / "Tiny-GGUF" / FILE
    assert model.path.read_bytes() == tiny_repo.read_bytes()
    assert session.registry.get(model.id) == model
    assert (model.repo, model.file, model.revision) == (REPO, FILE, hub.repos[REPO].commit)
    assert (model.source, model.role, model.license, model.owns_file) == (
        "hub", "chat", "apache-2.0", True,
    )  # fmt: skip
    assert (model.quantization, model.architecture, model.has_chat_template) == (
        "Q4_K_M", "llama", True,
    )  # fmt: skip
    assert session.partials == [], "no partial file or plan is left behind"
    progress = session.of(DownloadProgress)
    assert progress[-1].done_bytes == progress[-1].total_bytes == tiny_repo.stat().st_size
    assert all(p.bytes_per_second >= 0 for p in progress)
    assert session.of(DownloadFinished)[0].model == model
    assert hub.served_for(REPO, FILE) == tiny_repo.stat().st_size
    lines = [describe_event(e) for e in session.events]
    assert lines[0] == "Queued Tiny-Test-Q4_K_M (16.0 MB)."
    assert re.fullmatch(r"100\.0%  16\.0 MB of 16\.0 MB, .*/s(, \d+ s left)?", lines[-3])
    assert lines[-1] == f"Installed Tiny Test Q4_K_M as {model.id}."


def test_the_plan_shows_size_license_and_gating_first(hub: HubEmulator, tiny_repo: Path) -> None:
    hub.repos[REPO].gated = "manual"
    plan = plan_download(REPO, FILE)
    assert (plan.gated, plan.license, plan.revision) == (True, "apache-2.0", hub.repos[REPO].commit)
    sentence = describe_plan(plan)
    assert "license: apache-2.0" in sentence
    assert "gated" in sentence
    assert not any(p.startswith("/cdn/") for _, p, _ in hub.requests), "nothing downloaded yet"


@pytest.mark.log_warnings("retries and failed downloads are logged as warnings")
async def test_a_dropped_connection_resumes_with_only_the_remainder(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    size = tiny_repo.stat().st_size
    hub.inject(REPO, FILE, Fault(drop_at=size // 2))
    model = await session.manager().download(REPO, FILE)
    assert model.sha256 == sha256(tiny_repo)
    assert hub.ranges_for(REPO, FILE) == [None, f"bytes={size // 2}-"]
    assert hub.served_for(REPO, FILE) == size, "the second request sent only the rest"
    [retry] = session.of(DownloadRetrying)
    assert "connection was lost" in retry.reason


async def test_corrupted_bytes_fail_the_checksum_and_nothing_is_registered(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    hub.inject(REPO, FILE, Fault(corrupt_at=tiny_repo.stat().st_size // 3))
    with pytest.raises(ChecksumMismatchError, match="does not match the checksum the Hub"):
        await session.manager().download(REPO, FILE)
    assert session.registry.list() == []
    assert not (session.models_dir / "tester").exists(), "nothing reached the models folder"
    assert session.partials == [], "the damaged bytes are deleted"
    [failed] = session.of(DownloadFailed)
    assert "download it again" in failed.message
    assert not failed.resumable


@pytest.mark.log_warnings("retries and failed downloads are logged as warnings")
async def test_a_stalled_server_is_detected_retried_and_reported(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    third = tiny_repo.stat().st_size // 3
    hub.inject(REPO, FILE, Fault(stall_at=third, stall_seconds=20))
    loop = asyncio.get_running_loop()
    started = loop.time()
    model = await session.manager().download(REPO, FILE)
    assert loop.time() - started < 10, "the 20 s stall was cut short"
    assert model.sha256 == sha256(tiny_repo)
    [retry] = session.of(DownloadRetrying)
    assert "stalled" in retry.reason
    assert retry.done_bytes == third
    assert hub.ranges_for(REPO, FILE) == [None, f"bytes={third}-"]


@pytest.mark.log_warnings("retries and failed downloads are logged as warnings")
async def test_a_server_that_keeps_stalling_gives_up_with_a_sentence(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    hub.inject(REPO, FILE, Fault(stall_at=1000, stall_seconds=20, times=100))
    with pytest.raises(DownloadFailedError, match=r"stalled.*3 times in a row.*resumes from"):
        await session.manager().download(REPO, FILE)
    assert len(session.of(DownloadRetrying)) == 3
    assert session.of(DownloadFailed)[0].resumable
    assert session.registry.list() == []


@pytest.mark.log_warnings("retries and failed downloads are logged as warnings")
async def test_a_trickling_server_is_dropped_retried_and_given_up_on(
    hub: HubEmulator, tiny_repo: Path, session: Session, fast: TransferSettings
) -> None:
    # A byte every few milliseconds is never a stall: only the rate says it is useless.
    hub.inject(REPO, FILE, Fault(trickle_after=1000, trickle_bytes_per_second=400))
    settings = dataclasses.replace(fast, min_bytes_per_second=4096, slow_window_seconds=0.3)
    with pytest.raises(
        DownloadFailedError, match=r"slower than 4 KiB/s for 0\.3 s, 3 times in a row"
    ):
        await session.manager(settings).download(REPO, FILE)
    retries = session.of(DownloadRetrying)
    assert len(retries) == 3
    assert all("slower than 4 KiB/s" in retry.reason for retry in retries)
    assert retries[-1].done_bytes > 1000, "what trickled in is kept for the next try"
    assert session.registry.list() == []


@pytest.mark.log_warnings("retries and failed downloads are logged as warnings")
async def test_the_server_ignoring_range_restarts_cleanly(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    size = tiny_repo.stat().st_size
    hub.inject(REPO, FILE, Fault(drop_at=size // 2, ignore_range=True))
    model = await session.manager().download(REPO, FILE)
    assert model.sha256 == sha256(tiny_repo)
    assert model.path.stat().st_size == size


async def test_a_missing_file_or_repository_is_a_sentence(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    downloads = session.manager()
    with pytest.raises(HubNotFoundError, match=r"has no GGUF file 'nope.gguf' \(it has: Tiny"):
        await downloads.download(REPO, "nope.gguf")
    with pytest.raises(HubNotFoundError, match="No repository tester/absent on the Hub"):
        await downloads.download("tester/absent", FILE)


async def test_a_file_gone_from_the_server_is_a_404_sentence(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    downloads = session.manager()
    plan = await downloads.plan(REPO, FILE)
    del hub.repos[REPO].files[FILE]  # removed between the listing and the transfer
    with pytest.raises(HubNotFoundError, match=f"has no file '{FILE}'"):
        await downloads.start(plan).wait()


@pytest.mark.parametrize("token", [None, "hf_not_granted"], ids=["401-no-token", "403-not-granted"])
async def test_a_gated_repository_says_what_to_do(
    hub: HubEmulator, tiny_repo: Path, session: Session, monkeypatch: pytest.MonkeyPatch,
    token: str | None,
) -> None:  # fmt: skip
    hub.repos[REPO].gated = "manual"
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(HubAccessError, match=r"is gated: accept its terms at .*log in"):
        await session.manager().download(REPO, FILE)
    assert session.registry.list() == []


async def test_a_gated_repository_downloads_with_a_granted_token(
    hub: HubEmulator, tiny_repo: Path, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.repos[REPO].gated = "auto"
    hub.repos[REPO].granted_tokens.add("hf_granted")
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    model = await session.manager().download(REPO, FILE)
    assert model.path.is_file()


@pytest.mark.log_warnings("retries and failed downloads are logged as warnings")
async def test_the_server_gone_is_a_sentence(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    downloads = session.manager()
    plan = await downloads.plan(REPO, FILE)
    hub.shutdown()
    with pytest.raises(DownloadFailedError, match="could not be reached, 3 times in a row"):
        await downloads.start(plan).wait()
    with pytest.raises(HubUnreachableError, match=f"Cannot reach the Hub at {hub.url}"):
        await downloads.plan(REPO, FILE)


@pytest.mark.blocks_loop("the test writes a 20 MB model file synchronously")
async def test_not_enough_disk_space_is_said_before_downloading(
    hub: HubEmulator, session: Session, small_disk: Path, tmp_path: Path
) -> None:
    path = made_up_gguf(tmp_path / "source", vocab=50_000)  # about 20 MB: over 16 MiB
    hub.add_repo(REPO, {FILE: path})
    session.models_dir = small_disk / "models"
    with pytest.raises(NotEnoughSpaceError, match=r"needs .* of free space on the disk .* only"):
        await session.manager().download(REPO, FILE)
    assert not any(p.startswith("/cdn/") for _, p, _ in hub.requests), "no byte was fetched"
    assert session.registry.list() == []


@pytest.mark.log_warnings("retries and failed downloads are logged as warnings")
async def test_a_disk_that_fills_up_mid_download_keeps_the_part_for_later(
    hub: HubEmulator, session: Session, small_disk: Path, tmp_path: Path
) -> None:
    path = made_up_gguf(tmp_path / "source", vocab=25_000)  # about 10 MB of 16 MiB
    hub.add_repo(REPO, {FILE: path})
    # The server pauses at 3 MiB, and the disk fills up meanwhile.
    hub.inject(REPO, FILE, Fault(stall_at=3 * 2**20, stall_seconds=1))
    filler = small_disk / "filler"

    def fill_the_disk(event: DownloadEvent) -> None:
        late = isinstance(event, DownloadProgress) and event.done_bytes >= 3 * 2**20
        if late and not filler.exists():
            with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
                for _ in range(1000):  # 64 MB at most; the 16 MiB disk is full long before
                    handle.write(b"\0" * 65536)

    downloads = DownloadManager(
        session.registry, small_disk / "models", settings=session.settings,
        listener=fill_the_disk,
    )  # fmt: skip
    with pytest.raises(NotEnoughSpaceError, match=r"The disk holding .* is full.*resumes"):
        await downloads.download(REPO, FILE)
    assert session.registry.list() == []
    [unfinished] = downloads.unfinished()
    assert unfinished.done_bytes == 3 * 2**20, "what arrived before the disk filled up is kept"
    filler.write_bytes(b"")  # free the space (the file stays, so it is not filled again)
    model = await downloads.download(REPO, FILE)
    assert model.sha256 == sha256(path)
    assert hub.ranges_for(REPO, FILE)[-1] == f"bytes={unfinished.done_bytes}-"


async def test_pause_then_resume_continues_where_it_stopped(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    size = tiny_repo.stat().st_size
    hub.inject(REPO, FILE, Fault(stall_at=size // 2, stall_seconds=20))
    downloads = session.manager(TransferSettings(stall_seconds=30))
    download = downloads.start(await downloads.plan(REPO, FILE))
    await until_half(download, size)
    download.pause()
    await asyncio.sleep(0.1)
    assert download.state is DownloadState.PAUSED
    [paused] = session.of(DownloadPaused)
    assert paused.done_bytes == size // 2
    download.resume()
    model = await asyncio.wait_for(download.wait(), 10)
    assert model.sha256 == sha256(tiny_repo)
    assert hub.ranges_for(REPO, FILE) == [None, f"bytes={size // 2}-"]
    assert hub.served_for(REPO, FILE) == size


async def test_a_download_resumes_after_a_restart(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    size = tiny_repo.stat().st_size
    hub.inject(REPO, FILE, Fault(drop_at=size // 2))
    first_run = session.manager(TransferSettings(max_retries=0))
    with pytest.raises(DownloadFailedError, match="resumes from 50%"):
        await first_run.download(REPO, FILE)
    # The app restarts: a new manager finds the plan and the partial file on disk.
    session.events.clear()
    second_run = session.manager()
    [unfinished] = second_run.unfinished()
    assert (unfinished.plan.repo, unfinished.done_bytes) == (REPO, size // 2)
    model = await second_run.start(unfinished.plan).wait()
    assert model.sha256 == sha256(tiny_repo)
    assert session.of(DownloadStarted)[0].done_bytes == size // 2
    assert hub.served_for(REPO, FILE) == size
    assert second_run.unfinished() == []


async def test_cancel_deletes_the_partial_file(
    hub: HubEmulator, tiny_repo: Path, session: Session
) -> None:
    size = tiny_repo.stat().st_size
    hub.inject(REPO, FILE, Fault(stall_at=size // 2, stall_seconds=20))
    downloads = session.manager(TransferSettings(stall_seconds=30))
    download = downloads.start(await downloads.plan(REPO, FILE))
    await until_half(download, size)
    download.cancel()
    with pytest.raises(DownloadCancelledError, match="was cancelled"):
        await download.wait()
    assert session.of(DownloadCancelled)
    assert session.partials == []
    assert session.registry.list() == []


async def test_several_downloads_queue_and_run_one_at_a_time(
    hub: HubEmulator, session: Session, tmp_path: Path
) -> None:
    names = [f"Tiny-{i}-Q8_0.gguf" for i in range(3)]
    files = {n: made_up_gguf(tmp_path / "source", n, vocab=5_000 + i) for i, n in enumerate(names)}
    hub.add_repo(REPO, dict(files.items()))
    downloads = session.manager()
    plans = [await downloads.plan(REPO, n) for n in names]
    queued = [downloads.start(p) for p in plans]
    assert [d.state for d in queued] == [DownloadState.QUEUED] * 3
    models = await asyncio.gather(*(d.wait() for d in queued))
    assert [m.file for m in models] == names
    order = [type(e).__name__ for e in session.events
             if isinstance(e, DownloadStarted | DownloadFinished)]  # fmt: skip
    assert order == ["DownloadStarted", "DownloadFinished"] * 3, "one at a time, in order"


async def test_parallel_downloads_all_reach_the_registry(
    hub: HubEmulator, session: Session, tmp_path: Path
) -> None:
    names = [f"Tiny-{i}-Q8_0.gguf" for i in range(4)]
    files = {n: made_up_gguf(tmp_path / "source", n, vocab=3_000 + i) for i, n in enumerate(names)}
    hub.add_repo(REPO, dict(files.items()))
    downloads = DownloadManager(session.registry, session.models_dir, settings=session.settings,
                                max_parallel=4)  # fmt: skip
    plans = [await downloads.plan(REPO, n) for n in names]
    models = await asyncio.gather(*(downloads.start(p).wait() for p in plans))
    assert sorted(m.id for m in session.registry.list()) == sorted(m.id for m in models)
    assert len(models) == 4


async def test_a_verified_file_that_is_not_a_gguf_is_refused(
    hub: HubEmulator, session: Session
) -> None:
    hub.add_repo(REPO, {"Fake-Q4_K_M.gguf": b"<html>not a model</html>" * 1000})
    with pytest.raises(GgufFormatError, match="downloaded intact but is not a usable GGUF"):
        await session.manager().download(REPO, "Fake-Q4_K_M.gguf")
    assert session.registry.list() == []
    assert session.partials == []
    assert not (session.models_dir / "tester").exists()
