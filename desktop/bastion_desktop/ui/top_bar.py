"""The bar above the conversation: which model answers, and which guardrail profile
checks it — with the profile's strictness, whether it is fully in force, and a locked
state when an administrator chose it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from bastion_desktop.core.hub.fit import FitEstimate, FitKind
from bastion_desktop.core.registry import RegisteredModel
from bastion_desktop.core.settings import Settings
from bastion_desktop.core.starter import STARTER_ID
from bastion_desktop.ui.chat_controller import is_user_error
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.managed import MANAGED_TEXT, mark_managed
from bastion_desktop.ui.qt import QtCore, QtWidgets, Signal
from bastion_desktop.ui.services import AppServices

log = logging.getLogger(__name__)


_FIT_WORDS = {
    FitKind.FULL_GPU: "fits on the GPU",
    FitKind.PARTIAL_GPU: "partly on the GPU",
    FitKind.CPU_ONLY: "runs on the CPU",
    FitKind.WILL_NOT_FIT: "too large for this machine",
}


@dataclass(frozen=True)
class ProfileChoice:
    id: str
    name: str
    strictness: str
    sentence: str  # which checks are in force, from GuardEngine.status
    usable: bool
    fully_in_force: bool


def profile_choices(services: AppServices) -> list[ProfileChoice]:
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
            ProfileChoice(
                entry.id,
                entry.profile.name,
                entry.profile.manifest.strictness.value,
                status.sentence,
                status.can_run,
                not status.missing,
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
    """The profile an administrator's policy locks, if the policy layer says so.

    The policy engine is being built alongside this window: this reads its answer when
    the context offers one (`policy.locked_profile`), and is None until then."""
    policy = getattr(services.context, "policy", None)
    locked = getattr(policy, "locked_profile", None) if policy is not None else None
    return locked if isinstance(locked, str) and locked else None


class TopBar(QtWidgets.QFrame):
    model_changed = Signal(str)
    profile_changed = Signal(str)
    error = Signal(str)

    def __init__(self, services: AppServices, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.setObjectName("topBar")
        self._choices: list[ProfileChoice] = []
        self._fits: dict[str, FitEstimate] = {}
        self._filling = False
        # The open conversation's model, shown instead of the default for new chats.
        self.conversation_model: str | None = None
        rows = QtWidgets.QVBoxLayout(self)
        rows.setContentsMargins(12, 6, 12, 6)
        rows.setSpacing(4)
        layout = QtWidgets.QHBoxLayout()
        layout.setSpacing(8)
        rows.addLayout(layout)

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
        self.status_label = QtWidgets.QLabel(self)
        self.status_label.setObjectName("profileStatus")
        self.status_label.setAccessibleName("Guardrail status")
        self.managed_label = QtWidgets.QLabel(MANAGED_TEXT, self)
        self.managed_label.setObjectName("managedNote")
        self.managed_label.setVisible(False)
        layout.addWidget(self.managed_label)
        # Its own row: the sentence saying which checks are not in force is long.
        self.status_label.setWordWrap(True)
        self.status_label.setVisible(False)
        rows.addWidget(self.status_label)

    # -- filling -----------------------------------------------------------------------

    def refresh(self) -> None:
        self.fill_models()

        async def starter() -> None:
            # Registers the starter on first run (writes it if missing: engine thread).
            self.services.context.ensure_starter()

        call(self.services.engine, starter(), self, lambda _r: self.fill_models(), self._failed)
        call(
            self.services.engine,
            self._profiles(),
            self,
            on_result=self._fill_profiles,
            on_error=self._failed,
        )

    async def _profiles(self) -> list[ProfileChoice]:
        return profile_choices(self.services)

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
        active = locked or settings.guard_profile
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
        self.profile_box.setCurrentIndex(max(index, 0))
        self._filling = False
        self.set_locked(locked is not None)
        self._show_status()

    def _show_status(self) -> None:
        choice = self.current_profile()
        if choice is None:
            self.status_label.clear()
            return
        # The sentence is always in the tooltip; in the bar only when it warns.
        warning = "" if choice.fully_in_force and choice.usable else "⚠ " + choice.sentence
        self.status_label.setText(warning)
        self.status_label.setVisible(bool(warning))
        self.status_label.setToolTip(choice.sentence)
        managed = f"{MANAGED_TEXT}. " if locked_profile(self.services) else ""
        self.profile_box.setToolTip(managed + choice.sentence)
        self.profile_box.setAccessibleDescription(choice.sentence)

    def profile_name(self, profile_id: str) -> str:
        """A profile's name as the picker shows it (its id for one not listed)."""
        return next((c.name for c in self._choices if c.id == profile_id), profile_id)

    def current_profile(self) -> ProfileChoice | None:
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
        self._show_status()
        call(
            self.services.engine,
            self.services.open_profile(choice.id),
            self,
            on_result=lambda _r: self._profile_open(choice.id),
            on_error=self._failed,
        )

    def _profile_open(self, profile_id: str) -> None:
        self._save(guard_profile=profile_id)
        self.services.profile_changed.emit(profile_id)
        self.profile_changed.emit(profile_id)

    def _save(self, **changes: Any) -> None:
        settings = self.services.context.settings
        try:
            new = Settings.model_validate({**settings.model_dump(), **changes})
            self.services.update_settings(new)
        except Exception as error:
            self._failed(error)

    def _failed(self, error: object) -> None:
        if is_user_error(error):
            self.error.emit(str(error))
        else:
            log.error(
                "top bar work failed", exc_info=error if isinstance(error, BaseException) else None
            )
            self.error.emit("That did not work. The log file has the details.")
