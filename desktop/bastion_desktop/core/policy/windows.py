"""Policy in the Windows registry, where Group Policy and Intune write it:

    HKLM\\SOFTWARE\\Policies\\Bastion               machine mandatory
    HKCU\\SOFTWARE\\Policies\\Bastion               user mandatory
    HKLM\\SOFTWARE\\Policies\\Bastion\\Recommended  machine recommended
    HKCU\\SOFTWARE\\Policies\\Bastion\\Recommended  user recommended

Only administrators can write under SOFTWARE\\Policies, in HKCU too. Booleans and
numbers are REG_DWORD (REG_QWORD is accepted), text is REG_SZ. A list is a REG_MULTI_SZ,
a REG_SZ holding a JSON list, or (what an ADMX list element writes) a subkey named after
the policy whose values are the entries; an embedded profile is a REG_SZ holding JSON.

The registry calls sit behind `RegistryBackend`, so the parsing and precedence are
tested on any OS with a backend that holds a dictionary.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol

from bastion_desktop.core.policy.schema import BY_NAME, PolicyType
from bastion_desktop.core.policy.sources import Level, PolicyProblem, PolicySource, unusable

POLICY_KEY = "SOFTWARE\\Policies\\Bastion"
RECOMMENDED_SUBKEY = "Recommended"

REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_MULTI_SZ = 7
REG_QWORD = 11
_TEXT = (REG_SZ, REG_EXPAND_SZ)
_NUMBER = (REG_DWORD, REG_QWORD)
_NOT_CONVERTED = object()


class Hive(StrEnum):
    MACHINE = "HKLM"
    USER = "HKCU"


RegistryValue = tuple[str, Any, int]  # (name, data, REG_* type), as winreg.EnumValue gives


class RegistryBackend(Protocol):
    def read_values(self, hive: Hive, path: str) -> list[RegistryValue] | None:
        """The values of a key; None if the key does not exist. Raises OSError if the
        key exists but cannot be read."""


class WinregBackend:
    """The real registry, through the standard library's `winreg`."""

    def read_values(self, hive: Hive, path: str) -> list[RegistryValue] | None:
        if sys.platform != "win32":
            raise OSError("the Windows registry exists only on Windows")
        import winreg

        root = winreg.HKEY_LOCAL_MACHINE if hive is Hive.MACHINE else winreg.HKEY_CURRENT_USER
        try:
            key = winreg.OpenKey(root, path, 0, winreg.KEY_READ | winreg.KEY_WOW64_64KEY)
        except FileNotFoundError:
            return None
        values: list[RegistryValue] = []
        with key:
            index = 0
            while True:
                try:
                    values.append(winreg.EnumValue(key, index))
                except OSError:  # ERROR_NO_MORE_ITEMS
                    return values
                index += 1


def _from_json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} holds text that is not valid JSON ({error.msg})") from None
    except RecursionError:
        raise ValueError(f"{name} holds JSON nested too deeply to be read") from None


def convert(name: str, data: Any, kind: int) -> Any:
    """A registry value as the plain value the schema checks. ValueError when the
    registry type cannot hold this policy."""
    policy = BY_NAME.get(name)
    if policy is None:
        return data  # unknown: the merge reports it
    text = str(data).strip() if kind in _TEXT else None
    converted: Any = _NOT_CONVERTED
    if policy.type in (PolicyType.BOOLEAN, PolicyType.INTEGER):
        if kind in _NUMBER:
            converted = data
        elif text is not None:
            converted = _from_json(text, name)
    elif policy.type is PolicyType.STRING:
        converted = data if text is not None else _NOT_CONVERTED
    elif policy.type is PolicyType.STRING_LIST:
        if kind == REG_MULTI_SZ:
            converted = [entry for entry in data if entry]
        elif text is not None:
            converted = _from_json(text, name)
    elif text is not None:  # a profile: an id or path, or an embedded profile as JSON
        converted = _from_json(text, name) if text.startswith("{") else text
    if converted is _NOT_CONVERTED:
        raise ValueError(f"{name} has a registry type ({_type_name(kind)}) that cannot hold it")
    return converted


def _type_name(kind: int) -> str:
    names = {REG_SZ: "REG_SZ", REG_EXPAND_SZ: "REG_EXPAND_SZ", REG_DWORD: "REG_DWORD"}
    names |= {REG_MULTI_SZ: "REG_MULTI_SZ", REG_QWORD: "REG_QWORD"}
    return names.get(kind, f"type {kind}")


def _list_entries(values: list[RegistryValue]) -> list[Any]:
    """An ADMX list: values named 1, 2, 3 ... in a subkey, in number order."""

    def order(value: RegistryValue) -> tuple[int, str]:
        return (int(value[0]), "") if value[0].isdigit() else (sys.maxsize, value[0])

    return [data for _name, data, kind in sorted(values, key=order) if kind in _TEXT and data]


class WindowsPolicyReader:
    def __init__(self, backend: RegistryBackend | None = None) -> None:
        self.backend: RegistryBackend = backend or WinregBackend()

    def read(self) -> Sequence[PolicySource]:
        recommended = f"{POLICY_KEY}\\{RECOMMENDED_SUBKEY}"
        keys = (
            (Hive.MACHINE, POLICY_KEY, Level.MACHINE_MANDATORY),
            (Hive.USER, POLICY_KEY, Level.USER_MANDATORY),
            (Hive.MACHINE, recommended, Level.MACHINE_RECOMMENDED),
            (Hive.USER, recommended, Level.USER_RECOMMENDED),
        )
        sources = []
        for hive, path, level in keys:
            source = self._read_key(hive, path, level)
            if source is not None:
                sources.append(source)
        return sources

    def _read_key(self, hive: Hive, path: str, level: Level) -> PolicySource | None:
        location = f"{hive.value}\\{path}"
        try:
            found = self.backend.read_values(hive, path)
            if found is None:
                return None
            lists = {}
            for policy in BY_NAME.values():
                if policy.type is PolicyType.STRING_LIST:
                    entries = self.backend.read_values(hive, f"{path}\\{policy.name}")
                    if entries is not None:
                        lists[policy.name] = _list_entries(entries)
        except OSError as error:
            return unusable(location, level, f"cannot be read ({error.strerror or error})")
        values: dict[str, Any] = dict(lists)
        problems = []
        for name, data, kind in found:
            if not name:  # the key's (Default) value
                continue
            try:
                values[name] = convert(name, data, kind)
            except ValueError as error:
                sentence = f"{location}: {error}; it was not applied."
                problems.append(PolicyProblem(sentence, level.mandatory))
        return PolicySource(location, level, values, tuple(problems))
