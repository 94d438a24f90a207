"""Policy files in /etc: `managed/*.json` (mandatory) and `recommended/*.json`.

Files are applied in name order, a later file winning per key, so a fleet tool can drop
`10-base.json` and `50-lab.json` side by side. A file counts only if it, and every
folder above it, belongs to root and cannot be written by group or others: otherwise
someone other than an administrator could have written it. A folder that others may
write but that has the sticky bit (/tmp) is accepted as an ancestor, because the
sticky bit stops them renaming or deleting what they do not own.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion_desktop.core.policy.sources import Level, PolicySource, unusable

ETC_ROOT = Path("/etc/bastion/policies")
MANAGED = "managed"
RECOMMENDED = "recommended"


def _untrusted_reason(path: Path, info: os.stat_result) -> str | None:
    kind = "folder" if stat.S_ISDIR(info.st_mode) else "file"
    if info.st_uid != 0:
        return f"is not admin-owned: the {kind} {path} belongs to user id {info.st_uid}, not root"
    writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    sticky_dir = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
    if writable and not sticky_dir:
        return (
            f"is not admin-owned: the {kind} {path} can be written by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o})"
        )
    return None


def untrusted_reason(path: Path) -> str | None:
    """Why `path` (after following links) cannot be trusted as written by an
    administrator, or None if it and every folder above it are root's alone."""
    real = Path(os.path.realpath(path))
    for part in [real, *real.parents]:
        reason = _untrusted_reason(part, part.stat())
        if reason:
            return reason
    return None


class LinuxPolicyReader:
    """Reads `<root>/managed` and `<root>/recommended`. The app reads /etc/bastion/policies;
    tests pass a folder of their own. There is deliberately no environment variable
    for the root: a user could point it at an empty folder."""

    def __init__(self, root: Path = ETC_ROOT) -> None:
        self.root = root

    def read(self) -> Sequence[PolicySource]:
        sources: list[PolicySource] = []
        for name, level in (
            (MANAGED, Level.MACHINE_MANDATORY),
            (RECOMMENDED, Level.MACHINE_RECOMMENDED),
        ):
            sources += self._read_folder(self.root / name, level)
        return sources

    def _read_folder(self, folder: Path, level: Level) -> list[PolicySource]:
        try:
            if not folder.is_dir():
                return (
                    [] if not folder.exists() else [unusable(str(folder), level, "is not a folder")]
                )
            reason = untrusted_reason(folder)
            if reason:
                return [unusable(str(folder), level, reason)]
            files = sorted(p for p in folder.iterdir() if p.name.endswith(".json"))
        except OSError as error:
            return [unusable(str(folder), level, f"cannot be read ({error.strerror or error})")]
        return [self._read_file(path, level) for path in files]

    def _read_file(self, path: Path, level: Level) -> PolicySource:
        location = str(path)
        try:
            reason = untrusted_reason(path)
            if reason:
                return unusable(location, level, reason)
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            return unusable(location, level, "is not UTF-8 text")
        except OSError as error:
            return unusable(location, level, f"cannot be read ({error.strerror or error})")
        return parse_policy_json(text, location, level)


def parse_policy_json(text: str, location: str, level: Level) -> PolicySource:
    """One JSON policy file: an object of policy names to values."""
    try:
        data = json.loads(text, object_pairs_hook=_once_each)
    except json.JSONDecodeError as error:
        why = f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        return unusable(location, level, why)
    except _Twice as error:  # which of the two an administrator meant is not for us to guess
        return unusable(location, level, f"names {error.args[0]} twice")
    except RecursionError:
        return unusable(location, level, "is nested too deeply to be read")
    if not isinstance(data, dict):
        return unusable(location, level, "must hold a JSON object of policy names to values")
    return PolicySource(location, level, data)


class _Twice(ValueError):
    pass


def _once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise _Twice(name)
        seen[name] = value
    return seen
