"""What the per-OS readers hand to the merge: policy values as read from one place (a
registry key, a preference domain, a file), with the level that place has and the
problems found while reading it. Values are plain Python (bool, int, str, list, dict)
and not yet validated: the merge checks every value against the schema the same way,
whatever OS it came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Level(StrEnum):
    """Where a value stands. Listed from the strongest to the weakest; the user's own
    settings sit between the mandatory and the recommended levels."""

    FAIL_CLOSED = "fail closed"  # forced by Bastion because a mandatory source was bad
    MACHINE_MANDATORY = "machine mandatory"
    USER_MANDATORY = "user mandatory"
    MACHINE_RECOMMENDED = "machine recommended"
    USER_RECOMMENDED = "user recommended"
    DEFAULT = "default"

    @property
    def mandatory(self) -> bool:
        return self in (Level.FAIL_CLOSED, Level.MACHINE_MANDATORY, Level.USER_MANDATORY)

    @property
    def recommended(self) -> bool:
        return self in (Level.MACHINE_RECOMMENDED, Level.USER_RECOMMENDED)


# The order the merge applies levels in: weakest first, so that stronger ones win.
MERGE_ORDER = (
    Level.USER_RECOMMENDED,
    Level.MACHINE_RECOMMENDED,
    Level.USER_MANDATORY,
    Level.MACHINE_MANDATORY,
)


@dataclass(frozen=True)
class PolicyProblem:
    """A sentence for `bastion policy show` and the log. `fails_closed` when the problem
    is in a mandatory source: Bastion cannot know what the administrator meant, so it
    takes the strictest profile rather than a weaker one."""

    sentence: str
    fails_closed: bool


@dataclass(frozen=True)
class PolicySource:
    location: str  # a registry key, a preference domain or a file path, as shown to admins
    level: Level
    values: dict[str, Any] = field(default_factory=dict)
    problems: tuple[PolicyProblem, ...] = ()


class PolicyReader(Protocol):
    """Reads one OS's policy channel. Never raises for a bad source: it returns the
    source with a problem instead."""

    def read(self) -> Sequence[PolicySource]: ...


def unusable(location: str, level: Level, why: str) -> PolicySource:
    """A source that exists but cannot be used at all (unreadable, not admin-owned)."""
    sentence = f"{location} {why}; none of its policies were applied."
    return PolicySource(location, level, {}, (PolicyProblem(sentence, level.mandatory),))
