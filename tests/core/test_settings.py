import json
from pathlib import Path

import pytest

from bastion_desktop.core.errors import SettingsError
from bastion_desktop.core.settings import (
    InferenceSettings,
    SamplingSettings,
    Settings,
    load_settings,
    save_settings,
)


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "settings.json")
    assert settings == Settings()
    assert settings.inference.gpu_layers == "auto"
    assert settings.version == 1


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config" / "settings.json"
    settings = Settings(
        default_model="my-model",
        inference=InferenceSettings(context_length=8192, gpu_layers=20, threads=4),
        sampling=SamplingSettings(temperature=0.2, seed=7),
        system_prompt="Be brief.",
    )
    save_settings(settings, path)
    assert load_settings(path) == settings
    assert not list(path.parent.glob("*.tmp")), "the atomic write left a temporary file"


@pytest.mark.parametrize("value", ["auto", "none", 0, 33])
def test_gpu_layers_accepts_auto_none_or_a_count(tmp_path: Path, value: object) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"inference": {"gpu_layers": value}}))
    assert load_settings(path).inference.gpu_layers == value


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"sampling": {"temperature": 9}}, "sampling.temperature"),
        ({"inference": {"gpu_layers": "all"}}, "inference.gpu_layers"),
        ({"inference": {"context_length": 10}}, "inference.context_length"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_validation_errors_name_the_field(tmp_path: Path, content: object, named: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SettingsError, match=rf"{path}.*{named}"):
        load_settings(path)


def test_broken_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{\n  "system_prompt": "x",\n  oops\n}')
    with pytest.raises(SettingsError, match=r"not valid JSON.*line 3"):
        load_settings(path)
    path.write_text('{"system_prompt": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(SettingsError, match=r"settings\.json is nested too deeply to be read"):
        load_settings(path)


def test_a_newer_format_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    original = json.dumps({"version": 99, "future_option": True})
    path.write_text(original)
    with pytest.raises(SettingsError, match="newer Bastion"):
        load_settings(path)
    assert path.read_text() == original
