"""The starter model is written from its PyPI package, verified, and registered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bastion_desktop.core.errors import ModelNotFoundError, StarterModelError
from bastion_desktop.core.installed_models import ModelRegistry, RegisteredModel, RegistryError
from bastion_desktop.core.starter import (
    STARTER_ID,
    STARTER_NAME,
    ensure_starter_model,
    sha256_of,
)

STARTER_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_first_use_writes_verifies_and_registers_the_starter(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "data" / "models.json")
    model = ensure_starter_model(tmp_path / "models", registry)
    assert model.id == STARTER_ID
    assert model.name == STARTER_NAME
    assert model.path.parent == tmp_path / "models"
    assert sha256_of(model.path) == STARTER_SHA256
    assert model.size == model.path.stat().st_size
    assert registry.get(STARTER_ID) == model
    assert [p.name for p in (tmp_path / "models").iterdir()] == [model.path.name], (
        "no partial file may be left behind"
    )
    # A second start finds it in place and leaves the file alone.
    before = model.path.stat().st_mtime_ns
    assert ensure_starter_model(tmp_path / "models", registry) == model
    assert model.path.stat().st_mtime_ns == before


def test_a_damaged_starter_file_is_replaced(tmp_path: Path, starter_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    model = ensure_starter_model(tmp_path / "models", registry)
    with model.path.open("r+b") as handle:
        handle.seek(model.size // 2)
        handle.write(b"\0" * 4096)
    # Same size, different content: the registry check is cheap, so drop the entry as a
    # damaged or hand-edited install would look, and ask again.
    registry.remove(STARTER_ID)
    ensure_starter_model(tmp_path / "models", registry)
    assert sha256_of(model.path) == STARTER_SHA256


def test_registry_resolves_ids_and_paths(tmp_path: Path, starter_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models.json")
    model = RegisteredModel(
        id="mine",
        name="Mine",
        path=starter_path,
        sha256=STARTER_SHA256,
        size=starter_path.stat().st_size,
        source="local",
    )
    registry.add(model)
    assert registry.resolve("mine") == ("mine", starter_path)
    assert registry.resolve(str(starter_path))[1] == starter_path.resolve()
    with pytest.raises(ModelNotFoundError, match="installed: mine"):
        registry.resolve("missing")
    registry.add(model.model_copy(update={"path": tmp_path / "gone.gguf"}))
    with pytest.raises(ModelNotFoundError, match="file of model 'mine' is missing"):
        registry.resolve("mine")


def test_a_damaged_registry_is_reported_not_overwritten(tmp_path: Path) -> None:
    file = tmp_path / "models.json"
    file.write_text('{"version": 1, "models": [{"id": 3}]}')
    registry = ModelRegistry(file)
    with pytest.raises(RegistryError, match="damaged"):
        registry.list()
    with pytest.raises(RegistryError):
        ensure_starter_model(tmp_path / "models", registry)
    assert file.read_text() == '{"version": 1, "models": [{"id": 3}]}'


@pytest.fixture
def installed_starter(tmp_path: Path, starter_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed (frozen) Bastion's starter: the assembled file among the app's
    resources, read-only. The freeze puts it there; this test copies it."""
    bundled = tmp_path / "opt" / "bastion" / starter_path.name
    bundled.parent.mkdir(parents=True)
    shutil.copyfile(starter_path, bundled)
    bundled.chmod(0o444)
    monkeypatch.setattr(
        "bastion_desktop.core.starter.bundled_starter_file",
        lambda name: bundled if name == bundled.name else None,
    )
    return bundled


def test_an_installed_starter_is_used_in_place_and_never_copied(
    tmp_path: Path, installed_starter: Path
) -> None:
    registry = ModelRegistry(tmp_path / "data" / "models.json")
    model = ensure_starter_model(tmp_path / "models", registry)
    assert model.path == installed_starter
    assert not model.owns_file, "removing the starter must never delete the installation's file"
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())
    assert ensure_starter_model(tmp_path / "models", registry) == model


def test_a_damaged_installed_starter_says_reinstall(
    tmp_path: Path, installed_starter: Path
) -> None:
    installed_starter.chmod(0o644)
    with installed_starter.open("r+b") as handle:
        handle.seek(1 << 20)
        handle.write(b"\0" * 4096)
    with pytest.raises(StarterModelError, match="Reinstall Bastion"):
        ensure_starter_model(tmp_path / "models", ModelRegistry(tmp_path / "models.json"))
