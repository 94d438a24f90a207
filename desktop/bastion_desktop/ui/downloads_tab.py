"""The models window's Downloads tab: every download with its progress, pause, resume
and cancel. Downloads run on the engine loop (`DownloadManager`); their events are
relayed to the GUI thread through `_DownloadRelay` (emitted there, never here), and the
policy is checked before one starts or resumes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.model_tables import sentence, sentence_label
from bastion_desktop.ui.qt import QtCore, QtWidgets, Signal

if TYPE_CHECKING:
    from bastion_desktop.ui.models_window import ModelsWindow


class _DownloadRelay(QtCore.QObject):
    """Lives on the GUI thread; the engine loop emits `raw`, the GUI re-emits it."""

    raw = Signal(object)
    delivered = Signal(object)  # not `event`: that name is QObject's event handler

    def __init__(self, parent: QtCore.QObject) -> None:
        super().__init__(parent)
        self.raw.connect(self.delivered.emit, QtCore.Qt.ConnectionType.QueuedConnection)


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


class DownloadsTab(QtWidgets.QWidget):
    """Every download of this session (and the unfinished ones of earlier sessions,
    paused), one row each. The `DownloadManager` lives on the engine loop; its events
    reach the rows through `_DownloadRelay`."""

    def __init__(self, models: ModelsWindow, transfer_settings: Any = None) -> None:
        super().__init__()
        self.models = models
        self.transfer_settings = transfer_settings
        self.rows: dict[str, DownloadRow] = {}
        self._manager: Any = None
        self.relay = _DownloadRelay(self)
        self.relay.delivered.connect(self._on_download_event)
        outer = QtWidgets.QVBoxLayout(self)
        self.status = sentence_label("Downloads status")
        self.status.setText(
            "Nothing downloading. Downloads run one at a time; the others wait in the queue."
        )
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        holder = QtWidgets.QWidget()
        self.download_list = QtWidgets.QVBoxLayout(holder)
        self.download_list.addStretch(1)
        scroll.setWidget(holder)
        outer.addWidget(self.status)
        outer.addWidget(scroll, 1)

    def _manager_here(self) -> Any:
        """The download manager, made on the engine loop the first time it is needed."""
        if self._manager is None:
            from bastion_desktop.core.hub.downloads import DownloadManager

            context = self.models.services.context
            self._manager = DownloadManager(
                context.registry,
                context.models_dir,
                settings=self.transfer_settings,
                listener=self.relay.raw.emit,
            )
        return self._manager

    def start(
        self, repo: str, file: str, role: str, status: QtWidgets.QLabel | None = None
    ) -> None:
        """Plan the download (the Hub is asked for the files and their sha256s), check it
        against the policy, and queue it; `status` says how that went."""
        models = self.models
        where = status or self.status
        policy = models.policy
        if models.refused(where, policy.require_downloads):
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

        call(models.services.engine, begin(), self, started,
             lambda error: models.show_problem(where, sentence(error)))  # fmt: skip

    def list_unfinished(self) -> None:
        """Downloads begun in an earlier session: shown paused, to resume or cancel."""

        async def unfinished() -> list[Any]:
            manager = self._manager_here()
            return list(await asyncio.to_thread(manager.unfinished))

        call(self.models.services.engine, unfinished(), self, self._show_unfinished)

    def _show_unfinished(self, found: object) -> None:
        for entry in found:  # type: ignore[attr-defined]
            plan = entry.plan
            if plan.id in self.rows:
                continue
            row = self._add_row(plan.id, plan.name, plan.total_size)
            row.apply(DownloadPaused(plan.id, entry.done_bytes, plan.total_size))
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
            self.models.tabs.setCurrentWidget(self)
        else:
            row = self.rows.get(event.download_id)
            if row is None:
                return
            row.apply(event)
        if isinstance(event, DownloadFinished):
            self.models.installed.refresh()
        active = sum(r.state.state in ("queued", "running") for r in self.rows.values())
        self.status.setText(
            f"{active} downloading or queued." if active else "Nothing downloading now."
        )

    def control(self, download_id: str, action: str) -> None:
        """Pause, resume or cancel a download (on the engine loop, where it lives)."""
        models = self.models
        policy = models.policy

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
        call(models.services.engine, act(), self, None,
             lambda error: models.show_problem(row.line if row else self.status,
                                               sentence(error)))  # fmt: skip

    def shut_down(self, timeout: float = 10.0) -> None:
        """Pause every download (the partial files stay for next time). Blocks: for
        quitting the app and for tests."""
        engine = self.models.services.engine
        if self._manager is not None and engine.running:
            engine.run(self._manager.close(), timeout=timeout)
