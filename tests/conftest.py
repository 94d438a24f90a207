"""Shared fixtures. Tests use real things: the real starter model through llama.cpp,
real files in temporary folders, real child processes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion_desktop.core.paths import HOME_VARIABLE
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.registry import ModelRegistry
from bastion_desktop.core.starter import ensure_starter_model

apply_private_environment()


@pytest.fixture(autouse=True)
def bastion_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own Bastion folders, never the user's."""
    home = tmp_path / "bastion-home"
    monkeypatch.setenv(HOME_VARIABLE, str(home))
    return home


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def starter_path(shared_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real starter GGUF, written once per test session from its PyPI package."""
    registry = ModelRegistry(tmp_path_factory.mktemp("registry") / "models.json")
    return ensure_starter_model(shared_models_dir, registry).path


@pytest.fixture
def home_with_starter(bastion_home: Path, shared_models_dir: Path, starter_path: Path) -> Path:
    """A Bastion home whose settings point at the session's models folder, so the CLI
    finds the starter already written (it only checks the sha256 and registers it)."""
    config = bastion_home / "config"
    config.mkdir(parents=True)
    settings = {"models_dir": str(shared_models_dir)}
    (config / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    return bastion_home


@pytest.fixture
def cli_env(home_with_starter: Path) -> dict[str, str]:
    """The environment for running `bastion` as a child process."""
    env = dict(os.environ)
    env[HOME_VARIABLE] = str(home_with_starter)
    return env


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB filesystem (tmpfs) that fills up like a real disk. Mounting needs
    root, which CI has; elsewhere the test is skipped and says why."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
