"""Fixtures for the model manager: the local Hub emulator (HF_ENDPOINT points at it),
a guard that refuses any connection that is not to 127.0.0.1, and small GGUF files."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion_desktop.core.hub.transfer import TransferSettings
from bastion_desktop.core.installed_models import ModelRegistry
from tests.core.hub.gguf_files import write_tiny_gguf
from tests.core.hub.hub_emulator import HubEmulator

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class _Guard:
    armed = False
    refused: list[object] = []  # noqa: RUF012  (one guard per process, reset per test)


def _loopback_only(event: str, args: tuple[object, ...]) -> None:
    if not _Guard.armed:
        return
    if event == "socket.connect":
        sock, address = args
        internet = getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6)
        if internet and isinstance(address, tuple) and address[0] not in _LOOPBACK:
            _Guard.refused.append(address)
            raise OSError(f"the model manager tests talk to 127.0.0.1 only, not {address}")
    elif event == "socket.getaddrinfo" and args[0] is not None and args[0] not in _LOOPBACK:
        _Guard.refused.append(args[0])
        raise OSError(f"the model manager tests resolve no names ({args[0]!r})")


# An audit hook cannot be removed, so it is installed once and armed per test.
sys.addaudithook(_loopback_only)


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    _Guard.armed = True
    _Guard.refused = []
    try:
        yield
    finally:
        _Guard.armed = False
    assert not _Guard.refused, f"traffic outside 127.0.0.1 was attempted: {_Guard.refused}"


@pytest.fixture(autouse=True)
def no_download_thread_left() -> Iterator[None]:
    """A finished, failed, paused or cancelled download leaves no thread behind."""
    yield
    for _ in range(100):  # up to 2 s for threads that are ending
        left = [t.name for t in threading.enumerate() if t.name.startswith("download-")]
        if not left:
            return
        time.sleep(0.02)
    pytest.fail(f"download threads left running: {left}")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubEmulator]:
    emulator = HubEmulator()
    monkeypatch.setenv("HF_ENDPOINT", emulator.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield emulator
    finally:
        emulator.shutdown()


@pytest.fixture
def fast() -> TransferSettings:
    """Short stall and retry times, so fault tests take a second, not minutes."""
    return TransferSettings(
        stall_seconds=0.5,
        max_retries=3,
        retry_delay_seconds=0.05,
        max_retry_delay_seconds=0.2,
        progress_interval_seconds=0.0,
    )


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "data" / "models.json")


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    folder = tmp_path / "made"
    folder.mkdir()
    return write_tiny_gguf(folder / "Tiny-Test-Q4_K_M.gguf")[0]
