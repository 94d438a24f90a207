"""The models window: the curated catalog and Hub search with a fit badge for this
machine, a repository's files, downloads with progress, pause, resume and cancel, and
the installed models (remove, import from disk, chat or safety role).

Everything slow runs on the engine thread (`ui.engine.call`) or in a worker thread the
engine loop starts (`asyncio.to_thread`): hardware probing, Hub requests, hashing,
reading GGUF metadata. The `DownloadManager` lives on the engine loop; its events are
relayed to the GUI thread through `_DownloadRelay` (emitted there, never here).

The administrator's policy holds here as in `bastion models`: offline mode refuses Hub
search and file listings, download buttons are "Managed by your organization" when
downloads are not allowed, and AllowedModels is checked before a download starts and
before a file from disk is registered."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from bastion_desktop.core.hub.download_events import (
    DownloadCancelled,
    DownloadEvent,
    DownloadFailed,
    DownloadFinished,
    DownloadPaused,
    DownloadProgress,
    DownloadQueued,
    DownloadRetrying,
    DownloadStarted,
    DownloadVerifying,
    describe_event,
)
from bastion_desktop.core.hub.filenames import format_duration, format_size
from bastion_desktop.core.policy import PolicyRefusedError
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.managed import mark_managed
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal

log = logging.getLogger(__name__)

_QUEUED = QtCore.Qt.ConnectionType.QueuedConnection
FIT_TEXT = {
    "full_gpu": "Fits fully on GPU",
    "partial_gpu": "Partly on GPU",
    "cpu_only": "CPU only",
    "will_not_fit": "Will not fit",
}
FIT_COLOUR = {
    "full_gpu": "#2e7d32",
    "partial_gpu": "#1565c0",
    "cpu_only": "#8d6e00",
    "will_not_fit": "#c62828",
}
ROLE_TEXT = {"chat": "Chat", "safety": "Safety (guardrails)"}


@functools.cache
def _hardware() -> Any:
    """Probed once per process (llama.cpp and the GPU drivers are asked in children)."""
    from bastion_desktop.core.hub.probe import probe_hardware

    return probe_hardware()


def fit_label(estimate: Any) -> str:
    text = FIT_TEXT[estimate.kind.value]
    if estimate.kind.value == "partial_gpu":
        text = f"Partly on GPU ({estimate.gpu_layers} of {estimate.total_layers} layers)"
    return text + (" (tight)" if estimate.tight else "")


def _fit_item(estimate: Any) -> QtWidgets.QTableWidgetItem:
    item = _item(fit_label(estimate))
    item.setForeground(QtGui.QBrush(QtGui.QColor(FIT_COLOUR[estimate.kind.value])))
    item.setToolTip(estimate.summary)
    return item


def _item(text: str, data: object = None) -> QtWidgets.QTableWidgetItem:
    item = QtWidgets.QTableWidgetItem(text)
    item.setFlags(item.flags() & ~QtCore.Qt.ItemFlag.ItemIsEditable)
    if data is not None:
        item.setData(QtCore.Qt.ItemDataRole.UserRole, data)
    return item


def _table(headers: list[str], name: str) -> QtWidgets.QTableWidget:
    table = QtWidgets.QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.setAccessibleName(name)
    table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
    table.verticalHeader().setVisible(False)
    table.setAlternatingRowColors(True)
    table.setWordWrap(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
    return table


def _row_data(table: QtWidgets.QTableWidget, row: int) -> Any:
    item = table.item(row, 0)
    return None if item is None else item.data(QtCore.Qt.ItemDataRole.UserRole)


def _sentence_label(name: str) -> QtWidgets.QLabel:
    label = QtWidgets.QLabel()
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setAccessibleName(name)
    label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _sentence(error: object) -> str:
    return sentence_for(error, "That")


class _DownloadRelay(QtCore.QObject):
    """Lives on the GUI thread; the engine loop emits `raw`, the GUI re-emits it."""

    raw = Signal(object)
    delivered = Signal(object)  # not `event`: that name is QObject's event handler

    def __init__(self, parent: QtCore.QObject) -> None:
        super().__init__(parent)
        self.raw.connect(self.delivered.emit, _QUEUED)


@dataclass
class _RowState:
    name: str
    total: int
    state: str = "queued"  # queued, running, paused, failed, done, cancelled


class DownloadRow(QtWidgets.QFrame):
    """One download: name, progress bar, a line of bytes, rate and time left, and
    pause / resume / cancel."""

    def __init__(self, download_id: str, name: str, total: int, parent: Any = None) -> None:
        super().__init__(parent)
        self.download_id = download_id
        self.state = _RowState(name, total)
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        layout = QtWidgets.QGridLayout(self)
        self.title = QtWidgets.QLabel(f"<b>{name}</b>")
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setAccessibleName(f"Download progress of {name}")
        self.bar.setTextVisible(True)
        self.bar.setFormat("%p%")
        self.line = QtWidgets.QLabel(f"Queued ({format_size(total)}).")
        self.line.setWordWrap(True)
        self.line.setAccessibleName(f"Download status of {name}")
        self.pause_button = QtWidgets.QPushButton("Pause")
        self.pause_button.setAccessibleName(f"Pause the download of {name}")
        self.resume_button = QtWidgets.QPushButton("Resume")
        self.resume_button.setAccessibleName(f"Resume the download of {name}")
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.setAccessibleName(f"Cancel the download of {name}")
        layout.addWidget(self.title, 0, 0, 1, 4)
        layout.addWidget(self.bar, 1, 0)
        layout.addWidget(self.pause_button, 1, 1)
        layout.addWidget(self.resume_button, 1, 2)
        layout.addWidget(self.cancel_button, 1, 3)
        layout.addWidget(self.line, 2, 0, 1, 4)
        layout.setColumnStretch(0, 1)
        self._sync_buttons()

    @property
    def fraction(self) -> float:
        return self.bar.value() / 1000

    def _set_done(self, done: int, total: int) -> None:
        self.bar.setValue(int(1000 * done / total) if total else 1000)

    def apply(self, event: DownloadEvent) -> None:
        match event:
            case DownloadStarted(done_bytes=done, total_bytes=total):
                self.state.state = "running"
                self._set_done(done, total)
                self.line.setText(describe_event(event))
            case DownloadProgress(
                done_bytes=done, total_bytes=total, bytes_per_second=rate, seconds_left=left
            ):
                self.state.state = "running"
                self._set_done(done, total)
                eta = "" if left is None else f", {format_duration(left)} left"
                self.line.setText(
                    f"{format_size(done)} of {format_size(total)}, {format_size(rate)}/s{eta}"
                )
            case DownloadRetrying() | DownloadVerifying():
                self.line.setText(describe_event(event))
            case DownloadPaused(done_bytes=done, total_bytes=total):
                self.state.state = "paused"
                self._set_done(done, total)
                self.line.setText(describe_event(event))
            case DownloadFinished():
                self.state.state = "done"
                self.bar.setValue(1000)
                self.line.setText(describe_event(event))
            case DownloadFailed(message=message, resumable=resumable):
                self.state.state = "failed" if resumable else "gone"
                self.line.setText(message)
            case DownloadCancelled():
                self.state.state = "cancelled"
                self.bar.setValue(0)
                self.line.setText(describe_event(event))
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        state = self.state.state
        self.pause_button.setVisible(state in ("queued", "running"))
        self.resume_button.setVisible(state in ("paused", "failed"))
        self.cancel_button.setVisible(state in ("queued", "running", "paused", "failed"))


class ModelsWindow(QtWidgets.QWidget):
    """Find, download and manage models. Take `services` (AppServices)."""

    installed_changed = Signal()
    hardware_ready = Signal(object)
    catalog_ready = Signal()
    search_done = Signal()
    files_ready = Signal()
    problem_shown = Signal(str)

    def __init__(self, services: Any, parent: Any = None, *, transfer_settings: Any = None) -> None:
        super().__init__(parent)
        self.services = services
        self.transfer_settings = transfer_settings
        self.setWindowTitle("Models")
        self.setObjectName("modelsWindow")
        self.resize(960, 620)
        self.hardware: Any = None
        self._manager: Any = None
        self.listing: Any = None
        self.rows: dict[str, DownloadRow] = {}
        self.relay = _DownloadRelay(self)
        self.relay.delivered.connect(self._on_download_event)
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setAccessibleName("Model sections")
        self.machine = _sentence_label("This machine")
        self.machine.setText("Checking this machine's memory and GPU...")
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.machine)
        layout.addWidget(self.tabs, 1)
        self._build_catalog()
        self._build_search()
        self._build_downloads()
        self._build_installed()
        self.refresh_installed()
        self._probe()
        self._list_unfinished()

    # -- the machine and the catalog ---------------------------------------------------

    @property
    def policy(self) -> Any:
        """The administrator's policy (read each time: the context is replaced on
        settings changes)."""
        return self.services.context.policy

    def _refused(self, label: QtWidgets.QLabel, check: Any) -> bool:
        """Run a policy check; when it refuses, show its sentence in `label`."""
        try:
            check()
        except PolicyRefusedError as error:
            self._show(label, str(error))
            return True
        return False

    def _sync_download_buttons(self) -> None:
        """Download buttons follow the selection, unless the policy forbids downloads:
        then they stay disabled and say they are managed."""
        for button, table in (
            (self.catalog_download, self.catalog_table),
            (self.files_download, self.files),
        ):
            if self.policy.downloads_allowed:
                mark_managed(button, False)
                button.setEnabled(bool(table.selectedItems()))
            else:
                mark_managed(button, True)

    @property
    def context_length(self) -> int:
        return int(self.services.context.settings.inference.context_length)

    def _probe(self) -> None:
        call(self.services.engine, asyncio.to_thread(_hardware), self, self._probed,
             self._probe_failed)  # fmt: skip

    def _probed(self, hardware: object) -> None:
        self.hardware = hardware
        self.machine.setText(self._describe_machine(hardware))
        self.hardware_ready.emit(hardware)
        self._fill_catalog()

    def _probe_failed(self, error: object) -> None:
        self.machine.setText(f"This machine could not be checked: {_sentence(error)}")

    def _describe_machine(self, hardware: Any) -> str:
        ram = format_size(hardware.ram_total) if hardware.ram_total else "unknown"
        if hardware.gpus and hardware.gpu_offload_supported:
            free = hardware.gpu_free_bytes
            gpus = ", ".join(g.name for g in hardware.gpus)
            gpu = f"{gpus} ({format_size(free) if free else 'unknown'} free)"
        elif hardware.gpus:
            gpu = "a GPU this llama.cpp build cannot use"
        else:
            gpu = "no GPU"
        runtime = f" {hardware.runtime}" if hardware.runtime else ""
        return (
            f"This machine: {ram} of RAM, {gpu}.{runtime} Fit is for a "
            f"{self.context_length:,}-token context."
        )

    def _build_catalog(self) -> None:
        page = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(page)
        intro = QtWidgets.QLabel(
            "Instruct models known to work with Bastion, and small safety models for the "
            "guardrails' safety role."
        )
        intro.setWordWrap(True)
        self.catalog_table = _table(
            ["Model", "Role", "Parameters", "Quantization", "Size", "Fit on this machine",
             "License"],
            "Curated models",
        )  # fmt: skip
        self.catalog_download = QtWidgets.QPushButton("Download")
        self.catalog_download.setAccessibleName("Download the selected catalog model")
        self.catalog_download.clicked.connect(self.download_catalog_selection)
        self.catalog_status = _sentence_label("Catalog status")
        self.catalog_table.itemSelectionChanged.connect(self._catalog_selected)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.catalog_status, 1)
        buttons.addWidget(self.catalog_download)
        layout.addWidget(intro)
        layout.addWidget(self.catalog_table, 1)
        layout.addLayout(buttons)
        self.tabs.addTab(page, "Catalog")
        self._fill_catalog()

    def _fill_catalog(self) -> None:
        from bastion_desktop.core.hub.catalog import load_catalog
        from bastion_desktop.core.hub.fit import estimate_fit, shape_from_facts

        catalog = load_catalog()  # package data, parsed once per process
        self.catalog_table.setRowCount(0)
        for model in sorted(catalog.models, key=lambda m: (m.role != "chat", m.parameters_b)):
            file = model.file_for()
            row = self.catalog_table.rowCount()
            self.catalog_table.insertRow(row)
            name = _item(model.name, (model.repo, file.file, model.role))
            name.setToolTip(model.description)
            self.catalog_table.setItem(row, 0, name)
            self.catalog_table.setItem(row, 1, _item(ROLE_TEXT[model.role]))
            self.catalog_table.setItem(row, 2, _item(f"{model.parameters_b:g}B"))
            self.catalog_table.setItem(row, 3, _item(file.quantization))
            self.catalog_table.setItem(row, 4, _item(format_size(file.size)))
            if self.hardware is None:
                self.catalog_table.setItem(row, 5, _item("Checking..."))
            else:
                shape = shape_from_facts(file.size, model.shape)
                fit = estimate_fit(shape, self.context_length, self.hardware)
                self.catalog_table.setItem(row, 5, _fit_item(fit))
            self.catalog_table.setItem(row, 6, _item(model.license))
        self._catalog_selected()
        if self.hardware is not None:
            self.catalog_ready.emit()

    def _catalog_selected(self) -> None:
        if hasattr(self, "files_download"):  # the search tab is built after the catalog
            self._sync_download_buttons()
        else:
            self.catalog_download.setEnabled(bool(self.catalog_table.selectedItems()))

    def download_catalog_selection(self) -> None:
        row = self.catalog_table.currentRow()
        if row < 0:
            return
        repo, file, role = _row_data(self.catalog_table, row)
        self.start_download(repo, file, role, self.catalog_status)

    # -- Hub search and a repository's files --------------------------------------------

    def _build_search(self) -> None:
        page = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(page)
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
        self.search_status = _sentence_label("Search status")
        self.results = _table(["Repository", "Downloads", "Likes", "License"], "Search results")
        self.files = _table(["File", "Quantization", "Size", "Fit on this machine"], "Files")
        self.files_status = _sentence_label("Files status")
        self.files_status.setText("Pick a repository to see its GGUF files.")
        self.role = QtWidgets.QComboBox()
        for role, text in ROLE_TEXT.items():
            self.role.addItem(f"Use as: {text}", role)
        self.role.setAccessibleName("Use the downloaded model as")
        self.files_download = QtWidgets.QPushButton("Download")
        self.files_download.setAccessibleName("Download the selected file")
        self.files_download.setEnabled(False)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(self.results)
        lower = QtWidgets.QWidget()
        lower_layout = QtWidgets.QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.files, 1)
        actions = QtWidgets.QHBoxLayout()
        actions.addWidget(self.files_status, 1)
        actions.addWidget(self.role)
        actions.addWidget(self.files_download)
        lower_layout.addLayout(actions)
        split.addWidget(lower)
        layout.addLayout(bar)
        layout.addWidget(note)
        layout.addWidget(self.search_status)
        layout.addWidget(split, 1)
        self.tabs.addTab(page, "Search the Hub")
        self.query.returnPressed.connect(self.search)
        self.search_button.clicked.connect(self.search)
        self.results.itemSelectionChanged.connect(self._repo_selected)
        self.files.itemSelectionChanged.connect(self._sync_download_buttons)
        self.files_download.clicked.connect(self.download_file_selection)
        self._sync_download_buttons()

    def search(self) -> None:
        from bastion_desktop.core.hub.search import search_gguf_repos

        query = self.query.text().strip()
        if not query or self._refused(self.search_status, self.policy.require_network):
            return
        self.search_button.setEnabled(False)
        self.search_status.setText(f"Searching the Hub for {query!r}...")
        call(self.services.engine, asyncio.to_thread(search_gguf_repos, query, limit=50), self,
             self._found, self._search_failed)  # fmt: skip

    def _found(self, repos: object) -> None:
        self.search_button.setEnabled(True)
        found = list(repos)  # type: ignore[call-overload]
        self.results.setRowCount(0)
        for repo in found:
            row = self.results.rowCount()
            self.results.insertRow(row)
            name = repo.id + ("  (gated)" if repo.gated else "")
            self.results.setItem(row, 0, _item(name, repo.id))
            self.results.setItem(row, 1, _item(f"{repo.downloads:,}"))
            self.results.setItem(row, 2, _item(f"{repo.likes:,}"))
            self.results.setItem(row, 3, _item(repo.license or "not stated"))
        count = len(found)
        self.search_status.setText(
            "No GGUF repository matches." if not count else f"{count} repositories."
        )
        self.search_done.emit()

    def _search_failed(self, error: object) -> None:
        self.search_button.setEnabled(True)
        self._show(self.search_status, _sentence(error))
        self.search_done.emit()

    def _show(self, label: QtWidgets.QLabel, sentence: str) -> None:
        label.setText(sentence)
        self.problem_shown.emit(sentence)

    def _repo_selected(self) -> None:
        row = self.results.currentRow()
        if row >= 0:
            self.show_files(_row_data(self.results, row))

    def show_files(self, repo: str) -> None:
        self.files.setRowCount(0)
        self._sync_download_buttons()
        if self._refused(self.files_status, self.policy.require_network):
            return
        self.files_status.setText(f"Listing the GGUF files of {repo}...")
        call(self.services.engine, self._list_files(repo, self.context_length), self,
             self._files_listed, self._files_failed)  # fmt: skip

    @staticmethod
    async def _list_files(repo: str, context_length: int) -> tuple[Any, list[Any]]:
        from bastion_desktop.core.hub.fit import estimate_fit, shape_for_download
        from bastion_desktop.core.hub.search import list_repo_gguf_files

        def work() -> tuple[Any, list[Any]]:
            listing = list_repo_gguf_files(repo)
            hardware = _hardware()
            fits = [
                estimate_fit(
                    shape_for_download(listing.repo, c.size, c.quantization),
                    context_length,
                    hardware,
                )
                for c in listing.choices
            ]
            return listing, fits

        return await asyncio.to_thread(work)

    def _files_listed(self, result: object) -> None:
        from bastion_desktop.core.hub.search import display_name

        listing, fits = cast(tuple[Any, list[Any]], result)
        self.listing = listing
        for choice, fit in zip(listing.choices, fits, strict=True):
            row = self.files.rowCount()
            self.files.insertRow(row)
            parts = f" ({len(choice.parts)} parts)" if choice.is_split else ""
            self.files.setItem(row, 0, _item(display_name(choice) + parts, choice.first.path))
            self.files.setItem(row, 1, _item(choice.quantization or "unknown"))
            self.files.setItem(row, 2, _item(format_size(choice.size)))
            self.files.setItem(row, 3, _fit_item(fit))
        gated = " It is gated: accept its terms on the Hub first." if listing.gated else ""
        self.files_status.setText(
            f"{listing.repo}: {len(listing.choices)} GGUF files, license: "
            f"{listing.license or 'not stated'}.{gated}"
        )
        if listing.choices:
            self.files.selectRow(0)
        self.files_ready.emit()

    def _files_failed(self, error: object) -> None:
        self._show(self.files_status, _sentence(error))
        self.files_ready.emit()

    def download_file_selection(self) -> None:
        row = self.files.currentRow()
        if row < 0 or self.listing is None:
            return
        file = _row_data(self.files, row)
        self.start_download(self.listing.repo, file, self.role.currentData(), self.files_status)

    # -- downloads -----------------------------------------------------------------------

    def _build_downloads(self) -> None:
        page = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(page)
        self.downloads_status = _sentence_label("Downloads status")
        self.downloads_status.setText(
            "Nothing downloading. Downloads run one at a time; the others wait in the queue."
        )
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        holder = QtWidgets.QWidget()
        self.download_list = QtWidgets.QVBoxLayout(holder)
        self.download_list.addStretch(1)
        scroll.setWidget(holder)
        outer.addWidget(self.downloads_status)
        outer.addWidget(scroll, 1)
        self.downloads_page = page
        self.tabs.addTab(page, "Downloads")

    def _manager_here(self) -> Any:
        """The download manager, made on the engine loop the first time it is needed."""
        if self._manager is None:
            from bastion_desktop.core.hub.downloads import DownloadManager

            context = self.services.context
            self._manager = DownloadManager(
                context.registry,
                context.models_dir,
                settings=self.transfer_settings,
                listener=self.relay.raw.emit,
            )
        return self._manager

    def start_download(
        self, repo: str, file: str, role: str, status: QtWidgets.QLabel | None = None
    ) -> None:
        where = status or self.downloads_status
        policy = self.policy
        if self._refused(where, policy.require_downloads):
            return
        where.setText(f"Asking the Hub about {file}...")

        async def begin() -> str:
            from bastion_desktop.core.hub.download_plan import describe_plan

            manager = self._manager_here()
            plan = await manager.plan(repo, file, role=role)
            # The files' sha256s are known once planned: AllowedModels may list them.
            policy.require_download(plan.repo, [f.sha256 for f in plan.files])
            manager.start(plan)
            return str(describe_plan(plan))

        def started(text: object) -> None:
            where.setText(f"{text} Downloading: see the Downloads tab.")

        call(self.services.engine, begin(), self, started,
             lambda error: self._show(where, _sentence(error)))  # fmt: skip

    def _list_unfinished(self) -> None:
        """Downloads begun in an earlier session: shown paused, to resume or cancel."""

        async def unfinished() -> list[Any]:
            manager = self._manager_here()
            return list(await asyncio.to_thread(manager.unfinished))

        call(self.services.engine, unfinished(), self, self._show_unfinished)

    def _show_unfinished(self, found: object) -> None:
        for item in found:  # type: ignore[attr-defined]
            plan = item.plan
            if plan.id in self.rows:
                continue
            row = self._add_row(plan.id, plan.name, plan.total_size)
            row.apply(DownloadPaused(plan.id, item.done_bytes, plan.total_size))
            row.setProperty("plan", plan)

    def _add_row(self, download_id: str, name: str, total: int) -> DownloadRow:
        row = DownloadRow(download_id, name, total)
        self.rows[download_id] = row
        self.download_list.insertWidget(self.download_list.count() - 1, row)
        row.pause_button.clicked.connect(lambda: self.control(download_id, "pause"))
        row.resume_button.clicked.connect(lambda: self.control(download_id, "resume"))
        row.cancel_button.clicked.connect(lambda: self.control(download_id, "cancel"))
        return row

    def _on_download_event(self, event: DownloadEvent) -> None:
        if isinstance(event, DownloadQueued):
            row = self.rows.get(event.download_id)
            if row is None:
                row = self._add_row(event.download_id, event.name, event.total_bytes)
            row.state.state = "queued"
            row.line.setText(describe_event(event))
            row._sync_buttons()
            self.tabs.setCurrentWidget(self.downloads_page)
        else:
            row = self.rows.get(event.download_id)
            if row is None:
                return
            row.apply(event)
        if isinstance(event, DownloadFinished):
            self.refresh_installed()
        active = sum(r.state.state in ("queued", "running") for r in self.rows.values())
        self.downloads_status.setText(
            f"{active} downloading or queued." if active else "Nothing downloading now."
        )

    def control(self, download_id: str, action: str) -> None:
        """Pause, resume or cancel a download (on the engine loop, where it lives)."""
        policy = self.policy

        async def act() -> None:
            manager = self._manager_here()
            download = manager.downloads.get(download_id)
            if download is None:  # from an earlier session: not started in this one
                row_plan = self.rows[download_id].property("plan")
                if action == "resume" and row_plan is not None:
                    # Begun under an earlier policy: today's must allow it too.
                    policy.require_download(row_plan.repo, [f.sha256 for f in row_plan.files])
                    manager.start(row_plan)
                elif action == "cancel" and row_plan is not None:
                    manager._discard(row_plan)
                    manager._emit(DownloadCancelled(download_id))
                return
            getattr(download, action)()

        row = self.rows.get(download_id)
        call(self.services.engine, act(), self, None,
             lambda error: self._show(row.line if row else self.downloads_status,
                                      _sentence(error)))  # fmt: skip

    def shut_down(self, timeout: float = 10.0) -> None:
        """Pause every download (the partial files stay for next time). Blocks: for
        quitting the app and for tests."""
        if self._manager is not None and self.services.engine.running:
            self.services.engine.run(self._manager.close(), timeout=timeout)

    # -- installed models ----------------------------------------------------------------

    def _build_installed(self) -> None:
        page = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(page)
        self.installed = _table(
            ["Model", "Id", "Role", "Quantization", "Size", "Source"], "Installed models"
        )
        self.installed_status = _sentence_label("Installed status")
        self.remove_button = QtWidgets.QPushButton("Remove")
        self.remove_button.setAccessibleName("Remove the selected model")
        self.import_button = QtWidgets.QPushButton("Import from disk...")
        self.import_button.setAccessibleName("Import a GGUF file from this computer")
        self.use_as = QtWidgets.QComboBox()
        for role, text in ROLE_TEXT.items():
            self.use_as.addItem(f"Use as: {text}", role)
        self.use_as.setAccessibleName("Role of the selected model")
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.installed_status, 1)
        buttons.addWidget(self.use_as)
        buttons.addWidget(self.import_button)
        buttons.addWidget(self.remove_button)
        layout.addWidget(self.installed, 1)
        layout.addLayout(buttons)
        self.tabs.addTab(page, "Installed")
        self.installed.itemSelectionChanged.connect(self._installed_selected)
        self.remove_button.clicked.connect(self.remove_selected)
        self.import_button.clicked.connect(self.import_from_disk)
        self.use_as.activated.connect(self._role_chosen)
        self._installed_selected()

    def refresh_installed(self) -> None:
        registry = self.services.context.registry
        call(self.services.engine, asyncio.to_thread(registry.list), self, self._listed,
             lambda error: self._show(self.installed_status, _sentence(error)))  # fmt: skip

    def _listed(self, models: object) -> None:
        self.installed_models = list(models)  # type: ignore[call-overload]
        self.installed.setRowCount(0)
        for model in self.installed_models:
            row = self.installed.rowCount()
            self.installed.insertRow(row)
            self.installed.setItem(row, 0, _item(model.name, model.id))
            self.installed.setItem(row, 1, _item(model.id))
            self.installed.setItem(row, 2, _item(ROLE_TEXT[model.role]))
            self.installed.setItem(row, 3, _item(model.quantization or "unknown"))
            self.installed.setItem(row, 4, _item(format_size(model.size)))
            source = {"hub": model.repo or "the Hub", "local": str(model.path)}.get(
                model.source, "bundled starter"
            )
            self.installed.setItem(row, 5, _item(source))
        self._installed_selected()
        self.installed_changed.emit()

    def installed_ids(self) -> list[str]:
        return [m.id for m in getattr(self, "installed_models", [])]

    def _selected_model(self) -> Any:
        row = self.installed.currentRow()
        if row < 0 or not self.installed.selectedItems():
            return None
        return self.installed_models[row]

    def _installed_selected(self) -> None:
        model = self._selected_model()
        self.remove_button.setEnabled(model is not None)
        self.use_as.setEnabled(model is not None)
        if model is not None:
            self.use_as.setCurrentIndex(self.use_as.findData(model.role))

    def select_installed(self, model_id: str) -> None:
        for row in range(self.installed.rowCount()):
            if _row_data(self.installed, row) == model_id:
                self.installed.selectRow(row)
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
            self.installed_status.setText(
                f"Removed {model.name}." + (" Its file was deleted." if files else "")
            )
            self.refresh_installed()

        work = asyncio.to_thread(remove_model, context.registry, model.id, context.models_dir)
        call(self.services.engine, work, self, removed, self._installed_failed)

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
            self.installed_status.setText(f"{model.name} is now {use}.")
            self.refresh_installed()

        call(self.services.engine, asyncio.to_thread(change), self, changed,
             lambda error: self._show(self.installed_status, _sentence(error)))  # fmt: skip

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
        self.installed_status.setText(f"Importing {path.name} (checking the file)...")

        def imported(model: object) -> None:
            self.installed_status.setText(f"Imported {model.name} as {model.id}.")  # type: ignore[attr-defined]
            self.refresh_installed()

        work = asyncio.to_thread(
            import_gguf, path, context.registry, context.models_dir,
            mode=mode, role=role, policy=context.policy,  # type: ignore[arg-type]
        )  # fmt: skip
        call(self.services.engine, work, self, imported, self._installed_failed)

    def _installed_failed(self, error: object) -> None:
        self._show(self.installed_status, _sentence(error))
