"""`bastion models` as a user runs it, against the Hub emulator on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..core.hub.hub_emulator import Fault, HubEmulator  # noqa: TID252  (tests are not on sys.path)
from .conftest import BASTION

pytestmark = pytest.mark.model

REPO = "bastion-test/gemma-3-270m-GGUF"
FILE = "gemma-3-270m-Q4_K_M.gguf"


@pytest.fixture
def hub(starter_path: Path) -> Iterator[HubEmulator]:
    emulator = HubEmulator()
    emulator.add_repo(REPO, {FILE: starter_path}, license="gemma")
    try:
        yield emulator
    finally:
        emulator.shutdown()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BASTION), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_search_list_fit_download_chat_and_remove(
    hub: HubEmulator, cli_env: dict[str, str]
) -> None:
    env = dict(cli_env, HF_ENDPOINT=hub.url)
    found = run(env, "models", "search", "gemma", "--json")
    assert found.returncode == 0, found.stderr
    assert [r["id"] for r in json.loads(found.stdout)] == [REPO]

    files = json.loads(run(env, "models", "files", REPO, "--json").stdout)
    assert [c["quantization"] for c in files["choices"]] == ["Q4_K_M"]
    assert files["fit"][0]["kind"] in ("full_gpu", "partial_gpu", "cpu_only")

    fit = run(env, "models", "fit", REPO, FILE)
    assert fit.returncode == 0, fit.stderr
    assert fit.stdout.strip()

    downloaded = run(env, "models", "download", REPO, FILE)
    assert downloaded.returncode == 0, downloaded.stderr
    model_id = downloaded.stdout.strip()
    assert "license: gemma" in downloaded.stderr
    assert "Installed" in downloaded.stderr

    installed = {m["id"]: m for m in json.loads(run(env, "models", "list", "--json").stdout)}
    assert installed[model_id]["repo"] == REPO
    assert installed[model_id]["sha256"] == hub.file(REPO, FILE).sha256

    reply = run(env, "chat", "--ephemeral", "--model", model_id, "--max-tokens", "4", "Hi")
    assert reply.returncode == 0, reply.stderr
    assert reply.stdout.strip()

    removed = run(env, "models", "remove", model_id)
    assert removed.returncode == 0, removed.stderr
    assert "Deleted" in removed.stdout
    assert not Path(installed[model_id]["path"]).exists()


def test_offline_search_is_one_sentence(cli_env: dict[str, str]) -> None:
    env = dict(cli_env, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens there
    result = run(env, "models", "search", "llama")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_catalog_lists_chat_and_safety_models_with_their_fit(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "models", "catalog", "--json")
    assert result.returncode == 0, result.stderr
    catalog = json.loads(result.stdout)
    assert len([m for m in catalog if m["role"] == "chat"]) >= 10
    assert any("guard" in m["id"].lower() for m in catalog if m["role"] == "safety")
    assert all(m["fit"]["kind"] for m in catalog)


def test_a_download_that_fails_its_checksum_says_so_once(
    hub: HubEmulator, cli_env: dict[str, str], starter_path: Path
) -> None:
    hub.inject(REPO, FILE, Fault(corrupt_at=starter_path.stat().st_size // 2))
    failed = run(dict(cli_env, HF_ENDPOINT=hub.url), "models", "download", REPO, FILE)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("bastion: ")
    assert failed.stderr.count(last.removeprefix("bastion: ")) == 1, failed.stderr
