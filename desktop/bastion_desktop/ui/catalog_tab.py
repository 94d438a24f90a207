"""The models window's Catalog tab: the curated models with their fit on this machine
(listed by `core.hub.listings`), and a download button."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion_desktop.core.hub.filenames import format_size
from bastion_desktop.ui.model_tables import (
    ROLE_TEXT,
    fit_item,
    item,
    row_data,
    sentence_label,
    table,
)
from bastion_desktop.ui.qt import QtWidgets

if TYPE_CHECKING:
    from bastion_desktop.ui.models_window import ModelsWindow


class CatalogTab(QtWidgets.QWidget):
    def __init__(self, models: ModelsWindow) -> None:
        super().__init__()
        self.models = models
        layout = QtWidgets.QVBoxLayout(self)
        intro = QtWidgets.QLabel(
            "Instruct models known to work with Bastion, and small safety models for the "
            "guardrails' safety role."
        )
        intro.setWordWrap(True)
        self.table = table(
            ["Model", "Role", "Parameters", "Quantization", "Size", "Fit on this machine",
             "License"],
            "Curated models",
        )  # fmt: skip
        self.download_button = QtWidgets.QPushButton("Download")
        self.download_button.setAccessibleName("Download the selected catalog model")
        self.download_button.clicked.connect(self.download_selection)
        self.status = sentence_label("Catalog status")
        self.table.itemSelectionChanged.connect(models.sync_download_buttons)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.download_button)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)

    def fill(self) -> None:
        """The catalog's rows, with their fit once the machine has been probed."""
        from bastion_desktop.core.hub.listings import catalog_entries

        hardware = self.models.hardware
        self.table.setRowCount(0)
        for entry in catalog_entries(self.models.context_length, hardware):
            model, file = entry.model, entry.file
            row = self.table.rowCount()
            self.table.insertRow(row)
            name = item(model.name, (model.repo, file.file, model.role))
            name.setToolTip(model.description)
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, item(ROLE_TEXT[model.role]))
            self.table.setItem(row, 2, item(f"{model.parameters_b:g}B"))
            self.table.setItem(row, 3, item(file.quantization))
            self.table.setItem(row, 4, item(format_size(file.size)))
            fit = entry.fit
            self.table.setItem(row, 5, item("Checking...") if fit is None else fit_item(fit))
            self.table.setItem(row, 6, item(model.license))
        self.models.sync_download_buttons()

    def download_selection(self) -> None:
        row = self.table.currentRow()
        if row < 0:
            return
        repo, file, role = row_data(self.table, row)
        self.models.start_download(repo, file, role, self.status)
