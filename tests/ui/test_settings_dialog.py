"""The settings dialog as a user meets it: values change and survive a reload from
disk, a bad value is shown beside its field and nothing is saved, a field an
administrator locks is disabled and says so, and the history key can be moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from bastion_desktop.context import AppContext
from bastion_desktop.core.history.keys import KeySource
from bastion_desktop.core.settings import load_settings
from bastion_desktop.ui.engine import Engine
from bastion_desktop.ui.managed import MANAGED_TEXT
from bastion_desktop.ui.settings_dialog import SettingsDialog
from tests.ui.window_services import context, engine, make_services, services

__all__ = ["context", "engine", "services"]  # fixtures used by name


def open_dialog(qtbot: QtBot, services: Any, **kwargs: Any) -> SettingsDialog:
    dialog = SettingsDialog(services, **kwargs)
    qtbot.addWidget(dialog)
    # The installed models and profiles arrive from the engine thread.
    qtbot.waitUntil(lambda: dialog.guard_profile.count() >= 4, timeout=10_000)
    return dialog


def test_changed_values_are_saved_and_read_back_from_disk(
    qtbot: QtBot, services: Any, tmp_path: Path
) -> None:
    dialog = open_dialog(qtbot, services)
    folder = tmp_path / "my-models"
    dialog.models_dir.setText(str(folder))
    dialog.context_length.setValue(8192)
    dialog.gpu_layers.set_value(12)
    dialog.threads.set_value(3)
    dialog.temperature.setValue(0.2)
    dialog.seed.set_value(42)
    dialog.retention.set_value(30)
    dialog.theme.setCurrentIndex(dialog.theme.findData("dark"))
    dialog.guard_profile.setCurrentIndex(dialog.guard_profile.findData("strict"))
    dialog.presets.add_preset("Translator", "Translate into French.")
    dialog.presets.add_preset()
    dialog.presets.name.setText("Terse")
    dialog.presets.name.editingFinished.emit()
    dialog.presets.text.setPlainText("Answer in one line.")

    with qtbot.waitSignal(services.settings_changed, timeout=5000):
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()

    on_disk = load_settings(services.context.paths.settings_file)
    assert on_disk.models_dir == folder
    assert on_disk.inference.context_length == 8192
    assert on_disk.inference.gpu_layers == 12
    assert on_disk.inference.threads == 3
    assert on_disk.sampling.temperature == pytest.approx(0.2)
    assert on_disk.sampling.seed == 42
    assert on_disk.retention_days == 30
    assert on_disk.theme == "dark"
    assert on_disk.guard_profile == "strict"
    assert on_disk.system_prompt_presets == {
        "Translator": "Translate into French.",
        "Terse": "Answer in one line.",
    }
    # A new dialog shows what was saved.
    again = open_dialog(qtbot, services)
    assert again.context_length.value() == 8192
    assert again.gpu_layers.value() == 12
    assert again.retention.value() == 30
    assert again.presets.presets() == on_disk.system_prompt_presets
    assert again.values()["guard_profile"] == "strict"


def test_removing_a_preset_and_choosing_auto_offload(qtbot: QtBot, services: Any) -> None:
    dialog = open_dialog(qtbot, services)
    dialog.presets.add_preset("Gone", "x")
    dialog.presets.remove_selected()
    dialog.gpu_layers.set_value("none")
    dialog.save()
    on_disk = load_settings(services.context.paths.settings_file)
    assert on_disk.system_prompt_presets == {}
    assert on_disk.inference.gpu_layers == "none"


def test_an_invalid_value_is_shown_beside_its_field_and_nothing_is_saved(
    qtbot: QtBot, services: Any
) -> None:
    dialog = open_dialog(qtbot, services)
    settings_file = services.context.paths.settings_file
    before = settings_file.read_bytes() if settings_file.exists() else None
    dialog.context_length.setValue(100)  # below the 256 tokens the model allows
    dialog.top_p.setValue(0.0)  # must be greater than 0
    dialog.temperature.setValue(0.3)

    dialog.save()

    error = dialog.fields["inference.context_length"].error
    assert not error.isHidden()
    assert "256" in error.text()
    assert not dialog.fields["sampling.top_p"].error.isHidden()
    assert dialog.fields["sampling.temperature"].error.isHidden()
    assert dialog.result() != dialog.DialogCode.Accepted
    after = settings_file.read_bytes() if settings_file.exists() else None
    assert after == before
    assert services.context.settings.sampling.temperature != pytest.approx(0.3)


def test_a_models_folder_that_is_a_file_is_refused(
    qtbot: QtBot, services: Any, tmp_path: Path
) -> None:
    dialog = open_dialog(qtbot, services)
    a_file = tmp_path / "not-a-folder.txt"
    a_file.write_text("x")
    dialog.models_dir.setText(str(a_file))
    dialog.save()
    assert "not a folder" in dialog.fields["models_dir"].error.text()
    assert not services.context.paths.settings_file.exists()


def test_a_locked_field_is_disabled_says_managed_and_keeps_its_value(
    qtbot: QtBot, services: Any
) -> None:
    dialog = open_dialog(qtbot, services, locked=frozenset({"retention_days", "inference"}))
    for key in ("retention_days", "inference.context_length", "inference.gpu_layers"):
        field = dialog.fields[key]
        assert not field.control.isEnabled(), key
        assert field.control.toolTip() == MANAGED_TEXT
        assert not field.note.isHidden()
        assert field.note.text() == "Managed by your organization"
    assert dialog.fields["sampling.temperature"].control.isEnabled()
    assert dialog.fields["sampling.temperature"].note.isHidden()

    dialog.retention.set_value(5)  # what a policy-blind caller might do: still not saved
    dialog.temperature.setValue(1.5)
    dialog.save()
    on_disk = load_settings(services.context.paths.settings_file)
    assert on_disk.retention_days is None
    assert on_disk.sampling.temperature == pytest.approx(1.5)


def test_moving_the_history_to_a_new_passphrase(
    qtbot: QtBot, context: AppContext, engine: Engine
) -> None:
    # This machine has no keychain: the history is created with a passphrase, and the
    # dialog moves it to another one (the same flow as `bastion history rekey`).
    store = context.open_history(lambda _confirm: "first passphrase")
    services = make_services(context, engine, store)
    try:
        dialog = open_dialog(qtbot, services)
        qtbot.waitUntil(lambda: "passphrase" in dialog.history_key.where.text(), timeout=10_000)
        box = dialog.history_key
        box.target.setCurrentIndex(box.target.findData(KeySource.PASSPHRASE.value))
        box.passphrase.setText("short")
        box.confirm.setText("short")
        box.start_rekey()
        assert "at least" in box.status.text()

        box.passphrase.setText("second passphrase")
        box.confirm.setText("second passphrase")
        with qtbot.waitSignal(box.rekeyed, timeout=30_000):
            box.change.click()
        assert "re-encrypted" in box.status.text()
    finally:
        store.close()

    reopened = context.open_history(lambda _confirm: "second passphrase")
    reopened.close()
    with pytest.raises(Exception, match="passphrase does not unlock"):
        context.open_history(lambda _confirm: "first passphrase")


def test_the_compute_device_and_compatibility_mode_are_chosen_and_kept(
    qtbot: QtBot, services: Any
) -> None:
    guard_models = services.context.guard_models()  # made before: the safety model's
    dialog = open_dialog(qtbot, services)
    # The list comes from the runtime probe's children (no GPU here: the two choices).
    values = [dialog.device.itemData(i) for i in range(dialog.device.count())]
    assert values[0] == "auto"
    assert values[-1] == "cpu"
    assert dialog.device.currentData() == "auto"
    dialog.device.setCurrentIndex(dialog.device.findData("cpu"))
    dialog.cpu_compatibility.setChecked(True)
    with qtbot.waitSignal(services.settings_changed, timeout=5000):
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    on_disk = load_settings(services.context.paths.settings_file)
    assert (on_disk.inference.device, on_disk.inference.cpu_compatibility) == ("cpu", True)
    load = services.context.load_options()
    assert (load.device, load.cpu_compatibility) == ("cpu", True), "what the model host gets"
    assert guard_models.load_options == load, "the safety model's next load uses them too"
    again = open_dialog(qtbot, services)
    assert again.device.currentData() == "cpu"
    assert again.cpu_compatibility.isChecked()


def test_a_gpu_chosen_earlier_but_missing_now_is_kept_and_marked(
    qtbot: QtBot, services: Any
) -> None:
    dialog = open_dialog(qtbot, services)
    settings = services.context.settings
    gone = settings.model_copy(
        update={"inference": settings.inference.model_copy(update={"device": "Radeon RX 7600"})}
    )
    dialog.load(gone)
    assert dialog.device.currentText() == "Radeon RX 7600 (not found now)"
    assert dialog.values()["inference"]["device"] == "Radeon RX 7600"


def test_idle_models_unload_after_the_minutes_chosen_or_never(qtbot: QtBot, services: Any) -> None:
    dialog = open_dialog(qtbot, services)
    assert dialog.unload_after.value() == 30
    assert dialog.unload_after.text() == "After 30 minutes unused"
    dialog.unload_after.setValue(1)
    assert dialog.unload_after.text() == "After 1 minute unused"
    dialog.unload_after.setValue(0)
    assert dialog.unload_after.text() == "Never: keep models loaded"
    with qtbot.waitSignal(services.settings_changed, timeout=5000):
        dialog.buttons.button(dialog.buttons.StandardButton.Save).click()
    on_disk = load_settings(services.context.paths.settings_file)
    assert on_disk.inference.unload_after_minutes == 0
    assert services.context.settings.inference.unload_after_minutes == 0, "in force now"
    locked = open_dialog(qtbot, services, locked=frozenset({"inference.unload_after_minutes"}))
    field = locked.fields["inference.unload_after_minutes"]
    assert not field.control.isEnabled()
    assert field.note.text() == "Managed by your organization"
