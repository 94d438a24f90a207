"""Policy in the app's macOS preference domain, where an MDM `.mobileconfig` puts it.

Only a value that `CFPreferencesAppValueIsForced` reports as forced (a managed
preference installed by an MDM profile) is mandatory. Any other value in the domain
could have been written by the user (`defaults write`), so it is at most a
recommendation, never a lock.

The CoreFoundation calls sit behind `PreferencesBackend`; `CoreFoundationBackend` makes
them with ctypes and turns each value into Python through an XML property list, so that
only three CoreFoundation functions touch values and `plistlib` does the rest.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import plistlib
from collections.abc import Sequence
from typing import Any, Protocol

from bastion_desktop.core.policy.schema import POLICIES
from bastion_desktop.core.policy.sources import Level, PolicyProblem, PolicySource, unusable

# The app's bundle identifier: the installer's Info.plist must use the same one.
PREFERENCE_DOMAIN = "org.bastion.Bastion"


class PreferencesBackend(Protocol):
    def copy_value(self, key: str, domain: str) -> Any:
        """The key's value in the domain as plain Python, or None if it is not set.
        Raises OSError if preferences cannot be read."""

    def is_forced(self, key: str, domain: str) -> bool:
        """Whether the value is forced by a managed (MDM) profile."""


_UTF8 = 0x08000100  # kCFStringEncodingUTF8
_XML_FORMAT = 100  # kCFPropertyListXMLFormat_v1_0


class CoreFoundationBackend:
    def __init__(self) -> None:
        path = ctypes.util.find_library("CoreFoundation")
        if path is None:
            raise OSError("CoreFoundation is not available (this is not macOS)")
        cf = ctypes.cdll.LoadLibrary(path)
        cf.CFStringCreateWithCString.restype = ctypes.c_void_p
        cf.CFStringCreateWithCString.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
        cf.CFPreferencesCopyAppValue.restype = ctypes.c_void_p
        cf.CFPreferencesCopyAppValue.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        cf.CFPreferencesAppValueIsForced.restype = ctypes.c_bool
        cf.CFPreferencesAppValueIsForced.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        cf.CFPropertyListCreateData.restype = ctypes.c_void_p
        cf.CFPropertyListCreateData.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_long,
            ctypes.c_ulong,
            ctypes.c_void_p,
        ]
        cf.CFDataGetLength.restype = ctypes.c_long
        cf.CFDataGetLength.argtypes = [ctypes.c_void_p]
        cf.CFDataGetBytePtr.restype = ctypes.c_void_p
        cf.CFDataGetBytePtr.argtypes = [ctypes.c_void_p]
        cf.CFRelease.argtypes = [ctypes.c_void_p]
        self._cf = cf

    def _string(self, text: str) -> int:
        ref = self._cf.CFStringCreateWithCString(None, text.encode("utf-8"), _UTF8)
        if not ref:
            raise OSError(f"cannot make a CFString of {text!r}")
        return int(ref)

    def copy_value(self, key: str, domain: str) -> Any:
        cf = self._cf
        key_ref, domain_ref = self._string(key), self._string(domain)
        try:
            value = cf.CFPreferencesCopyAppValue(key_ref, domain_ref)
            if not value:
                return None
            try:
                data = cf.CFPropertyListCreateData(None, value, _XML_FORMAT, 0, None)
                if not data:
                    raise OSError(f"the value of {key} is not a property list")
                try:
                    length = cf.CFDataGetLength(data)
                    raw = ctypes.string_at(cf.CFDataGetBytePtr(data), length)
                finally:
                    cf.CFRelease(data)
            finally:
                cf.CFRelease(value)
        finally:
            cf.CFRelease(key_ref)
            cf.CFRelease(domain_ref)
        return plistlib.loads(raw)

    def is_forced(self, key: str, domain: str) -> bool:
        key_ref, domain_ref = self._string(key), self._string(domain)
        try:
            return bool(self._cf.CFPreferencesAppValueIsForced(key_ref, domain_ref))
        finally:
            self._cf.CFRelease(key_ref)
            self._cf.CFRelease(domain_ref)


class MacPolicyReader:
    """Asks for each known policy, as Chrome does: a preference domain cannot be listed
    reliably across the managed and user layers, so unknown keys are not reported."""

    def __init__(
        self, backend: PreferencesBackend | None = None, domain: str = PREFERENCE_DOMAIN
    ) -> None:
        self._backend = backend
        self.domain = domain

    def read(self) -> Sequence[PolicySource]:
        forced_at = f"managed preferences (MDM) of {self.domain}"
        plain_at = f"preferences of {self.domain}"
        try:
            backend = self._backend or CoreFoundationBackend()
        except OSError as error:
            return [unusable(forced_at, Level.MACHINE_MANDATORY, f"cannot be read ({error})")]
        forced: dict[str, Any] = {}
        plain: dict[str, Any] = {}
        problems = []
        for policy in POLICIES:
            try:
                value = backend.copy_value(policy.name, self.domain)
                if value is None:
                    continue
                is_forced = backend.is_forced(policy.name, self.domain)
            except (OSError, ValueError) as error:
                # A value we cannot read might be a forced one: treat it as mandatory.
                sentence = (
                    f"{forced_at}: {policy.name} cannot be read ({error}); it was not applied."
                )
                problems.append(PolicyProblem(sentence, fails_closed=True))
                continue
            (forced if is_forced else plain)[policy.name] = value
        sources = []
        if forced or problems:
            sources.append(
                PolicySource(forced_at, Level.MACHINE_MANDATORY, forced, tuple(problems))
            )
        if plain:
            sources.append(PolicySource(plain_at, Level.USER_RECOMMENDED, plain))
        return sources
