"""The Server panel: the local API switched on or off, its address and port, the
guardrail profile its requests use, the clients' tokens (a new one shown once, revoke),
the web origins allowed to call it, and the requests it answered: the recent ones, how
many are in progress, and the last one the guardrails blocked.

The server itself is run by `LocalApiController` (local_api.py), which lives as long as
the app does; this window shows it and changes its settings. Token files are read and
written on the engine thread (`asyncio.to_thread`), as other files are.

The administrator's policy holds here as in `bastion serve`: with AllowLocalApi off the
switch is "Managed by your organization" and says why, and an administrator's list of
origins replaces the user's."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.policy.schema import ORIGIN
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.local_api import RECENT_REQUESTS, LocalApiController, SeenRequest
from bastion_desktop.ui.managed import managed_note, mark_managed
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal

log = logging.getLogger(__name__)

HINT_TEXT = (
    "Other programs on this computer use it as an OpenAI server: this address as the "
    "base URL, and a client's token (below) as the API key."
)
OFF_TEXT = "Off. Nothing listens until you turn it on."
ONCE_TEXT = (
    "Copy it into the client now, as its API key: it will not be shown again. Bastion "
    "keeps only its hash."
)
NO_BLOCK_TEXT = "No request has been blocked since Bastion started."
ORIGINS_TEXT = (
    "Web pages (scheme://host[:port], e.g. a browser extension) that may call the API. "
    "Other programs need none of this."
)
_IN_PROGRESS_POLL_MS = 1000
_PORT_SETTLE_MS = 400  # the arrows step the port: move the server once they stop
_NAME = QtCore.Qt.ItemDataRole.UserRole


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _created(iso: str) -> str:
    """A token's creation time (ISO 8601, UTC) in the user's time zone."""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def api_profile(context: Any, slot: Any) -> tuple[str, bool]:
    """The name of the guardrail profile API requests use when they ask for none, and
    whether the administrator decides it. Blocking (reads the profiles)."""
    from bastion_desktop.api.service import ApiService
    from bastion_guardrails.problems import ProfileError, ProfileNotFoundError

    choice = ApiService(context, slot).profile_choice(None)
    policy = context.policy
    locked = policy.local_api_profile is not None or policy.locked_profile is not None
    if choice.profile is not None:
        return choice.profile.name, locked
    try:
        return context.profile_library().get(choice.profile_id).name, locked
    except (ProfileNotFoundError, ProfileError):
        return choice.profile_id, locked  # opening it at the first request says what is wrong


class RecentRequestsModel(QtCore.QAbstractTableModel):
    """The requests the server answered, newest first: never a word of their content
    (the server's records have none)."""

    HEADERS = ("Time", "Client", "Path", "Status", "Verdict", "Model", "Tokens", "ms")
    SAMPLES = ("00:00:00", "a client name", "/v1/chat/completions", "Status", "allowed",
               "Model", "Tokens", "00000")  # fmt: skip

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[SeenRequest] = []

    def rowCount(self, parent: Any = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._rows)

    def columnCount(self, parent: Any = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Any, role: int = 0) -> Any:
        horizontal = orientation == QtCore.Qt.Orientation.Horizontal
        if horizontal and role == QtCore.Qt.ItemDataRole.DisplayRole and 0 <= section < 8:
            return self.HEADERS[section]
        return None

    def data(self, index: Any, role: int = 0) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        seen = self._rows[index.row()]
        record = seen.record
        column = index.column()
        if role == QtCore.Qt.ItemDataRole.DisplayRole:
            values = (
                _clock(seen.at),
                record.client or "—",
                record.path,
                str(record.status),
                record.verdict or "—",
                record.model or "—",
                str(record.completion_tokens) if record.model else "—",
                f"{record.ms:.0f}",
            )
            return values[column] if 0 <= column < len(values) else None
        if role == QtCore.Qt.ItemDataRole.ToolTipRole and record.verdict == "blocked":
            return f"Blocked by {record.rail or 'a rail'} ({record.category or 'no category'})"
        if role == QtCore.Qt.ItemDataRole.TextAlignmentRole and column in (3, 6, 7):
            return int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        return None

    def reset(self, seen: Iterable[SeenRequest]) -> None:
        self.beginResetModel()
        self._rows = list(seen)[:RECENT_REQUESTS]
        self.endResetModel()

    def add(self, seen: SeenRequest) -> None:
        self.beginInsertRows(QtCore.QModelIndex(), 0, 0)
        self._rows.insert(0, seen)
        self.endInsertRows()
        if len(self._rows) > RECENT_REQUESTS:
            last = len(self._rows) - 1
            self.beginRemoveRows(QtCore.QModelIndex(), RECENT_REQUESTS, last)
            del self._rows[RECENT_REQUESTS:]
            self.endRemoveRows()

    def row(self, number: int) -> SeenRequest:
        return self._rows[number]


class NewTokenDialog(QtWidgets.QDialog):
    """Asks the new client's name, and whether its conversations are kept."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New client token")
        self.name = QtWidgets.QLineEdit()
        self.name.setPlaceholderText("e.g. vscode")
        self.name.setAccessibleName("The client's name")
        self.keep_history = QtWidgets.QCheckBox(
            "Keep this client's conversations in the encrypted history"
        )
        self.keep_history.setAccessibleName("Keep this client's conversations")
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QtWidgets.QFormLayout(self)
        form.addRow("Client", self.name)
        form.addRow(self.keep_history)
        form.addRow(buttons)


class ServerWindow(QtWidgets.QWidget):
    """The local API: on or off, where, for whom, and what it answered."""

    tokens_listed = Signal()
    token_created = Signal(str)  # the client's name (the token is shown, never emitted)
    token_revoked = Signal(str)
    problem_shown = Signal(str)

    def __init__(self, services: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self.services = services
        self.api: LocalApiController = services.local_api
        self.setWindowTitle("Local API server")
        self.setObjectName("serverWindow")
        self.resize(980, 760)
        self.recent_model = RecentRequestsModel(self)
        self._port_timer = QtCore.QTimer(self)
        self._port_timer.setSingleShot(True)
        self._port_timer.setInterval(_PORT_SETTLE_MS)
        self._port_timer.timeout.connect(self._save_port)
        self._poll = QtCore.QTimer(self)
        self._poll.setInterval(_IN_PROGRESS_POLL_MS)
        self._poll.timeout.connect(self.api.poll_in_progress)
        self._make_server_box()
        self._make_clients_box()
        self._make_origins_box()
        self._make_requests_box()
        self._lay_out()
        self.api.changed.connect(self._show_state)
        self.api.request_seen.connect(self._request_seen)
        self.api.in_progress_changed.connect(self._show_in_progress)
        services.settings_changed.connect(self._settings_changed)
        self.recent_model.reset(self.api.recent)
        self._show_state()
        self._show_origins()
        self._show_last_block()
        self._show_in_progress(self.api.in_progress)
        self.refresh_tokens()
        self.refresh_profile()

    @property
    def policy(self) -> Any:
        return self.services.context.policy

    # -- building ------------------------------------------------------------------------

    def _make_server_box(self) -> None:
        self.switch = QtWidgets.QCheckBox("Serve the local API while Bastion runs")
        self.switch.setObjectName("serverSwitch")
        self.switch.setAccessibleName("Local API server")
        self.switch.setToolTip("Off by default. Bastion remembers your choice.")
        self.switch.clicked.connect(self._switched)
        self.switch_note = managed_note()
        self.refusal = QtWidgets.QLabel()
        self.refusal.setObjectName("serverRefusal")
        self.refusal.setWordWrap(True)
        self.refusal.setAccessibleName("Why the local API is off")
        self.refusal.setVisible(False)
        self.port = QtWidgets.QSpinBox()
        self.port.setRange(1024, 65535)  # as the settings allow
        self.port.setKeyboardTracking(False)  # typing 8 3 9 7 is one change, not four
        self.port.setAccessibleName("Port")
        self.port.setToolTip("The port on 127.0.0.1; a running server moves to it.")
        self.port.valueChanged.connect(lambda _v: self._port_timer.start())
        self.address = QtWidgets.QLineEdit()
        self.address.setObjectName("serverAddress")
        self.address.setReadOnly(True)
        self.address.setAccessibleName("Address")
        self.address.setPlaceholderText("Not running")
        self.copy_address = QtWidgets.QPushButton("Copy")
        self.copy_address.setAccessibleName("Copy the address")
        self.copy_address.clicked.connect(lambda: self._copy(self.address.text()))
        self.hint = QtWidgets.QLabel(HINT_TEXT)
        self.hint.setObjectName("serverHint")
        self.hint.setWordWrap(True)
        self.profile = QtWidgets.QLabel("Reading the guardrail profile...")
        self.profile.setObjectName("serverProfile")
        self.profile.setWordWrap(True)
        self.profile.setAccessibleName("The guardrail profile API requests use")
        notice = self.services.context.policy.audit_notice
        self.audit = QtWidgets.QLabel(notice or "")
        self.audit.setObjectName("auditNotice")
        self.audit.setWordWrap(True)
        self.audit.setAccessibleName("Guardrail decisions are recorded")
        self.audit.setVisible(notice is not None)
        self.status = QtWidgets.QLabel()
        self.status.setObjectName("serverStatus")
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Local API status")
        self.status.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)

    def _make_clients_box(self) -> None:
        self.clients = QtWidgets.QTreeWidget()
        self.clients.setHeaderLabels(["Client", "Created", "Keeps history"])
        self.clients.setRootIsDecorated(False)
        self.clients.setAccessibleName("Clients with a token")
        header = self.clients.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        for column in (1, 2):
            header.setSectionResizeMode(column, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.clients.currentItemChanged.connect(lambda *_: self._sync_revoke())
        self.new_token_button = QtWidgets.QPushButton("New token...")
        self.new_token_button.setAccessibleName("Create a token for a new client")
        self.new_token_button.clicked.connect(self._ask_new_token)
        self.revoke_button = QtWidgets.QPushButton("Revoke")
        self.revoke_button.setAccessibleName("Revoke the selected client's token")
        self.revoke_button.clicked.connect(self._revoke_selected)
        self.revoke_button.setEnabled(False)
        # The new token, once: a read-only field, its Copy button and what to do with it.
        self.new_token = QtWidgets.QFrame()
        self.new_token.setObjectName("newTokenNotice")
        self.new_token_title = QtWidgets.QLabel()
        self.new_token_title.setWordWrap(True)
        self.token_field = QtWidgets.QLineEdit()
        self.token_field.setObjectName("newToken")
        self.token_field.setReadOnly(True)
        self.token_field.setAccessibleName("The new token")
        self.token_field.setFont(
            QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont)
        )
        self.copy_token = QtWidgets.QPushButton("Copy")
        self.copy_token.setAccessibleName("Copy the new token")
        self.copy_token.clicked.connect(lambda: self._copy(self.token_field.text()))
        self.token_done = QtWidgets.QPushButton("Done")
        self.token_done.setAccessibleName("Hide the new token")
        self.token_done.clicked.connect(self.forget_new_token)
        once = QtWidgets.QLabel(ONCE_TEXT)
        once.setWordWrap(True)
        box = QtWidgets.QVBoxLayout(self.new_token)
        box.addWidget(self.new_token_title)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.token_field, 1)
        row.addWidget(self.copy_token)
        row.addWidget(self.token_done)
        box.addLayout(row)
        box.addWidget(once)
        self.new_token.setVisible(False)
        self.clients_status = QtWidgets.QLabel()
        self.clients_status.setObjectName("clientsStatus")
        self.clients_status.setWordWrap(True)
        self.clients_status.setAccessibleName("Clients status")

    def _make_origins_box(self) -> None:
        self.origins = QtWidgets.QListWidget()
        self.origins.setAccessibleName("Allowed web origins")
        self.origins.currentItemChanged.connect(lambda *_: self._sync_origin_buttons())
        self.origin_edit = QtWidgets.QLineEdit()
        self.origin_edit.setPlaceholderText("chrome-extension://…")
        self.origin_edit.setAccessibleName("A web origin to allow")
        self.origin_edit.returnPressed.connect(self._add_typed_origin)
        self.add_origin_button = QtWidgets.QPushButton("Add")
        self.add_origin_button.setAccessibleName("Allow this web origin")
        self.add_origin_button.clicked.connect(self._add_typed_origin)
        self.remove_origin_button = QtWidgets.QPushButton("Remove")
        self.remove_origin_button.setAccessibleName("Remove the selected web origin")
        self.remove_origin_button.clicked.connect(self._remove_selected_origin)
        self.origins_note = managed_note()
        self.origins_status = QtWidgets.QLabel(ORIGINS_TEXT)
        self.origins_status.setObjectName("originsStatus")
        self.origins_status.setWordWrap(True)

    def _make_requests_box(self) -> None:
        self.in_progress_label = QtWidgets.QLabel()
        self.in_progress_label.setAccessibleName("Requests in progress")
        self.last_block = QtWidgets.QLabel()
        self.last_block.setObjectName("lastBlock")
        self.last_block.setWordWrap(True)
        self.last_block.setAccessibleName("The last request the guardrails blocked")
        self.last_block.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.requests = QtWidgets.QTableView()
        self.requests.setModel(self.recent_model)
        self.requests.setAccessibleName("Recent requests")
        self.requests.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.requests.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.requests.verticalHeader().setVisible(False)
        self.requests.setShowGrid(False)
        self.requests.setAlternatingRowColors(True)
        self.requests.setWordWrap(False)
        # Widths for what the columns hold, set once: sizing to the contents of each
        # new row would make the table jump as requests arrive.
        metrics = self.requests.fontMetrics()
        header = self.requests.horizontalHeader()
        for column, sample in enumerate(RecentRequestsModel.SAMPLES):
            header.resizeSection(column, metrics.horizontalAdvance(sample) + 20)
        header.setSectionResizeMode(5, QtWidgets.QHeaderView.ResizeMode.Stretch)  # the model

    def _lay_out(self) -> None:
        middle = QtWidgets.QHBoxLayout()
        middle.addWidget(self._clients_group(), 3)
        middle.addWidget(self._origins_group(), 2)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self._server_group())
        layout.addLayout(middle, 2)
        layout.addWidget(self._requests_group(), 3)
        order = (
            self.switch, self.port, self.address, self.copy_address, self.clients,
            self.new_token_button, self.revoke_button, self.origins, self.origin_edit,
            self.add_origin_button, self.remove_origin_button, self.requests,
        )  # fmt: skip
        for before, after in itertools.pairwise(order):
            self.setTabOrder(before, after)

    def _server_group(self) -> QtWidgets.QGroupBox:
        group = QtWidgets.QGroupBox("Server")
        column = QtWidgets.QVBoxLayout(group)
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.switch)
        top.addStretch(1)
        port_label = QtWidgets.QLabel("&Port")
        port_label.setBuddy(self.port)
        top.addWidget(port_label)
        top.addWidget(self.port)
        column.addLayout(top)
        column.addWidget(self.switch_note)
        column.addWidget(self.refusal)
        where = QtWidgets.QHBoxLayout()
        address_label = QtWidgets.QLabel("&Address")
        address_label.setBuddy(self.address)
        where.addWidget(address_label)
        where.addWidget(self.address, 1)
        where.addWidget(self.copy_address)
        column.addLayout(where)
        column.addWidget(self.hint)
        column.addWidget(self.profile)
        column.addWidget(self.audit)
        column.addWidget(self.status)
        return group

    def _clients_group(self) -> QtWidgets.QGroupBox:
        group = QtWidgets.QGroupBox("Clients")
        column = QtWidgets.QVBoxLayout(group)
        column.addWidget(self.clients, 1)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.new_token_button)
        buttons.addWidget(self.revoke_button)
        buttons.addStretch(1)
        column.addLayout(buttons)
        column.addWidget(self.new_token)
        column.addWidget(self.clients_status)
        return group

    def _origins_group(self) -> QtWidgets.QGroupBox:
        group = QtWidgets.QGroupBox("Allowed web origins")
        column = QtWidgets.QVBoxLayout(group)
        column.addWidget(self.origins, 1)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.origin_edit, 1)
        row.addWidget(self.add_origin_button)
        row.addWidget(self.remove_origin_button)
        column.addLayout(row)
        column.addWidget(self.origins_note)
        column.addWidget(self.origins_status)
        return group

    def _requests_group(self) -> QtWidgets.QGroupBox:
        group = QtWidgets.QGroupBox("Recent requests")
        column = QtWidgets.QVBoxLayout(group)
        column.addWidget(self.in_progress_label)
        column.addWidget(self.last_block)
        column.addWidget(self.requests, 1)
        return group

    # -- the server ------------------------------------------------------------------------

    def _show_state(self) -> None:
        api, settings = self.api, self.services.context.settings.api
        refusal = api.refusal
        self.switch.setChecked(settings.enabled and refusal is None)
        mark_managed(self.switch, refusal is not None, self.switch_note)
        self.refusal.setText(refusal or "")
        self.refusal.setVisible(refusal is not None)
        if not self.port.hasFocus() and not self._port_timer.isActive():
            self.port.blockSignals(True)
            self.port.setValue(settings.port)
            self.port.blockSignals(False)
        self.address.setText(api.url or "")
        self.copy_address.setEnabled(api.running)
        if refusal is not None:
            self._say(self.status, "Off.")
        elif api.busy:
            self._say(self.status, "Starting..." if api.wanted else "Stopping...")
        elif api.running:
            self._say(self.status, "Running: clients on this computer can connect now.")
        elif api.problem:
            self._say(self.status, f"Not running: {api.problem}", problem=True)
        else:
            self._say(self.status, OFF_TEXT)

    def _switched(self, on: bool) -> None:
        try:
            self.api.set_enabled(on)
        except (OSError, BastionError) as error:
            self._show_state()  # the switch goes back to the setting in force
            self._problem(f"The setting was not saved: {error}", self.status)

    def _save_port(self) -> None:
        self.set_port(self.port.value())

    def set_port(self, port: int) -> None:
        """The port the server listens on (what the spin box does once it settles)."""
        try:
            self.api.set_port(port)
        except (OSError, BastionError) as error:
            self._problem(f"The port was not changed: {error}", self.status)

    def _settings_changed(self, _settings: object) -> None:
        self._show_state()
        self._show_origins()
        self.refresh_profile()

    def refresh_profile(self) -> None:
        services = self.services
        slot = services.chat.models if services.chat is not None else None
        call(
            services.engine,
            asyncio.to_thread(api_profile, services.context, slot),
            self,
            self._show_profile,
            lambda error: self.profile.setText(
                f"The guardrail profile could not be read: {error}"
                if isinstance(error, BastionError)
                else "The guardrail profile could not be read; see the log."
            ),
        )

    def _show_profile(self, found: object) -> None:
        name, locked = cast(tuple[str, bool], found)
        if locked:
            self.profile.setText(
                f"Every request is checked with the {name} guardrail profile, which your "
                "organization sets."
            )
        else:
            self.profile.setText(
                f"Requests are checked with the {name} guardrail profile, unless a client "
                "asks for another one your organization allows."
            )

    # -- the clients -------------------------------------------------------------------------

    def refresh_tokens(self) -> None:
        call(
            self.services.engine,
            asyncio.to_thread(self.api.tokens.list),
            self,
            self._show_tokens,
            lambda error: self._token_problem(error, "The clients could not be read"),
        )

    def _show_tokens(self, clients: object) -> None:
        selected = self.selected_client()
        self.clients.clear()
        for client in clients:  # type: ignore[attr-defined]
            kept = "yes" if client.keep_history else "no"
            item = QtWidgets.QTreeWidgetItem([client.name, _created(client.created), kept])
            item.setData(0, _NAME, client.name)
            self.clients.addTopLevelItem(item)
            if client.name == selected:
                self.clients.setCurrentItem(item)
        if self.clients_status.property("kept") is True:
            pass  # what was just done stays said
        elif not self.clients.topLevelItemCount():
            self._say(self.clients_status, "No client has a token yet: New token... makes one.")
        else:
            self._say(self.clients_status, "")
        self.clients_status.setProperty("kept", False)
        self._sync_revoke()
        self.tokens_listed.emit()

    def selected_client(self) -> str | None:
        item = self.clients.currentItem()
        return None if item is None else str(item.data(0, _NAME))

    def _sync_revoke(self) -> None:
        self.revoke_button.setEnabled(self.clients.currentItem() is not None)

    def _ask_new_token(self) -> None:
        dialog = NewTokenDialog(self)
        if dialog.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            self.create_token(dialog.name.text(), keep_history=dialog.keep_history.isChecked())
        dialog.deleteLater()

    def create_token(self, name: str, *, keep_history: bool = False) -> None:
        """A token for the client `name`, shown here once (`token_created` follows)."""
        self.forget_new_token()
        name = name.strip()
        tokens = self.api.tokens

        def done(token: object) -> None:
            self.new_token_title.setText(f"The token for {name!r}:")
            self.token_field.setText(str(token))
            # All of it in view: a token read off a clipped field is a wrong token.
            width = self.token_field.fontMetrics().horizontalAdvance(str(token))
            self.token_field.setMinimumWidth(width + 16)
            self.token_field.setCursorPosition(0)
            self.new_token.setVisible(True)
            self.copy_token.setFocus()
            self._keep_status(f"Created a token for {name!r}.")
            self.refresh_tokens()
            self.token_created.emit(name)

        call(
            self.services.engine,
            asyncio.to_thread(tokens.create, name, keep_history=keep_history),
            self,
            done,
            lambda error: self._token_problem(error, "No token was created"),
        )

    def forget_new_token(self) -> None:
        """Hide the new token; nothing can show it again."""
        self.token_field.clear()
        self.new_token.setVisible(False)

    def _revoke_selected(self) -> None:
        name = self.selected_client()
        if name is None:
            return
        answer = QtWidgets.QMessageBox.question(
            self,
            "Revoke the token",
            f"Revoke the token of {name!r}? The client it was given to can no longer use "
            "the local API, from its next request.",
            QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
            QtWidgets.QMessageBox.StandardButton.No,
        )
        if answer == QtWidgets.QMessageBox.StandardButton.Yes:
            self.revoke_token(name)

    def revoke_token(self, name: str) -> None:
        """Stop `name`'s token working, in the running server too (`token_revoked`)."""

        def done(client: object) -> None:
            revoked = str(getattr(client, "name", name))
            self._keep_status(f"Revoked the token of {revoked!r}: it no longer works.")
            self.refresh_tokens()
            self.token_revoked.emit(revoked)

        call(
            self.services.engine,
            asyncio.to_thread(self.api.tokens.revoke, name),
            self,
            done,
            lambda error: self._token_problem(error, "Nothing was revoked"),
        )

    def _keep_status(self, sentence: str) -> None:
        """Say what happened, and keep it through the list's refresh that follows."""
        self._say(self.clients_status, sentence)
        self.clients_status.setProperty("kept", True)

    def _token_problem(self, error: object, what: str) -> None:
        self._problem(sentence_for(error, what, also=(OSError,)), self.clients_status)

    # -- the allowed origins ------------------------------------------------------------------

    @property
    def origins_managed(self) -> bool:
        return self.policy.local_api_origins is not None

    def _show_origins(self) -> None:
        managed = self.origins_managed
        shown = self.services.context.api_origins()
        self.origins.clear()
        self.origins.addItems(list(shown))
        for widget in (self.origins, self.origin_edit, self.add_origin_button):
            mark_managed(widget, managed)
        mark_managed(self.remove_origin_button, managed, self.origins_note)
        if managed and not shown:
            self._say(self.origins_status, "Your organization allows no web page to call the API.")
        elif managed:
            self._say(self.origins_status, "Your organization set this list.")
        else:
            self._say(self.origins_status, ORIGINS_TEXT)
        self._sync_origin_buttons()

    def _sync_origin_buttons(self) -> None:
        if not self.origins_managed:
            self.remove_origin_button.setEnabled(self.origins.currentItem() is not None)

    def _add_typed_origin(self) -> None:
        if self.add_origin(self.origin_edit.text()):
            self.origin_edit.clear()

    def add_origin(self, origin: str) -> bool:
        """Allow web pages from `origin` to call the API; False (and why) if not."""
        origin = origin.strip().lower().rstrip("/")
        if self.origins_managed:
            self._problem("Your organization manages the allowed origins.", self.origins_status)
            return False
        if not ORIGIN.match(origin) or origin == "null":
            self._problem(
                f"{origin!r} is not a web origin: write scheme://host[:port], with no path.",
                self.origins_status,
            )
            return False
        current = self.services.context.settings.api.allowed_origins
        return origin in current or self._save_origins((*current, origin))

    def _remove_selected_origin(self) -> None:
        item = self.origins.currentItem()
        if item is not None:
            self.remove_origin(item.text())

    def remove_origin(self, origin: str) -> None:
        current = self.services.context.settings.api.allowed_origins
        self._save_origins(tuple(o for o in current if o != origin))

    def _save_origins(self, origins: tuple[str, ...]) -> bool:
        try:
            self.api.set_origins(origins)
        except (OSError, BastionError) as error:
            self._problem(f"The origins were not saved: {error}", self.origins_status)
            return False
        return True

    # -- the requests --------------------------------------------------------------------------

    def _request_seen(self, seen: object) -> None:
        assert isinstance(seen, SeenRequest)
        self.recent_model.add(seen)
        self._show_last_block()

    def _show_last_block(self) -> None:
        seen = self.api.last_block
        if seen is None:
            self.last_block.setText(NO_BLOCK_TEXT)
            return
        record = seen.record
        category = f" (category: {record.category})" if record.category else ""
        self.last_block.setText(
            f"Last block at {_clock(seen.at)}: {record.client or 'a client'} on "
            f"{record.path}, by the rail “{record.rail or 'unnamed'}”{category}."
        )

    def _show_in_progress(self, busy: int) -> None:
        self.in_progress_label.setText(f"Requests in progress: {busy}")

    # -- common ------------------------------------------------------------------------------

    def _copy(self, text: str) -> None:
        if text:
            QtWidgets.QApplication.clipboard().setText(text)

    @staticmethod
    def _say(label: QtWidgets.QLabel, sentence: str, *, problem: bool = False) -> None:
        label.setText(sentence)
        label.setStyleSheet("color: #c62828;" if problem else "")

    def _problem(self, sentence: str, label: QtWidgets.QLabel) -> None:
        self._say(label, sentence, problem=True)
        self.problem_shown.emit(sentence)

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        self._poll.start()

    def hideEvent(self, event: QtGui.QHideEvent) -> None:
        self._poll.stop()
        super().hideEvent(event)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        # The token was for now: the panel opened again does not show it. (Not when it
        # is minimized: the user may be on the way to paste it.)
        self.forget_new_token()
        super().closeEvent(event)
