"""Which catalog model the starter notice offers, on fixed machines (the hardware probe
is replaced by a fixed profile: this machine has one shape only)."""

from __future__ import annotations

import pytest

from bastion_desktop.core.hub import probe
from bastion_desktop.core.hub.catalog import load_catalog
from bastion_desktop.ui.first_run import CPU_COMFORTABLE_BILLIONS, suggest_catalog_model
from tests.core.hub.test_fit import machine


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
