"""The guardrail profiles window: every profile (built-in, the user's, the
administrator's) with its strictness and, in plain words, which checks it has in force
and what to download for the rest; import (a folder or an archive) with each problem
shown by file, line and field; export; and which profile new chats use by default.
Where a judge of content safety (a safety model, or the chat model checking itself) was
tested on Bastion's calibration set, how it did is shown under the profile's sentence.

Profiles are read, validated and written on the engine thread: parsing YAML and
Colang, hashing and zipping are not for the GUI thread.

The administrator's policy holds here as in `bastion profiles`: import is "Managed by
your organization" when user profiles are not allowed, a profile the policy does not
allow is shown as such and cannot be made the default, and "Make default" is managed
while the policy locks the profile."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.policy import PolicyRefusedError
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.managed import mark_managed
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal

log = logging.getLogger(__name__)

NOT_ALLOWED_TEXT = "Not allowed by your organization"
ORIGIN_TEXT = {"builtin": "Built-in", "user": "Imported", "admin": "From your organization"}
STRICTNESS_TEXT = {
    "off": "Off",
    "relaxed": "Relaxed",
    "standard": "Standard",
    "strict": "Strict",
}
_ID = QtCore.Qt.ItemDataRole.UserRole


@dataclasses.dataclass(frozen=True)
class ProfileView:
    """What the window shows of one profile, gathered off the GUI thread."""

    id: str
    name: str
    origin: str
    strictness: str | None
    description: str
    sentence: str  # which checks are in force, or why the profile cannot be used
    checks: tuple[tuple[str, str, bool], ...]  # (title, where, in force)
    problems: tuple[str, ...]  # a broken profile: file, line, field and message each
    allowed: bool = True  # whether the administrator's policy lets the user choose it
    judges: tuple[str, ...] = ()  # how each judge did on the calibration set, a sentence each


def _gather(context: Any) -> list[ProfileView]:
    """Every profile and its status. Blocking."""
    from bastion_desktop.ui.top_bar import judges_shown
    from bastion_guardrails.decisions import Stage

    engine = context.guard_engine()
    models = context.model_set()
    policy = context.policy
    views = []
    for entry in context.profile_library().entries():
        origin = entry.origin.value
        if entry.profile is None:
            problems = tuple(str(p) for p in entry.error.problems) if entry.error else ()
            views.append(
                ProfileView(entry.id, entry.id, origin, None, "", "This profile cannot be "
                            "used until its problems are fixed.", (), problems)
            )  # fmt: skip
            continue
        profile = entry.profile
        judges: tuple[str, ...] = ()
        try:
            status = engine.status(entry.id, models)
            sentence = status.sentence
            judges = tuple(
                ("✓ " if j.qualified else "✗ ") + j.sentence() for j in judges_shown(status)
            )
            checks = tuple(
                (
                    c.title,
                    "your messages" if c.stage is Stage.INPUT else "replies",
                    c.in_force,
                )
                for c in status.checks
            )
        except Exception as error:  # a profile that lists but does not plan: say so
            sentence, checks = sentence_for(error, "Listing this profile's checks"), ()
        views.append(
            ProfileView(
                profile.id, profile.name, origin, profile.manifest.strictness.value,
                profile.manifest.description, sentence, checks, (),
                policy.profile_allowed(profile.id, profile.content_hash), judges,
            )
        )  # fmt: skip
    return views


def problems_of(error: BaseException) -> list[str]:
    """A profile error as lines a person can act on: file, line, field, message."""
    problems = getattr(error, "problems", None)
    if problems:
        return [str(p) for p in problems]
    return [str(error)]


class ProfilesWindow(QtWidgets.QWidget):
    """List, explain, import, export and choose the default guardrail profile."""

    profiles_loaded = Signal()
    imported = Signal(str)  # the profile id
    import_failed = Signal(list)  # the problems, one line each
    exported = Signal(str)  # the archive's path
    default_changed = Signal(str)

    def __init__(self, services: Any, parent: Any = None) -> None:
        super().__init__(parent)
        self.services = services
        self.views: list[ProfileView] = []
        self.setWindowTitle("Guardrail profiles")
        self.setObjectName("profilesWindow")
        self.resize(900, 560)
        self._make_widgets()
        self._lay_out()
        self.list.currentRowChanged.connect(self._show_row)
        self.make_default_button.clicked.connect(self._make_selected_default)
        self.export_button.clicked.connect(self._export_selected)
        self.import_folder_button.clicked.connect(self._choose_folder)
        self.import_archive_button.clicked.connect(self._choose_archive)
        services.settings_changed.connect(lambda _settings: self._mark_default())
        imports_managed = not self.policy.user_profiles_allowed
        for button in (self.import_folder_button, self.import_archive_button):
            mark_managed(button, imports_managed)
        self.refresh()

    @property
    def policy(self) -> Any:
        return self.services.context.policy

    @property
    def default_locked(self) -> bool:
        """Whether the policy decides the profile, so the user cannot change the default."""
        return self.policy.locked_profile is not None

    def _make_widgets(self) -> None:
        self.list = QtWidgets.QListWidget()
        self.list.setAccessibleName("Guardrail profiles")
        self.list.setMinimumWidth(260)
        self.list.setSpacing(3)
        self.title = QtWidgets.QLabel()
        self.title.setObjectName("profileTitle")
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.4)
        font.setBold(True)
        self.title.setFont(font)
        self.facts = QtWidgets.QLabel()
        self.facts.setAccessibleName("Profile facts")
        self.description = QtWidgets.QLabel()
        self.description.setWordWrap(True)
        self.sentence = QtWidgets.QLabel()
        self.sentence.setObjectName("profileSentence")
        self.sentence.setWordWrap(True)
        self.sentence.setAccessibleName("What this profile checks")
        self.sentence.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.judges = QtWidgets.QLabel()
        self.judges.setObjectName("profileJudges")
        self.judges.setWordWrap(True)
        self.judges.setAccessibleName("How the judges of content safety did")
        self.judges.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        self.judges.setVisible(False)
        self.checks = QtWidgets.QTreeWidget()
        self.checks.setHeaderLabels(["Check", "On", "In force"])
        self.checks.setRootIsDecorated(False)
        self.checks.setAccessibleName("The profile's checks")
        header = self.checks.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        for column in (1, 2):
            header.setSectionResizeMode(column, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.problems = QtWidgets.QListWidget()
        self.problems.setAccessibleName("Problems with the profile")
        self.problems.setVisible(False)
        self.status = QtWidgets.QLabel()
        self.status.setObjectName("profilesStatus")
        self.status.setWordWrap(True)
        self.status.setAccessibleName("Profiles status")
        self.make_default_button = QtWidgets.QPushButton("Make default")
        self.make_default_button.setAccessibleName("Use this profile for new chats")
        self.export_button = QtWidgets.QPushButton("Export...")
        self.export_button.setAccessibleName("Export this profile as an archive")
        self.import_folder_button = QtWidgets.QPushButton("Import folder...")
        self.import_folder_button.setAccessibleName("Import a profile folder")
        self.import_archive_button = QtWidgets.QPushButton("Import archive...")
        self.import_archive_button.setAccessibleName("Import a profile archive")

    def _lay_out(self) -> None:
        detail = QtWidgets.QWidget()
        right = QtWidgets.QVBoxLayout(detail)
        right.addWidget(self.title)
        right.addWidget(self.facts)
        right.addWidget(self.description)
        right.addWidget(self.sentence)
        right.addWidget(self.judges)
        right.addWidget(self.checks, 1)
        right.addWidget(self.problems, 1)
        actions = QtWidgets.QHBoxLayout()
        actions.addStretch(1)
        actions.addWidget(self.export_button)
        actions.addWidget(self.make_default_button)
        right.addLayout(actions)
        left_panel = QtWidgets.QWidget()
        left = QtWidgets.QVBoxLayout(left_panel)
        left.setContentsMargins(0, 0, 0, 0)
        left.addWidget(self.list, 1)
        imports = QtWidgets.QHBoxLayout()
        imports.addWidget(self.import_folder_button)
        imports.addWidget(self.import_archive_button)
        left.addLayout(imports)
        split = QtWidgets.QSplitter()
        split.addWidget(left_panel)
        split.addWidget(detail)
        split.setStretchFactor(1, 1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)
        self.setTabOrder(self.list, self.import_folder_button)
        self.setTabOrder(self.import_folder_button, self.import_archive_button)
        self.setTabOrder(self.import_archive_button, self.checks)
        self.setTabOrder(self.checks, self.export_button)
        self.setTabOrder(self.export_button, self.make_default_button)

    # -- the list ----------------------------------------------------------------------

    @property
    def default_id(self) -> str:
        return str(self.services.context.settings.guard_profile)

    def refresh(self, select: str | None = None) -> None:
        self.status.setText("Reading the profiles...")
        context = self.services.context
        call(self.services.engine, asyncio.to_thread(_gather, context), self,
             lambda views: self._loaded(views, select), self._failed)  # fmt: skip

    def _loaded(self, views: object, select: str | None) -> None:
        self.views = list(views)  # type: ignore[call-overload]
        wanted = select or self.selected_id() or self.default_id
        self.list.clear()
        for view in self.views:
            item = QtWidgets.QListWidgetItem()
            item.setData(_ID, view.id)
            self.list.addItem(item)
        self._mark_default()
        ids = [v.id for v in self.views]
        self.list.setCurrentRow(ids.index(wanted) if wanted in ids else 0)
        self.status.setText("")
        self.profiles_loaded.emit()

    def _mark_default(self) -> None:
        for row, view in enumerate(self.views):
            item = self.list.item(row)
            if item is None:
                continue
            origin = ORIGIN_TEXT.get(view.origin, view.origin)
            default = "  — default" if view.id == self.default_id else ""
            broken = "  — has problems" if view.problems else ""
            if not view.allowed and not view.problems:
                broken = f"  — {NOT_ALLOWED_TEXT.lower()}"
            item.setText(f"{view.name}{default}\n{origin}{broken}")
            font = item.font()
            font.setBold(view.id == self.default_id)
            item.setFont(font)
            if view.problems:
                item.setForeground(QtGui.QBrush(QtGui.QColor("#c62828")))
        self._show_row(self.list.currentRow())

    def selected_id(self) -> str | None:
        item = self.list.currentItem()
        return None if item is None else str(item.data(_ID))

    def select(self, profile_id: str) -> None:
        for row in range(self.list.count()):
            if self.list.item(row).data(_ID) == profile_id:
                self.list.setCurrentRow(row)
                return

    def _show_row(self, row: int) -> None:
        if not 0 <= row < len(self.views):
            return
        view = self.views[row]
        self.title.setText(view.name)
        facts = [ORIGIN_TEXT.get(view.origin, view.origin)]
        if view.strictness:
            facts.append(f"strictness: {STRICTNESS_TEXT.get(view.strictness, view.strictness)}")
        if view.id == self.default_id:
            facts.append("used for new chats")
        if not view.allowed:
            facts.append(NOT_ALLOWED_TEXT.lower())
        self.facts.setText(" · ".join(facts))
        self.description.setText(view.description)
        self.description.setVisible(bool(view.description))
        self.sentence.setText(view.sentence)
        self.judges.setText("\n".join(view.judges))
        self.judges.setVisible(bool(view.judges))
        self.checks.clear()
        for title, where, in_force in view.checks:
            item = QtWidgets.QTreeWidgetItem([title, where, "yes" if in_force else "no"])
            item.setToolTip(0, title)
            if not in_force:
                item.setForeground(2, QtGui.QBrush(QtGui.QColor("#c62828")))
            self.checks.addTopLevelItem(item)
        self.checks.setVisible(bool(view.checks))
        self.problems.clear()
        self.problems.addItems(list(view.problems))
        self.problems.setVisible(bool(view.problems))
        usable = not view.problems
        if self.default_locked:
            mark_managed(self.make_default_button, True)
        else:
            mark_managed(self.make_default_button, False)
            self.make_default_button.setEnabled(
                usable and view.allowed and view.id != self.default_id
            )
        self.export_button.setEnabled(usable)

    def _failed(self, error: object) -> None:
        self.status.setText(sentence_for(error, "Reading the guardrail profiles"))

    # -- import, export, default ---------------------------------------------------------

    def _choose_folder(self) -> None:
        chosen = QtWidgets.QFileDialog.getExistingDirectory(
            self, "Import a profile folder", str(Path.home())
        )
        if chosen:
            self.import_from(Path(chosen))

    def _choose_archive(self) -> None:
        chosen, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Import a profile archive", str(Path.home()), "Profile archives (*.zip)"
        )
        if chosen:
            self.import_from(Path(chosen))

    def import_from(self, source: Path) -> None:
        """Validate and install a profile folder or archive; problems are listed here."""
        from bastion_guardrails.library import import_profile

        user_dir = self.services.context.profiles_dir
        try:
            self.policy.require_user_profiles()
        except PolicyRefusedError as error:
            self.status.setText(str(error))
            self.import_failed.emit([str(error)])
            return
        self.status.setText(f"Checking {source.name}...")

        def done(profile: object) -> None:
            profile_id = str(profile.id)  # type: ignore[attr-defined]
            self.status.setText(f"Imported the profile {profile.name}.")  # type: ignore[attr-defined]
            self.refresh(select=profile_id)
            self.imported.emit(profile_id)

        def failed(error: object) -> None:
            from bastion_guardrails.problems import ProfileError

            if isinstance(error, ProfileError | OSError | BastionError):
                lines = problems_of(error)
            else:
                lines = [sentence_for(error, "Importing the profile")]
            self.status.setText(f"{source.name} was not imported; nothing was changed:")
            self.title.setText(f"{source.name} was not imported")
            self.facts.setText("Fix these problems and import it again.")
            self.description.setVisible(False)
            self.sentence.setText("")
            self.judges.setVisible(False)
            self.checks.setVisible(False)
            self.problems.clear()
            self.problems.addItems(lines)
            self.problems.setVisible(True)
            self.import_failed.emit(lines)

        call(self.services.engine, asyncio.to_thread(import_profile, source, user_dir), self,
             done, failed)  # fmt: skip

    def _export_selected(self) -> None:
        profile_id = self.selected_id()
        if profile_id is None:
            return
        chosen, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Export the profile", str(Path.home() / f"{profile_id}.zip"),
            "Profile archives (*.zip)",
        )  # fmt: skip
        if chosen:
            self.export_to(profile_id, Path(chosen))

    def export_to(self, profile_id: str, destination: Path) -> None:
        from bastion_guardrails.library import export_profile

        library = self.services.context.profile_library()

        def work() -> Path:
            return export_profile(library.get(profile_id), destination)

        def done(path: object) -> None:
            self.status.setText(f"Exported to {path}.")
            self.exported.emit(str(path))

        def failed(error: object) -> None:
            lines = problems_of(error)  # type: ignore[arg-type]
            self.status.setText("The profile was not exported: " + " ".join(lines))

        call(self.services.engine, asyncio.to_thread(work), self, done, failed)

    def _make_selected_default(self) -> None:
        profile_id = self.selected_id()
        if profile_id is not None:
            self.make_default(profile_id)

    def make_default(self, profile_id: str) -> None:
        """New chats use this profile: saved in the settings (`guard_profile`)."""
        settings = self.services.context.settings
        view = next((v for v in self.views if v.id == profile_id), None)
        refusal = None
        if self.default_locked:
            refusal = "Your organization manages the guardrail profile"
        elif view is not None and not view.allowed:
            refusal = f"Your organization does not allow the {view.name} profile"
        if refusal is not None:
            self.status.setText(f"{refusal}; the default was not changed.")
            return
        try:
            self.services.update_settings(settings.model_copy(update={"guard_profile": profile_id}))
        except (OSError, BastionError) as error:
            self.status.setText(f"The default was not changed: {error}")
            return
        name = next((v.name for v in self.views if v.id == profile_id), profile_id)
        self.status.setText(f"New chats use the {name} profile.")
        self._mark_default()
        self.default_changed.emit(profile_id)
