"""The settings dialog: every field of `core.settings.Settings`, validated by the same
pydantic model the file is read with, errors shown beside the field they concern, and
nothing saved unless everything is valid. Settings an administrator locks are shown
disabled ("Managed by your organization"); where the history key lives is changed by
re-encrypting the history on the engine thread."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.history.keys import KeySource
from bastion_desktop.core.inference.runtime_probe import AUTO, device_choices, runtime_report
from bastion_desktop.core.settings import Settings
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.managed import managed_note, mark_managed
from bastion_desktop.ui.qt import QtWidgets, Signal

log = logging.getLogger(__name__)

MIN_NEW_PASSPHRASE = 8


def _error_label() -> QtWidgets.QLabel:
    label = QtWidgets.QLabel()
    label.setObjectName("fieldError")
    # Not wrapped: a wrapped label in a form row is given one line's height and clips.
    label.setStyleSheet("color: #c62828;")
    label.setVisible(False)
    return label


class _Field:
    """One setting's control, its error label and its managed note."""

    def __init__(self, key: str, control: QtWidgets.QWidget, row: QtWidgets.QWidget) -> None:
        self.key = key  # "retention_days", "inference.context_length", ...
        self.control = control
        self.row = row
        self.error = _error_label()
        self.note = managed_note()


class _OptionalNumber(QtWidgets.QWidget):
    """A number that may be left empty ("default"): a check box and a spin box."""

    def __init__(self, empty_text: str, low: int, high: int, parent: Any = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.empty = QtWidgets.QCheckBox(empty_text)
        self.number = QtWidgets.QSpinBox()
        self.number.setRange(low, high)
        layout.addWidget(self.empty)
        layout.addWidget(self.number)
        layout.addStretch(1)
        # The number shows only when it means something (not for "the default").
        self.empty.toggled.connect(lambda on: self.number.setVisible(not on))

    def set_value(self, value: int | None) -> None:
        self.empty.setChecked(value is None)
        self.number.setVisible(value is not None)
        if value is not None:
            self.number.setValue(value)

    def value(self) -> int | None:
        return None if self.empty.isChecked() else self.number.value()


class GpuOffloadChooser(QtWidgets.QWidget):
    """auto / none / N layers."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.mode = QtWidgets.QComboBox()
        self.mode.addItem("Automatic (what fits)", "auto")
        self.mode.addItem("None (CPU only)", "none")
        self.mode.addItem("This many layers:", "layers")
        self.mode.setAccessibleName("GPU offload mode")
        self.layers = QtWidgets.QSpinBox()
        self.layers.setRange(0, 1000)
        self.layers.setAccessibleName("GPU layers")
        layout.addWidget(self.mode)
        layout.addWidget(self.layers)
        layout.addStretch(1)
        self.mode.currentIndexChanged.connect(self._sync)
        self._sync()

    def _sync(self) -> None:
        self.layers.setVisible(self.mode.currentData() == "layers")

    def set_value(self, value: str | int) -> None:
        if isinstance(value, int):
            self.mode.setCurrentIndex(2)
            self.layers.setValue(value)
        else:
            self.mode.setCurrentIndex(0 if value == "auto" else 1)
        self._sync()

    def value(self) -> str | int:
        mode = self.mode.currentData()
        return self.layers.value() if mode == "layers" else str(mode)


class PresetEditor(QtWidgets.QWidget):
    """Named system prompts: a list, and the selected one's name and text."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._presets: dict[str, str] = {}
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        left = QtWidgets.QVBoxLayout()
        self.names = QtWidgets.QListWidget()
        self.names.setAccessibleName("System prompt presets")
        buttons = QtWidgets.QHBoxLayout()
        self.add_button = QtWidgets.QPushButton("Add")
        self.add_button.setAccessibleName("Add a system prompt preset")
        self.remove_button = QtWidgets.QPushButton("Remove")
        self.remove_button.setAccessibleName("Remove the selected preset")
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        left.addWidget(self.names, 1)
        left.addLayout(buttons)
        right = QtWidgets.QFormLayout()
        self.name = QtWidgets.QLineEdit()
        self.name.setAccessibleName("Preset name")
        self.text = QtWidgets.QPlainTextEdit()
        self.text.setAccessibleName("Preset text")
        self.text.setPlaceholderText("You are a helpful assistant ...")
        self.problem = _error_label()
        right.addRow("Name", self.name)
        right.addRow("Prompt", self.text)
        right.addRow(self.problem)
        layout.addLayout(left, 2)
        layout.addLayout(right, 3)
        self.add_button.clicked.connect(self.add_preset)
        self.remove_button.clicked.connect(self.remove_selected)
        self.names.currentTextChanged.connect(self._show)
        self.name.editingFinished.connect(self._rename)
        self.text.textChanged.connect(self._store_text)
        self._show("")

    def set_presets(self, presets: dict[str, str]) -> None:
        self._presets = dict(presets)
        self.names.clear()
        self.names.addItems(list(self._presets))
        if self._presets:
            self.names.setCurrentRow(0)
        self._show(self.names.currentItem().text() if self.names.currentItem() else "")

    def presets(self) -> dict[str, str]:
        self._rename()
        return dict(self._presets)

    def add_preset(self, name: str = "", text: str = "") -> None:
        base = name or "New preset"
        candidate, number = base, 1
        while candidate in self._presets:
            number += 1
            candidate = f"{base} {number}"
        self._presets[candidate] = text
        self.names.addItem(candidate)
        self.names.setCurrentRow(self.names.count() - 1)
        self.name.setFocus()
        self.name.selectAll()

    def remove_selected(self) -> None:
        item = self.names.currentItem()
        if item is None:
            return
        self._presets.pop(item.text(), None)
        self.names.takeItem(self.names.row(item))
        current = self.names.currentItem()
        self._show(current.text() if current else "")

    def _show(self, name: str) -> None:
        has = bool(name) and name in self._presets
        self.name.setEnabled(has)
        self.text.setEnabled(has)
        self.remove_button.setEnabled(has)
        self.problem.setVisible(False)
        self.name.setText(name if has else "")
        self.text.blockSignals(True)
        self.text.setPlainText(self._presets.get(name, "") if has else "")
        self.text.blockSignals(False)

    def _rename(self) -> None:
        item = self.names.currentItem()
        if item is None:
            return
        old, new = item.text(), self.name.text().strip()
        if new == old:
            return
        if not new or new in self._presets:
            self.problem.setText(
                "A preset needs a name of its own." if not new else f"There is already {new!r}."
            )
            self.problem.setVisible(True)
            self.name.setText(old)
            return
        self.problem.setVisible(False)
        self._presets = {(new if k == old else k): v for k, v in self._presets.items()}
        item.setText(new)

    def _store_text(self) -> None:
        item = self.names.currentItem()
        if item is not None and item.text() in self._presets:
            self._presets[item.text()] = self.text.toPlainText()


class HistoryKeyBox(QtWidgets.QGroupBox):
    """Where the history key lives, and moving it (keychain or a new passphrase)."""

    rekeyed = Signal(str)  # the new description
    failed = Signal(str)  # a sentence

    def __init__(self, services: Any, parent: Any = None) -> None:
        super().__init__("History key", parent)
        self.services = services
        form = QtWidgets.QFormLayout(self)
        self.where = QtWidgets.QLabel("Looking up where the key is kept...")
        self.where.setWordWrap(True)
        self.where.setAccessibleName("Where the history key is kept")
        self.target = QtWidgets.QComboBox()
        self.target.addItem("In the system keychain", KeySource.KEYCHAIN.value)
        self.target.addItem("Derived from a passphrase", KeySource.PASSPHRASE.value)
        self.target.setAccessibleName("Keep the history key")
        self.passphrase = QtWidgets.QLineEdit()
        self.passphrase.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.passphrase.setAccessibleName("New passphrase")
        self.confirm = QtWidgets.QLineEdit()
        self.confirm.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.confirm.setAccessibleName("Repeat the new passphrase")
        self.change = QtWidgets.QPushButton("Re-encrypt the history with this key")
        self.change.setAccessibleName("Re-encrypt the history with the new key")
        self.status = QtWidgets.QLabel()
        self.status.setWordWrap(True)
        self.status.setAccessibleName("History key status")
        form.addRow("Now", self.where)
        form.addRow("Keep it", self.target)
        form.addRow("New passphrase", self.passphrase)
        form.addRow("Repeat it", self.confirm)
        form.addRow(self.change)
        form.addRow(self.status)
        self.target.currentIndexChanged.connect(self._sync)
        self.change.clicked.connect(self.start_rekey)
        self._sync()
        self.refresh()

    def _sync(self) -> None:
        wants = self.target.currentData() == KeySource.PASSPHRASE.value
        self.passphrase.setEnabled(wants)
        self.confirm.setEnabled(wants)
        is_open = self.services.store is not None
        self.change.setEnabled(is_open)
        if not is_open:
            self.status.setText("The history is not open, so its key cannot be changed now.")

    def refresh(self) -> None:
        context = self.services.context

        async def describe() -> str:
            import asyncio

            keys = context.history_keys(None)
            # The keychain lookup may talk to a D-Bus daemon: off the engine loop too.
            return await asyncio.to_thread(keys.describe)

        call(self.services.engine, describe(), self, self._described, self._refresh_failed)

    def _described(self, text: object) -> None:
        self.where.setText(str(text).capitalize() + ".")
        if str(text).startswith("derived from your passphrase") or "no keychain" in str(text):
            self.target.setCurrentIndex(1)

    def _refresh_failed(self, error: object) -> None:
        self.where.setText(sentence_for(error, "Reading where the history's key is kept"))

    def start_rekey(self) -> None:
        store = self.services.store
        if store is None:
            self._fail("The history is not open, so its key cannot be changed now.")
            return
        to = KeySource(self.target.currentData())
        passphrase = self.passphrase.text()
        if to is KeySource.PASSPHRASE:
            if len(passphrase) < MIN_NEW_PASSPHRASE:
                self._fail(
                    f"The new passphrase must be at least {MIN_NEW_PASSPHRASE} characters long."
                )
                return
            if passphrase != self.confirm.text():
                self._fail("The two passphrases differ; type the same one twice.")
                return
        context = self.services.context
        keys = context.history_keys(lambda _confirm: passphrase)
        self.change.setEnabled(False)
        self.status.setText("Re-encrypting the history...")
        call(
            self.services.engine,
            self._rekey(context, store, keys, to),
            self,
            self._done,
            self._rekey_failed,
        )

    @staticmethod
    async def _rekey(context: Any, store: Any, keys: Any, to: KeySource) -> str:
        import asyncio

        await context.rekey_history(store, keys, to)
        return str(await asyncio.to_thread(keys.describe))

    def _done(self, description: object) -> None:
        self.passphrase.clear()
        self.confirm.clear()
        self.change.setEnabled(True)
        self.where.setText(str(description).capitalize() + ".")
        self.status.setText("The history was re-encrypted with the new key.")
        self.rekeyed.emit(str(description))

    def _rekey_failed(self, error: object) -> None:
        self.change.setEnabled(True)
        sentence = sentence_for(error, "Re-encrypting the history")
        self._fail(f"{sentence} The history still uses its old key.")

    def _fail(self, sentence: str) -> None:
        self.status.setText(sentence)
        self.failed.emit(sentence)


class SettingsDialog(QtWidgets.QDialog):
    """Edit and save the settings; `locked` names fields an administrator manages."""

    saved = Signal(object)  # the new Settings

    def __init__(
        self, services: Any, parent: Any = None, locked: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(parent)
        self.services = services
        self.locked = frozenset(locked) | frozenset(getattr(services, "locked_settings", ()))
        self.setWindowTitle("Settings")
        self.setObjectName("settingsDialog")
        self.resize(720, 560)
        self.fields: dict[str, _Field] = {}
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setAccessibleName("Settings sections")
        self._build_general()
        self._build_model()
        self._build_sampling()
        self._build_prompts()
        self._build_privacy()
        self.problem = QtWidgets.QLabel()
        self.problem.setObjectName("formProblem")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #c62828;")
        self.problem.setVisible(False)
        self.buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Save
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)
        self.load(self.services.context.settings)
        for field in self.fields.values():
            if self._is_locked(field.key):
                mark_managed(field.control, True, field.note)

    # -- building ----------------------------------------------------------------------

    def _page(self, title: str) -> QtWidgets.QFormLayout:
        page = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(page)
        form = QtWidgets.QFormLayout()
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        outer.addLayout(form)
        outer.addStretch(1)
        self.tabs.addTab(page, title)
        return form

    def _add(
        self,
        form: QtWidgets.QFormLayout,
        key: str,
        label: str,
        control: QtWidgets.QWidget,
        help_text: str = "",
        *,
        row: QtWidgets.QWidget | None = None,
    ) -> None:
        control.setAccessibleName(label)
        if help_text:
            control.setToolTip(help_text)
            control.setAccessibleDescription(help_text)
        field = _Field(key, control, row or control)
        holder = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(holder)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(field.row)
        column.addWidget(field.error)
        column.addWidget(field.note)
        # Rows keep their natural height; the page's spare room stays below the form.
        holder.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Preferred, QtWidgets.QSizePolicy.Policy.Maximum
        )
        form.addRow(label, holder)
        self.fields[key] = field

    def _build_general(self) -> None:
        form = self._page("General")
        folder_row = QtWidgets.QWidget()
        row = QtWidgets.QHBoxLayout(folder_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.models_dir = QtWidgets.QLineEdit()
        self.models_dir.setPlaceholderText(str(self.services.context.paths.models))
        self.browse = QtWidgets.QPushButton("Choose...")
        self.browse.setAccessibleName("Choose the models folder")
        self.browse.clicked.connect(self._choose_folder)
        row.addWidget(self.models_dir, 1)
        row.addWidget(self.browse)
        self._add(
            form, "models_dir", "Models folder", self.models_dir,
            "Where downloaded models are kept; empty means the default folder.", row=folder_row,
        )  # fmt: skip
        self.default_model = QtWidgets.QComboBox()
        self.default_model.setEditable(True)
        self.default_model.setMinimumContentsLength(32)
        self.default_model.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self._add(
            form, "default_model", "Default model", self.default_model,
            "The model new chats use; empty means the starter model.",
        )  # fmt: skip
        # A list, not a text field: a profile id that does not exist would leave the
        # next start with nothing to chat under.
        self.guard_profile = QtWidgets.QComboBox()
        self.guard_profile.setMinimumContentsLength(32)
        self.guard_profile.setSizeAdjustPolicy(
            QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self._add(
            form, "guard_profile", "Guardrail profile", self.guard_profile,
            "The profile new chats use.",
        )  # fmt: skip
        self.theme = QtWidgets.QComboBox()
        for text, value in (("As the system", "system"), ("Light", "light"), ("Dark", "dark")):
            self.theme.addItem(text, value)
        self._add(form, "theme", "Theme", self.theme, "Light or dark; by default as the system.")
        self.system_prompt = QtWidgets.QPlainTextEdit()
        self.system_prompt.setPlaceholderText("None: the model's own default.")
        self.system_prompt.setMaximumHeight(110)
        self._add(
            form, "system_prompt", "System prompt", self.system_prompt,
            "Sent before every chat unless a preset is chosen.",
        )  # fmt: skip
        self._fill_choices()

    def _fill_choices(self) -> None:
        """Installed models and profiles, read on the engine (files and YAML parsing)."""
        context = self.services.context

        async def choices() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
            import asyncio

            def read() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
                models = [(m.id, m.name) for m in context.registry.list() if m.role == "chat"]
                profiles = [
                    (e.id, e.profile.name if e.profile else e.id)
                    for e in context.profile_library().entries()
                    if e.profile is not None
                ]
                return models, profiles

            return await asyncio.to_thread(read)

        call(self.services.engine, choices(), self, self._choices_ready, self._choices_failed)

        async def devices() -> list[tuple[str, str]]:
            import asyncio

            # The runtime probe's child processes, once per app run.
            return device_choices(await asyncio.to_thread(runtime_report))

        call(self.services.engine, devices(), self, self._devices_ready, self._devices_failed)

    def _devices_ready(self, found: object) -> None:
        self._set_devices(cast(list[tuple[str, str]], found))

    def _devices_failed(self, error: object) -> None:
        log.warning("the GPUs could not be listed: %s", error)

    def _choices_ready(self, found: object) -> None:
        models, profiles = cast(tuple[list[tuple[str, str]], list[tuple[str, str]]], found)
        settings = self.services.context.settings
        self.default_model.clear()
        self.default_model.addItem("The starter model", "")
        for model_id, name in models:
            self.default_model.addItem(f"{name} ({model_id})", model_id)
        self._select(self.default_model, settings.default_model or "")
        self.guard_profile.clear()
        for profile_id, name in profiles:
            self.guard_profile.addItem(name, profile_id)
        self._select_profile(settings.guard_profile, missing=" (not installed)")

    def _choices_failed(self, error: object) -> None:
        self.problem.setText(f"The lists of models and profiles could not be read: {error}")
        self.problem.setVisible(True)

    def _select_profile(self, profile_id: str, missing: str = "") -> None:
        """Show `profile_id` chosen, listed with `missing` after it if it is not among
        the profiles (the list not read yet, or a profile removed since)."""
        index = self.guard_profile.findData(profile_id)
        if index < 0:
            self.guard_profile.addItem(profile_id + missing, profile_id)
            index = self.guard_profile.count() - 1
        self.guard_profile.setCurrentIndex(index)

    @staticmethod
    def _select(combo: QtWidgets.QComboBox, value: str) -> None:
        index = combo.findData(value)
        if index >= 0:
            combo.setCurrentIndex(index)
        else:
            combo.setEditText(value)
        line = combo.lineEdit()
        if line is not None:
            line.setCursorPosition(0)  # a long name shows its start, not its end

    @staticmethod
    def _combo_value(combo: QtWidgets.QComboBox) -> str:
        index = combo.findText(combo.currentText())
        if index >= 0 and combo.itemData(index) is not None:
            return str(combo.itemData(index))
        return combo.currentText().strip()

    def _build_model(self) -> None:
        form = self._page("Model")
        self.device = QtWidgets.QComboBox()
        self._set_devices(device_choices(None))
        self._add(
            form, "inference.device", "Compute device", self.device,
            "Where models run. A GPU chosen by name runs models on that GPU alone.",
        )  # fmt: skip
        self.gpu_layers = GpuOffloadChooser()
        self._add(
            form, "inference.gpu_layers", "GPU offload", self.gpu_layers,
            "Automatic offloads what fits; None keeps the model on the CPU.",
        )  # fmt: skip
        self.context_length = QtWidgets.QSpinBox()
        # Wider than the valid range: the model's own validation gives the sentence.
        self.context_length.setRange(0, 2_000_000)
        self.context_length.setSingleStep(1024)
        self.context_length.setSuffix(" tokens")
        self._add(
            form, "inference.context_length", "Context length", self.context_length,
            "Tokens the model sees; longer needs more memory.",
        )  # fmt: skip
        self.threads = _OptionalNumber("One per physical core (the default)", 1, 512)
        self._add(form, "inference.threads", "CPU threads", self.threads, "Threads for the CPU.")
        self.cpu_compatibility = QtWidgets.QCheckBox("Use the baseline CPU build")
        self._add(
            form, "inference.cpu_compatibility", "CPU compatibility mode", self.cpu_compatibility,
            "Slower: the llama.cpp build every x86-64 processor runs, for machines where the "
            "fastest build misbehaves.",
        )  # fmt: skip
        self.unload_after = QtWidgets.QSpinBox()
        self.unload_after.setRange(0, 10_080)
        self.unload_after.setSingleStep(5)
        self.unload_after.setPrefix("After ")
        self.unload_after.valueChanged.connect(self._unload_after_changed)
        self._unload_after_changed(self.unload_after.value())
        self.unload_after.setSpecialValueText("Never: keep models loaded")
        self._add(
            form, "inference.unload_after_minutes", "Unload idle models", self.unload_after,
            "Gives the model's memory back to other programs; the next message loads it again.",
        )  # fmt: skip

    def _unload_after_changed(self, minutes: int) -> None:
        self.unload_after.setSuffix(" minute unused" if minutes == 1 else " minutes unused")

    def _set_devices(self, choices: list[tuple[str, str]]) -> None:
        """Fill the device list, keeping the value chosen (even a GPU not found now)."""
        chosen = self.device.currentData() if self.device.count() else None
        self.device.clear()
        for value, label in choices:
            self.device.addItem(label, value)
        if chosen is not None:
            self._select_device(str(chosen))

    def _select_device(self, value: str) -> None:
        index = self.device.findData(value)
        if index < 0:
            self.device.addItem(f"{value} (not found now)", value)
            index = self.device.count() - 1
        self.device.setCurrentIndex(index)

    def _double(self, low: float, high: float, step: float) -> QtWidgets.QDoubleSpinBox:
        box = QtWidgets.QDoubleSpinBox()
        box.setRange(low, high)
        box.setSingleStep(step)
        box.setDecimals(2)
        return box

    def _build_sampling(self) -> None:
        form = self._page("Sampling")
        self.temperature = self._double(0.0, 10.0, 0.05)
        self._add(form, "sampling.temperature", "Temperature", self.temperature,
                  "Higher is more varied, lower more predictable.")  # fmt: skip
        self.top_p = self._double(0.0, 1.0, 0.01)
        self._add(form, "sampling.top_p", "Top P", self.top_p, "Nucleus sampling (0 to 1).")
        self.top_k = QtWidgets.QSpinBox()
        self.top_k.setRange(0, 100_000)
        self._add(form, "sampling.top_k", "Top K", self.top_k, "0 turns it off.")
        self.min_p = self._double(0.0, 1.0, 0.01)
        self._add(form, "sampling.min_p", "Min P", self.min_p, "Drop tokens below this share.")
        self.repeat_penalty = self._double(0.0, 10.0, 0.05)
        self._add(form, "sampling.repeat_penalty", "Repeat penalty", self.repeat_penalty,
                  "Above 1 discourages repeating.")  # fmt: skip
        self.max_tokens = QtWidgets.QSpinBox()
        self.max_tokens.setRange(0, 2_000_000)
        self._add(form, "sampling.max_tokens", "Longest reply", self.max_tokens,
                  "The most tokens one reply may have.")  # fmt: skip
        self.seed = _OptionalNumber("Random each time", 0, 2_147_483_647)
        self._add(form, "sampling.seed", "Seed", self.seed, "A fixed seed repeats replies.")

    def _build_prompts(self) -> None:
        form = self._page("System prompts")
        self.presets = PresetEditor()
        self._add(
            form, "system_prompt_presets", "Presets", self.presets,
            "Named system prompts to start a chat with.",
        )  # fmt: skip

    def _build_privacy(self) -> None:
        form = self._page("Privacy")
        self.retention = _OptionalNumber("Keep conversations until I delete them", 1, 36_500)
        self.retention.number.setSuffix(" days")
        self._add(
            form, "retention_days", "Keep conversations", self.retention,
            "Conversations idle for longer are deleted.",
        )  # fmt: skip
        self.history_key = HistoryKeyBox(self.services)
        form.addRow(self.history_key)

    def _choose_folder(self) -> None:
        start = self.models_dir.text() or str(self.services.context.paths.models)
        chosen = QtWidgets.QFileDialog.getExistingDirectory(self, "Models folder", start)
        if chosen:
            self.models_dir.setText(chosen)

    # -- values --------------------------------------------------------------------------

    def _is_locked(self, key: str) -> bool:
        return key in self.locked or key.split(".", maxsplit=1)[0] in self.locked

    def load(self, settings: Settings) -> None:
        self.models_dir.setText(str(settings.models_dir) if settings.models_dir else "")
        self.default_model.setEditText(settings.default_model or "")
        self._select_profile(settings.guard_profile)
        self.theme.setCurrentIndex(self.theme.findData(settings.theme))
        self.system_prompt.setPlainText(settings.system_prompt)
        self.gpu_layers.set_value(settings.inference.gpu_layers)
        self.context_length.setValue(settings.inference.context_length)
        self.threads.set_value(settings.inference.threads)
        self._select_device(settings.inference.device)
        self.cpu_compatibility.setChecked(settings.inference.cpu_compatibility)
        self.unload_after.setValue(settings.inference.unload_after_minutes)
        s = settings.sampling
        self.temperature.setValue(s.temperature)
        self.top_p.setValue(s.top_p)
        self.top_k.setValue(s.top_k)
        self.min_p.setValue(s.min_p)
        self.repeat_penalty.setValue(s.repeat_penalty)
        self.max_tokens.setValue(s.max_tokens)
        self.seed.set_value(s.seed)
        self.presets.set_presets(settings.system_prompt_presets)
        self.retention.set_value(settings.retention_days)

    def values(self) -> dict[str, Any]:
        """The form as the settings file's shape; locked fields keep the value in force."""
        folder = self.models_dir.text().strip()
        raw: dict[str, Any] = {
            "default_model": self._combo_value(self.default_model) or None,
            "models_dir": folder or None,
            "system_prompt": self.system_prompt.toPlainText(),
            "retention_days": self.retention.value(),
            "guard_profile": self._combo_value(self.guard_profile),
            "theme": self.theme.currentData(),
            "system_prompt_presets": self.presets.presets(),
            "inference": {
                "context_length": self.context_length.value(),
                "gpu_layers": self.gpu_layers.value(),
                "threads": self.threads.value(),
                "device": str(self.device.currentData() or AUTO),
                "cpu_compatibility": self.cpu_compatibility.isChecked(),
                "unload_after_minutes": self.unload_after.value(),
            },
            "sampling": {
                "temperature": self.temperature.value(),
                "top_p": self.top_p.value(),
                "top_k": self.top_k.value(),
                "min_p": self.min_p.value(),
                "repeat_penalty": self.repeat_penalty.value(),
                "max_tokens": self.max_tokens.value(),
                "seed": self.seed.value(),
            },
        }
        current = self.services.context.settings.model_dump(mode="json")
        for key in self.fields:
            if self._is_locked(key):
                section, _, name = key.partition(".")
                if name:
                    raw[section][name] = current[section][name]
                else:
                    raw[section] = current[section]
        return {**current, **raw}

    def _clear_errors(self) -> None:
        for field in self.fields.values():
            field.error.setVisible(False)
        self.problem.setVisible(False)

    def _show_error(self, key: str, message: str) -> None:
        field = self.fields.get(key) or self.fields.get(key.split(".", maxsplit=1)[0])
        if field is None:
            self.problem.setText(message)
            self.problem.setVisible(True)
            return
        field.error.setText(message)
        field.error.setVisible(True)
        page = field.row.parentWidget()
        while page is not None and self.tabs.indexOf(page) < 0:
            page = page.parentWidget()
        if page is not None:
            self.tabs.setCurrentWidget(page)

    def validate(self) -> Settings | None:
        """The new settings, or None after showing each problem beside its field."""
        self._clear_errors()
        raw = self.values()
        folder = raw["models_dir"]
        if folder and Path(folder).expanduser().exists() and not Path(folder).is_dir():
            self._show_error("models_dir", "That is a file, not a folder; choose a folder.")
            return None
        try:
            return Settings.model_validate(raw)
        except ValidationError as error:
            for problem in error.errors():
                loc = [str(p) for p in problem["loc"] if not str(p).startswith(("int", "lit"))]
                key = ".".join(loc[:2]) if loc and loc[0] in ("inference", "sampling") else loc[0]
                message = problem["msg"].removeprefix("Value error, ")
                message = message.replace("Input should be", "Must be", 1)
                self._show_error(key, message[0].upper() + message[1:] + ".")
            return None

    def save(self) -> None:
        settings = self.validate()
        if settings is None:
            return
        try:
            self.services.update_settings(settings)
        except (OSError, BastionError) as error:
            self.problem.setText(f"The settings could not be saved: {error}")
            self.problem.setVisible(True)
            return
        self.saved.emit(settings)
        self.accept()
