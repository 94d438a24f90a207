"""The policy in force, as the rest of Bastion asks about it: a value per policy with the
place it came from, which settings are locked, which profile a chat may use, which
models may run.

Precedence: machine mandatory > user mandatory > the user's own settings >
recommended > defaults. A mandatory value locks the setting it governs; a recommended
value only fills in a setting the user has not set.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.policy.schema import AUDIT_TO_SYSTEM, BY_NAME, POLICIES, SHA256
from bastion_desktop.core.policy.sources import Level, PolicyProblem
from bastion_desktop.core.settings import Settings
from bastion_guardrails.library import (
    BUILTIN_IDS,
    DEFAULT_PROFILE_ID,
    STRICTEST_BUILTIN_ID,
    ProfileLibrary,
)
from bastion_guardrails.profile import Profile

OFF_PROFILE_ID = "off"
DEFAULT_SOURCE = "default"
FAIL_CLOSED_SOURCE = "Bastion: a mandatory policy source could not be applied"
BANNER = (
    "Bastion could not apply your organization's policy, so it uses the Strict guardrail "
    "profile. Ask your administrator to check the policy (`bastion policy show` lists the "
    "problems)."
)


class PolicyRefusedError(BastionError):
    """Something the administrator's policy does not allow; `str()` says what."""


@dataclass(frozen=True)
class PolicyEntry:
    name: str
    value: Any
    source: str  # registry key, preference domain, file path, or "default"
    level: Level


@dataclass(frozen=True)
class LockedProfile:
    """The profile a mandatory GuardrailProfile names: an id (a built-in, or a profile
    the library holds) or an administrator's profile loaded from a path or the policy."""

    profile_id: str
    sha256: str | None  # the pin, if any
    profile: Profile | None = None


@dataclass(frozen=True)
class ProfileChoice:
    profile_id: str
    notice: str | None = None  # what to tell the user when the choice is not theirs
    profile: Profile | None = None  # an admin profile the library does not hold


@functools.cache
def builtin_hashes() -> tuple[tuple[str, str], ...]:
    """(id, content sha256) of each built-in profile."""
    library = ProfileLibrary()
    return tuple((i, library.builtin(i).content_hash) for i in BUILTIN_IDS)


class EffectivePolicy:
    def __init__(
        self,
        chosen: Mapping[str, PolicyEntry] | None = None,
        problems: Sequence[PolicyProblem] = (),
        locked_profile: LockedProfile | None = None,
    ) -> None:
        self._chosen = dict(chosen or {})
        self.problems = tuple(problems)
        self._locked_profile = locked_profile

    # -- reading values ----------------------------------------------------------------

    @property
    def failed_closed(self) -> bool:
        return any(problem.fails_closed for problem in self.problems)

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(problem.sentence for problem in self.problems)

    @property
    def banner(self) -> str | None:
        return BANNER if self.failed_closed else None

    def entry(self, name: str) -> PolicyEntry:
        if name in self._chosen:
            return self._chosen[name]
        return PolicyEntry(name, BY_NAME[name].default, DEFAULT_SOURCE, Level.DEFAULT)

    def value(self, name: str) -> Any:
        return self.entry(name).value

    def is_locked(self, name: str) -> bool:
        return self.entry(name).level.mandatory

    def entries(self) -> list[PolicyEntry]:
        """Every policy, in schema order, with its value and where it came from."""
        return [self.entry(policy.name) for policy in POLICIES]

    def locked_settings(self) -> frozenset[str]:
        """The Settings fields the user cannot change ("Managed by your organization")."""
        return frozenset(
            policy.settings_field
            for policy in POLICIES
            if policy.settings_field and self.is_locked(policy.name)
        )

    @property
    def downloads_allowed(self) -> bool:
        return bool(self.value("AllowModelDownloads")) and not self.offline_mode

    @property
    def offline_mode(self) -> bool:
        return bool(self.value("OfflineMode"))

    @property
    def export_allowed(self) -> bool:
        return bool(self.value("AllowConversationExport"))

    @property
    def ephemeral_allowed(self) -> bool:
        return bool(self.value("AllowEphemeralChats"))

    @property
    def user_profiles_allowed(self) -> bool:
        return bool(self.value("AllowUserGuardrailProfiles"))

    @property
    def safety_model(self) -> str | None:
        value = self.value("SafetyModel")
        return str(value) if value is not None else None

    @property
    def locked_profile(self) -> str | None:
        """The id of the profile the policy locks (Strict when failing closed), if any."""
        return self._locked_id() if self._locked_profile is not None else None

    @property
    def locked_profile_spec(self) -> LockedProfile | None:
        return self._locked_profile

    # -- models --------------------------------------------------------------------------

    def model_allowed(self, repo: str | None, sha256: str | None) -> bool:
        """Whether AllowedModels lets this model run or download: by Hub repository
        (wildcards allowed, case-insensitive as the Hub is) or by the file's sha256."""
        allowed = self.value("AllowedModels")
        if allowed is None:
            return True
        for entry in allowed:
            if SHA256.match(entry):
                if sha256 and sha256.lower() == entry:
                    return True
            elif repo and fnmatch.fnmatchcase(repo.casefold(), entry.casefold()):
                return True
        return False

    def require_network(self) -> None:
        """Raise PolicyRefusedError in offline mode (Hub search, file listings)."""
        if self.offline_mode:
            raise PolicyRefusedError(
                "Your organization has turned on offline mode: Bastion does not use the "
                "network, so the Hub cannot be searched or downloaded from."
            )

    def require_downloads(self) -> None:
        """Raise PolicyRefusedError unless model downloads are allowed at all."""
        self.require_network()
        if not self.value("AllowModelDownloads"):
            raise PolicyRefusedError("Your organization does not allow model downloads.")

    def require_download(self, repo: str, sha256s: Sequence[str | None]) -> None:
        """Raise PolicyRefusedError unless downloading these files (their Hub sha256s,
        one per part) from `repo` is allowed."""
        self.require_downloads()
        if not all(self.model_allowed(repo, sha256) for sha256 in sha256s):
            raise PolicyRefusedError(
                f"Your organization does not allow the model {repo}; ask your administrator "
                "to add it to AllowedModels."
            )

    def require_model(self, name: str, repo: str | None, sha256: str | None) -> None:
        """Raise PolicyRefusedError unless this model may run."""
        if not self.model_allowed(repo, sha256):
            raise PolicyRefusedError(
                f"Your organization does not allow the model {name}; ask your administrator "
                "to add it to AllowedModels."
            )

    def require_export(self) -> None:
        if not self.export_allowed:
            raise PolicyRefusedError(
                "Your organization does not allow exporting conversations; nothing was written."
            )

    def require_ephemeral(self) -> None:
        if not self.ephemeral_allowed:
            raise PolicyRefusedError(
                "Your organization does not allow ephemeral chats: conversations are kept in "
                "the history. Start the chat without --ephemeral."
            )

    # -- the local API ---------------------------------------------------------------------

    @property
    def local_api_allowed(self) -> bool:
        """A policy that could not be read forbids the API too: it fails closed."""
        return bool(self.value("AllowLocalApi")) and not self.failed_closed

    @property
    def local_api_profile(self) -> str | None:
        """The profile every API request must use, when the administrator set one."""
        value = self.value("LocalApiProfile")
        return str(value) if value is not None else None

    @property
    def local_api_origins(self) -> tuple[str, ...] | None:
        """The administrator's allowed web origins, replacing the user's; None if unset."""
        value = self.value("LocalApiAllowedOrigins")
        return tuple(value) if value is not None else None

    @property
    def audit_log(self) -> str | None:
        """Where guardrail decisions are recorded: "system", a folder, or None (off)."""
        value = self.value("GuardrailAuditLog")
        return str(value) if value is not None else None

    @property
    def audit_notice(self) -> str | None:
        """The sentence that tells the user decisions are recorded, when they are."""
        where = self.audit_log
        if where is None:
            return None
        place = "the system log" if where == AUDIT_TO_SYSTEM else where
        return (
            f"Your organization records what the guardrails decide (never what is said) in {place}."
        )

    def require_local_api(self) -> None:
        if self.failed_closed:
            raise PolicyRefusedError(
                "Bastion could not apply your organization's policy, so its local API stays "
                "off. Ask your administrator to check the policy (`bastion policy show`)."
            )
        if not self.local_api_allowed:
            raise PolicyRefusedError(
                "Your organization does not allow Bastion's local API (AllowLocalApi): the "
                "server was not started."
            )

    # -- guardrail profiles ----------------------------------------------------------------

    def require_user_profiles(self) -> None:
        """Raise PolicyRefusedError unless the user may install their own profiles."""
        if not self.user_profiles_allowed:
            raise PolicyRefusedError(
                "Your organization does not allow importing guardrail profiles; nothing was "
                "installed. Use a built-in profile or one your administrator provides."
            )

    def profile_allowed(self, profile_id: str, sha256: str | None) -> bool:
        """Whether a user may choose this profile (the locked profile aside)."""
        if profile_id == OFF_PROFILE_ID and not self.value("DisableGuardrailsAllowed"):
            return False
        if profile_id not in BUILTIN_IDS and not self.user_profiles_allowed:
            return False
        allowed = self.value("AllowedGuardrailProfiles")
        if allowed is None:
            return True
        return profile_id in allowed or (sha256 is not None and sha256.lower() in allowed)

    def choose_profile(
        self, requested_id: str, available: Sequence[tuple[str, str | None]]
    ) -> ProfileChoice:
        """The profile a chat uses when `requested_id` is asked for (by the settings or a
        `--profile` flag). `available` lists the installed profiles as (id, sha256).
        A locked profile wins over any request; a disallowed request is moved to an
        allowed profile, and the notice says so."""
        hashes = dict(available)
        if self._locked_profile is not None:
            return self._locked_choice(requested_id, hashes)
        if requested_id not in hashes or self.profile_allowed(requested_id, hashes[requested_id]):
            # A profile that is not installed is not a policy matter: the engine says so.
            return ProfileChoice(requested_id)
        recommended = self.entry("GuardrailProfile")
        candidates = [recommended.value] if recommended.level.recommended else []
        candidates += [DEFAULT_PROFILE_ID, *(self.value("AllowedGuardrailProfiles") or ())]
        candidates += [profile_id for profile_id, _ in available]
        for candidate in candidates:
            if candidate in hashes and self.profile_allowed(candidate, hashes[candidate]):
                return ProfileChoice(candidate, _moved(requested_id, candidate))
        # Nothing allowed is installed: the strictest built-in, never a weaker one.
        return ProfileChoice(STRICTEST_BUILTIN_ID, _moved(requested_id, STRICTEST_BUILTIN_ID))

    def _locked_choice(self, requested_id: str, hashes: dict[str, str | None]) -> ProfileChoice:
        locked = self._locked_profile
        assert locked is not None
        if self.failed_closed:
            notice = None if requested_id == locked.profile_id else BANNER
            return ProfileChoice(locked.profile_id, notice)
        if locked.profile is not None:
            chosen_id = locked.profile.id
        else:
            chosen_id = locked.profile_id
            if chosen_id not in hashes:
                return ProfileChoice(
                    STRICTEST_BUILTIN_ID,
                    f"The guardrail profile '{chosen_id}' your organization requires is not "
                    "installed, so Bastion uses the Strict profile.",
                )
            if locked.sha256 and hashes[chosen_id] != locked.sha256:
                return ProfileChoice(
                    STRICTEST_BUILTIN_ID,
                    f"The installed guardrail profile '{chosen_id}' is not the version your "
                    "organization pinned (its sha256 differs), so Bastion uses the Strict "
                    "profile.",
                )
        notice = None
        if requested_id != chosen_id:
            notice = (
                f"Your organization has set the guardrail profile to '{chosen_id}'; "
                f"'{requested_id}' cannot be used."
            )
        return ProfileChoice(chosen_id, notice, locked.profile)

    # -- settings ---------------------------------------------------------------------------

    def _builtins(self) -> tuple[tuple[str, str | None], ...]:
        """The built-in profiles for `choose_profile`. Hashes matter only to an
        allow-list, which may name them: without one the built-ins are not loaded to
        hash them (50 ms at every start)."""
        if self.value("AllowedGuardrailProfiles") is not None:
            return builtin_hashes()
        return tuple((profile_id, None) for profile_id in BUILTIN_IDS)

    def apply_to_settings(self, settings: Settings) -> tuple[Settings, list[str]]:
        """The settings with locked values forced on and recommendations filling in what
        the user has not set, and the notices to show the user."""
        updates: dict[str, Any] = {}
        notices: list[str] = []
        user_set = settings.model_fields_set
        profile = self.entry("GuardrailProfile")
        if self._locked_profile is not None:
            locked_id = self._locked_id()
            if settings.guard_profile != locked_id:
                updates["guard_profile"] = locked_id
                if "guard_profile" in user_set:
                    notices.append(
                        f"Your organization manages the guardrail profile: Bastion uses "
                        f"'{locked_id}', not '{settings.guard_profile}'."
                    )
        else:
            current = settings.guard_profile
            if profile.level.recommended and "guard_profile" not in user_set:
                current = updates["guard_profile"] = profile.value
            # User profiles' hashes are known only to the library: choose_profile decides
            # for them when a chat opens. Built-ins are decided here.
            if current in BUILTIN_IDS or not self.user_profiles_allowed:
                choice = self.choose_profile(current, [*self._builtins(), (current, None)])
                if choice.profile_id != current:
                    updates["guard_profile"] = choice.profile_id
                    if choice.notice:
                        notices.append(choice.notice)
        updates.update(self._field_updates(settings, _TOP_LEVEL_FIELDS, notices))
        inference = self._field_updates(settings.inference, _INFERENCE_FIELDS, notices)
        if inference:
            updates["inference"] = settings.inference.model_copy(update=inference)
        if not updates:
            return settings, notices
        return settings.model_copy(update=updates), notices

    def _field_updates(
        self, values: BaseModel, fields: tuple[tuple[str, str, str], ...], notices: list[str]
    ) -> dict[str, Any]:
        """Locked or recommended values for plain policy-backed fields of `values` (a
        settings section): (policy, field, the notice when a user's value is overridden)."""
        updates: dict[str, Any] = {}
        user_set = values.model_fields_set
        for name, field, notice in fields:
            entry = self.entry(name)
            if entry.level.mandatory and getattr(values, field) != entry.value:
                updates[field] = entry.value
                if field in user_set:
                    notices.append(notice.format(value=entry.value))
            elif entry.level.recommended and field not in user_set:
                updates[field] = entry.value
        return updates

    def _locked_id(self) -> str:
        locked = self._locked_profile
        assert locked is not None
        return locked.profile.id if locked.profile is not None else locked.profile_id


_TOP_LEVEL_FIELDS = (
    (
        "ConversationRetentionDays",
        "retention_days",
        "Your organization keeps conversations for {value} days; this setting is managed.",
    ),
)
_INFERENCE_FIELDS = (
    (
        "ComputeDevice",
        "device",
        "Your organization sets the compute device to '{value}'; this setting is managed.",
    ),
    (
        "CpuCompatibilityMode",
        "cpu_compatibility",
        "Your organization manages the CPU compatibility mode; this setting is managed.",
    ),
    (
        "UnloadIdleModelsMinutes",
        "unload_after_minutes",
        "Your organization sets how long an unused model stays loaded; this setting is managed.",
    ),
)


def _moved(requested: str, chosen: str) -> str:
    return (
        f"Your organization does not allow the guardrail profile '{requested}'; "
        f"Bastion uses '{chosen}' instead."
    )
