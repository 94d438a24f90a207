"""The local API's client tokens: one per client, named, shown once when created and
stored only as a sha256 hash.

A token is 256 random bits; its hash is all the file keeps, so the file is no secret
(a copy of it lets no one in). Checking a presented token compares its hash with every
stored hash in constant time, so the time taken says nothing about how close a guess
came. The file is read again whenever it changes: a token revoked with
`bastion api token revoke` stops working in a running server at its next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.files import write_atomically

TOKENS_VERSION = 1
# Recognisable in a config file or a secret scanner's report, like `sk-` for OpenAI.
TOKEN_PREFIX = "bastion-"  # noqa: S105  (a prefix, not a secret)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")


class TokenError(BastionError):
    """A token name that is taken or malformed, an unknown token, or a damaged file."""


@dataclass(frozen=True)
class ApiClient:
    """A client's token as stored: its name and what it may do, never the token."""

    name: str
    sha256: str
    created: str  # ISO 8601, UTC
    keep_history: bool = False  # its conversations are saved in the encrypted history

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "created": self.created,
            "keep_history": self.keep_history,
        }


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApiTokens:
    """The token file. Safe to use from any thread of one process; a write replaces the
    file in one step, so another process reading it sees the old list or the new one."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the last read
        self._clients: tuple[ApiClient, ...] = ()

    def list(self) -> tuple[ApiClient, ...]:
        with self._lock:
            return self._read()

    def create(self, name: str, *, keep_history: bool = False) -> str:
        """A new token for the client `name`; returns the token itself, which is never
        stored and cannot be shown again."""
        name = name.strip()
        if not NAME.match(name):
            raise TokenError(
                "A token's name is 1 to 64 letters, digits, spaces, dots, dashes or "
                f"underscores, starting with a letter or digit; {name!r} is not."
            )
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            clients = self._read()
            if any(client.name.lower() == name.lower() for client in clients):
                raise TokenError(
                    f"There is already a token named {name!r}. Revoke it first, or choose "
                    "another name."
                )
            created = datetime.now(UTC).replace(microsecond=0).isoformat()
            self._write((*clients, ApiClient(name, _digest(token), created, keep_history)))
        return token

    def revoke(self, name: str) -> ApiClient:
        with self._lock:
            clients = self._read()
            kept = tuple(c for c in clients if c.name.lower() != name.strip().lower())
            if len(kept) == len(clients):
                known = ", ".join(c.name for c in clients) or "none"
                raise TokenError(f"No token is named {name!r} (tokens: {known}).")
            self._write(kept)
        (revoked,) = (c for c in clients if c not in kept)
        return revoked

    def client_for(self, token: str) -> ApiClient | None:
        """The client whose token this is, or None. Every stored hash is compared, in
        constant time, whether or not one matched already."""
        presented = _digest(token)
        with self._lock:
            clients = self._read()
        found = None
        for client in clients:
            if hmac.compare_digest(presented, client.sha256):
                found = client
        return found

    def _read(self) -> tuple[ApiClient, ...]:
        try:
            stat = self.file.stat()
        except FileNotFoundError:
            self._seen, self._clients = None, ()
            return ()
        seen = (stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._clients = self._parse()
            self._seen = seen
        return self._clients

    def _parse(self) -> tuple[ApiClient, ...]:
        try:
            raw = json.loads(self.file.read_text(encoding="utf-8"))
            if raw.get("version") != TOKENS_VERSION:
                raise ValueError(f"format {raw.get('version')!r}")
            return tuple(
                ApiClient(
                    str(entry["name"]),
                    str(entry["sha256"]),
                    str(entry["created"]),
                    bool(entry.get("keep_history", False)),
                )
                for entry in raw["tokens"]
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise TokenError(
                f"The API token file {self.file} is damaged ({error}); no client can sign in. "
                "Delete it and create the tokens again."
            ) from error

    def _write(self, clients: tuple[ApiClient, ...]) -> None:
        content = {"version": TOKENS_VERSION, "tokens": [c.to_json() for c in clients]}
        write_atomically(self.file, (json.dumps(content, indent=2) + "\n").encode("utf-8"))
        self._clients = clients
        stat = self.file.stat()
        self._seen = (stat.st_mtime_ns, stat.st_size)
