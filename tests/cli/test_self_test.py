"""`bastion doctor --self-test`: the check every packaging step runs on what it built
(tests/packaging runs it in the installed app; here it runs from the checkout)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from bastion_desktop.commands import self_test
from bastion_desktop.core.policy.merge import merge_sources
from bastion_desktop.core.policy.sources import Level, unusable
from tests.cli.conftest import RunBastion


@pytest.mark.model
def test_the_self_test_runs_every_step_in_a_home_of_its_own(
    bastion: RunBastion, bastion_home: Path
) -> None:
    result = bastion("doctor", "--self-test", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["frozen"] is False
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == [
        "policy",
        "runtime",
        "starter model",
        "encrypted history",
        "guardrails",
    ]
    assert all(step["ok"] for step in steps.values()), steps
    # Each GPU backend shipped was tried in a child and said what it found.
    assert steps["runtime"]["detail"].startswith("llama.cpp runs its "), steps["runtime"]
    assert "Runs on the CPU" in steps["runtime"]["detail"]
    assert "blocked an injection" in steps["guardrails"]["detail"]
    # It worked in a temporary home: the user's has no history and no copy of the starter.
    assert not (bastion_home / "data" / "history.db").exists()
    assert not list((bastion_home / "models").glob("*.gguf"))


@pytest.mark.log_warnings("the policy layer logs the unusable source as it fails closed")
def test_a_policy_that_cannot_be_used_fails_first_with_its_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = merge_sources(
        [unusable("/etc/bastion/policies/managed/10.json", Level.MACHINE_MANDATORY, "is not JSON")]
    )
    monkeypatch.setattr(self_test, "load_policy", lambda: broken)
    reached: list[str] = []
    monkeypatch.setattr(
        self_test,
        "_STEPS",
        (self_test._STEPS[0], ("never", lambda _context: reached.append("never"))),
    )
    code = self_test.run_self_test(argparse.Namespace(json=False))
    out = capsys.readouterr()
    assert code == 1
    assert reached == []
    assert "FAILED policy" in out.err
    assert "10.json is not JSON" in out.err
    assert "Strict" in out.err
