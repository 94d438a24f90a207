"""The models window against the Hub emulator (a real HTTP server on 127.0.0.1 that
answers as the Hub does; HF_ENDPOINT points at it): search, a repository's files with
their fit, a download whose progress bar moves, the installed list, remove; pause and
resume; a missing repository and a Hub that is gone each give one sentence."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.hub.transfer import TransferSettings
from bastion_desktop.ui.model_tables import FIT_TEXT
from bastion_desktop.ui.models_window import ModelsWindow
from tests.core.hub.gguf_files import write_tiny_gguf
from tests.core.hub.hub_emulator import Fault, HubEmulator
from tests.ui.desktop_fixtures import screenshot
from tests.ui.window_services import context, engine, services

__all__ = ["context", "engine", "services"]  # fixtures used by name

REPO = "bastion-test/Tiny-Chat-GGUF"
FILE = "Tiny-Chat-Q4_K_M.gguf"
FAST = TransferSettings(
    stall_seconds=5.0,
    max_retries=3,
    retry_delay_seconds=0.05,
    max_retry_delay_seconds=0.2,
    progress_interval_seconds=0.02,
)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    folder = tmp_path / "made"
    folder.mkdir()
    # About 4 MiB (a 4096-token vocabulary of f32 embeddings): enough bytes for the
    # progress bar to be seen between empty and full when the emulator paces them.
    return write_tiny_gguf(folder / FILE, vocab=4096, embedding=256, name="Tiny Chat")[0]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, model_file: Path) -> Iterator[HubEmulator]:
    emulator = HubEmulator()
    emulator.add_repo(REPO, {FILE: model_file}, license="apache-2.0")
    monkeypatch.setenv("HF_ENDPOINT", emulator.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield emulator
    finally:
        emulator.shutdown()


@pytest.fixture
def window(qtbot: QtBot, services: Any) -> Iterator[ModelsWindow]:
    shown = ModelsWindow(services, transfer_settings=FAST)
    qtbot.addWidget(shown)
    qtbot.waitUntil(lambda: shown.hardware is not None, timeout=60_000)
    yield shown
    shown.shut_down()
    for _ in range(100):
        if not [t for t in threading.enumerate() if t.name.startswith("download-")]:
            break
        qtbot.wait(20)


def search_and_list(qtbot: QtBot, window: ModelsWindow) -> None:
    window.tabs.setCurrentIndex(1)
    window.hub.query.setText("tiny")
    with qtbot.waitSignal(window.search_done, timeout=20_000):
        window.hub.search_button.click()
    assert window.hub.results.rowCount() == 1
    assert window.hub.results.item(0, 0).text() == REPO
    with qtbot.waitSignal(window.files_ready, timeout=20_000):
        window.hub.results.selectRow(0)
    assert window.hub.files.rowCount() == 1
    assert window.hub.files.item(0, 1).text() == "Q4_K_M"
    assert window.hub.files.item(0, 2).text().endswith(("MB", "MiB"))
    fit = window.hub.files.item(0, 3).text()
    assert fit.startswith(tuple(FIT_TEXT.values())[:3])
    assert "license: apache-2.0" in window.hub.files_status.text()


def test_the_catalog_shows_a_fit_badge_for_every_model(qtbot: QtBot, window: ModelsWindow) -> None:
    table = window.catalog.table
    assert table.rowCount() >= 10
    fits = [table.item(row, 5).text() for row in range(table.rowCount())]
    assert all(fit.startswith(tuple(FIT_TEXT.values())) for fit in fits), fits
    roles = {table.item(row, 1).text() for row in range(table.rowCount())}
    assert roles == {"Chat", "Safety (guardrails)"}
    assert "RAM" in window.machine.text()
    # What llama.cpp runs here, from the runtime probe's children.
    assert "llama.cpp runs its " in window.machine.text()
    screenshot(window, "models-window-catalog")


def test_search_files_download_installed_and_remove(
    qtbot: QtBot, window: ModelsWindow, hub: HubEmulator
) -> None:
    hub.bytes_per_second = 4 * 1024 * 1024  # about a second for the file
    search_and_list(qtbot, window)
    seen: list[float] = []
    window.downloads.relay.delivered.connect(
        lambda _event: seen.append(
            window.downloads.rows[next(iter(window.downloads.rows))].fraction
        )
    )
    with qtbot.waitSignal(window.installed_changed, timeout=60_000):
        window.hub.download_button.click()
        qtbot.waitUntil(lambda: bool(window.downloads.rows), timeout=20_000)
        row = next(iter(window.downloads.rows.values()))
        qtbot.waitUntil(lambda: row.state.state == "done", timeout=60_000)

    assert any(0 < f < 1 for f in seen), "the progress bar never showed a part done"
    assert seen == sorted(seen)
    assert row.bar.value() == 1000
    assert "Installed" in row.line.text()
    installed = window.services.context.registry.list()
    [model] = [m for m in installed if m.repo == REPO]
    assert model.sha256 == hub.file(REPO, FILE).sha256
    assert model.id in window.installed.installed_ids()

    window.tabs.setCurrentIndex(3)
    window.installed.select(model.id)
    window.installed._confirm = lambda _question: True  # type: ignore[method-assign]
    with qtbot.waitSignal(window.installed_changed, timeout=20_000):
        window.installed.remove_button.click()
    assert model.id not in window.installed.installed_ids()
    assert not model.path.exists()
    assert "Removed" in window.installed.status.text()


def test_pause_and_resume(qtbot: QtBot, window: ModelsWindow, hub: HubEmulator) -> None:
    size = hub.file(REPO, FILE).size
    hub.inject(REPO, FILE, Fault(stall_at=size // 2, stall_seconds=20))
    window.start_download(REPO, FILE, "chat")
    qtbot.waitUntil(lambda: bool(window.downloads.rows), timeout=20_000)
    row = next(iter(window.downloads.rows.values()))
    qtbot.waitUntil(lambda: row.fraction >= 0.49, timeout=20_000)
    assert row.pause_button.isVisible() or not row.pause_button.isHidden()

    row.pause_button.click()
    qtbot.waitUntil(lambda: row.state.state == "paused", timeout=20_000)
    assert "Paused at" in row.line.text()
    assert row.pause_button.isHidden()
    assert not row.resume_button.isHidden()
    assert 0.4 < row.fraction < 0.6

    row.resume_button.click()
    qtbot.waitUntil(lambda: row.state.state == "done", timeout=30_000)
    assert row.fraction == 1.0
    # The resume asked only for the rest of the file.
    assert any(r and r.startswith("bytes=") and r != "bytes=0-" for r in hub.ranges_for(REPO, FILE))


def test_cancel_deletes_the_partial_download(
    qtbot: QtBot, window: ModelsWindow, hub: HubEmulator
) -> None:
    size = hub.file(REPO, FILE).size
    hub.inject(REPO, FILE, Fault(stall_at=size // 3, stall_seconds=20))
    window.start_download(REPO, FILE, "safety")
    qtbot.waitUntil(lambda: bool(window.downloads.rows), timeout=20_000)
    row = next(iter(window.downloads.rows.values()))
    qtbot.waitUntil(lambda: row.fraction > 0.3, timeout=20_000)
    row.cancel_button.click()
    qtbot.waitUntil(lambda: row.state.state == "cancelled", timeout=20_000)
    assert "Cancelled" in row.line.text()
    partials = list((window.services.context.models_dir / ".downloads").glob("*.part"))
    assert partials == []
    assert window.services.context.registry.list() == []


def test_a_missing_repository_gives_one_sentence(
    qtbot: QtBot, window: ModelsWindow, hub: HubEmulator
) -> None:
    with qtbot.waitSignal(window.files_ready, timeout=20_000):
        window.hub.show_files("bastion-test/no-such-repo")
    text = window.hub.files_status.text()
    assert "no-such-repo" in text
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1
    assert window.hub.files.rowCount() == 0


def test_a_hub_that_is_gone_gives_one_sentence(
    qtbot: QtBot, window: ModelsWindow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    window.hub.query.setText("llama")
    with qtbot.waitSignal(window.problem_shown, timeout=60_000) as shown:
        window.hub.search()
    sentence = shown.args[0]
    assert sentence.startswith("Cannot reach the Hub")
    assert len(sentence.splitlines()) == 1
    assert window.hub.status.text() == sentence
    assert window.hub.search_button.isEnabled()


def test_import_from_disk_in_place_and_change_its_role(
    qtbot: QtBot, window: ModelsWindow, model_file: Path
) -> None:
    with qtbot.waitSignal(window.installed_changed, timeout=20_000):
        window.installed.import_file(model_file, "reference")
    qtbot.waitUntil(lambda: bool(window.installed.installed_ids()), timeout=10_000)
    [model] = window.services.context.registry.list()
    assert model.path == model_file.resolve()
    assert not model.owns_file
    window.installed.select(model.id)
    window.installed.use_as.setCurrentIndex(window.installed.use_as.findData("safety"))
    with qtbot.waitSignal(window.installed_changed, timeout=20_000):
        window.installed.use_as.activated.emit(window.installed.use_as.currentIndex())
    assert window.services.context.registry.get(model.id).role == "safety"
    assert "safety model" in window.installed.status.text()

    window.installed._confirm = lambda _question: True  # type: ignore[method-assign]
    window.installed.select(model.id)
    with qtbot.waitSignal(window.installed_changed, timeout=20_000):
        window.installed.remove_selected()
    assert model_file.exists(), "a file imported in place is the user's and stays"


def test_importing_a_file_that_is_not_gguf_says_so(
    qtbot: QtBot, window: ModelsWindow, tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("this is not a model")
    with qtbot.waitSignal(window.problem_shown, timeout=20_000) as shown:
        window.installed.import_file(bogus, "copy")
    assert "notes.gguf" in shown.args[0]
    assert window.services.context.registry.list() == []
