"""The profiles window as a user meets it: the built-ins with their checks in plain
words, import of a valid folder, an invalid one listing file, line and field, a profile
carrying code refused, export to an archive, and "Make default" saving the setting."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.core.settings import load_settings
from bastion_desktop.ui.profiles_window import ProfilesWindow
from bastion_guardrails.safety.calibration import calibration_set
from tests.guardrails.conftest import write_profile
from tests.ui.test_top_bar import calibrated, instruct_chat_model
from tests.ui.window_services import context, engine, services

__all__ = ["context", "engine", "services"]  # fixtures used by name

CONFIG = """\
rails:
  input:
    flows:
      - bastion block prompt injection on input
  output:
    flows:
      - bastion mask secrets on output
"""


@pytest.fixture
def window(qtbot: QtBot, services: Any) -> ProfilesWindow:
    shown = ProfilesWindow(services)
    qtbot.addWidget(shown)
    qtbot.waitUntil(lambda: len(shown.views) >= 4, timeout=20_000)
    return shown


def test_the_builtins_are_listed_with_what_they_check(window: ProfilesWindow) -> None:
    ids = [v.id for v in window.views]
    assert ids[:4] == ["off", "standard", "strict", "workplace"]
    assert window.selected_id() == "standard"  # the default is shown first
    assert "default" in window.list.currentItem().text()
    assert "prompt-injection" in window.sentence.text()
    assert "safety model" in window.sentence.text()  # what to download for the rest
    assert window.judges.isHidden(), "no judge has been tested here"
    assert window.checks.topLevelItemCount() >= 2
    window.select("off")
    assert window.sentence.text() == "Guardrails are off: nothing is checked."
    assert "Built-in" in window.facts.text()


def test_importing_a_valid_folder_lists_and_selects_it(
    qtbot: QtBot, window: ProfilesWindow, tmp_path: Path
) -> None:
    folder = write_profile(tmp_path / "team", CONFIG, profile_id="team")
    with qtbot.waitSignal(window.imported, timeout=20_000) as imported:
        window.import_from(folder)
    assert imported.args == ["team"]
    qtbot.waitUntil(lambda: window.selected_id() == "team", timeout=20_000)
    assert "Imported" in window.facts.text()
    assert (window.services.context.profiles_dir / "team" / "profile.yml").is_file()
    assert window.problems.isHidden()


def test_an_invalid_profile_lists_file_line_and_field_and_installs_nothing(
    qtbot: QtBot, window: ProfilesWindow, tmp_path: Path
) -> None:
    config = CONFIG + "  streaming:\n    chunk_size: lots\n"
    bad = CONFIG.replace("rails:\n", "rails:\n  output_streaming: 1\n", 1)
    folder = write_profile(tmp_path / "bad", bad + config[len(CONFIG) :], profile_id="bad")
    with qtbot.waitSignal(window.import_failed, timeout=20_000) as failed:
        window.import_from(folder)
    lines = failed.args[0]
    assert lines
    assert all(line.startswith("config.yml") for line in lines), lines
    assert any("line " in line and "field '" in line for line in lines), lines
    shown = [window.problems.item(i).text() for i in range(window.problems.count())]
    assert shown == lines
    assert not window.problems.isHidden()
    assert "Traceback" not in " ".join(shown)
    assert not (window.services.context.profiles_dir / "bad").exists()


def test_a_profile_carrying_code_is_refused(
    qtbot: QtBot, window: ProfilesWindow, tmp_path: Path
) -> None:
    folder = write_profile(tmp_path / "coded", CONFIG, profile_id="coded", actions_py="x = 1\n")
    with qtbot.waitSignal(window.import_failed, timeout=20_000) as failed:
        window.import_from(folder)
    [line] = [x for x in failed.args[0] if x.startswith("actions.py")]
    assert "only Bastion's built-in profiles may carry code" in line
    assert not (window.services.context.profiles_dir / "coded").exists()


def test_export_writes_an_archive_that_imports_again(
    qtbot: QtBot, window: ProfilesWindow, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "strict-copy.zip"
    with qtbot.waitSignal(window.exported, timeout=20_000) as exported:
        window.export_to("strict", target)
    assert exported.args == [str(target)]
    with zipfile.ZipFile(target) as archive:
        assert "strict/profile.yml" in archive.namelist()
    # A built-in's id cannot be imported over it: the window says so by field.
    with qtbot.waitSignal(window.import_failed, timeout=20_000) as failed:
        window.import_from(target)
    assert any("field 'id'" in line for line in failed.args[0])


def test_make_default_saves_the_setting(
    qtbot: QtBot, window: ProfilesWindow, services: Any
) -> None:
    window.select("workplace")
    assert window.make_default_button.isEnabled()
    with qtbot.waitSignal(services.settings_changed, timeout=5000):
        window.make_default_button.click()
    assert load_settings(services.context.paths.settings_file).guard_profile == "workplace"
    assert "default" in window.list.currentItem().text()
    assert not window.make_default_button.isEnabled()
    assert "Workplace" in window.status.text()


@pytest.mark.parametrize(
    ("scores", "verdict"),
    [((0.3, 0.3), "✗ {name} did not qualify"), ((0.05, 0.95), "✓ {name} qualified")],
    ids=["cannot-tell-apart", "qualified"],
)
def test_how_the_judge_did_on_the_calibration_set_is_shown(
    qtbot: QtBot, services: Any, tmp_path: Path, scores: tuple[float, float], verdict: str
) -> None:
    model = instruct_chat_model(services, tmp_path)
    calibrated(services, model, benign=scores[0], harmful=scores[1])
    shown = ProfilesWindow(services)
    qtbot.addWidget(shown)
    qtbot.waitUntil(lambda: len(shown.views) >= 4, timeout=20_000)
    shown.select("standard")
    assert not shown.judges.isHidden()
    text = shown.judges.text()
    assert text.startswith(verdict.format(name=model.name) + " as a content-safety judge")
    items = calibration_set()
    assert f"on Bastion's {len(items.benign) + len(items.harmful)} test requests" in text
    # Off asks no judge: nothing is said of one there.
    shown.select("off")
    assert shown.judges.isHidden()
