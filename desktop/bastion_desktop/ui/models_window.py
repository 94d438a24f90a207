"""The models window: the curated catalog and Hub search with a fit badge for this
machine, a repository's files, downloads with progress, pause, resume and cancel, and
the installed models (remove, import from disk, chat or safety role). Each tab is a
class of its own (`catalog_tab`, `hub_search_tab`, `downloads_tab`, `installed_tab`);
this window holds what they share: the machine's description, the policy, the signals
tests and the main window wait on.

Everything slow runs on the engine thread (`ui.engine.call`) or in a worker thread the
engine loop starts (`asyncio.to_thread`): hardware probing, Hub requests, hashing,
reading GGUF metadata.

The administrator's policy holds here as in `bastion models`: offline mode refuses Hub
search and file listings, download buttons are "Managed by your organization" when
downloads are not allowed, and AllowedModels is checked before a download starts and
before a file from disk is registered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bastion_desktop.core.hub.filenames import format_size
from bastion_desktop.core.policy import EffectivePolicy, PolicyRefusedError
from bastion_desktop.ui.catalog_tab import CatalogTab
from bastion_desktop.ui.downloads_tab import DownloadsTab
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.hub_search_tab import HubSearchTab
from bastion_desktop.ui.installed_tab import InstalledTab
from bastion_desktop.ui.managed import mark_managed
from bastion_desktop.ui.model_tables import hardware, sentence, sentence_label
from bastion_desktop.ui.qt import QtWidgets, Signal

__all__ = ["ModelsWindow"]


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
        self.setWindowTitle("Models")
        self.setObjectName("modelsWindow")
        self.resize(960, 620)
        self.hardware: Any = None
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setAccessibleName("Model sections")
        self.machine = sentence_label("This machine")
        self.machine.setText("Checking this machine's memory and GPU...")
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.machine)
        layout.addWidget(self.tabs, 1)
        self.catalog = CatalogTab(self)
        self.hub = HubSearchTab(self)
        self.downloads = DownloadsTab(self, transfer_settings)
        self.installed = InstalledTab(self)
        self.tabs.addTab(self.catalog, "Catalog")
        self.tabs.addTab(self.hub, "Search the Hub")
        self.tabs.addTab(self.downloads, "Downloads")
        self.tabs.addTab(self.installed, "Installed")
        self.catalog.fill()
        self.installed.refresh()
        self._probe()
        self.downloads.list_unfinished()

    # -- what the tabs share ------------------------------------------------------------

    @property
    def policy(self) -> EffectivePolicy:
        """The administrator's policy (read each time: the context is replaced on
        settings changes)."""
        policy: EffectivePolicy = self.services.context.policy
        return policy

    @property
    def context_length(self) -> int:
        return int(self.services.context.settings.inference.context_length)

    def refused(self, label: QtWidgets.QLabel, check: Callable[[], object]) -> bool:
        """Run a policy check; when it refuses, show its sentence in `label`."""
        try:
            check()
        except PolicyRefusedError as error:
            self.show_problem(label, str(error))
            return True
        return False

    def show_problem(self, label: QtWidgets.QLabel, sentence: str) -> None:
        label.setText(sentence)
        self.problem_shown.emit(sentence)

    def sync_download_buttons(self) -> None:
        """Download buttons follow the selection, unless the policy forbids downloads:
        then they stay disabled and say they are managed."""
        for button, table in (
            (self.catalog.download_button, self.catalog.table),
            (self.hub.download_button, self.hub.files),
        ):
            if self.policy.downloads_allowed:
                mark_managed(button, False)
                button.setEnabled(bool(table.selectedItems()))
            else:
                mark_managed(button, True)

    def start_download(
        self, repo: str, file: str, role: str, status: QtWidgets.QLabel | None = None
    ) -> None:
        """Download a file of a Hub repository (the catalog, Hub search, the first run's
        suggestion and the guardrail status all start one here)."""
        self.downloads.start(repo, file, role, status)

    def shut_down(self, timeout: float = 10.0) -> None:
        self.downloads.shut_down(timeout)

    # -- the machine ---------------------------------------------------------------------

    def _probe(self) -> None:
        call(self.services.engine, asyncio.to_thread(hardware), self, self._probed,
             self._probe_failed)  # fmt: skip

    def _probed(self, found: object) -> None:
        self.hardware = found
        self.machine.setText(self._describe_machine(found))
        self.hardware_ready.emit(found)
        self.catalog.fill()
        self.catalog_ready.emit()

    def _probe_failed(self, error: object) -> None:
        self.machine.setText(f"This machine could not be checked: {sentence(error)}")

    def _describe_machine(self, found: Any) -> str:
        ram = format_size(found.ram_total) if found.ram_total else "unknown"
        if found.gpus and found.gpu_offload_supported:
            free = found.gpu_free_bytes
            gpus = ", ".join(g.name for g in found.gpus)
            gpu = f"{gpus} ({format_size(free) if free else 'unknown'} free)"
        elif found.gpus:
            gpu = "a GPU this llama.cpp build cannot use"
        else:
            gpu = "no GPU"
        runtime = f" {found.runtime}" if found.runtime else ""
        return (
            f"This machine: {ram} of RAM, {gpu}.{runtime} Fit is for a "
            f"{self.context_length:,}-token context."
        )
