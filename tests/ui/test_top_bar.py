"""The guardrail status in the top bar, as a user meets it: a badge that says at a
glance whether the profile's checks are all in force, whose details (opened by a click,
or by Tab and Space) give the full sentence, how the judge of content safety did on
Bastion's calibration set, and the download that fixes what is missing. The real
AppContext, registry, guardrail engine and calibration cache (no model runs: a judge's
calibration is written to the cache as if it had)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.context import AppContext
from bastion_desktop.core.hub.catalog import load_catalog
from bastion_desktop.core.hub.local_files import import_gguf
from bastion_desktop.core.installed_models import RegisteredModel
from bastion_desktop.core.policy import loading
from bastion_desktop.core.policy.sources import Level, PolicySource
from bastion_desktop.core.safety import Calibrations
from bastion_desktop.ui.engine import Engine
from bastion_desktop.ui.managed import MANAGED_TEXT
from bastion_desktop.ui.qt import QtCore
from bastion_desktop.ui.top_bar import TopBar
from bastion_guardrails.safety.calibration import calibration_set, derive
from tests.core.hub.gguf_files import write_tiny_gguf
from tests.ui.desktop_fixtures import screenshot
from tests.ui.test_policy_in_window import FixedReader
from tests.ui.window_services import context, engine, make_services, services

__all__ = ["context", "engine", "services"]  # fixtures used by name

# The details are a popup window: the offscreen platform says, each time one is shown,
# that it cannot pass size hints, raise it or grab the keyboard for it (a real window
# system does all three).
pytestmark = pytest.mark.qt_log_ignore(
    "does not support (propagateSizeHints|raise|grabbing the keyboard)"
)


@pytest.fixture
def bar(qtbot: QtBot, services: Any) -> Iterator[TopBar]:
    shown = TopBar(services)
    qtbot.addWidget(shown)
    shown.resize(900, shown.sizeHint().height())
    shown.show()
    yield shown
    shown.details.close()


def fill(qtbot: QtBot, bar: TopBar) -> None:
    with qtbot.waitSignal(bar.profiles_filled, timeout=20_000):
        bar.refresh_profiles()


def choose(qtbot: QtBot, bar: TopBar, services: Any, profile_id: str) -> None:
    """As "Make default" does: the settings name the profile, and the bar is filled."""
    settings = services.context.settings
    services.update_settings(settings.model_copy(update={"guard_profile": profile_id}))
    fill(qtbot, bar)
    assert bar.profile_box.currentData() == profile_id


def open_details(qtbot: QtBot, bar: TopBar) -> None:
    bar.status_button.click()
    qtbot.waitUntil(bar.details.isVisible, timeout=5_000)


def instruct_chat_model(services: Any, tmp_path: Path) -> RegisteredModel:
    """A chat model that may check content itself (it has a chat template), made the
    default: the guardrails then judge content safety with it once it has qualified."""
    folder = tmp_path / "made"
    folder.mkdir()
    [path] = write_tiny_gguf(folder / "Tiny-Chat-Q4_K_M.gguf", name="Tiny Chat Instruct")
    context: AppContext = services.context
    model = import_gguf(path, context.registry, context.models_dir, role="chat")
    services.update_settings(context.settings.model_copy(update={"default_model": model.id}))
    return model


def calibrated(services: Any, model: RegisteredModel, benign: float, harmful: float) -> None:
    """Write the judge's calibration as if every benign item of the set had scored
    `benign` and every harmful one `harmful` (probabilities of "unsafe")."""
    guard_models = services.context.guard_models()
    judge = guard_models.model_set(model.id).safety
    assert judge is not None
    assert judge.is_self_check
    items = calibration_set()
    result = derive(
        [benign] * len(items.benign), [harmful] * len(items.harmful), items.version, 12.0
    )
    guard_models.calibrations.put(Calibrations.key(model, judge), result)


def test_standard_without_a_safety_model_is_marked_and_its_details_offer_one(
    qtbot: QtBot, bar: TopBar
) -> None:
    fill(qtbot, bar)
    assert bar.profile_box.currentData() == "standard"
    choice = bar.current_profile()
    assert choice is not None
    assert choice.missing >= 1
    button = bar.status_button
    # At a glance: a mark and a few words, not the paragraph.
    assert button.isVisible()
    assert button.text().startswith("⚠ ")
    assert button.text().endswith(" off")
    assert len(button.text()) <= 20
    assert button.property("verdict") == "masked"
    # The whole sentence, for a screen reader.
    assert "Not in force" in button.accessibleDescription()
    assert button.accessibleDescription() == choice.sentence
    assert button.property("verdict") == choice.state
    assert button.accessibleName().startswith("Guardrail status: Standard: ")
    screenshot(bar, "top-bar-standard")

    open_details(qtbot, bar)
    details = bar.details
    # The whole sentence, a paragraph for what is checked and one for what is not.
    assert " ".join(details.sentence.text().split()) == choice.sentence
    assert "\n\nNot in force: " in details.sentence.text()
    assert (
        details.headline.text()
        == f"Standard: {choice.missing} of {choice.checks} checks not in force"
    )
    assert details.judges.isHidden(), "no judge has been tested here"
    guard = next(m for m in load_catalog().by_role("safety") if m.id == "llama-guard-3-1b")
    assert details.download_button.isVisible()
    assert details.download_button.isEnabled()
    assert details.download_button.text().startswith(f"Download {guard.name} (")
    screenshot(details, "top-bar-standard-details")
    with qtbot.waitSignal(bar.download_requested, timeout=5_000) as asked:
        details.download_button.click()
    [pick] = asked.args[0]
    assert (pick.role, pick.repo, pick.file) == ("safety", guard.repo, guard.file_for().file)
    assert not details.isVisible(), "the details close once the download is asked for"


def test_a_narrow_bar_shows_the_mark_alone(qtbot: QtBot, bar: TopBar) -> None:
    fill(qtbot, bar)
    choice = bar.current_profile()
    assert choice is not None
    bar.resize(420, bar.height())
    assert bar.status_button.text() == "⚠"
    # The words it no longer shows are still its name for a screen reader.
    assert bar.status_button.accessibleName() == f"Guardrail status: {choice.headline}"
    bar.resize(1000, bar.height())
    assert bar.status_button.text() == choice.badge


def test_off_says_nothing_is_checked_and_offers_no_download(
    qtbot: QtBot, bar: TopBar, services: Any
) -> None:
    choose(qtbot, bar, services, "off")
    assert bar.status_button.text() == "○ Nothing checked"
    assert bar.status_button.accessibleDescription() == "Guardrails are off: nothing is checked."
    open_details(qtbot, bar)
    assert bar.details.sentence.text() == "Guardrails are off: nothing is checked."
    assert bar.details.download_button.isHidden()


def test_a_judge_that_did_not_qualify_is_shown_with_its_results(
    qtbot: QtBot, bar: TopBar, services: Any, tmp_path: Path
) -> None:
    model = instruct_chat_model(services, tmp_path)
    # It scores harmful requests as it scores harmless ones: it cannot tell them apart.
    calibrated(services, model, benign=0.3, harmful=0.3)
    fill(qtbot, bar)
    choice = bar.current_profile()
    assert choice is not None
    [judge] = choice.judges
    assert not judge.qualified
    assert bar.status_button.text().startswith("⚠ ")
    assert model.name in bar.status_button.accessibleDescription()
    open_details(qtbot, bar)
    text = bar.details.judges.text()
    assert bar.details.judges.isVisible()
    assert text == "✗ " + judge.sentence()
    assert "did not qualify as a content-safety judge" in text
    assert bar.details.download_button.isVisible(), "a safety model is what fixes it"
    screenshot(bar.details, "top-bar-judge-details")


def test_a_qualified_judge_keeps_every_check_in_force(
    qtbot: QtBot, bar: TopBar, services: Any, tmp_path: Path
) -> None:
    model = instruct_chat_model(services, tmp_path)
    calibrated(services, model, benign=0.05, harmful=0.95)
    fill(qtbot, bar)
    assert bar.status_button.text() == "✓ In force"
    assert bar.status_button.property("verdict") == "passed"
    open_details(qtbot, bar)
    assert bar.details.judges.text().startswith(f"✓ {model.name} qualified")
    # The chat model checking itself is less reliable than a safety model: still offered.
    assert "less reliable" in bar.details.sentence.text()
    assert bar.details.download_button.isVisible()


def test_the_status_is_reached_and_opened_with_the_keyboard(qtbot: QtBot, bar: TopBar) -> None:
    fill(qtbot, bar)
    bar.activateWindow()
    bar.profile_box.setFocus()
    qtbot.waitUntil(bar.profile_box.hasFocus, timeout=5_000)
    qtbot.keyClick(bar.profile_box, QtCore.Qt.Key.Key_Tab)
    assert bar.status_button.hasFocus()
    qtbot.keyClick(bar.status_button, QtCore.Qt.Key.Key_Space)
    qtbot.waitUntil(bar.details.isVisible, timeout=5_000)
    assert bar.details.download_button.hasFocus(), "the fix is one key away"
    qtbot.keyClick(bar.details.download_button, QtCore.Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not bar.details.isVisible(), timeout=5_000)


@pytest.mark.log_warnings("a safety model of a family Bastion cannot ask is logged as a warning")
def test_a_safety_model_installed_opens_the_profile_again_and_the_status_follows(
    qtbot: QtBot, bar: TopBar, services: Any, tmp_path: Path
) -> None:
    bar.refresh()
    qtbot.waitUntil(lambda: bar.current_profile() is not None, timeout=20_000)
    before = bar.status_button.accessibleDescription()
    folder = tmp_path / "made"
    folder.mkdir()
    [path] = write_tiny_gguf(folder / "Tiny-Guard-Q4_K_M.gguf", name="Tiny Guard")
    context = services.context
    guard = import_gguf(path, context.registry, context.models_dir, role="safety")
    with qtbot.waitSignals([bar.profile_changed, bar.profiles_filled], timeout=120_000):
        bar.models_installed()  # what the models window's listing calls
    after = bar.status_button.accessibleDescription()
    assert after != before
    assert f"the installed safety model, {guard.name}, is not one Bastion knows how" in after


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """An administrator's policy that allows no model downloads (read in-process: this
    machine has no /etc policy)."""
    sources = [
        PolicySource(
            "/etc/bastion/policies/managed/10-models.json",
            Level.MACHINE_MANDATORY,
            {"AllowModelDownloads": False},
        )
    ]
    monkeypatch.setattr(loading, "system_readers", lambda: [FixedReader(sources)])


def test_the_download_is_managed_when_the_policy_allows_none(
    no_downloads: None, qtbot: QtBot, engine: Engine
) -> None:
    services = make_services(AppContext.start(), engine)
    assert not services.context.policy.downloads_allowed
    bar = TopBar(services)
    qtbot.addWidget(bar)
    bar.show()
    fill(qtbot, bar)
    open_details(qtbot, bar)
    button = bar.details.download_button
    assert button.isVisible()
    assert not button.isEnabled()
    assert button.toolTip() == MANAGED_TEXT
    assert bar.details.managed.isVisible()
    bar.details.close()


def test_the_badge_says_while_a_judge_is_tested(qtbot: QtBot, bar: TopBar, services: Any) -> None:
    """The engine thread reports each calibration request; the badge shows the count and
    its status again when the last one is done."""
    fill(qtbot, bar)
    choice = bar.current_profile()
    assert choice is not None
    services.judge_progress.connect(bar.show_judge_progress)  # as MainWindow wires it
    services.judge_progress.emit("Qwen Judge", 3, 74)
    button = bar.status_button
    assert button.text() == "Testing the judge 3/74"
    assert button.property("verdict") == "unchecked"  # grey while there is no verdict
    assert button.accessibleDescription().startswith(
        "Testing whether Qwen Judge can judge content safety: 3 of 74 test requests"
    )
    services.judge_progress.emit("Qwen Judge", 74, 74)
    assert button.text() == choice.badge
    assert button.accessibleDescription() == choice.sentence
    assert button.property("verdict") == choice.state
