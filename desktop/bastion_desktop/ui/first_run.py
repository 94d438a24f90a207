"""The first minutes: the history key (keychain, or a passphrase asked for in a dialog),
and the starter model, which chats at once but is a tiny test model — so the window
says so and offers a catalog model that fits this machine."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from bastion_desktop.app import AppContext
from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.history.errors import WrongKeyError
from bastion_desktop.core.history.keys import MIN_PASSPHRASE_LENGTH, PassphrasePrompt
from bastion_desktop.core.history.store import EncryptedConversationStore
from bastion_desktop.core.hub.fit import FitEstimate, FitKind
from bastion_desktop.core.starter import STARTER_ID
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.qt import QtCore, QtWidgets, Signal
from bastion_desktop.ui.services import AppServices

log = logging.getLogger(__name__)


class PassphraseCancelledError(BastionError):
    """The user closed the passphrase dialog."""


class PassphraseDialog(QtWidgets.QDialog):
    """Asks for the history passphrase; `confirm` sets a new one (typed twice)."""

    def __init__(
        self, confirm: bool, parent: QtWidgets.QWidget | None = None, problem: str = ""
    ) -> None:
        super().__init__(parent)
        self.confirm = confirm
        self.setObjectName("passphraseDialog")
        self.setWindowTitle("Bastion — conversation history")
        self.setMinimumWidth(440)
        layout = QtWidgets.QVBoxLayout(self)
        intro = QtWidgets.QLabel(self)
        intro.setWordWrap(True)
        if confirm:
            intro.setText(
                "No keychain is available here, so your conversation history will be "
                "encrypted with a passphrase. Bastion cannot recover it if you forget it."
            )
        else:
            intro.setText("Enter the passphrase that unlocks your conversation history.")
        layout.addWidget(intro)
        form = QtWidgets.QFormLayout()
        self.first = QtWidgets.QLineEdit(self)
        self.first.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.first.setAccessibleName("Passphrase")
        form.addRow("&Passphrase:", self.first)
        self.second = QtWidgets.QLineEdit(self)
        self.second.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.second.setAccessibleName("Repeat passphrase")
        if confirm:
            form.addRow("&Repeat it:", self.second)
        else:
            self.second.setVisible(False)
        layout.addLayout(form)
        # Why it asks again (a passphrase that did not unlock the history), or what is
        # wrong with the one typed.
        self.problem = QtWidgets.QLabel(problem, self)
        self.problem.setObjectName("problem")
        self.problem.setWordWrap(True)
        self.problem.setAccessibleName("Problem")
        self.problem.setVisible(bool(problem))
        layout.addWidget(self.problem)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel,
            self,
        )
        buttons.accepted.connect(self._check)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.ok_button = buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok)
        self.cancel_button = buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        self.first.setFocus()

    def _check(self) -> None:
        text = self.first.text()
        if self.confirm and len(text) < MIN_PASSPHRASE_LENGTH:
            self._say(f"The passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long.")
        elif self.confirm and self.second.text() != text:
            self._say("The two passphrases differ.")
        elif not text:
            self._say("Enter the passphrase.")
        else:
            self.accept()

    def _say(self, problem: str) -> None:
        self.problem.setText(problem)
        self.problem.setVisible(True)
        self.first.setFocus()
        self.first.selectAll()

    @property
    def passphrase(self) -> str:
        return self.first.text()


def dialog_prompt(parent: QtWidgets.QWidget | None = None, problem: str = "") -> PassphrasePrompt:
    """A `PassphrasePrompt` that asks in a dialog (on the GUI thread, at startup);
    `problem` says why it asks again."""

    def ask(confirm: bool) -> str:
        dialog = PassphraseDialog(confirm, parent, problem)
        try:
            if dialog.exec() != QtWidgets.QDialog.DialogCode.Accepted:
                raise PassphraseCancelledError(
                    "Bastion needs the passphrase to open your conversation history; "
                    "nothing was changed."
                )
            return dialog.passphrase
        finally:
            dialog.deleteLater()

    return ask


def open_history_at_start(
    context: AppContext, passphrase_file: Path | None
) -> EncryptedConversationStore:
    """Open the history as the window starts: with the passphrase file when one is
    given, else asking in a dialog (twice, to confirm, when the history is created).
    A passphrase typed wrong is asked for again, saying so; Cancel raises
    PassphraseCancelledError with the history left as it was."""
    if passphrase_file is not None:
        from bastion_desktop.commands.passphrase import passphrase_prompt

        from_file = passphrase_prompt(passphrase_file)
        if from_file is not None:
            return context.open_history(from_file)
    problem = ""
    while True:
        try:
            return context.open_history(dialog_prompt(problem=problem))
        except WrongKeyError as error:
            problem = str(error)


# -- the starter model notice ------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    model_id: str
    name: str
    size: int
    fit: FitEstimate


# On the CPU alone a reply streams at a readable pace only from small models: a 14B
# model fits in 16 GB of RAM but answers at a word or two per second on a laptop.
CPU_COMFORTABLE_BILLIONS = 4.5


def _comfort(fit: FitEstimate, billions: float) -> int:
    """How well a model would run here: 3 all on the GPU, 2 mostly on the GPU, 1 on the
    CPU at a readable pace, 0 not comfortably (too tight, or too slow on the CPU)."""
    if fit.kind is FitKind.WILL_NOT_FIT or fit.tight:
        return 0
    if fit.kind is FitKind.FULL_GPU:
        return 3
    if fit.kind is FitKind.PARTIAL_GPU and fit.gpu_layers * 2 >= fit.total_layers:
        return 2
    return 1 if billions <= CPU_COMFORTABLE_BILLIONS else 0


def suggest_catalog_model(context_length: int) -> Suggestion | None:
    """The catalog chat model that runs best here (slow: probes the hardware): the
    largest that fits on the GPU, else mostly on it, else a small one for the CPU; None
    when nothing runs comfortably."""
    from bastion_desktop.core.hub.catalog import load_catalog
    from bastion_desktop.core.hub.fit import estimate_fit, shape_from_facts
    from bastion_desktop.core.hub.probe import probe_hardware

    hardware = probe_hardware()
    best: Suggestion | None = None
    best_rank = (0, 0.0)
    for model in load_catalog().models:
        if model.role != "chat":
            continue
        file = model.file_for()
        fit = estimate_fit(shape_from_facts(file.size, model.shape), context_length, hardware)
        rank = (_comfort(fit, model.parameters_b), model.parameters_b)
        if rank[0] and rank > best_rank:
            best, best_rank = Suggestion(model.id, model.name, file.size, fit), rank
    return best


class StarterNotice(QtWidgets.QFrame):
    """Shown while the starter model is chosen: it works, but it is a test model."""

    open_models = Signal()

    def __init__(self, services: AppServices, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.setObjectName("starterNotice")
        self.setAccessibleName("About the starter model")
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        self.text = QtWidgets.QLabel(self)
        self.text.setWordWrap(True)
        self.text.setText(
            "You are chatting with the starter model, a tiny test model that runs anywhere "
            "but gives poor answers. A catalog model gives real ones."
        )
        layout.addWidget(self.text, 1)
        self.get_button = QtWidgets.QPushButton("Get a better model…", self)
        self.get_button.setObjectName("getModel")
        self.get_button.setAccessibleName("Get a better model")
        self.get_button.clicked.connect(self.open_models.emit)
        layout.addWidget(self.get_button)
        self.dismiss_button = QtWidgets.QToolButton(self)
        self.dismiss_button.setText("✕")
        self.dismiss_button.setAutoRaise(True)
        self.dismiss_button.setAccessibleName("Hide this notice")
        self.dismiss_button.clicked.connect(self.hide)
        layout.addWidget(self.dismiss_button)
        self.suggestion: Suggestion | None = None

    def update_for(self, model_id: str | None) -> None:
        starter = (model_id or STARTER_ID) == STARTER_ID
        self.setVisible(starter)
        if starter and self.suggestion is None:
            context_length = self.services.context.settings.inference.context_length

            async def suggest() -> Suggestion | None:
                # Off the loop that streams replies: the probe waits on its children.
                return await asyncio.to_thread(suggest_catalog_model, context_length)

            call(self.services.engine, suggest(), self, self._suggested, self._no_suggestion)

    def _suggested(self, suggestion: object) -> None:
        if not isinstance(suggestion, Suggestion):
            return
        from bastion_desktop.core.hub.filenames import format_size

        self.suggestion = suggestion
        # In the units the models window shows the same download in.
        size = format_size(suggestion.size)
        self.text.setText(
            "You are chatting with the starter model, a tiny test model: its answers are "
            f"poor. Suggested for this machine: {suggestion.name} ({size} download). "
            f"{suggestion.fit.summary.rstrip('.')}."
        )
        self.get_button.setText(f"Get {suggestion.name}…")
        self.get_button.setAccessibleName(f"Get {suggestion.name}")

    def _no_suggestion(self, error: object) -> None:
        log.info("no catalog suggestion: %s", type(error).__name__)


def open_models_window(
    services: AppServices, parent: QtWidgets.QWidget
) -> QtWidgets.QWidget | None:
    """UI engineer 2's model manager, when it exists; None (and a message) when not."""
    try:
        from bastion_desktop.ui.models_window import ModelsWindow
    except ImportError:
        QtWidgets.QMessageBox.information(
            parent,
            "Models",
            "The model manager is not available in this build. "
            "Use `bastion models catalog` and `bastion models download` in a terminal.",
        )
        return None
    window: QtWidgets.QWidget = ModelsWindow(services, parent)
    window.setWindowFlag(QtCore.Qt.WindowType.Window, True)  # its own window, not a child
    window.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
    window.show()
    return window
