"""The bar above the conversation: which model answers, and which guardrail profile
checks it — with the profile's strictness, a locked state when an administrator chose
it, and its status at a glance: a small badge that says whether every check is in
force, and opens the details (the full sentence, how each judge of content safety did
on Bastion's calibration set, and the download that fixes what is missing)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from bastion_desktop.core.hub.filenames import format_size
from bastion_desktop.core.hub.fit import FitEstimate, FitKind
from bastion_desktop.core.installed_models import RegisteredModel
from bastion_desktop.core.settings import Settings
from bastion_desktop.core.starter import STARTER_ID
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.errors import sentence_for
from bastion_desktop.ui.first_run import CatalogPick, catalog_pick
from bastion_desktop.ui.managed import MANAGED_TEXT, managed_note, mark_managed
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal
from bastion_desktop.ui.services import AppServices
from bastion_guardrails.explain import ProfileStatus
from bastion_guardrails.models import SAFETY_ROLE, JudgeReport
from bastion_guardrails.rail_actions import LIBRARY_FLOWS

log = logging.getLogger(__name__)


_FIT_WORDS = {
    FitKind.FULL_GPU: "fits on the GPU",
    FitKind.PARTIAL_GPU: "partly on the GPU",
    FitKind.CPU_ONLY: "runs on the CPU",
    FitKind.WILL_NOT_FIT: "too large for this machine",
}


@dataclass(frozen=True)
class ProfileOption:
    """A guardrail profile as the picker offers it (what the policy allows the user to
    choose is `core.policy.ProfileChoice`)."""

    id: str
    name: str
    strictness: str
    sentence: str  # which checks are in force, from GuardEngine.status
    usable: bool
    fully_in_force: bool
    checks: int = 0
    missing: int = 0  # checks not in force
    judges: tuple[JudgeReport, ...] = ()  # how each judge did on the calibration set
    fix: CatalogPick | None = None  # the safety model the sentence suggests downloading

    @property
    def state(self) -> str:
        """The badge's state, named as the message badges' colours are: "passed" (all in
        force), "masked" (some checks not in force), "blocked" (the profile cannot run),
        "unchecked" (it checks nothing)."""
        if not self.usable:
            return "blocked"
        if self.missing:
            return "masked"
        return "passed" if self.checks else "unchecked"

    @property
    def badge(self) -> str:
        """The badge: a mark and a few words, for a glance."""
        checks = "check" if self.missing == 1 else "checks"
        return {
            "passed": "✓ In force",
            "masked": f"⚠ {self.missing} {checks} off",
            "blocked": "⊘ Cannot run",
            "unchecked": "○ Nothing checked",
        }[self.state]

    @property
    def headline(self) -> str:
        """The first line of the details."""
        checks = "check" if self.missing == 1 else "checks"
        return {
            "passed": f"{self.name}: every check is in force",
            "masked": f"{self.name}: {self.missing} of {self.checks} {checks} not in force",
            "blocked": f"{self.name} cannot be used",
            "unchecked": f"{self.name}: nothing is checked",
        }[self.state]


def judges_shown(status: ProfileStatus) -> tuple[JudgeReport, ...]:
    """The judges' calibration results, for a profile with a check of content safety
    (in force, or missing for want of a judge); none for one that asks no judge."""
    asks_judge = any(
        SAFETY_ROLE in check.needs
        or (check.rail in LIBRARY_FLOWS and LIBRARY_FLOWS[check.rail].spec.role == SAFETY_ROLE)
        for check in status.checks
    )
    return status.judges if asks_judge else ()


def _fix(services: AppServices, status: ProfileStatus) -> CatalogPick | None:
    """The safety model to download when the status suggests one: the first it names
    that the catalog has and that is not installed already."""
    installed = {
        (m.repo or "").lower() for m in services.context.registry.list() if m.role == "safety"
    }
    for download in status.suggested_downloads:
        pick = catalog_pick(download.catalog_id)
        if pick is not None and pick.repo.lower() not in installed:
            return pick
    return None


def profile_options(services: AppServices) -> list[ProfileOption]:
    """Every valid profile with its status (no NeMo involved: plain planning)."""
    engine = services.context.guard_engine()
    models = services.context.model_set()
    choices = []
    for entry in services.context.profile_library().entries():
        if entry.profile is None:
            continue
        try:
            status = engine.status(entry.id, models)
        except Exception:  # a profile that cannot even be planned is left out of the list
            log.warning("profile %s has no status", entry.id, exc_info=True)
            continue
        choices.append(
            ProfileOption(
                entry.id,
                entry.profile.name,
                entry.profile.manifest.strictness.value,
                status.sentence,
                status.can_run,
                not status.missing,
                len(status.checks),
                len(status.missing),
                judges_shown(status),
                _fix(services, status),
            )
        )
    return choices


def model_fits(services: AppServices, models: list[RegisteredModel]) -> dict[str, FitEstimate]:
    """A fit estimate for each installed chat model (probing the hardware: slow)."""
    from bastion_desktop.core.hub.fit import estimate_fit, shape_from_size
    from bastion_desktop.core.hub.probe import probe_hardware

    hardware = probe_hardware()
    context_length = services.context.settings.inference.context_length
    return {
        m.id: estimate_fit(shape_from_size(m.size, m.quantization), context_length, hardware)
        for m in models
    }


def locked_profile(services: AppServices) -> str | None:
    """The profile an administrator's policy locks, if any."""
    return services.context.policy.locked_profile


# The status is a few sentences in one string (what is checked, what is not and why, what
# the chat model checking itself means, the judge still to be tested): a paragraph each.
_PARAGRAPHS = re.compile(r"(?<=[.)]) (?=Not in force|The |Before )")

# Wide enough for the status sentence to read as a paragraph, narrow enough to sit under
# the badge in the smallest window (720 px).
DETAILS_WIDTH = 460


class StatusDetails(QtWidgets.QFrame):
    """What the status badge opens: which checks are in force (the full sentence), how
    each judge of content safety did on Bastion's calibration set, and the download
    that fixes what is missing. A popup: a click outside it or Esc closes it."""

    download_requested = Signal(object)  # a CatalogPick
    profiles_requested = Signal()

    def __init__(self, parent: QtWidgets.QWidget) -> None:
        super().__init__(parent, QtCore.Qt.WindowType.Popup)
        self.setObjectName("statusDetails")
        self.setAccessibleName("Guardrail status details")
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        # Word-wrapped labels take their height from a width: give them one.
        self.setFixedWidth(DETAILS_WIDTH)
        layout = self._rows = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(14, 12, 14, 12)
        layout.setSpacing(8)
        self.headline = QtWidgets.QLabel(self)
        font = self.headline.font()
        font.setBold(True)
        self.headline.setFont(font)
        self.headline.setWordWrap(True)
        layout.addWidget(self.headline)
        self.sentence = self._paragraph("What the profile checks")
        layout.addWidget(self.sentence)
        self.judges = self._paragraph("Judges of content safety")
        layout.addWidget(self.judges)
        buttons = QtWidgets.QHBoxLayout()
        buttons.setSpacing(8)
        self.download_button = QtWidgets.QPushButton(self)
        self.download_button.setObjectName("downloadSafetyModel")
        self.download_button.setDefault(True)
        self.download_button.clicked.connect(self._download)
        buttons.addWidget(self.download_button)
        buttons.addStretch(1)
        self.profiles_button = QtWidgets.QPushButton("Guardrail profiles…", self)
        self.profiles_button.setAccessibleName("Open the guardrail profiles")
        self.profiles_button.clicked.connect(self._profiles)
        buttons.addWidget(self.profiles_button)
        layout.addLayout(buttons)
        self.managed = managed_note(self)
        layout.addWidget(self.managed)
        self.fix: CatalogPick | None = None

    def _paragraph(self, name: str) -> QtWidgets.QLabel:
        label = QtWidgets.QLabel(self)
        label.setWordWrap(True)
        label.setAccessibleName(name)
        # Selectable by keyboard too, so that Tab reaches it and a screen reader reads it.
        label.setTextInteractionFlags(
            QtCore.Qt.TextInteractionFlag.TextSelectableByMouse
            | QtCore.Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        return label

    def show_choice(self, choice: ProfileOption, downloads_allowed: bool) -> None:
        self.headline.setText(choice.headline)
        self.sentence.setText(_PARAGRAPHS.sub("\n\n", choice.sentence))
        lines = [("✓ " if j.qualified else "✗ ") + j.sentence() for j in choice.judges]
        self.judges.setText("\n\n".join(lines))
        self.judges.setVisible(bool(lines))
        self.fix = choice.fix
        self.download_button.setVisible(choice.fix is not None)
        if choice.fix is not None:
            name = choice.fix.name
            self.download_button.setText(f"Download {name} ({format_size(choice.fix.size)})")
            self.download_button.setAccessibleName(f"Download the safety model {name}")
            self.download_button.setToolTip(
                f"{name} checks content safety; the Models window shows the download."
            )
            mark_managed(self.download_button, not downloads_allowed, self.managed)
        else:
            self.managed.setVisible(False)
        self._fit_height()

    def _fit_height(self) -> None:
        # The height the word-wrapped paragraphs need at this width (adjustSize keeps
        # the height of longer text shown before, as space around the headline).
        self._rows.activate()
        self.resize(DETAILS_WIDTH, self.heightForWidth(DETAILS_WIDTH))

    def open_below(self, anchor: QtWidgets.QWidget) -> None:
        """Show under `anchor`, its right edges aligned, inside the screen."""
        self._fit_height()
        corner = anchor.mapToGlobal(QtCore.QPoint(anchor.width(), anchor.height()))
        place = QtCore.QPoint(corner.x() - self.width(), corner.y() + 2)
        screen = anchor.screen().availableGeometry()
        place.setX(max(screen.left(), min(place.x(), screen.right() - self.width())))
        self.move(place)
        self.show()
        first = self.download_button if self.download_button.isVisible() else self.sentence
        first.setFocus(QtCore.Qt.FocusReason.PopupFocusReason)

    def _download(self) -> None:
        fix = self.fix
        self.close()
        if fix is not None:
            self.download_requested.emit(fix)

    def _profiles(self) -> None:
        self.close()
        self.profiles_requested.emit()


class TopBar(QtWidgets.QFrame):
    model_changed = Signal(str)
    profile_changed = Signal(str)
    # A profile chosen is being opened: nothing is sent until it is in force (changed),
    # or it cannot be used (profile_error, with the error).
    profile_opening = Signal(str)
    profile_error = Signal(object)
    error = Signal(str)
    download_requested = Signal(object)  # a tuple of CatalogPick: what to download
    profiles_requested = Signal()
    profiles_filled = Signal()  # the profiles and their statuses are shown

    def __init__(self, services: AppServices, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.setObjectName("topBar")
        self._choices: list[ProfileOption] = []
        self._fits: dict[str, FitEstimate] = {}
        # Filling the pickers; the profile shown being opened (not in force yet).
        self._filling = self._opening = False
        # The installed models as last seen, and whether the profile is to be opened
        # again once the bar is enabled (a reply streamed when they changed).
        self._installed: frozenset[tuple[str, str, str]] | None = None
        self._reopen_pending = False
        # The open conversation's model, shown instead of the default for new chats.
        self.conversation_model: str | None = None
        layout = self._row = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(12, 6, 12, 6)
        layout.setSpacing(8)

        model_label = QtWidgets.QLabel("&Model", self)
        self.model_box = QtWidgets.QComboBox(self)
        self.model_box.setObjectName("modelPicker")
        self.model_box.setAccessibleName("Model")
        self.model_box.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
        model_label.setBuddy(self.model_box)
        self.model_box.currentIndexChanged.connect(self._model_chosen)
        layout.addWidget(model_label)
        layout.addWidget(self.model_box)
        self.fit_label = QtWidgets.QLabel(self)
        self.fit_label.setObjectName("fitBadge")
        self.fit_label.setAccessibleName("Model fit")
        layout.addWidget(self.fit_label)
        layout.addStretch(1)

        profile_label = QtWidgets.QLabel("&Guardrails", self)
        self.profile_box = QtWidgets.QComboBox(self)
        self.profile_box.setObjectName("profilePicker")
        self.profile_box.setAccessibleName("Guardrail profile")
        self.profile_box.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
        profile_label.setBuddy(self.profile_box)
        self.profile_box.currentIndexChanged.connect(self._profile_chosen)
        layout.addWidget(profile_label)
        layout.addWidget(self.profile_box)
        # The status at a glance; the message badges' look (the theme colours it by
        # state), and a button, so that it is reached with Tab and opened with Space.
        self.status_button = QtWidgets.QToolButton(self)
        self.status_button.setObjectName("guardBadge")
        self.status_button.setAutoRaise(True)
        self.status_button.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
        self.status_button.setAccessibleName("Guardrail status")
        self.status_button.setVisible(False)
        self.status_button.clicked.connect(self.show_status_details)
        layout.addWidget(self.status_button)
        self.managed_label = QtWidgets.QLabel(MANAGED_TEXT, self)
        self.managed_label.setObjectName("managedNote")
        self.managed_label.setVisible(False)
        layout.addWidget(self.managed_label)
        self.details = StatusDetails(self)
        self.details.download_requested.connect(lambda pick: self.download_requested.emit((pick,)))
        self.details.profiles_requested.connect(self.profiles_requested.emit)

    # -- filling -----------------------------------------------------------------------

    def refresh(self) -> None:
        self._installed = self._installed_models()
        self.fill_models()

        # Registers the starter on first run: writes it if missing, else checks its
        # sha256 (a worker thread: on the engine loop it stalled every stream).
        starter = asyncio.to_thread(self.services.context.ensure_starter)
        call(self.services.engine, starter, self, lambda _r: self.fill_models(), self._failed)
        self.refresh_profiles()

    def refresh_profiles(self) -> None:
        """List the profiles with their statuses again (the models they may use, and
        their judges' calibration, change as models are installed and profiles open)."""
        call(
            self.services.engine,
            self._profiles(),
            self,
            on_result=self._fill_profiles,
            on_error=self._failed,
        )

    async def _profiles(self) -> list[ProfileOption]:
        # Reads and plans every profile on disk: a worker thread, not the engine loop.
        return await asyncio.to_thread(profile_options, self.services)

    def fill_models(self) -> None:
        context = self.services.context
        models = [m for m in context.registry.list() if m.role == "chat"]
        chosen = self.conversation_model or context.settings.default_model or STARTER_ID
        self._filling = True
        self.model_box.clear()
        for model in models:
            self.model_box.addItem(model.name, model.id)
        if models and self.model_box.findData(chosen) < 0 and self.conversation_model:
            # Removed since the conversation began: say so rather than show another.
            self.model_box.addItem(f"{chosen} (not installed)", chosen)
        index = self.model_box.findData(chosen)
        self.model_box.setCurrentIndex(max(index, 0))
        self._filling = False
        self._show_fit()
        if models:

            async def fits() -> dict[str, FitEstimate]:
                # Off the loop that streams replies: the probe waits on its children.
                return await asyncio.to_thread(model_fits, self.services, models)

            call(self.services.engine, fits(), self, self._got_fits, lambda _e: None)

    def show_conversation_model(self, model_id: str | None) -> None:
        """Show the model of the conversation opened (None: a new chat, which gets the
        default model), without choosing it again."""
        if model_id == self.conversation_model:
            return
        self.conversation_model = model_id
        wanted = model_id or self.services.context.settings.default_model or STARTER_ID
        index = self.model_box.findData(wanted)
        missing = self.model_box.findText("(not installed)", QtCore.Qt.MatchFlag.MatchEndsWith)
        if index < 0 or missing >= 0:
            self.fill_models()  # an entry to add or to drop: list them again
            return
        self._filling = True  # only showing, not choosing: no save, no refit
        self.model_box.setCurrentIndex(index)
        self._filling = False
        self._show_fit()

    def _got_fits(self, fits: object) -> None:
        assert isinstance(fits, dict)
        self._fits = fits
        self._show_fit()

    def _show_fit(self) -> None:
        estimate = self._fits.get(self.model_box.currentData() or "")
        if estimate is None:
            self.fit_label.clear()
            self.fit_label.setToolTip("")
            return
        self.fit_label.setText(_FIT_WORDS.get(estimate.kind, estimate.kind.value))
        self.fit_label.setProperty("fit", estimate.kind.value)
        self.fit_label.setToolTip(estimate.summary)

    def _fill_profiles(self, choices: object) -> None:
        assert isinstance(choices, list)
        self._choices = choices
        settings = self.services.context.settings
        locked = locked_profile(self.services)
        # Filled again (statuses change as models come and judges are tested): the
        # profile shown stays the one open or being opened, not the default for new
        # chats that the profiles window may have changed since.
        active = locked or self.profile_box.currentData() or settings.guard_profile
        self._filling = True
        self.profile_box.clear()
        for choice in choices:
            label = choice.name
            if choice.strictness.lower() != choice.name.lower():  # not "Standard · standard"
                label += f" · {choice.strictness}"
            if not choice.usable:
                label += " (unavailable)"
            self.profile_box.addItem(label, choice.id)
        index = self.profile_box.findData(active)
        if index < 0 and active:
            # A profile the settings name that is not there (removed, or a hand-edited
            # file): shown as it is, so that choosing any other one opens it.
            self.profile_box.addItem(f"{active} (not installed)", active)
            index = self.profile_box.count() - 1
        self.profile_box.setCurrentIndex(max(index, 0))
        self._filling = False
        self.set_locked(locked is not None)
        self._show_status()
        self.profiles_filled.emit()

    def show_judge_progress(self, judge: str, done: int, total: int) -> None:
        """While a judge is tested before its first check (once per model file), the
        badge says so; the profile's status comes back when the profile is open."""
        button = self.status_button
        button.setVisible(True)
        button.setText(f"Testing the judge {done}/{total}")
        words = (
            f"Testing whether {judge} can judge content safety: {done} of {total} test "
            "requests (once per model)"
        )
        button.setToolTip(words)
        button.setAccessibleDescription(words)
        if button.property("verdict") != "unchecked":  # grey: no verdict on it yet
            button.setProperty("verdict", "unchecked")
            button.style().unpolish(button)
            button.style().polish(button)
        if done >= total:
            self._show_status()

    def _show_status(self) -> None:
        choice = self.current_profile()
        button = self.status_button
        button.setVisible(choice is not None)
        if choice is None:
            self.details.close()
            return
        button.setText(choice.badge)
        self._fit_badge()
        button.setToolTip(f"{choice.headline}. Click for the details.")
        # What a glance gives the eye, a screen reader gets as the name; the full
        # sentence (the paragraph the bar once carried) as the description.
        button.setAccessibleName(f"Guardrail status: {choice.headline}")
        button.setAccessibleDescription(choice.sentence)
        if button.property("verdict") != choice.state:
            # The style sheet colours the badge by state: restyle it when that changes.
            button.setProperty("verdict", choice.state)
            button.style().unpolish(button)
            button.style().polish(button)
        managed = f"{MANAGED_TEXT}. " if locked_profile(self.services) else ""
        self.profile_box.setToolTip(managed + choice.sentence)
        self.profile_box.setAccessibleDescription(choice.sentence)
        if self.details.isVisible():
            self.details.show_choice(choice, self._downloads_allowed())
        if self._opening:
            self._show_opening(choice)

    def _fit_badge(self) -> None:
        """The badge's words where the bar has room for them, else its mark alone (a
        narrow window): the profile's name in the picker matters more."""
        choice = self.current_profile()
        if choice is None or self._opening:
            return
        button = self.status_button
        metrics = button.fontMetrics()
        # What the bar would need with the words shown, whatever it shows now.
        extra = metrics.horizontalAdvance(choice.badge) - metrics.horizontalAdvance(button.text())
        roomy = self._row.sizeHint().width() + extra <= self.width()
        text = choice.badge if roomy else choice.badge.split(" ", 1)[0]
        if button.text() != text:
            button.setText(text)

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_badge()

    def show_status_details(self) -> None:
        choice = self.current_profile()
        if choice is None:
            return
        self.details.show_choice(choice, self._downloads_allowed())
        self.details.open_below(self.status_button)

    def _downloads_allowed(self) -> bool:
        return bool(self.services.context.policy.downloads_allowed)

    def profile_name(self, profile_id: str) -> str:
        """A profile's name as the picker shows it (its id for one not listed)."""
        return next((c.name for c in self._choices if c.id == profile_id), profile_id)

    def current_profile(self) -> ProfileOption | None:
        wanted = self.profile_box.currentData()
        return next((c for c in self._choices if c.id == wanted), None)

    def set_locked(self, locked: bool) -> None:
        mark_managed(self.profile_box, locked, self.managed_label)

    # -- choosing ----------------------------------------------------------------------

    def _model_chosen(self, _index: int) -> None:
        if self._filling:
            return
        model_id = self.model_box.currentData()
        self._show_fit()
        if not model_id:
            return
        if self.conversation_model is not None:
            self.conversation_model = model_id  # before the save refills the list
        self._save(default_model=None if model_id == STARTER_ID else model_id)
        self.model_changed.emit(model_id)

    def _profile_chosen(self, _index: int) -> None:
        if self._filling:
            return
        choice = self.current_profile()
        if choice is None:
            return
        self.show_opening()
        self.profile_opening.emit(choice.id)

        def opened(result: object) -> None:
            if result is not None:  # None: another profile was chosen since
                self._profile_open(choice.id)

        def failed(error: object) -> None:
            self.opening_ended()
            self.profile_error.emit(error)

        call(self.services.engine, self.services.open_profile(choice.id), self, opened, failed)

    def use_profile_for_new_chats(self) -> None:
        """A new chat is checked by the profile the settings name for new chats: the
        Settings dialog or the profiles window may have changed it since the one in
        force was chosen. Choosing it opens it, as the picker would."""
        wanted = locked_profile(self.services) or self.services.context.settings.guard_profile
        index = self.profile_box.findData(wanted)
        if index >= 0 and wanted != self.profile_box.currentData() and self.isEnabled():
            self.profile_box.setCurrentIndex(index)  # _profile_chosen opens it

    def show_opening(self) -> None:
        """The badge says the profile shown is being opened (not in force yet) until
        `opening_ended`."""
        self._opening = True
        self._show_status()

    def opening_ended(self) -> None:
        self._opening = False
        self._show_status()

    def _show_opening(self, choice: ProfileOption) -> None:
        words = f"Opening the {choice.name} profile: nothing is sent until it is in force"
        button = self.status_button
        button.setText("Opening…")
        button.setToolTip(words)
        button.setAccessibleName(f"Guardrail status: {words}")
        if button.property("verdict") != "unchecked":
            button.setProperty("verdict", "unchecked")
            button.style().unpolish(button)
            button.style().polish(button)

    def _profile_open(self, profile_id: str) -> None:
        self.opening_ended()  # in force: the badge says what it checks
        self._save(guard_profile=profile_id)
        self.services.profile_changed.emit(profile_id)
        self.profile_changed.emit(profile_id)
        # Opening may have calibrated a judge: the statuses say how it did.
        self.refresh_profiles()

    # -- models installed or removed -----------------------------------------------------

    def _installed_models(self) -> frozenset[tuple[str, str, str]]:
        models = self.services.context.registry.list()
        return frozenset((m.id, m.role, m.sha256 or "") for m in models)

    def models_installed(self) -> None:
        """The installed models may have changed (the models window listed them): when
        they did, the profile in force is opened again, so that a safety model just
        downloaded checks the next message (its judge calibrated first) and the status
        says what really runs, never more than that."""
        installed = self._installed_models()
        if installed == self._installed:
            return
        self._installed = installed
        self._reopen_profile()

    def _reopen_profile(self) -> None:
        if not self.isEnabled():
            # A reply is streaming (the window disables the bar): its turn keeps the
            # checks it began with; the profile opens again when the bar is enabled.
            self._reopen_pending = True
            return
        self._reopen_pending = False
        choice = self.current_profile()
        profile_id = (
            choice.id
            if choice is not None
            else locked_profile(self.services) or self.services.context.settings.guard_profile
        )

        def opened(result: object) -> None:
            if result is None:  # another profile was chosen since: its open says so
                return
            self.services.profile_changed.emit(profile_id)
            self.profile_changed.emit(profile_id)
            self.refresh_profiles()

        def failed(error: object) -> None:
            self._failed(error)
            self.refresh_profiles()  # the statuses say why, where they can

        call(self.services.engine, self.services.open_profile(profile_id), self, opened, failed)

    def changeEvent(self, event: QtCore.QEvent) -> None:
        super().changeEvent(event)
        if (
            event.type() == QtCore.QEvent.Type.EnabledChange
            and self.isEnabled()
            and self._reopen_pending
        ):
            self._reopen_profile()

    def _save(self, **changes: Any) -> None:
        settings = self.services.context.settings
        try:
            new = Settings.model_validate({**settings.model_dump(), **changes})
            self.services.update_settings(new)
        except Exception as error:
            self._failed(error)

    def _failed(self, error: object) -> None:
        sentence = sentence_for(error, "That")
        if sentence:
            self.error.emit(sentence)
