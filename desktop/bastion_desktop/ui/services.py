"""`AppServices`: what every window needs, handed to it in its constructor (never
reached through a global), the way Anki's `aqt` passes its collection around."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from typing import Any

from bastion_desktop.context import AppContext
from bastion_desktop.core.chat import ChatService
from bastion_desktop.core.conversation_store import InMemoryConversationStore
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import SamplingParams
from bastion_desktop.core.models import ChatModelSlot, keep_unloading_idle
from bastion_desktop.core.settings import Settings, save_settings
from bastion_desktop.ui.engine import Engine
from bastion_desktop.ui.local_api import LocalApiController
from bastion_desktop.ui.qt import QtCore, Signal

log = logging.getLogger(__name__)


class AppServices(QtCore.QObject):
    """The application's context, engine thread, opened history and chat service.

    `context` is replaced (not mutated: `AppContext` is frozen) when the settings
    change; the guardrail engine inside it is shared by every copy."""

    settings_changed = Signal(object)  # the new Settings
    profile_changed = Signal(str)  # the id of the profile new turns are checked with
    # A judge of content safety being tested on Bastion's calibration set before its
    # first check (name, items done, items in all); emitted from the engine thread.
    judge_progress = Signal(str, int, int)

    def __init__(
        self,
        *,
        context: AppContext,
        engine: Engine,
        store: EncryptedConversationStore | None,
        chat: ChatService | None,
        parent: QtCore.QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.context = context
        self.engine = engine
        self.store = store
        self.chat = chat
        # The local API server, off until the settings turn it on (`local_api.resume`).
        self.local_api = LocalApiController(self)
        self._opening = 0  # open_profile's calls, to know the last one asked for
        self._unloading: concurrent.futures.Future[None] | None = None

    @classmethod
    def assemble(
        cls, context: AppContext, engine: Engine, store: EncryptedConversationStore
    ) -> AppServices:
        """The stack as `bastion chat` builds it: a chat model slot with the load
        options from the settings, and the service over the opened history. The
        guardrail profile is opened later, off the GUI thread (`open_profile`)."""
        slot = ChatModelSlot(context.load_options())
        services = cls(context=context, engine=engine, store=store, chat=None)
        services.chat = ChatService(
            store, slot, services._resolve_model, audit=context.audit_log(), client="window"
        )
        if engine.running:
            services._unloading = engine.submit(keep_unloading_idle(services.unload_idle_models))
        return services

    async def unload_idle_models(self, now: float | None = None) -> list[ModelHost]:
        """Unload the models unused for as long as the settings in force say (on the
        engine loop; the window's chats and its local API share these models)."""
        assert self.chat is not None
        return await self.context.unload_idle_models(self.chat.models, now)

    def private_chat(self) -> ChatService:
        """A chat service over a fresh in-memory store, for a private chat: it shares
        the model slot with `chat` (one model loaded), and nothing it says reaches
        the history. Its guard is set from `chat` at each turn (ChatController)."""
        assert self.chat is not None
        private = ChatService(
            InMemoryConversationStore(),
            self.chat.models,
            self._resolve_model,
            audit=self.chat.audit,  # a private chat's decisions are recorded too, not its text
            client="window",
        )
        private.guard = self.chat.guard
        return private

    def _resolve_model(self, reference: str) -> Any:
        # Through the context, so the policy's AllowedModels holds in the window too.
        return self.context.resolve_model(reference)[1]

    @property
    def locked_settings(self) -> frozenset[str]:
        """Settings fields the administrator's policy locks (shown disabled)."""
        return self.context.policy.locked_settings()

    def sampling(self) -> SamplingParams:
        return self.context.sampling()

    def update_settings(self, new: Settings) -> None:
        """Save the settings and tell every window. Raises a BastionError (an unwritable
        file) with the old settings still in force."""
        save_settings(new, self.context.paths.settings_file)
        old = self.context.settings
        self.context = dataclasses.replace(self.context, settings=new)
        if new.inference != old.inference:
            # Another device, context length...: the models loaded now are loaded again
            # with them before their next request (never under one).
            options = self.context.load_options()
            if self.chat is not None:
                self.chat.models.options = options
            self.context.use_load_options(options)
        self.settings_changed.emit(new)

    async def open_profile(self, profile_id: str) -> str | None:
        """Check the next turns with `profile_id` (on the engine loop: the first build
        imports NeMo and compiles the profile, and may test a judge for minutes); None
        when another profile was asked for meanwhile: the last one asked for is the one
        in force, whichever open ends first. Raises the guardrail errors whose sentence
        tells the user why the profile cannot be used."""
        self._opening += 1
        mine = self._opening

        def progress(judge: str, done: int, total: int) -> None:
            if mine == self._opening:  # a profile no longer wanted shows no progress
                self.judge_progress.emit(judge, done, total)

        try:
            runtime = await self.context.open_guard(profile_id, progress=progress)
        except Exception:
            if mine != self._opening:
                return None  # a profile no longer wanted: its failure is nobody's concern
            raise
        if mine != self._opening:
            return None
        if self.chat is not None:
            self.chat.guard = runtime
        return runtime.profile_id

    def shut_down(self) -> None:
        """Stop the local API, unload the model, close the history and stop the engine
        thread. The server goes first: a request it is answering holds the model."""
        if self._unloading is not None:
            self._unloading.cancel()
        self.local_api.shut_down()
        if self.engine.running and self.chat is not None:
            try:
                self.engine.run(self.chat.models.close(), timeout=10)
            except Exception:  # a host that will not close is killed with the process
                log.warning("the chat model did not close cleanly", exc_info=True)
        if self.engine.running:
            try:
                self.engine.run(self.context.close_guard_models(), timeout=10)
            except Exception:
                log.warning("the safety model did not close cleanly", exc_info=True)
        self.engine.stop()
        if self.store is not None:
            self.store.close()
