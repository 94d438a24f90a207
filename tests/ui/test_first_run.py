"""Which catalog model the starter notice offers, on fixed machines (the hardware probe
is replaced by a fixed profile: this machine has one shape only), and what the notice
says in the real window (with this machine's real probe)."""

from __future__ import annotations

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.hub import probe
from bastion_desktop.core.hub.catalog import load_catalog
from bastion_desktop.core.hub.filenames import format_size
from bastion_desktop.ui.first_run import CPU_COMFORTABLE_BILLIONS, suggest_catalog_model
from tests.core.hub.test_fit import machine
from tests.ui.desktop_fixtures import Desktop


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
def test_the_offer_runs_well_on_the_machine(
    monkeypatch: pytest.MonkeyPatch, hardware: probe.HardwareProfile, expected: str | None
) -> None:
    monkeypatch.setattr(probe, "probe_hardware", lambda: hardware)
    suggestion = suggest_catalog_model(4096)
    if expected is None:
        assert suggestion is None
        return
    assert suggestion is not None
    if expected == "small enough for the CPU":
        # Plenty of RAM does not make a 14B model pleasant on a CPU.
        assert suggestion.fit.kind.value == "cpu_only"
        model = load_catalog().get(suggestion.model_id)
        assert model is not None
        assert model.parameters_b <= CPU_COMFORTABLE_BILLIONS
    else:
        assert suggestion.fit.kind.value == "full_gpu"
        assert suggestion.size > 6 * 1024**3


@pytest.mark.model
# The button opens the models window: the offscreen platform cannot size it from its hints.
@pytest.mark.qt_log_ignore("does not support propagateSizeHints")
def test_the_window_explains_the_starter_and_offers_a_model_for_this_machine(
    desktop: Desktop, qtbot: QtBot
) -> None:
    notice = desktop.window.starter_notice
    assert notice.isVisibleTo(desktop.window), "the starter is the default model"
    qtbot.waitUntil(lambda: notice.suggestion is not None, timeout=30_000)
    suggestion = notice.suggestion
    assert suggestion is not None
    text = notice.text.text()
    assert text.startswith("You are chatting with the starter model, a tiny test model")
    # The size as the models window shows the same download.
    assert f"{suggestion.name} ({format_size(suggestion.size)} download)" in text
    assert notice.get_button.text() == f"Get {suggestion.name}…"
    with qtbot.waitSignal(notice.open_models, timeout=5_000):
        notice.get_button.click()
