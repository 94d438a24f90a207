"""From the sources the readers found to the effective policy.

Every value is checked against the schema here, whatever OS it came from. What happens
to a bad one depends on its level:

- in a mandatory source, a value that does not validate, a source that cannot be read
  or is not admin-owned, or a locked profile that does not load or does not match its
  pinned hash fails closed: the Strict profile is locked, Off and user profiles are
  refused, and a banner says so. Bastion cannot know what the administrator meant, so
  it never guesses a weaker setting;
- in a recommended source, the bad value is skipped and reported;
- a name that is not a policy is reported and skipped without failing closed, so a
  template from a newer Bastion does not lock an older one on Strict. `bastion policy
  check` treats it as an error, so a typo is caught before it is deployed.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion_desktop.core.policy.effective import (
    FAIL_CLOSED_SOURCE,
    EffectivePolicy,
    LockedProfile,
    PolicyEntry,
)
from bastion_desktop.core.policy.schema import (
    BY_NAME,
    PolicyType,
    PolicyValueError,
    check_value,
    is_profile_path,
)
from bastion_desktop.core.policy.sources import MERGE_ORDER, Level, PolicyProblem, PolicySource
from bastion_guardrails.bundle import ProfileBundle, ProfileOrigin
from bastion_guardrails.library import (
    BUILTIN_IDS,
    STRICTEST_BUILTIN_ID,
    ProfileLibrary,
    check_profile,
)
from bastion_guardrails.problems import ProfileError
from bastion_guardrails.profile import Profile, load_profile

log = logging.getLogger(__name__)


class _LockFailure(Exception):
    """The locked profile cannot be used; `str()` is the sentence."""


def _checked(source: PolicySource, name: str, raw: Any) -> tuple[Any, PolicyProblem | None]:
    policy = BY_NAME.get(name)
    level = source.level
    if policy is None:
        close = difflib.get_close_matches(name, BY_NAME, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        # A name Bastion does not know in a mandatory source is a mandate it cannot
        # honour (a typo for OfflineMode means the admin wanted it): fail closed.
        what = "it was not applied" if level.mandatory else "it was ignored"
        sentence = f"{source.location}: {name} is not a Bastion policy{hint}; {what}."
        return None, PolicyProblem(sentence, fails_closed=level.mandatory)
    if level.recommended and not policy.recommendable:
        sentence = (
            f"{source.location}: {name} can only be set as mandatory, not as a "
            "recommendation; it was ignored."
        )
        return None, PolicyProblem(sentence, fails_closed=False)
    try:
        value = check_value(policy, raw)
    except PolicyValueError as error:
        sentence = f"{source.location}: {name} {error}; it was not applied."
        return None, PolicyProblem(sentence, fails_closed=level.mandatory)
    by_path_or_embedded = not isinstance(value, str) or is_profile_path(value)
    if policy.type is PolicyType.PROFILE and level.recommended and by_path_or_embedded:
        sentence = (
            f"{source.location}: {name} as a recommendation must be a profile id; a "
            "profile given by path or embedded can only be mandatory. It was ignored."
        )
        return None, PolicyProblem(sentence, fails_closed=False)
    return value, None


def _load_admin_profile(value: str | dict[str, Any], location: str) -> Profile:
    if isinstance(value, str):
        path = Path(value)
        if not path.exists():
            raise _LockFailure(f"GuardrailProfile names {path}, which does not exist")
        return check_profile(path, ProfileOrigin.ADMIN)
    files = {name: text.encode("utf-8") for name, text in value["files"].items()}
    bundle = ProfileBundle(f"the profile embedded in {location}", ProfileOrigin.ADMIN, files)
    return load_profile(bundle)


def _resolve_locked(entry: PolicyEntry, pin: str | None) -> LockedProfile:
    value = entry.value
    if isinstance(value, str) and not is_profile_path(value):
        if value in BUILTIN_IDS and pin:
            actual = ProfileLibrary().builtin(value).content_hash
            if actual != pin:
                raise _LockFailure(
                    f"GuardrailProfile is the built-in profile '{value}', whose sha256 is "
                    f"{actual}, but GuardrailProfileSha256 pins {pin}"
                )
        return LockedProfile(value, pin)
    if isinstance(value, str) and not pin:
        raise _LockFailure(
            f"GuardrailProfile names the file {value}, but GuardrailProfileSha256 is not "
            "set: a profile given by path must be pinned by its hash"
        )
    try:
        profile = _load_admin_profile(value, entry.source)
    except ProfileError as error:
        reasons = "; ".join(str(problem) for problem in error.problems)
        raise _LockFailure(f"GuardrailProfile: {error.source} is not valid ({reasons})") from None
    except OSError as error:
        raise _LockFailure(f"GuardrailProfile: {value} cannot be read ({error})") from None
    if pin and profile.content_hash != pin:
        raise _LockFailure(
            f"GuardrailProfile: {profile.bundle.source} has sha256 {profile.content_hash}, "
            f"but GuardrailProfileSha256 pins {pin}"
        )
    if profile.id in BUILTIN_IDS:
        raise _LockFailure(
            f"GuardrailProfile: {profile.bundle.source} has the id of a built-in profile "
            f"('{profile.id}'); an administrator's profile needs an id of its own"
        )
    return LockedProfile(profile.id, profile.content_hash, profile)


def _fail_closed(chosen: dict[str, PolicyEntry]) -> LockedProfile:
    forced: dict[str, Any] = {
        "GuardrailProfile": STRICTEST_BUILTIN_ID,
        "AllowedGuardrailProfiles": (STRICTEST_BUILTIN_ID,),
        "AllowUserGuardrailProfiles": False,
        "DisableGuardrailsAllowed": False,
    }
    for name, value in forced.items():
        chosen[name] = PolicyEntry(name, value, FAIL_CLOSED_SOURCE, Level.FAIL_CLOSED)
    chosen.pop("GuardrailProfileSha256", None)
    return LockedProfile(STRICTEST_BUILTIN_ID, None)


def merge_sources(sources: Sequence[PolicySource]) -> EffectivePolicy:
    """The effective policy: for each policy, the value from the strongest level; within
    a level, from the last source that sets it (Linux files in name order)."""
    problems: list[PolicyProblem] = []
    chosen: dict[str, PolicyEntry] = {}
    for level in MERGE_ORDER:
        for source in (s for s in sources if s.level is level):
            problems += source.problems
            for name, raw in source.values.items():
                value, problem = _checked(source, name, raw)
                if problem is not None:
                    problems.append(problem)
                    continue
                chosen[name] = PolicyEntry(name, value, source.location, level)
    locked: LockedProfile | None = None
    profile = chosen.get("GuardrailProfile")
    pin = chosen.get("GuardrailProfileSha256")
    if profile is not None and profile.level.mandatory:
        try:
            locked = _resolve_locked(profile, pin.value if pin else None)
        except _LockFailure as failure:
            problems.append(PolicyProblem(f"{profile.source}: {failure}.", fails_closed=True))
    elif pin is not None:
        sentence = (
            f"{pin.source}: GuardrailProfileSha256 is set, but no mandatory GuardrailProfile "
            "is: it pins nothing."
        )
        problems.append(PolicyProblem(sentence, fails_closed=False))
    if any(problem.fails_closed for problem in problems):
        locked = _fail_closed(chosen)
        log.warning(
            "policy: failing closed on the %s profile: %s",
            STRICTEST_BUILTIN_ID,
            " ".join(p.sentence for p in problems if p.fails_closed),
        )
    for problem in problems:
        if not problem.fails_closed:
            log.warning("policy: %s", problem.sentence)
    return EffectivePolicy(chosen, problems, locked)
