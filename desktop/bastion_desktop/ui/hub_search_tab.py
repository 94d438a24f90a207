"""The models window's Hub search tab: GGUF repositories on the Hugging Face Hub, a
repository's files with their fit on this machine, and a download button. Searching
and listing are the only times the window goes online, and the policy's offline mode
refuses them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from bastion_desktop.core.hub.filenames import format_size
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.model_tables import (
    ROLE_TEXT,
    fit_item,
    hardware,
    item,
    row_data,
    sentence,
    sentence_label,
    table,
)
from bastion_desktop.ui.qt import QtCore, QtWidgets

if TYPE_CHECKING:
    from bastion_desktop.ui.models_window import ModelsWindow


class HubSearchTab(QtWidgets.QWidget):
    def __init__(self, models: ModelsWindow) -> None:
        super().__init__()
        self.models = models
        self.listing: Any = None  # the repository whose files are shown
        layout = QtWidgets.QVBoxLayout(self)
        bar = QtWidgets.QHBoxLayout()
        self.query = QtWidgets.QLineEdit()
        self.query.setPlaceholderText("Search GGUF models on the Hugging Face Hub")
        self.query.setAccessibleName("Search the Hub")
        self.query.setClearButtonEnabled(True)
        self.search_button = QtWidgets.QPushButton("Search")
        self.search_button.setAccessibleName("Search the Hub")
        bar.addWidget(self.query, 1)
        bar.addWidget(self.search_button)
        note = QtWidgets.QLabel(
            "Bastion works offline; searching and downloading are the only times it goes "
            "online, for that request alone."
        )
        note.setWordWrap(True)
        self.status = sentence_label("Search status")
        self.results = table(["Repository", "Downloads", "Likes", "License"], "Search results")
        self.files = table(["File", "Quantization", "Size", "Fit on this machine"], "Files")
        self.files_status = sentence_label("Files status")
        self.files_status.setText("Pick a repository to see its GGUF files.")
        self.role = QtWidgets.QComboBox()
        for role, text in ROLE_TEXT.items():
            self.role.addItem(f"Use as: {text}", role)
        self.role.setAccessibleName("Use the downloaded model as")
        self.download_button = QtWidgets.QPushButton("Download")
        self.download_button.setAccessibleName("Download the selected file")
        self.download_button.setEnabled(False)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(self.results)
        lower = QtWidgets.QWidget()
        lower_layout = QtWidgets.QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.files, 1)
        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(self.files_status, 1)
        actions.addWidget(self.role)
        actions.addWidget(self.download_button)
        lower_layout.addLayout(actions)
        split.addWidget(lower)
        layout.addLayout(bar)
        layout.addWidget(note)
        layout.addWidget(self.status)
        layout.addWidget(split, 1)
        self.query.returnPressed.connect(self.search)
        self.search_button.clicked.connect(self.search)
        self.results.itemSelectionChanged.connect(self._repo_selected)
        self.files.itemSelectionChanged.connect(models.sync_download_buttons)
        self.download_button.clicked.connect(self.download_selection)

    def search(self) -> None:
        from bastion_desktop.core.hub.search import search_gguf_repos

        models = self.models
        query = self.query.text().strip()
        if not query or models.refused(self.status, models.policy.require_network):
            return
        self.search_button.setEnabled(False)
        self.status.setText(f"Searching the Hub for {query!r}...")
        call(models.services.engine, asyncio.to_thread(search_gguf_repos, query, limit=50), self,
             self._found, self._search_failed)  # fmt: skip

    def _found(self, repos: object) -> None:
        self.search_button.setEnabled(True)
        found = list(repos)  # type: ignore[call-overload]
        self.results.setRowCount(0)
        for repo in found:
            row = self.results.rowCount()
            self.results.insertRow(row)
            name = repo.id + ("  (gated)" if repo.gated else "")
            self.results.setItem(row, 0, item(name, repo.id))
            self.results.setItem(row, 1, item(f"{repo.downloads:,}"))
            self.results.setItem(row, 2, item(f"{repo.likes:,}"))
            self.results.setItem(row, 3, item(repo.license or "not stated"))
        count = len(found)
        self.status.setText(
            "No GGUF repository matches." if not count else f"{count} repositories."
        )
        self.models.search_done.emit()

    def _search_failed(self, error: object) -> None:
        self.search_button.setEnabled(True)
        self.models.show_problem(self.status, sentence(error))
        self.models.search_done.emit()

    def _repo_selected(self) -> None:
        row = self.results.currentRow()
        if row >= 0:
            self.show_files(row_data(self.results, row))

    def show_files(self, repo: str) -> None:
        from bastion_desktop.core.hub.listings import repo_files_with_fit

        models = self.models
        self.files.setRowCount(0)
        models.sync_download_buttons()
        if models.refused(self.files_status, models.policy.require_network):
            return
        self.files_status.setText(f"Listing the GGUF files of {repo}...")
        work = asyncio.to_thread(
            lambda: repo_files_with_fit(repo, models.context_length, hardware())
        )
        call(models.services.engine, work, self, self._files_listed, self._files_failed)

    def _files_listed(self, result: object) -> None:
        from bastion_desktop.core.hub.search import display_name

        listing, fits = cast(tuple[Any, list[Any]], result)
        self.listing = listing
        for choice, fit in zip(listing.choices, fits, strict=True):
            row = self.files.rowCount()
            self.files.insertRow(row)
            parts = f" ({len(choice.parts)} parts)" if choice.is_split else ""
            self.files.setItem(row, 0, item(display_name(choice) + parts, choice.first.path))
            self.files.setItem(row, 1, item(choice.quantization or "unknown"))
            self.files.setItem(row, 2, item(format_size(choice.size)))
            self.files.setItem(row, 3, fit_item(fit))
        gated = " It is gated: accept its terms on the Hub first." if listing.gated else ""
        self.files_status.setText(
            f"{listing.repo}: {len(listing.choices)} GGUF files, license: "
            f"{listing.license or 'not stated'}.{gated}"
        )
        if listing.choices:
            self.files.selectRow(0)
        self.models.files_ready.emit()

    def _files_failed(self, error: object) -> None:
        self.models.show_problem(self.files_status, sentence(error))
        self.models.files_ready.emit()

    def download_selection(self) -> None:
        row = self.files.currentRow()
        if row < 0 or self.listing is None:
            return
        file = row_data(self.files, row)
        self.models.start_download(
            self.listing.repo, file, self.role.currentData(), self.files_status
        )
