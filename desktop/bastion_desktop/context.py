"""What every entry point sets up before doing anything: the private environment,
the folders, logging, settings and the model registry."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bastion_desktop.core.audit import AuditLog, audit_log_for
from bastion_desktop.core.errors import GuardProfileError
from bastion_desktop.core.history.database import damage_marker
from bastion_desktop.core.history.encrypted_store import EncryptedConversationStore
from bastion_desktop.core.history.errors import WrongKeyError
from bastion_desktop.core.history.keys import (
    HistoryKey,
    HistoryKeys,
    KeySource,
    PassphrasePrompt,
)
from bastion_desktop.core.history.repair import RepairResult, repair_history, require_history
from bastion_desktop.core.hub.online import set_network_policy
from bastion_desktop.core.inference.host import ModelHost
from bastion_desktop.core.inference.types import LoadOptions, SamplingParams
from bastion_desktop.core.installed_models import ModelRegistry
from bastion_desktop.core.logs import configure_logging
from bastion_desktop.core.models import ChatModelSlot, unload_idle
from bastion_desktop.core.paths import AppPaths
from bastion_desktop.core.policy import EffectivePolicy, ProfileChoice, load_policy
from bastion_desktop.core.privacy import apply_private_environment
from bastion_desktop.core.safety import GuardModels
from bastion_desktop.core.settings import Settings, load_settings
from bastion_desktop.core.starter import STARTER_ID, ensure_starter_model, sha256_of
from bastion_guardrails.engine import GuardEngine, ProfileUnavailableError
from bastion_guardrails.explain import ProfileStatus, profile_status
from bastion_guardrails.library import ProfileLibrary
from bastion_guardrails.models import SAFETY_ROLE, ModelSet
from bastion_guardrails.plan import plan_profile
from bastion_guardrails.problems import ProfileError, ProfileNotFoundError
from bastion_guardrails.runtime import GuardProfileRuntime

log = logging.getLogger(__name__)

T = TypeVar("T")

HISTORY_FILE = "history.db"
HISTORY_KEY_RECORD = "history-key.json"
PROFILES_FOLDER = "profiles"
# Each content-safety judge's calibration, by model file (scores, never chat text).
JUDGE_CALIBRATIONS_FILE = "judge-calibrations.json"
# The local API's client tokens, as hashes.
API_TOKENS_FILE = "api-tokens.json"


_HASHES: dict[tuple[Path, int, int, int], str] = {}
_HASHES_LOCK = threading.Lock()


def _file_sha256(path: Path) -> str:
    """A model file's sha256, computed once while the file is unchanged: AllowedModels
    checks the file of every turn, and hashing gigabytes each time stalled every turn."""
    stat = path.stat()
    key = (path.resolve(), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with _HASHES_LOCK:
        known = _HASHES.get(key)
    if known is None:
        known = sha256_of(path)
        with _HASHES_LOCK:
            _HASHES[key] = known
    return known


@dataclass(frozen=True)
class AppContext:
    paths: AppPaths
    settings: Settings
    registry: ModelRegistry
    # The administrator's policy; contexts built directly (tests) get the defaults.
    policy: EffectivePolicy = field(default_factory=EffectivePolicy, compare=False)
    # What the policy changed in the user's settings, to tell them.
    policy_notices: tuple[str, ...] = ()
    _guard_engines: list[GuardEngine] = field(default_factory=list, repr=False, compare=False)
    _guard_models: list[GuardModels] = field(default_factory=list, repr=False, compare=False)
    _audit: list[AuditLog | None] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def start(cls) -> AppContext:
        apply_private_environment()
        paths = AppPaths.discover()
        paths.ensure()
        configure_logging(paths.log_file)
        settings = load_settings(paths.settings_file)
        policy = load_policy()
        set_network_policy(policy)  # OfflineMode closes the Hub's door for every caller
        # Locked values override the settings file; recommendations fill in the rest.
        settings, notices = policy.apply_to_settings(settings)
        for notice in notices:
            log.info("policy: %s", notice)
        registry = ModelRegistry(paths.registry_file)
        return cls(paths, settings, registry, policy, tuple(notices))

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir or self.paths.models

    def ensure_starter(self) -> None:
        ensure_starter_model(self.models_dir, self.registry)

    def resolve_model(self, reference: str | None) -> tuple[str, Path]:
        """The model to chat with: the one named, else the default, else the starter."""
        chosen = reference or self.settings.default_model or STARTER_ID
        if chosen == STARTER_ID:
            self.ensure_starter()
        model_id, path = self.registry.resolve(chosen)
        if self.policy.value("AllowedModels") is not None:
            # AllowedModels also decides what runs, not only what downloads.
            model = self.registry.get(model_id)
            if model is not None:
                self.policy.require_model(model.name, model.repo, model.sha256)
            else:
                self.policy.require_model(path.name, None, _file_sha256(path))
        return model_id, path

    def load_options(self) -> LoadOptions:
        inference = self.settings.inference
        return LoadOptions(
            inference.context_length,
            inference.gpu_layers,
            inference.threads,
            device=inference.device,
            cpu_compatibility=inference.cpu_compatibility,
        )

    def sampling(self) -> SamplingParams:
        s = self.settings.sampling
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            min_p=s.min_p,
            repeat_penalty=s.repeat_penalty,
            seed=s.seed,
            max_tokens=s.max_tokens,
        )

    # -- guardrails ------------------------------------------------------------------

    @property
    def profiles_dir(self) -> Path:
        """Where imported guardrail profiles are kept."""
        return self.paths.data / PROFILES_FOLDER

    def profile_library(self) -> ProfileLibrary:
        return ProfileLibrary(user_dir=self.profiles_dir)

    def guard_engine(self) -> GuardEngine:
        """The one guardrail engine of this process (it caches each compiled profile)."""
        if not self._guard_engines:
            self._guard_engines.append(GuardEngine(self.profile_library()))
        return self._guard_engines[0]

    def guard_models(self) -> GuardModels:
        """The safety model (or the chat model checking itself) of this process, with
        its model hosts; `close_guard_models` stops them."""
        if not self._guard_models:
            wanted = self.policy.safety_model
            self._guard_models.append(
                GuardModels(
                    self.registry,
                    self.load_options(),
                    wanted=wanted,
                    calibrations=self.paths.data / JUDGE_CALIBRATIONS_FILE,
                )
            )
        return self._guard_models[0]

    def model_set(self, chat_model_id: str | None = None) -> ModelSet:
        """The models the guardrail profiles' rails may use: the installed safety model,
        else the chat model (`chat_model_id`, default the settings' model) checking
        itself when it is instruction-tuned."""
        return self.guard_models().model_set(chat_model_id or self.settings.default_model)

    def use_load_options(self, options: LoadOptions) -> None:
        """Hand changed load options to the safety model's hosts, if any was made."""
        if self._guard_models:
            self._guard_models[0].use_options(options)

    async def unload_idle_models(
        self, slot: ChatModelSlot, now: float | None = None
    ) -> list[ModelHost]:
        """Unload the chat model in `slot` and the judges' models when they have done
        nothing for the settings' `unload_after_minutes` (as of `now`, a monotonic
        reading); returns the hosts stopped."""
        hosts = [slot.host] if slot.host is not None else []
        hosts += self._guard_models[0].hosts if self._guard_models else []
        return await unload_idle(hosts, self.settings.inference.unload_after_minutes * 60, now)

    async def close_guard_models(self) -> None:
        if self._guard_models:
            await self._guard_models[0].aclose()

    async def open_guard(
        self,
        profile_id: str | None = None,
        chat_model_id: str | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        *,
        choice: ProfileChoice | None = None,
    ) -> GuardProfileRuntime:
        """The runtime of the profile named, else the one in the settings. Raises
        `ProfileUnavailableError` (its `status.sentence` says why) when the profile
        requires a model that is not installed, `ProfileError` when it does not load.
        `choice`, when given, is the profile already chosen under the policy (the local
        API's own LocalApiProfile is not the chat's choice).

        A judge of content safety not yet calibrated is calibrated first (once per
        model file; `progress(judge, done, total)`), so the runtime uses only a judge
        that qualified."""
        if choice is None:
            choice = await asyncio.to_thread(self.guard_choice, profile_id)  # reads profiles
        if await asyncio.to_thread(self._uses_a_judge, choice):  # reads the profile
            chat = chat_model_id or self.settings.default_model
            await self.guard_models().prepare(chat, progress)
        try:
            if choice.profile is not None:  # an administrator's profile from the policy
                engine, profile = self.guard_engine(), choice.profile
                models = self.model_set(chat_model_id)
                return await asyncio.to_thread(engine.runtime_for, profile, models)
            return await self.guard_engine().open(choice.profile_id, self.model_set(chat_model_id))
        except ProfileUnavailableError as error:
            raise GuardProfileError(error.status.sentence) from error
        except (ProfileNotFoundError, ProfileError) as error:
            raise GuardProfileError(str(error)) from error

    def _uses_a_judge(self, choice: ProfileChoice) -> bool:
        """Whether the profile chosen checks content safety (Off does not): only then is
        a judge calibrated, and its model host loaded."""
        profile = choice.profile
        if profile is None:
            try:
                profile = self.profile_library().get(choice.profile_id)
            except (ProfileNotFoundError, ProfileError):
                return False  # opening it says what is wrong
        return SAFETY_ROLE in profile.manifest.model_roles

    def guard_choice(self, profile_id: str | None = None) -> ProfileChoice:
        """The profile a chat uses when `profile_id` (else the settings' profile) is asked
        for: the policy's locked profile wins over any request, a profile the policy does
        not allow is moved to one it does, and `notice` says so."""
        requested = profile_id or self.settings.guard_profile
        available = [
            (entry.id, entry.profile.content_hash)
            for entry in self.profile_library().entries()
            if entry.profile is not None
        ]
        choice = self.policy.choose_profile(requested, available)
        if choice.notice:
            log.info("policy: %s", choice.notice)
        return choice

    def guard_status(
        self, profile_id: str | None = None, chat_model_id: str | None = None
    ) -> ProfileStatus:
        """Which checks the profile runs with the models installed, and a sentence
        saying so (and what to download for the rest)."""
        choice = self.guard_choice(profile_id)
        try:
            if choice.profile is not None:
                return profile_status(plan_profile(choice.profile, self.model_set(chat_model_id)))
            return self.guard_engine().status(choice.profile_id, self.model_set(chat_model_id))
        except (ProfileNotFoundError, ProfileError) as error:
            raise GuardProfileError(str(error)) from error

    # -- the audit log ----------------------------------------------------------------

    def audit_log(self) -> AuditLog | None:
        """The audit log the policy's GuardrailAuditLog names, or None (off)."""
        if not self._audit:
            self._audit.append(audit_log_for(self.policy.audit_log))
        return self._audit[0]

    # -- the local API ----------------------------------------------------------------

    @property
    def api_tokens_file(self) -> Path:
        return self.paths.data / API_TOKENS_FILE

    def api_origins(self) -> tuple[str, ...]:
        """The web origins allowed to call the local API: the administrator's list,
        else the user's."""
        chosen = self.policy.local_api_origins
        if chosen is None:
            chosen = self.settings.api.allowed_origins
        return tuple(origin.strip().lower() for origin in chosen)

    # -- the conversation history ----------------------------------------------------

    @property
    def history_file(self) -> Path:
        return self.paths.data / HISTORY_FILE

    def history_keys(self, prompt: PassphrasePrompt | None) -> HistoryKeys:
        return HistoryKeys(self.paths.data / HISTORY_KEY_RECORD, prompt)

    def open_history(self, prompt: PassphrasePrompt | None) -> EncryptedConversationStore:
        """Open the encrypted history, creating it (and its key) on first use. A file that
        exists is only ever opened, never replaced."""
        keys = self.history_keys(prompt)
        if not keys.exists() and not self.history_file.exists():
            created = keys.create()
            log.info("created the history key (%s)", created.source.value)
            return EncryptedConversationStore.open(self.history_file, created.key)
        store = self._with_history_key(
            keys, lambda key: EncryptedConversationStore.open(self.history_file, key)
        )
        if store.interrupted_on_open:
            log.info(
                "%d replies left streaming by a crash marked interrupted",
                store.interrupted_on_open,
            )
        return store

    def history_damage_noted(self) -> bool:
        """Whether damage was met in the history since it was last repaired."""
        return damage_marker(self.history_file).exists()

    def repair_history(self, prompt: PassphrasePrompt | None) -> RepairResult:
        """Rebuild a damaged history from what can still be read (`repair_history`)."""
        require_history(self.history_file)
        return self._with_history_key(
            self.history_keys(prompt), lambda key: repair_history(self.history_file, key)
        )

    def _with_history_key(self, keys: HistoryKeys, use: Callable[[bytes], T]) -> T:
        """`use` with the history's key: the current one, else the one a change that was
        cut short left pending. A key that does not fit is passed over."""
        # Without the record, candidates() says the key's whereabouts are unknown.
        wrong: WrongKeyError | None = None
        for candidate in keys.candidates():
            try:
                result = use(candidate.key)
            except WrongKeyError as error:
                wrong = error
                if candidate.source is KeySource.PASSPHRASE:
                    wrong = WrongKeyError(
                        "That passphrase does not unlock your conversation history. Try again; "
                        "the history was left as it was."
                    )
                continue
            keys.settle(candidate)
            return result
        assert wrong is not None
        raise wrong

    async def sweep_history(self, store: EncryptedConversationStore) -> int:
        """Apply the retention setting: delete conversations idle for longer."""
        days = self.settings.retention_days
        if days is None:
            return 0
        deleted = await store.delete_older_than(days)
        if deleted:
            log.info("retention: deleted %d conversations idle over %d days", deleted, days)
        return deleted

    async def rekey_history(
        self, store: EncryptedConversationStore, keys: HistoryKeys, to: KeySource
    ) -> HistoryKey:
        """Move the history to a new key (a new passphrase, or the keychain) in place."""
        new = keys.begin_change(to)
        try:
            await store.rekey(new.key)
        except BaseException:
            keys.abandon_change(new)
            raise
        keys.finish_change(new)
        return new
