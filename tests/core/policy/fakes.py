"""Stand-ins for the Windows registry and macOS preferences, which cannot exist on this
Linux machine. They hold plain dictionaries and fail loudly on anything unexpected."""

from __future__ import annotations

from typing import Any

from bastion_desktop.core.policy.windows import Hive, RegistryValue


class FakeRegistry:
    """Keys as {(hive, path): [(name, data, type), ...]}; a key mapped to an OSError
    exists but cannot be read."""

    def __init__(self, keys: dict[tuple[Hive, str], list[RegistryValue] | OSError]) -> None:
        self.keys = keys

    def read_values(self, hive: Hive, path: str) -> list[RegistryValue] | None:
        assert isinstance(hive, Hive), hive
        found = self.keys.get((hive, path))
        if isinstance(found, OSError):
            raise found
        return None if found is None else list(found)


class FakePreferences:
    """A preference domain: {key: (value, forced)}; a value that is an OSError raises."""

    def __init__(self, domain: str, values: dict[str, tuple[Any, bool]]) -> None:
        self.domain = domain
        self.values = values

    def copy_value(self, key: str, domain: str) -> Any:
        assert domain == self.domain, domain
        value = self.values.get(key, (None, False))[0]
        if isinstance(value, OSError):
            raise value
        return value

    def is_forced(self, key: str, domain: str) -> bool:
        assert domain == self.domain, domain
        assert key in self.values, f"asked whether an unset key is forced: {key}"
        return self.values[key][1]
