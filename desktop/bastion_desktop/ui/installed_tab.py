"""The models window's Installed tab: the models this machine has, with their role
(chat, or the guardrails' safety model), removal, and import of a GGUF file from disk
(hashed and read on a worker thread; AllowedModels checked before it is registered)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion_desktop.core.hub.filenames import format_size
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.model_tables import (
    ROLE_TEXT,
    item,
    row_data,
    sentence,
    sentence_label,
    table,
)
from bastion_desktop.ui.qt import QtCore, QtWidgets

if TYPE_CHECKING:
    from bastion_desktop.ui.models_window import ModelsWindow


class InstalledTab(QtWidgets.QWidget):
    def __init__(self, models: ModelsWindow) -> None:
        super().__init__()
        self.models = models
        self.services = models.services
        self.installed_models: list[Any] = []
        layout = QtWidgets.QVBoxLayout(self)
        self.table = table(
            ["Model", "Id", "Role", "Quantization", "Size", "Source"], "Installed models"
        )
        # The model's name whole; a long source (a file's path) gives way, in its middle.
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(5, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
        self.status = sentence_label("Installed status")
        self.remove_button = QtWidgets.QPushButton("Remove")
        self.remove_button.setAccessibleName("Remove the selected model")
        self.import_button = QtWidgets.QPushButton("Import from disk...")
        self.import_button.setAccessibleName("Import a GGUF file from this computer")
        self.use_as = QtWidgets.QComboBox()
        for role, text in ROLE_TEXT.items():
            self.use_as.addItem(f"Use as: {text}", role)
        self.use_as.setAccessibleName("Role of the selected model")
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.use_as)
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.remove_button)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.table.itemSelectionChanged.connect(self._selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.import_button.clicked.connect(self.import_from_disk)
        self.use_as.activated.connect(self._role_chosen)
        self._selected()

    def refresh(self) -> None:
        registry = self.services.context.registry
        call(self.services.engine, asyncio.to_thread(registry.list), self, self._listed,
             lambda error: self.models.show_problem(self.status, sentence(error)))  # fmt: skip

    def _listed(self, models: object) -> None:
        self.installed_models = list(models)  # type: ignore[call-overload]
        self.table.setRowCount(0)
        for model in self.installed_models:
            row = self.table.rowCount()
            self.table.insertRow(row)
            self.table.setItem(row, 0, item(model.name, model.id))
            self.table.setItem(row, 1, item(model.id))
            self.table.setItem(row, 2, item(ROLE_TEXT[model.role]))
            self.table.setItem(row, 3, item(model.quantization or "unknown"))
            self.table.setItem(row, 4, item(format_size(model.size)))
            source = {"hub": model.repo or "the Hub", "local": str(model.path)}.get(
                model.source, "bundled starter"
            )
            cell = item(source)
            cell.setToolTip(source)  # whole, where the column shows it shortened
            self.table.setItem(row, 5, cell)
        self._selected()
        self.models.installed_changed.emit()

    def installed_ids(self) -> list[str]:
        return [m.id for m in self.installed_models]

    def _selected_model(self) -> Any:
        row = self.table.currentRow()
        if row < 0 or not self.table.selectedItems():
            return None
        return self.installed_models[row]

    def _selected(self) -> None:
        model = self._selected_model()
        self.remove_button.setEnabled(model is not None)
        self.use_as.setEnabled(model is not None)
        if model is not None:
            self.use_as.setCurrentIndex(self.use_as.findData(model.role))

    def select(self, model_id: str) -> None:
        for row in range(self.table.rowCount()):
            if row_data(self.table, row) == model_id:
                self.table.selectRow(row)
                return

    def _confirm(self, question: str) -> bool:
        answer = QtWidgets.QMessageBox.question(self, "Remove model", question)
        return answer == QtWidgets.QMessageBox.StandardButton.Yes

    def remove_selected(self) -> None:
        from bastion_desktop.core.hub.local_files import remove_model

        model = self._selected_model()
        if model is None:
            return
        what = "and delete its file" if model.owns_file else "(its file stays where it is)"
        if not self._confirm(f"Remove {model.name} {what}?"):
            return
        context = self.services.context

        def removed(result: object) -> None:
            files = result.deleted_files  # type: ignore[attr-defined]
            self.status.setText(
                f"Removed {model.name}." + (" Its file was deleted." if files else "")
            )
            self.refresh()

        work = asyncio.to_thread(remove_model, context.registry, model.id, context.models_dir)
        call(self.services.engine, work, self, removed, self._failed)

    def _role_chosen(self) -> None:
        model = self._selected_model()
        role = self.use_as.currentData()
        if model is None or model.role == role:
            return
        registry = self.services.context.registry

        def change() -> None:
            registry.add(model.model_copy(update={"role": role}))

        def changed(_: object) -> None:
            use = "the guardrails' safety model" if role == "safety" else "a chat model"
            self.status.setText(f"{model.name} is now {use}.")
            self.refresh()

        call(self.services.engine, asyncio.to_thread(change), self, changed,
             lambda error: self.models.show_problem(self.status, sentence(error)))  # fmt: skip

    def import_from_disk(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Import a GGUF model", str(Path.home()), "GGUF models (*.gguf)"
        )
        if not path:
            return
        box = QtWidgets.QMessageBox(self)
        box.setWindowTitle("Import a GGUF model")
        box.setText(f"Use {Path(path).name} where it is, or copy it into the models folder?")
        here = box.addButton("Use it where it is", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        copy = box.addButton("Copy it", QtWidgets.QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QtWidgets.QMessageBox.StandardButton.Cancel)
        box.exec()
        if box.clickedButton() not in (here, copy):
            return
        mode = "copy" if box.clickedButton() is copy else "reference"
        self.import_file(Path(path), mode, self.use_as.currentData() or "chat")

    def import_file(self, path: Path, mode: str, role: str = "chat") -> None:
        """Hash the file and read its metadata on a worker thread, then register it."""
        from bastion_desktop.core.hub.local_files import import_gguf

        context = self.services.context
        self.status.setText(f"Importing {path.name} (checking the file)...")

        def imported(model: object) -> None:
            self.status.setText(f"Imported {model.name} as {model.id}.")  # type: ignore[attr-defined]
            self.refresh()

        work = asyncio.to_thread(
            import_gguf, path, context.registry, context.models_dir,
            mode=mode, role=role, policy=context.policy,  # type: ignore[arg-type]
        )  # fmt: skip
        call(self.services.engine, work, self, imported, self._failed)

    def _failed(self, error: object) -> None:
        self.models.show_problem(self.status, sentence(error))
