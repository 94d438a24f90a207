"""A full disk gets a sentence and loses nothing (on a real, small tmpfs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion_desktop.core.errors import StarterModelError
from bastion_desktop.core.files import DiskFullError, write_atomically
from bastion_desktop.core.installed_models import ModelRegistry
from bastion_desktop.core.settings import Settings, load_settings, save_settings
from bastion_desktop.core.starter import ensure_starter_model


def test_saving_settings_on_a_full_disk_keeps_the_old_file(small_disk: Path) -> None:
    path = small_disk / "settings.json"
    save_settings(Settings(system_prompt="old"), path)
    filler = small_disk / "filler"
    with pytest.raises(OSError):  # noqa: PT011  (fill it to the last byte)
        filler.write_bytes(b"\0" * (17 * 1024 * 1024))
    with pytest.raises(DiskFullError, match="is full"):
        save_settings(Settings(system_prompt="new " * 10_000), path)
    assert load_settings(path).system_prompt == "old"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "settings.json"]


def test_the_starter_model_on_a_full_disk_is_a_sentence(small_disk: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    with pytest.raises(StarterModelError, match=r"The disk holding .* is full"):
        ensure_starter_model(small_disk / "models", registry)
    assert list((small_disk / "models").iterdir()) == [], "no partial model file is left"
    assert registry.list() == []


def test_atomic_write_replaces_in_one_step(tmp_path: Path) -> None:
    path = tmp_path / "file.json"
    write_atomically(path, b"one")
    write_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]
