from pathlib import Path

import pytest

from bastion_desktop.core.paths import AppPaths


def test_bastion_home_relocates_every_folder(tmp_path: Path) -> None:
    paths = AppPaths.discover({"BASTION_HOME": str(tmp_path / "portable")})
    base = (tmp_path / "portable").resolve()
    for folder in (paths.data, paths.models, paths.config, paths.logs, paths.cache):
        assert folder.is_relative_to(base)
    assert len({paths.data, paths.models, paths.config, paths.logs, paths.cache}) == 5


def test_without_bastion_home_the_platform_folders_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    paths = AppPaths.discover({})
    assert paths.data == tmp_path / "xdg-data" / "Bastion"
    assert paths.config == tmp_path / "xdg-config" / "Bastion"
    assert paths.models.is_relative_to(paths.data)


def test_ensure_creates_private_folders(tmp_path: Path) -> None:
    paths = AppPaths.discover({"BASTION_HOME": str(tmp_path / "home")})
    paths.ensure()
    for folder in (paths.data, paths.models, paths.config, paths.logs, paths.cache):
        assert folder.is_dir()
        assert folder.stat().st_mode & 0o077 == 0, f"{folder} is readable by others"
