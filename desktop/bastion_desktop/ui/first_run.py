"""The first minutes: the history key (keychain, or a passphrase asked for in a dialog),
and the starter model, which chats at once but is a tiny test model — so the window
says so and offers a catalog model that fits this machine."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bastion_desktop.context import AppContext
from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.errors import HistoryDamagedError, WrongKeyError
from bastion_desktop.core.history.keys import MIN_PASSPHRASE_LENGTH, PassphrasePrompt
from bastion_desktop.core.hub.filenames import format_size
from bastion_desktop.core.hub.fit import FitEstimate, FitKind
from bastion_desktop.core.starter import STARTER_ID
from bastion_desktop.ui.engine import call
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal
from bastion_desktop.ui.services import AppServices

if TYPE_CHECKING:
    from bastion_desktop.core.hub.catalog import Catalog, CatalogModel
    from bastion_desktop.core.hub.probe import HardwareProfile
    from bastion_desktop.ui.models_window import ModelsWindow

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
    PassphraseCancelledError with the history left as it was. A damaged history (found
    now, or noted while the app last ran) is offered a repair first."""
    from bastion_desktop.core.history.keys import passphrase_from_file
    from bastion_desktop.ui.history_repair import offer_repair

    prompt = (
        passphrase_from_file(passphrase_file)
        if passphrase_file is not None
        else asked_once(dialog_prompt())
    )
    repaired = False
    while True:
        damage: HistoryDamagedError | None = None
        try:
            store = context.open_history(prompt)
        except WrongKeyError as error:
            if passphrase_file is not None:
                raise
            prompt = asked_once(dialog_prompt(problem=str(error)))
            continue
        except HistoryDamagedError as error:
            if repaired:
                raise
            damage = error
        else:
            if repaired or not context.history_damage_noted():
                return store
            store.close()  # the repair replaces the file: nothing may have it open
        offer_repair(context, prompt, damage)
        repaired = True


def asked_once(prompt: PassphrasePrompt) -> PassphrasePrompt:
    """`prompt`, asking the user once: the passphrase that opened the history is used
    again for its repair, and to open it after."""
    typed: list[str] = []

    def ask(confirm: bool) -> str:
        if not typed:
            typed.append(prompt(confirm))
        return typed[0]

    return ask


# -- the starter model notice ------------------------------------------------------------


@dataclass(frozen=True)
class CatalogPick:
    """A catalog model offered for download: which file, in which role, and how it
    would run here (None where no estimate was made)."""

    model_id: str
    name: str
    role: str  # "chat" or "safety"
    repo: str
    file: str
    size: int
    fit: FitEstimate | None = None

    @classmethod
    def of(cls, model: CatalogModel, fit: FitEstimate | None = None) -> CatalogPick:
        file = model.file_for()
        return cls(model.id, model.name, model.role, model.repo, file.file, file.size, fit)


def catalog_pick(model_id: str) -> CatalogPick | None:
    """The catalog's recommended file of `model_id` (package data: fast), None when the
    catalog has no such model."""
    from bastion_desktop.core.hub.catalog import load_catalog

    model = load_catalog().get(model_id)
    return None if model is None else CatalogPick.of(model)


@dataclass(frozen=True)
class Suggestion:
    """What the first run offers: a chat model, and a safety model beside it where the
    two fit this machine's memory together."""

    chat: CatalogPick
    safety: CatalogPick | None = None

    @property
    def picks(self) -> tuple[CatalogPick, ...]:
        return (self.chat,) if self.safety is None else (self.chat, self.safety)

    @property
    def size(self) -> int:
        return sum(pick.size for pick in self.picks)


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


def _fit(model: CatalogModel, context_length: int, hardware: HardwareProfile) -> FitEstimate:
    from bastion_desktop.core.hub.fit import estimate_fit, shape_from_facts

    shape = shape_from_facts(model.file_for().size, model.shape)
    return estimate_fit(shape, context_length, hardware)


def _best_chat(
    catalog: Catalog, context_length: int, hardware: HardwareProfile
) -> CatalogPick | None:
    """The largest catalog chat model that fits on the GPU, else mostly on it, else a
    small one for the CPU; None when nothing runs comfortably."""
    best: CatalogPick | None = None
    best_rank = (0, 0.0)
    for model in catalog.by_role("chat"):
        fit = _fit(model, context_length, hardware)
        rank = (_comfort(fit, model.parameters_b), model.parameters_b)
        if rank[0] and rank > best_rank:
            best, best_rank = CatalogPick.of(model, fit), rank
    return best


def _smallest_safety(
    catalog: Catalog, context_length: int, hardware: HardwareProfile
) -> CatalogPick | None:
    """The smallest catalog safety model (the one the guardrails' sentences suggest),
    if it runs comfortably here."""
    guards = sorted(catalog.by_role("safety"), key=lambda m: m.parameters_b)
    if not guards:
        return None
    fit = _fit(guards[0], context_length, hardware)
    return CatalogPick.of(guards[0], fit) if _comfort(fit, guards[0].parameters_b) else None


def _left_after(hardware: HardwareProfile, fit: FitEstimate) -> HardwareProfile:
    """The machine as a second model finds it, with a first one loaded as `fit` says
    (each model has its own host process, so its GPU reserve is its own too)."""
    gpus = []
    wanted = fit.gpu_bytes
    for gpu in hardware.gpus:
        free = gpu.free_bytes if gpu.free_bytes is not None else gpu.total_bytes
        if free is None or not wanted:
            gpus.append(gpu)
            continue
        taken = min(free, wanted)
        wanted -= taken
        gpus.append(dataclasses.replace(gpu, free_bytes=free - taken))

    def less(ram: int | None) -> int | None:
        return None if ram is None else max(0, ram - fit.ram_bytes)

    return dataclasses.replace(
        hardware,
        gpus=tuple(gpus),
        ram_total=less(hardware.ram_total),
        ram_available=less(hardware.ram_available),
    )


def suggest_catalog_models(context_length: int, *, with_safety: bool = True) -> Suggestion | None:
    """The catalog chat model that runs best here (slow: probes the hardware), and,
    with `with_safety`, the smallest safety model beside it. The safety model is placed
    first, since it checks every message and reply, and the chat model is chosen from
    what it leaves; where no chat model runs comfortably beside it, the chat model is
    offered alone. None when nothing runs comfortably."""
    from bastion_desktop.core.hub.catalog import load_catalog
    from bastion_desktop.core.hub.probe import probe_hardware

    hardware = probe_hardware()
    catalog = load_catalog()
    alone = _best_chat(catalog, context_length, hardware)
    if alone is None:
        return None
    safety = _smallest_safety(catalog, context_length, hardware) if with_safety else None
    if safety is not None and safety.fit is not None:
        beside = _best_chat(catalog, context_length, _left_after(hardware, safety.fit))
        if beside is not None:
            return Suggestion(beside, safety)
    return Suggestion(alone)


def _suggest_for(services: AppServices) -> Suggestion | None:
    """The suggestion for this machine, with a safety model unless one is installed.
    Blocking (reads the registry, probes the hardware)."""
    context = services.context
    has_safety = any(m.role == "safety" for m in context.registry.list())
    return suggest_catalog_models(
        context.settings.inference.context_length, with_safety=not has_safety
    )


STARTER_TEXT = (
    "You are chatting with the starter model, a tiny test model that runs anywhere "
    "but gives poor answers. A catalog model gives real ones."
)


class StarterNotice(QtWidgets.QFrame):
    """Shown while the starter model is chosen: it works, but it is a test model. Once
    the machine is probed it offers a catalog chat model that runs well here, and a
    safety model with it where both fit: one button downloads both."""

    open_models = Signal()
    download_requested = Signal(object)  # a tuple of CatalogPick

    def __init__(self, services: AppServices, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.services = services
        self.setObjectName("starterNotice")
        self.setAccessibleName("About the starter model")
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(12, 8, 12, 8)
        # The text with the buttons beside it, or under it where the window is narrow.
        self._body = QtWidgets.QBoxLayout(QtWidgets.QBoxLayout.Direction.LeftToRight)
        layout.addLayout(self._body, 1)
        self.text = QtWidgets.QLabel(self)
        self.text.setWordWrap(True)
        self.text.setText(STARTER_TEXT)
        self._body.addWidget(self.text, 1)
        self._buttons = QtWidgets.QHBoxLayout()
        self._body.addLayout(self._buttons)
        self.get_button = QtWidgets.QPushButton("Get a better model…", self)
        self.get_button.setObjectName("getModel")
        self.get_button.setAccessibleName("Get a better model")
        self.get_button.clicked.connect(self._get)
        self._buttons.addWidget(self.get_button)
        # Once a download is offered: the way to the whole catalog instead.
        self.other_button = QtWidgets.QPushButton("Other models…", self)
        self.other_button.setFlat(True)
        self.other_button.setAccessibleName("Choose another model")
        self.other_button.clicked.connect(self.open_models.emit)
        self.other_button.setVisible(False)
        self._buttons.addWidget(self.other_button)
        self._buttons.addStretch(1)
        self.dismiss_button = QtWidgets.QToolButton(self)
        self.dismiss_button.setText("✕")
        self.dismiss_button.setAutoRaise(True)
        self.dismiss_button.setAccessibleName("Hide this notice")
        self.dismiss_button.clicked.connect(self.hide)
        layout.addWidget(self.dismiss_button, 0, QtCore.Qt.AlignmentFlag.AlignTop)
        self.suggestion: Suggestion | None = None
        self.downloading = False

    # Narrower than this for the text, and the buttons go under it.
    TEXT_MIN_WIDTH = 360

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._arrange()

    def _arrange(self) -> None:
        beside = self.width() - self._buttons.sizeHint().width() >= self.TEXT_MIN_WIDTH + 80
        direction = QtWidgets.QBoxLayout.Direction
        wanted = direction.LeftToRight if beside else direction.TopToBottom
        if self._body.direction() != wanted:
            self._body.setDirection(wanted)

    def update_for(self, model_id: str | None) -> None:
        starter = (model_id or STARTER_ID) == STARTER_ID
        self.setVisible(starter)
        if starter and self.suggestion is None:

            async def suggest() -> Suggestion | None:
                # Off the loop that streams replies: the probe waits on its children.
                return await asyncio.to_thread(_suggest_for, self.services)

            call(self.services.engine, suggest(), self, self._suggested, self._no_suggestion)

    @property
    def offers_download(self) -> bool:
        """Whether the button downloads the suggestion (else it opens the models
        window): not when the administrator's policy allows no downloads."""
        return (
            self.suggestion is not None
            and not self.downloading
            and bool(self.services.context.policy.downloads_allowed)
        )

    def _suggested(self, suggestion: object) -> None:
        if not isinstance(suggestion, Suggestion) or self.downloading:
            return
        self.suggestion = suggestion
        chat, safety = suggestion.chat, suggestion.safety
        fit = f" {chat.fit.summary.rstrip('.')}." if chat.fit is not None else ""
        # Sizes in the units the models window shows the same downloads in.
        if safety is None:
            offer = f"Suggested for this machine: {chat.name} ({format_size(chat.size)} download)."
            names = chat.name
        else:
            offer = (
                f"Suggested for this machine: {chat.name} ({format_size(chat.size)}) and, "
                "to check content safety reliably, the safety model "
                f"{safety.name} ({format_size(safety.size)})."
            )
            names = f"{chat.name} and {safety.name}"
        self.text.setText(
            "You are chatting with the starter model, a tiny test model: its answers are "
            f"poor. {offer}{fit}"
        )
        if not self.offers_download:
            # The models window says why nothing can be downloaded.
            self.get_button.setText(f"Get {chat.name}…")
            self.get_button.setAccessibleName(f"Get {chat.name}")
            return
        both = "both" if safety is not None else chat.name
        self.get_button.setText(f"Download {both} ({format_size(suggestion.size)})")
        self.get_button.setAccessibleName(f"Download {names}")
        self.get_button.setToolTip(f"Download {names}; the Models window shows the progress.")
        self.other_button.setVisible(True)
        self._arrange()

    def _get(self) -> None:
        if not self.offers_download:
            self.open_models.emit()
            return
        assert self.suggestion is not None
        picks = self.suggestion.picks
        self.downloading = True
        self.text.setText(
            f"Downloading {' and '.join(p.name for p in picks)}: the Models window shows "
            f"the progress. When it is done, choose {self.suggestion.chat.name} in the "
            "Model list above."
        )
        self.get_button.setText("Show downloads…")
        self.get_button.setAccessibleName("Show the downloads")
        self.get_button.setToolTip("")
        self.other_button.setVisible(False)
        self.download_requested.emit(picks)

    def _no_suggestion(self, error: object) -> None:
        log.info("no catalog suggestion: %s", type(error).__name__)


def open_models_window(services: AppServices, parent: QtWidgets.QWidget) -> ModelsWindow:
    """The models window, as a window of its own that is deleted when closed."""
    from bastion_desktop.ui.models_window import ModelsWindow

    window = ModelsWindow(services, parent)
    window.setWindowFlag(QtCore.Qt.WindowType.Window, True)  # its own window, not a child
    window.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
    window.show()
    return window
