"""The main window: history on the left; the model and guardrail pickers, the
conversation and the composer on the right; menus and shortcuts for the rest.

It is built in two steps, so that it paints before anything heavy is imported: the
window itself with its menus (`MainWindow()`, from light modules only), then its
contents once the application has started (`attach(services)`: the history, the chat
service and the widgets over them). `MainWindow(services)` does both at once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from bastion_desktop.core.errors import BastionError
from bastion_desktop.ui.qt import QtCore, QtGui, QtWidgets, Signal

if TYPE_CHECKING:
    from bastion_desktop.core.conversation_store import Conversation
    from bastion_desktop.ui.chat_controller import ChatController, LoadedConversation
    from bastion_desktop.ui.chat_view import ChatView
    from bastion_desktop.ui.composer import Composer
    from bastion_desktop.ui.conversations import ConversationSidebar
    from bastion_desktop.ui.first_run import CatalogPick, StarterNotice
    from bastion_desktop.ui.models_window import ModelsWindow
    from bastion_desktop.ui.services import AppServices
    from bastion_desktop.ui.top_bar import TopBar
    from bastion_desktop.ui.window_state import WindowState

log = logging.getLogger(__name__)

DEFAULT_SIZE = (1180, 780)
SIDEBAR_WIDTH = 260  # the conversation list, until the user drags the splitter
MIN_SIDEBAR_WIDTH = 160

PRIVATE_TEXT = (
    "Private: not saved. This chat is kept in memory only; it is gone when you start "
    "another chat or close Bastion."
)


def window_sentence(policy_sentence: str) -> str:
    """The policy's refusal without its advice for the command line (a flag to drop),
    which means nothing in the window: its first sentence."""
    first, dot, _rest = policy_sentence.partition(". ")
    return first + "." if dot else policy_sentence


class MainWindow(QtWidgets.QMainWindow):
    ready = Signal()  # the guardrail profile is open: messages can be sent
    profile_failed = Signal(str)

    services: AppServices
    controller: ChatController
    sidebar: ConversationSidebar
    top_bar: TopBar
    starter_notice: StarterNotice
    chat_view: ChatView
    composer: Composer

    def __init__(
        self, services: AppServices | None = None, parent: QtWidgets.QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.attached = False
        self.profile_ready = False
        self._warmed_up = False
        self.secondary: dict[str, QtWidgets.QWidget] = {}
        self.setObjectName("mainWindow")
        self.setWindowTitle("Bastion")
        self.setAccessibleName("Bastion")
        self.resize(*DEFAULT_SIZE)
        self.setMinimumSize(720, 480)
        self._sidebar_width = SIDEBAR_WIDTH
        self._actions: list[QtGui.QAction] = []
        self._build_menus()
        self.setCentralWidget(self._opening())
        if services is not None:
            self.attach(services)

    def _opening(self) -> QtWidgets.QWidget:
        """What the window shows from its first paint until `attach`: its two panes,
        empty, and a line saying what is happening."""
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal, self)
        splitter.setObjectName("opening")
        side = QtWidgets.QWidget(splitter)
        side.setObjectName("sidebar")
        label = QtWidgets.QLabel("Opening Bastion…", splitter)
        label.setObjectName("placeholder")
        label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        splitter.addWidget(side)
        splitter.addWidget(label)
        splitter.setStretchFactor(1, 1)
        self._size_panes(splitter)
        return splitter

    def _size_panes(self, splitter: QtWidgets.QSplitter) -> None:
        # The chat pane takes whatever the window gains or loses; the list keeps its width.
        sidebar = max(MIN_SIDEBAR_WIDTH, min(self._sidebar_width, self.width() // 2))
        splitter.setSizes([sidebar, max(1, self.width() - sidebar)])

    def restore(self, state: WindowState | None) -> None:
        """Size and place the window as it was when it last closed (before `show`)."""
        if state is None:
            return
        if not self.restoreGeometry(QtCore.QByteArray(state.geometry)):
            log.info("the window's saved size and place did not apply; the default is used")
            return
        self._sidebar_width = state.sidebar
        central = self.centralWidget()
        if isinstance(central, QtWidgets.QSplitter):
            self._size_panes(central)

    def state(self) -> WindowState:
        """What `restore` takes back next time."""
        from bastion_desktop.ui.window_state import WindowState

        central = self.centralWidget()
        if isinstance(central, QtWidgets.QSplitter) and central.sizes()[0] > 0:
            self._sidebar_width = central.sizes()[0]
        return WindowState(bytes(self.saveGeometry().data()), self._sidebar_width)

    def attach(self, services: AppServices) -> None:
        """Build the window's contents over the started application."""
        from bastion_desktop.ui.chat_controller import ChatController
        from bastion_desktop.ui.chat_view import ChatView
        from bastion_desktop.ui.composer import Composer
        from bastion_desktop.ui.conversations import ConversationSidebar
        from bastion_desktop.ui.first_run import StarterNotice
        from bastion_desktop.ui.top_bar import TopBar

        self.services = services
        self.controller = ChatController(services, self)
        self.sidebar = ConversationSidebar(services, self)
        self.top_bar = TopBar(services, self)
        self.starter_notice = StarterNotice(services, self)
        self.policy_banner = self._policy_banner()
        self.audit_notice = self._audit_notice()
        self.private_banner = self._private_banner()
        self.chat_view = ChatView(self.controller, self)
        self.chat_view.model_names = self._model_names
        self.chat_view.profile_names = self.top_bar.profile_name
        self.composer = Composer(self)
        self._placeholder = self.composer.text.placeholderText()

        right = QtWidgets.QWidget(self)
        right.setObjectName("chatPane")
        column = QtWidgets.QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.top_bar)
        column.addWidget(self.private_banner)
        column.addWidget(self.policy_banner)
        column.addWidget(self.audit_notice)
        column.addWidget(self.starter_notice)
        column.addWidget(self.chat_view, 1)
        column.addWidget(self.composer)
        self.splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setChildrenCollapsible(False)
        self._size_panes(self.splitter)
        self.setCentralWidget(self.splitter)  # the opening panes go
        self._wire()
        # Focus order: search, list, pickers, conversation, message box.
        QtWidgets.QWidget.setTabOrder(self.sidebar.new_button, self.sidebar.search)
        QtWidgets.QWidget.setTabOrder(self.sidebar.search, self.sidebar.view)
        QtWidgets.QWidget.setTabOrder(self.sidebar.view, self.top_bar.model_box)
        QtWidgets.QWidget.setTabOrder(self.top_bar.model_box, self.top_bar.profile_box)
        QtWidgets.QWidget.setTabOrder(self.top_bar.profile_box, self.top_bar.status_button)
        QtWidgets.QWidget.setTabOrder(self.top_bar.status_button, self.composer.text)
        QtWidgets.QWidget.setTabOrder(self.composer.text, self.composer.send_button)
        self.composer.send_button.setEnabled(False)
        self.attached = True
        for action in self._actions:
            action.setEnabled(True)

    # -- building ------------------------------------------------------------------------

    def _policy_banner(self) -> QtWidgets.QLabel:
        """What the administrator's policy did: the fail-closed banner (a policy that
        could not be read put Bastion on its strictest profile) and the settings it
        changed. Hidden when there is nothing to say."""
        policy = self.services.context.policy
        lines = [policy.banner] if policy.banner else []
        lines += list(self.services.context.policy_notices)
        banner = QtWidgets.QLabel("\n".join(lines), self)
        banner.setObjectName("policyBanner")
        banner.setProperty("failedClosed", bool(policy.banner))
        banner.setWordWrap(True)
        banner.setAccessibleName("Policy notice")
        banner.setVisible(bool(lines))
        return banner

    def _audit_notice(self) -> QtWidgets.QLabel:
        """Says, for as long as the window is open, that the administrator's policy
        records what the guardrails decide (GuardrailAuditLog). Hidden when it does not."""
        notice = self.services.context.policy.audit_notice
        label = QtWidgets.QLabel(notice or "", self)
        label.setObjectName("auditNotice")
        label.setWordWrap(True)
        label.setAccessibleName("Guardrail decisions are recorded")
        label.setVisible(notice is not None)
        return label

    def _private_banner(self) -> QtWidgets.QLabel:
        """Says, for as long as a private chat is shown, that nothing of it is saved."""
        banner = QtWidgets.QLabel(PRIVATE_TEXT, self)
        banner.setObjectName("privateBanner")
        banner.setWordWrap(True)
        banner.setAccessibleName("Private chat")
        banner.setVisible(False)
        return banner

    def _action(
        self, menu: QtWidgets.QMenu, text: str, slot: Any, shortcut: Any = None
    ) -> QtGui.QAction:
        action = QtGui.QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QtGui.QKeySequence(shortcut))
            action.setShortcutContext(QtCore.Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(slot)
        action.setEnabled(False)  # until the window has its contents (`attach`)
        menu.addAction(action)
        self.addAction(action)  # shortcuts work with the menu bar hidden too
        self._actions.append(action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.new_chat_action = self._action(
            file_menu, "&New chat", self.new_chat, QtGui.QKeySequence.StandardKey.New
        )
        self.private_chat_action = self._action(
            file_menu, "New &private chat", self.new_private_chat, "Ctrl+Shift+N"
        )
        self.private_chat_action.setToolTip(
            "A chat kept in memory only: nothing of it is saved in your history."
        )
        self.attach_action = self._action(
            file_menu, "&Attach files…", self._attach_files, QtGui.QKeySequence.StandardKey.Open
        )
        file_menu.addSeparator()
        self._action(
            file_menu, "&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit
        ).setEnabled(True)
        edit_menu = bar.addMenu("&Edit")
        self.find_action = self._action(
            edit_menu, "&Search conversations", self._focus_search, "Ctrl+F"
        )
        self.stop_action = self._action(edit_menu, "S&top reply", self._stop, "Esc")
        edit_menu.addSeparator()
        self.settings_action = self._action(edit_menu, "S&ettings…", self.open_settings, "Ctrl+,")
        tools = bar.addMenu("&Tools")
        self.models_action = self._action(tools, "&Models…", self.open_models, "Ctrl+M")
        self.profiles_action = self._action(
            tools, "Guardrail &profiles…", self.open_profiles, "Ctrl+P"
        )
        self.server_action = self._action(tools, "Local API &server…", self.open_server)
        self.server_action.setToolTip(
            "Let other programs on this computer use your models through the guardrails."
        )
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&About Bastion", self._about).setEnabled(True)

    # The menus exist before the contents do: their slots look the contents up.
    def _focus_search(self) -> None:
        self.sidebar.focus_search()

    def _stop(self) -> None:
        self.controller.stop()

    def _attach_files(self) -> None:
        self.composer.choose_files()

    def _wire(self) -> None:
        c = self.controller
        self.sidebar.open_requested.connect(c.open)
        self.sidebar.new_chat_requested.connect(self.new_chat)
        self.sidebar.deleted.connect(self._deleted)
        self.sidebar.error.connect(self.show_error)
        self.sidebar.exported.connect(
            lambda path: self.chat_view.show_notice(f"Exported to {path}.")
        )
        c.conversations_changed.connect(self.sidebar.refresh)
        c.busy_changed.connect(self._busy)
        c.loaded.connect(self._loaded)
        c.conversation_changed.connect(self._conversation_changed)
        c.model_set.connect(self._conversation_model_set)
        self.composer.send_requested.connect(self.send)
        self.composer.edit_requested.connect(c.edit_and_resend)
        self.composer.stop_requested.connect(c.stop)
        self.composer.attach_failed.connect(self.show_error)
        self.chat_view.edit_requested.connect(self.composer.begin_edit)
        self.chat_view.context_used.connect(self.composer.show_context)
        self.top_bar.error.connect(self.show_error)
        self.top_bar.model_changed.connect(self._model_changed)
        self.top_bar.profile_changed.connect(self._profile_changed)
        self.top_bar.profile_opening.connect(self._profile_opening)
        self.top_bar.profile_error.connect(self._profile_error)
        self.top_bar.download_requested.connect(self.download_from_catalog)
        self.top_bar.profiles_requested.connect(self.open_profiles)
        # Queued to the GUI thread: the engine thread emits it while a judge is tested.
        self.services.judge_progress.connect(self.top_bar.show_judge_progress)
        self.starter_notice.open_models.connect(self.open_models)
        self.starter_notice.download_requested.connect(self.download_from_catalog)
        self.services.settings_changed.connect(self._settings_changed)

    def _settings_changed(self, _settings: object) -> None:
        self.top_bar.fill_models()
        if self.controller.conversation_id is None and self.profile_ready:
            # The chat shown is a new one, nothing sent yet: it takes the profile the
            # settings now name for new chats.
            self.top_bar.use_profile_for_new_chats()

    # -- starting ------------------------------------------------------------------------

    def start(self) -> None:
        """Fill the lists and open the guardrail profile (off the GUI thread); `ready`
        follows. Until then nothing can be sent: a profile that cannot run must never
        leave the chat silently unchecked."""
        from bastion_desktop.ui.engine import call

        self.sidebar.refresh()
        self.top_bar.refresh()
        self.starter_notice.update_for(self.services.context.settings.default_model)
        self.controller.new_chat()
        profile_id = self.services.context.settings.guard_profile
        self.top_bar.show_opening()
        call(
            self.services.engine,
            self.services.open_profile(profile_id),
            self,
            on_result=self._first_profile_open,
            on_error=self._profile_error,
        )
        self.composer.text.setFocus()

    def _first_profile_open(self, opened: object) -> None:
        if opened is None:  # another profile was chosen meanwhile: its open ends the wait
            return
        self._profile_open()
        # Opening calibrates a judge not calibrated before: the status says how it did.
        self.top_bar.refresh_profiles()

    def _profile_open(self) -> None:
        from bastion_desktop.ui import markdown
        from bastion_desktop.ui.chat_view import SHOWN_AT_ONCE
        from bastion_desktop.ui.engine import call

        if not self._warmed_up:  # once, when the engine thread has opened the profile
            self._warmed_up = True
            # Then spare message widgets, once the warm-up's imports no longer hold the
            # interpreter (each step of building them would wait for it).
            call(
                self.services.engine,
                markdown.warm_up(),
                self,
                on_result=lambda _r: self.chat_view.prepare_spares(SHOWN_AT_ONCE // 2),
            )
        self.profile_ready = True
        self.composer.send_button.setEnabled(True)
        self.top_bar.opening_ended()
        self.ready.emit()

    def _profile_error(self, error: object) -> None:
        from bastion_desktop.ui.errors import sentence_for

        sentence = sentence_for(error, "Opening the guardrail profile")
        self.top_bar.opening_ended()
        self.profile_ready = False
        self.composer.send_button.setEnabled(False)
        self.show_error(sentence + " Choose another guardrail profile to chat.")
        self.profile_failed.emit(sentence)

    def _profile_opening(self, _profile_id: str) -> None:
        # The profile the picker shows checks the next message, never the one before it.
        self.profile_ready = False
        self.composer.send_button.setEnabled(False)

    def _profile_changed(self, _profile_id: str) -> None:
        self._profile_open()
        self.chat_view.show_notice("")

    # -- actions -------------------------------------------------------------------------

    def new_chat(self) -> None:
        if self.controller.busy:
            return
        self.composer.cancel_edit()
        self.controller.new_chat()
        self.sidebar.select(None)
        self.top_bar.use_profile_for_new_chats()
        self.composer.text.setFocus()

    def new_private_chat(self) -> bool:
        """A chat kept in memory only, if the administrator's policy allows it."""
        if self.controller.busy:
            return False
        if not self.services.context.policy.ephemeral_allowed:
            try:
                self.services.context.policy.require_ephemeral()
            except BastionError as refused:
                self.show_error(window_sentence(str(refused)))
            return False
        self.composer.cancel_edit()
        self.controller.new_chat(private=True)
        self.sidebar.select(None)
        self.top_bar.use_profile_for_new_chats()
        self.composer.text.setFocus()
        return True

    def send(self, text: str) -> bool:
        """What the composer's Enter does (also for tests and automation)."""
        if not self.profile_ready:
            return False
        return self.controller.send(text)

    def _busy(self, busy: bool) -> None:
        self.composer.set_busy(busy)
        self.new_chat_action.setEnabled(not busy)
        self.private_chat_action.setEnabled(not busy)
        self.sidebar.view.setEnabled(not busy)
        self.top_bar.setEnabled(not busy)

    def _loaded(self, loaded: LoadedConversation | None) -> None:
        from bastion_desktop.core.starter import STARTER_ID

        private = self.controller.private
        self.private_banner.setVisible(private)
        self.composer.text.setPlaceholderText(
            "Private message, not saved  (Enter sends, Shift+Enter adds a line)"
            if private
            else self._placeholder
        )
        self._show_context(loaded)
        if loaded is None:
            self.setWindowTitle("Private chat — Bastion" if private else "Bastion")
            self.top_bar.show_conversation_model(None)
            self.chat_view.model_name = self._model_name(
                self.services.context.settings.default_model or STARTER_ID
            )
            return
        self._conversation_changed(loaded.conversation)

    def _conversation_changed(self, conversation: Conversation) -> None:
        """The conversation shown, opened or created and named by a turn."""
        self.top_bar.show_conversation_model(conversation.model_id)
        self.starter_notice.update_for(conversation.model_id)
        self.sidebar.select(conversation.id)
        private_mark = "Private: " if self.controller.private else ""
        self.setWindowTitle(f"{private_mark}{conversation.title} — Bastion")

    def _show_context(self, loaded: LoadedConversation | None) -> None:
        """The context the conversation filled at its last reply, against the window the
        next turn will have (the setting every model loads with)."""
        for message in reversed(loaded.messages if loaded is not None else []):
            if message.stats is not None:
                used = message.stats.prompt_tokens + message.stats.generated_tokens
                window = self.services.context.load_options().context_length
                self.composer.show_context(used, window)
                return
        self.composer.show_context(0, 0)

    def _model_names(self) -> dict[str, str]:
        from bastion_desktop.core.starter import STARTER_ID, STARTER_NAME

        # One read of the registry (a file) per opened conversation, not one per reply.
        names = {model.id: model.name for model in self.services.context.registry.list()}
        names.setdefault(STARTER_ID, STARTER_NAME)
        return names

    def _model_name(self, model_id: str) -> str:
        from bastion_desktop.core.starter import STARTER_ID, STARTER_NAME

        model = self.services.context.registry.get(model_id)
        if model is not None:
            return model.name
        # The starter is registered when it first loads: its name is known before.
        return STARTER_NAME if model_id == STARTER_ID else model_id

    def _model_changed(self, model_id: str) -> None:
        """The picked model answers from now on: in the open conversation (its earlier
        replies keep the model that wrote them) and in new chats."""
        self.starter_notice.update_for(model_id)
        self.chat_view.model_name = self._model_name(model_id)
        self.controller.set_model(model_id)

    def _conversation_model_set(self, model_id: str) -> None:
        self.chat_view.show_notice(
            f"{self._model_name(model_id)} answers from now on in this conversation; "
            "earlier replies keep the model that wrote them."
        )

    def _deleted(self, conversation_id: str) -> None:
        if conversation_id == self.controller.conversation_id:
            self.controller.new_chat()

    def show_error(self, sentence: str) -> None:
        self.chat_view.show_notice(sentence)

    def _open_secondary(
        self, key: str, make: Callable[[AppServices, QtWidgets.QWidget], QtWidgets.QWidget]
    ) -> QtWidgets.QWidget:
        """The window `key`, brought to the front, or made by `make` (imported when first
        opened: the main window paints without them)."""
        existing = self.secondary.get(key)
        if existing is not None:
            existing.show()
            existing.raise_()
            existing.activateWindow()
            return existing
        window = make(self.services, self)
        # A window of its own (owned by this one, closed with it), not a child drawn
        # over the chat.
        window.setWindowFlag(QtCore.Qt.WindowType.Window, True)
        self.secondary[key] = window
        window.destroyed.connect(lambda _o=None, k=key: self.secondary.pop(k, None))
        window.show()
        return window

    def open_models(self) -> ModelsWindow:
        from bastion_desktop.ui.first_run import open_models_window

        if "models" in self.secondary:
            return cast("ModelsWindow", self._open_secondary("models", open_models_window))
        window = open_models_window(self.services, self)
        # A model downloaded or imported there is offered in the picker at once, and a
        # safety model is put to work (the profile opens again with it).
        window.installed_changed.connect(self.top_bar.fill_models)
        window.installed_changed.connect(self.top_bar.models_installed)
        self.secondary["models"] = window
        window.destroyed.connect(lambda _o=None: self.secondary.pop("models", None))
        return window

    def download_from_catalog(self, picks: tuple[CatalogPick, ...]) -> None:
        """Download catalog models (the first run's suggestion, the safety model the
        guardrail status asks for) the way the models window does, where the user sees
        their progress and can pause or cancel them."""
        window = self.open_models()
        for pick in picks:
            window.start_download(pick.repo, pick.file, pick.role)

    def open_profiles(self) -> None:
        from bastion_desktop.ui.profiles_window import ProfilesWindow

        self._open_secondary("profiles", ProfilesWindow)

    def open_server(self) -> None:
        from bastion_desktop.ui.server_window import ServerWindow

        self._open_secondary("server", ServerWindow)

    def open_settings(self) -> None:
        from bastion_desktop.ui.settings_dialog import SettingsDialog

        self._open_secondary("settings", SettingsDialog)

    def _about(self) -> None:
        from bastion_desktop import __version__

        QtWidgets.QMessageBox.about(
            self,
            "About Bastion",
            f"Bastion {__version__}\nPrivate chat with local models, with guardrails built in.",
        )

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        # A reply still streaming is stopped; what it wrote is saved by the service.
        if self.attached:
            self.controller.stop()
        for window in list(self.secondary.values()):
            window.close()
        super().closeEvent(event)
