"""The key that encrypts the conversation history, and where it lives.

The key is 32 random bytes kept in the OS keychain (macOS Keychain, Windows Credential
Locker, the Secret Service on Linux) through `keyring`. Where no keychain is usable — a
headless Linux box — the key is derived from a passphrase the user sets, with scrypt.
There is never a silent fallback to a key stored in plain text: keyring backends that
write secrets to a plain file are treated as no keychain at all.

A small record beside the database (`history-key.json`, no secret in it) says which of
the two is in force and holds the scrypt salt. A change of passphrase, or a move between
keychain and passphrase, is recorded as *pending* before the database is re-keyed, so a
crash in between leaves both the old and the new key known: opening tries the current
key, then the pending one, and completes the change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.files import write_atomically

log = logging.getLogger(__name__)

KEYRING_SERVICE = "Bastion"
KEYRING_ENTRY = "conversation-history-key"
KEY_BYTES = 32
RECORD_VERSION = 1
MIN_PASSPHRASE_LENGTH = 8

# scrypt at n=2**15, r=8 costs about 32 MiB and a few tenths of a second: cheap once per
# start, expensive for someone guessing passphrases against a stolen file.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


class KeySource(StrEnum):
    KEYCHAIN = "keychain"
    PASSPHRASE = "passphrase"  # noqa: S105  (the name of a source, not a secret)


class HistoryKeyError(BastionError):
    """The history key cannot be had; the database is left untouched."""


class PassphraseNeededError(HistoryKeyError):
    """A passphrase is needed and there is no way to ask for one."""


# Asked for a passphrase: `confirm` is True when a new one is being set.
PassphrasePrompt = Callable[[bool], str]


def passphrase_from_file(path: Path) -> PassphrasePrompt:
    """The passphrase on the first line of `path` (`--passphrase-file`, the
    BASTION_PASSPHRASE_FILE variable): for machines without a keychain or a person."""

    def read(_confirm: bool) -> str:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise BastionError(f"Cannot read the passphrase file {path}: {error}.") from error
        passphrase = text.splitlines()[0] if text else ""
        if not passphrase:
            raise BastionError(f"The passphrase file {path} is empty.")
        return passphrase

    return read


class _Scrypt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    salt: str = Field(pattern=r"^[0-9a-f]{32}$")
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


class _KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: KeySource
    scrypt: _Scrypt | None = None
    keychain_entry: str = KEYRING_ENTRY


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = RECORD_VERSION
    current: _KeySpec
    pending: _KeySpec | None = None


@dataclass(frozen=True)
class HistoryKey:
    key: bytes
    source: KeySource
    where: str  # "keychain (SecretService Keyring)" or "passphrase": never the key itself
    spec: _KeySpec


def keychain_backend() -> Any | None:
    """The OS keychain through keyring, or None when there is no usable, secure one."""
    import keyring
    from keyring.errors import KeyringError

    backend = keyring.get_keyring()
    name = type(backend).__name__
    module = type(backend).__module__
    if backend.priority <= 0 or "fail" in module or "null" in module:
        return None
    if "Plaintext" in name or "keyrings.alt.file" in module:
        log.warning("keyring backend %s stores secrets in plain text: not used", name)
        return None
    try:
        backend.get_password(KEYRING_SERVICE, "availability-probe")
    except (KeyringError, OSError) as error:
        log.info("keyring backend %s is not usable: %s", name, type(error).__name__)
        return None
    return backend


def _backend_name(backend: Any) -> str:
    return f"{type(backend).__module__.removeprefix('keyring.backends.')}.{type(backend).__name__}"


def derive_key(passphrase: str, params: _Scrypt) -> bytes:
    return hashlib.scrypt(
        passphrase.encode("utf-8"),
        salt=bytes.fromhex(params.salt),
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=256 * 1024 * 1024,
        dklen=KEY_BYTES,
    )


class HistoryKeys:
    """Creates, finds and changes the history key. `record_file` sits beside the
    database; `prompt` asks the user for a passphrase (None: nobody to ask)."""

    def __init__(
        self,
        record_file: Path,
        prompt: PassphrasePrompt | None = None,
        backend: Any | None = None,
        *,
        use_keychain: bool = True,
    ) -> None:
        self.record_file = record_file
        self.prompt = prompt
        self._backend = backend
        self._use_keychain = use_keychain

    # -- where things are ---------------------------------------------------------

    def backend(self) -> Any | None:
        if not self._use_keychain:
            return None
        if self._backend is None:
            self._backend = keychain_backend()
        return self._backend

    def exists(self) -> bool:
        return self.record_file.exists()

    def _read(self) -> _Record:
        try:
            return _Record.model_validate(json.loads(self.record_file.read_text("utf-8")))
        except FileNotFoundError:
            raise HistoryKeyError(
                f"The record of where the history key lives ({self.record_file}) is missing, "
                "so the conversation history cannot be opened. Restore that file from a "
                "backup; the history itself was left untouched."
            ) from None
        except (OSError, ValueError, ValidationError) as error:
            raise HistoryKeyError(
                f"The record of where the history key lives ({self.record_file}) is damaged "
                f"({type(error).__name__}). Restore it from a backup; the history itself was "
                "left untouched."
            ) from error

    def _write(self, record: _Record) -> None:
        write_atomically(self.record_file, (record.model_dump_json(indent=2) + "\n").encode())

    def describe(self) -> str:
        """Where the key lives, for `bastion doctor` and the settings page."""
        if not self.exists():
            backend = self.backend()
            if backend is not None:
                return f"not created yet; will be kept in the keychain ({_backend_name(backend)})"
            return "not created yet; no keychain here, so a passphrase will be asked for"
        spec = self._read().current
        if spec.source is KeySource.PASSPHRASE:
            return "derived from your passphrase (scrypt); stored nowhere"
        backend = self.backend()
        name = _backend_name(backend) if backend is not None else "unavailable right now"
        return f"in the keychain ({name}), service {KEYRING_SERVICE!r}"

    # -- getting the key ----------------------------------------------------------

    def create(self) -> HistoryKey:
        """First run: a new key in the keychain, or from a new passphrase."""
        if self.exists():
            raise HistoryKeyError(
                "A history key already exists; Bastion will not replace it with a new one."
            )
        key = self._new_key(KeySource.KEYCHAIN if self.backend() else KeySource.PASSPHRASE)
        self._write(_Record(current=key.spec))
        return key

    def candidates(self) -> list[HistoryKey]:
        """The current key, then the pending one if a change was interrupted."""
        record = self._read()
        keys = [self._existing_key(record.current)]
        if record.pending is not None:
            try:
                keys.append(self._existing_key(record.pending))
            except HistoryKeyError as error:
                log.warning("pending history key unavailable: %s", type(error).__name__)
        return keys

    def _existing_key(self, spec: _KeySpec) -> HistoryKey:
        if spec.source is KeySource.PASSPHRASE:
            assert spec.scrypt is not None
            passphrase = self._ask(confirm=False)
            return HistoryKey(derive_key(passphrase, spec.scrypt), spec.source, "passphrase", spec)
        backend = self.backend()
        if backend is None:
            raise HistoryKeyError(
                "Your conversation history is locked with a key kept in the system keychain, "
                "and no keychain is available right now. Unlock or start your keychain and "
                "try again; the history was left untouched."
            )
        stored = backend.get_password(KEYRING_SERVICE, spec.keychain_entry)
        if not stored:
            raise HistoryKeyError(
                f"The key to your conversation history is missing from the keychain (service "
                f"{KEYRING_SERVICE!r}, entry {spec.keychain_entry!r}). Without it the history "
                "cannot be read; it was left untouched."
            )
        try:
            key = bytes.fromhex(stored)
        except ValueError:
            key = b""
        if len(key) != KEY_BYTES:
            raise HistoryKeyError(
                f"The keychain entry {spec.keychain_entry!r} does not hold a Bastion key. "
                "The history was left untouched."
            )
        return HistoryKey(key, spec.source, f"keychain ({_backend_name(backend)})", spec)

    def _ask(self, *, confirm: bool) -> str:
        if self.prompt is None:
            raise PassphraseNeededError(
                "Your conversation history needs a passphrase, and there is no way to ask for "
                "one here. Run interactively, or pass --passphrase-file PATH."
            )
        passphrase = self.prompt(confirm)
        if confirm and len(passphrase) < MIN_PASSPHRASE_LENGTH:
            raise HistoryKeyError(
                f"The passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long."
            )
        return passphrase

    def _new_key(self, source: KeySource) -> HistoryKey:
        if source is KeySource.PASSPHRASE:
            params = _Scrypt(salt=secrets.token_hex(16))
            passphrase = self._ask(confirm=True)
            spec = _KeySpec(source=source, scrypt=params)
            return HistoryKey(derive_key(passphrase, params), source, "passphrase", spec)
        backend = self.backend()
        if backend is None:
            raise HistoryKeyError(
                "No keychain is available on this system, so the history key cannot be kept "
                "in one. Use a passphrase instead."
            )
        # A fresh entry name for each key, so that moving to a new key never overwrites
        # the one the database may still need.
        spec = _KeySpec(source=source, keychain_entry=f"{KEYRING_ENTRY}-{secrets.token_hex(4)}")
        key = secrets.token_bytes(KEY_BYTES)
        backend.set_password(KEYRING_SERVICE, spec.keychain_entry, key.hex())
        return HistoryKey(key, source, f"keychain ({_backend_name(backend)})", spec)

    # -- changing it --------------------------------------------------------------

    def begin_change(self, source: KeySource) -> HistoryKey:
        """A new key (new passphrase, or a new keychain entry), recorded as pending. The
        caller re-keys the database with it, then calls `finish_change`."""
        record = self._read()
        key = self._new_key(source)
        record.pending = key.spec
        self._write(record)
        return key

    def finish_change(self, key: HistoryKey) -> None:
        """The database now uses `key`: make it current and forget the old one."""
        record = self._read()
        old = record.current
        record.current, record.pending = key.spec, None
        self._write(record)
        self._forget(old, keep=key.spec)

    def abandon_change(self, key: HistoryKey) -> None:
        """Re-keying failed: the database still uses the current key."""
        record = self._read()
        record.pending = None
        self._write(record)
        self._forget(key.spec, keep=record.current)

    def settle(self, used: HistoryKey) -> None:
        """After an open: if the pending key was the one that worked, the change had been
        made before a crash; finish it."""
        record = self._read()
        if record.pending is not None and used.spec == record.pending:
            self.finish_change(used)
        elif record.pending is not None and used.spec == record.current:
            self.abandon_change(HistoryKey(b"", record.pending.source, "", record.pending))

    def _forget(self, spec: _KeySpec, keep: _KeySpec) -> None:
        if spec.source is not KeySource.KEYCHAIN or spec.keychain_entry == keep.keychain_entry:
            return
        backend = self.backend()
        if backend is None:
            return
        from keyring.errors import PasswordDeleteError

        with contextlib.suppress(PasswordDeleteError):
            backend.delete_password(KEYRING_SERVICE, spec.keychain_entry)
