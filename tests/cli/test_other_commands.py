from __future__ import annotations

import json

import pytest

from .conftest import RunBastion

pytestmark = pytest.mark.model


def test_models_list_shows_the_registered_starter(bastion: RunBastion) -> None:
    listed = bastion("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    models = json.loads(listed.stdout)
    assert [m["id"] for m in models] == ["gemma-3-270m-starter"]
    assert models[0]["name"] == "Gemma 3 270M (starter, base model)"
    assert models[0]["sha256"] == (
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    )
    text = bastion("models", "list")
    assert "gemma-3-270m-starter" in text.stdout
    assert "253.1 MB" in text.stdout


def test_doctor_reports_the_build_and_a_working_starter(bastion: RunBastion) -> None:
    result = bastion("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["packages"]["llama-cpp-python"] == "0.3.36"
    # What the runtime probe's children found: the CPU variant, the CPU's features, and
    # each GPU backend shipped with what it found (lavapipe is no GPU to ggml by default).
    machine = report["runtime"]
    assert machine["ok"] is True, machine
    assert machine["cpu_features"]
    assert machine["placement"].startswith("Runs on")
    for check in machine["gpu_backends"]:
        assert check["problem"] or check["devices"], check
    assert report["starter_model"]["ok"] is True
    assert report["starter_model"]["generated_tokens"] > 0
    # The runtime the installers ship: ggml chose one of its CPU modules for this CPU.
    runtime = report["starter_model"]["runtime"]
    assert runtime["cpu_variant"], runtime
    assert "CPU" in runtime["backends"]
    assert runtime["devices"][0]["memory_total"] > 0
    # No keychain on this machine: the history will use a passphrase, and says so.
    assert "passphrase" in report["history"]["key"]
    assert report["history"]["exists"] is False
    assert report["history"]["damage_noted"] is False
    human = bastion("doctor")
    assert "Starter model   loads and answers" in human.stdout
    assert f"CPU variant          {runtime['cpu_variant']}" in human.stdout
    assert machine["cpu_variant"] == runtime["cpu_variant"], "the probe and the host agree"
    assert f"models               {machine['placement']}" in human.stdout


def test_version(bastion: RunBastion) -> None:
    result = bastion("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("bastion ")
