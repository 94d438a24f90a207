"""What the starter notice offers: a catalog chat model that runs well here and, where
both fit the machine's memory together, the smallest catalog safety model with it, one
button downloading both. On fixed machines (the hardware probe is replaced by a fixed
profile: this machine has one shape only), in the notice itself, and in the real window
(with this machine's real probe), where the button starts both downloads in the models
window."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.hub import probe
from bastion_desktop.core.hub.catalog import load_catalog
from bastion_desktop.core.hub.filenames import format_size, model_stem
from bastion_desktop.core.hub.local_files import import_gguf
from bastion_desktop.ui.first_run import (
    CPU_COMFORTABLE_BILLIONS,
    StarterNotice,
    Suggestion,
    suggest_catalog_models,
)
from bastion_desktop.ui.models_window import ModelsWindow
from tests.core.hub.gguf_files import write_tiny_gguf
from tests.core.hub.hub_emulator import Fault, HubEmulator
from tests.core.hub.test_fit import machine
from tests.ui.desktop_fixtures import Desktop, screenshot
from tests.ui.test_top_bar import no_downloads
from tests.ui.window_services import context, engine, services

__all__ = ["context", "engine", "no_downloads", "services"]  # fixtures used by name

# The notice is shown as a window of its own here, and the real window's button opens
# the models window: each time, the offscreen platform says it cannot size a window from
# its hints (a real window system can).
pytestmark = pytest.mark.qt_log_ignore("does not support propagateSizeHints")

GIB = 1024**3
SMALLEST_GUARD = min(load_catalog().by_role("safety"), key=lambda m: m.parameters_b)


def suggested_on(
    monkeypatch: pytest.MonkeyPatch, hardware: probe.HardwareProfile, *, with_safety: bool = True
) -> Suggestion | None:
    monkeypatch.setattr(probe, "probe_hardware", lambda: hardware)
    return suggest_catalog_models(4096, with_safety=with_safety)


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (machine(16), "small enough for the CPU"),
        (machine(64), "small enough for the CPU"),
        (machine(32, gpus=(24,)), "large, all on the GPU"),
        (machine(1), None),
    ],
    ids=["laptop", "big-ram-no-gpu", "24gb-gpu", "tiny"],
)
def test_the_chat_model_offered_runs_well_on_the_machine(
    monkeypatch: pytest.MonkeyPatch, hardware: probe.HardwareProfile, expected: str | None
) -> None:
    suggestion = suggested_on(monkeypatch, hardware)
    if expected is None:
        assert suggestion is None
        return
    assert suggestion is not None
    chat = suggestion.chat
    assert chat.role == "chat"
    assert chat.fit is not None
    if expected == "small enough for the CPU":
        # Plenty of RAM does not make a 14B model pleasant on a CPU.
        assert chat.fit.kind.value == "cpu_only"
        model = load_catalog().get(chat.model_id)
        assert model is not None
        assert model.parameters_b <= CPU_COMFORTABLE_BILLIONS
    else:
        assert chat.fit.kind.value == "full_gpu"
        assert chat.size > 6 * GIB


@pytest.mark.parametrize(
    ("hardware", "gpu"),
    [(machine(16), 0), (machine(16, gpus=(8,)), 8), (machine(32, gpus=(24,)), 24)],
    ids=["laptop", "8gb-gpu", "24gb-gpu"],
)
def test_a_safety_model_comes_with_it_where_both_fit_together(
    monkeypatch: pytest.MonkeyPatch, hardware: probe.HardwareProfile, gpu: int
) -> None:
    suggestion = suggested_on(monkeypatch, hardware)
    assert suggestion is not None
    safety = suggestion.safety
    assert safety is not None
    assert (safety.model_id, safety.role) == (SMALLEST_GUARD.id, "safety")
    assert suggestion.picks == (suggestion.chat, safety)
    assert suggestion.size == suggestion.chat.size + safety.size
    chat_fit, safety_fit = suggestion.chat.fit, safety.fit
    assert chat_fit is not None
    assert safety_fit is not None
    # Both loaded at once, each in its own host: together they fit the machine.
    assert hardware.ram_total is not None
    assert chat_fit.ram_bytes + safety_fit.ram_bytes <= hardware.ram_total
    assert chat_fit.gpu_bytes + safety_fit.gpu_bytes <= gpu * GIB
    assert not chat_fit.tight


def test_the_chat_model_gives_way_to_the_safety_model_where_memory_is_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An 8 GB GPU holds a 12B model mostly, or an 8B model and the guard entirely.
    alone = suggested_on(monkeypatch, machine(16, gpus=(8,)), with_safety=False)
    beside = suggested_on(monkeypatch, machine(16, gpus=(8,)))
    assert alone is not None
    assert beside is not None
    assert alone.safety is None
    assert beside.safety is not None
    alone_model = load_catalog().get(alone.chat.model_id)
    beside_model = load_catalog().get(beside.chat.model_id)
    assert alone_model is not None
    assert beside_model is not None
    assert beside_model.parameters_b < alone_model.parameters_b


def test_the_chat_model_is_offered_alone_where_the_two_do_not_fit_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 3 GB of RAM: a small chat model runs, and the guard runs, but not both at once.
    suggestion = suggested_on(monkeypatch, machine(3))
    assert suggestion is not None
    assert suggestion.safety is None
    assert suggestion.picks == (suggestion.chat,)
    alone = suggested_on(monkeypatch, machine(3), with_safety=False)
    assert alone == suggestion


@pytest.fixture
def laptop(monkeypatch: pytest.MonkeyPatch) -> probe.HardwareProfile:
    hardware = machine(16)
    monkeypatch.setattr(probe, "probe_hardware", lambda: hardware)
    return hardware


@pytest.fixture
def notice(qtbot: QtBot, services: Any) -> StarterNotice:
    shown = StarterNotice(services)
    qtbot.addWidget(shown)
    shown.resize(900, shown.sizeHint().height())
    shown.show()
    return shown


def suggest(qtbot: QtBot, notice: StarterNotice) -> Suggestion:
    notice.update_for(None)
    qtbot.waitUntil(lambda: notice.suggestion is not None, timeout=30_000)
    assert notice.suggestion is not None
    return notice.suggestion


def test_one_button_downloads_the_chat_model_and_the_safety_model(
    qtbot: QtBot, laptop: probe.HardwareProfile, notice: StarterNotice
) -> None:
    suggestion = suggest(qtbot, notice)
    chat, safety = suggestion.chat, suggestion.safety
    assert safety is not None
    text = notice.text.text()
    # The sizes as the models window shows the same downloads.
    assert f"{chat.name} ({format_size(chat.size)})" in text
    assert f"{safety.name} ({format_size(safety.size)})" in text
    assert "to check content safety reliably" in text
    button = notice.get_button
    assert button.text() == f"Download both ({format_size(suggestion.size)})"
    assert button.accessibleName() == f"Download {chat.name} and {safety.name}"
    assert notice.other_button.isVisible(), "the whole catalog stays one click away"
    screenshot(notice, "starter-notice-offer")
    with qtbot.waitSignal(notice.download_requested, timeout=5_000) as asked:
        button.click()
    picks = asked.args[0]
    model = load_catalog().get(chat.model_id)
    assert model is not None
    assert [(p.repo, p.file, p.role) for p in picks] == [
        (model.repo, model.file_for().file, "chat"),
        (SMALLEST_GUARD.repo, SMALLEST_GUARD.file_for().file, "safety"),
    ]
    assert notice.text.text().startswith(f"Downloading {chat.name} and {safety.name}")
    screenshot(notice, "starter-notice-downloading")
    # Asked once: the button now shows where the downloads are.
    with qtbot.waitSignal(notice.open_models, timeout=5_000):
        button.click()


def test_no_second_safety_model_is_offered_when_one_is_installed(
    qtbot: QtBot,
    laptop: probe.HardwareProfile,
    services: Any,
    notice: StarterNotice,
    tmp_path: Path,
) -> None:
    [path] = write_tiny_gguf(tmp_path / "Tiny-Guard-Q4_K_M.gguf", name="Tiny Guard")
    context = services.context
    import_gguf(path, context.registry, context.models_dir, role="safety")
    suggestion = suggest(qtbot, notice)
    assert suggestion.safety is None
    assert notice.get_button.text() == (
        f"Download {suggestion.chat.name} ({format_size(suggestion.chat.size)})"
    )
    with qtbot.waitSignal(notice.download_requested, timeout=5_000) as asked:
        notice.get_button.click()
    assert [p.role for p in asked.args[0]] == ["chat"]


def test_the_button_opens_the_models_window_when_the_policy_allows_no_downloads(
    no_downloads: None, qtbot: QtBot, laptop: probe.HardwareProfile, engine: Any
) -> None:
    from bastion_desktop.context import AppContext
    from tests.ui.window_services import make_services

    managed = StarterNotice(make_services(AppContext.start(), engine))
    qtbot.addWidget(managed)
    suggestion = suggest(qtbot, managed)
    assert managed.get_button.text() == f"Get {suggestion.chat.name}…"
    assert managed.other_button.isHidden()
    with qtbot.waitSignal(managed.open_models, timeout=5_000):
        managed.get_button.click()


@pytest.fixture
def catalog_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubEmulator]:
    """The Hub emulator serving every catalog model's recommended file (a tiny GGUF of
    that name) that stalls after its first bytes: a download is seen starting, and the
    test ends before any finishes."""
    emulator = HubEmulator()
    folder = tmp_path / "hub"
    folder.mkdir()
    for model in load_catalog().models:
        name = model.file_for().file
        [path] = write_tiny_gguf(folder / name, name=model.name)
        emulator.add_repo(model.repo, {name: path}, license="apache-2.0")
        emulator.inject(model.repo, name, Fault(stall_at=1024, stall_seconds=60, times=10))
    monkeypatch.setenv("HF_ENDPOINT", emulator.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield emulator
    finally:
        emulator.shutdown()


def shut_down(qtbot: QtBot, window: ModelsWindow) -> None:
    window.shut_down()
    for _ in range(1000):
        if not [t for t in threading.enumerate() if t.name.startswith("download-")]:
            break
        qtbot.wait(20)


@pytest.mark.model
def test_the_window_offers_both_and_one_click_starts_both_downloads(
    desktop: Desktop, qtbot: QtBot, catalog_hub: HubEmulator
) -> None:
    notice = desktop.window.starter_notice
    assert notice.isVisibleTo(desktop.window), "the starter is the default model"
    qtbot.waitUntil(lambda: notice.suggestion is not None, timeout=30_000)
    suggestion = notice.suggestion
    assert suggestion is not None
    text = notice.text.text()
    assert text.startswith("You are chatting with the starter model, a tiny test model")
    assert f"{suggestion.chat.name} ({format_size(suggestion.chat.size)}" in text
    screenshot(desktop.window, "first-run-offer")
    notice.get_button.click()
    window = desktop.window.secondary.get("models")
    assert isinstance(window, ModelsWindow)
    try:
        names = {model_stem(pick.file) for pick in suggestion.picks}
        # The desktop is shared by the module's tests: earlier downloads may be listed.
        qtbot.waitUntil(
            lambda: names <= {row.state.name for row in window.downloads.rows.values()},
            timeout=30_000,
        )
        qtbot.waitUntil(lambda: window.tabs.currentWidget() is window.downloads)
        # Each from its catalog repository (the Hub was asked about both).
        asked = {path for method, path, _range in catalog_hub.requests if method == "GET"}
        assert {f"/api/models/{pick.repo}" for pick in suggestion.picks} <= asked
    finally:
        shut_down(qtbot, window)
