"""Opening, keying and re-keying the history file.

One SQLite file encrypted as a whole by SQLite3 Multiple Ciphers (ChaCha20-Poly1305,
its default): every page of the database, the WAL and any rollback journal is encrypted
and authenticated, so FTS5 works as usual on the decrypted pages while nothing readable
reaches the disk.

Opening never writes before it knows the file is readable with this key and not newer
than this code: a wrong key, a damaged file or a newer schema leaves the file exactly as
it was. A fresh database is only ever created where no file exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import apsw

from bastion_desktop.core.history.errors import (
    HistoryDamagedError,
    HistoryError,
    HistoryIOError,
    HistoryTooNewError,
    NotAHistoryError,
    damaged_error,
    os_error,
    read_only_error,
    translate,
    wrong_key_error,
)
from bastion_desktop.core.history.schema import SCHEMA_VERSION, migrate, user_version

log = logging.getLogger(__name__)

KEY_BYTES: Final = 32
BUSY_TIMEOUT_MS: Final = 5000

# Set on every connection. secure_delete zeroes deleted content instead of leaving it in
# free pages; temp_store keeps sorts and temporary indexes in memory, because SQLite3
# Multiple Ciphers does not encrypt temporary files. synchronous=NORMAL in WAL mode
# never corrupts and keeps every commit through a crash of the app; only a power cut
# can lose the last commits (FULL would fsync each of the many small streaming saves).
_CONNECTION_PRAGMAS: Final = (
    "PRAGMA foreign_keys = ON",
    "PRAGMA secure_delete = ON",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA synchronous = NORMAL",
)

# What page 1 of a ChaCha20 database keeps in clear text (bytes 16-23): used to tell a
# wrong key from a file that is not one of ours.
_PAGE_SIZES: Final = frozenset(2**n for n in range(9, 17))
_CHACHA20_RESERVED_BYTES: Final = 32  # 16-byte nonce + 16-byte Poly1305 tag per page
_SQLITE_PLAIN_HEADER: Final = b"SQLite format 3\x00"

# sqlite3mc re-keys a database in WAL mode since 2.4.0 (keeping its salt, which a raw
# key does not use); older releases corrupt it, so they switch to DELETE mode first.
# https://github.com/utelle/SQLite3MultipleCiphers/releases/tag/v2.4.0
_WAL_REKEY_SINCE: Final = (2, 4, 0)


class Unencrypted:
    """ "No key": the same database as plain SQLite. Only the store benchmark uses it, to
    measure what encryption costs; a user's history is always encrypted."""

    def __repr__(self) -> str:
        return "UNENCRYPTED"


UNENCRYPTED: Final = Unencrypted()

DatabaseKey = bytes | Unencrypted


def _key_statement(pragma: str, key: bytes) -> str:
    # A raw key (x'...') bypasses sqlite3mc's own PBKDF2, 64,007 rounds that cost about
    # 50 ms per connection: the key is already 32 random bytes from the keychain or the
    # output of scrypt over the passphrase (keys.py), so stretching it again adds
    # nothing. Changing this format would lock out every existing history.
    return f"PRAGMA {pragma} = \"x'{key.hex()}'\""


def _check_key(key: DatabaseKey) -> None:
    if isinstance(key, bytes) and len(key) != KEY_BYTES:
        raise ValueError(f"a history key is {KEY_BYTES} bytes, not {len(key)}")


@contextlib.contextmanager
def translated(connection: apsw.Connection, path: Path) -> Iterator[None]:
    """Turn the SQLite errors a user can act on into `HistoryError`s."""
    try:
        yield
    except apsw.Error as error:
        try:
            os_errno = connection.system_errno
        except apsw.ConnectionClosedError:
            os_errno = 0
        user_error = translate(error, path, os_errno)
        if user_error is None:
            raise
        if isinstance(user_error, HistoryDamagedError):
            note_damage(path)
        raise user_error from error


def damage_marker(path: Path) -> Path:
    """The empty file that says damage was met in the history at `path`: the window
    offers the repair when it next starts (it cannot replace the file it has open)."""
    return path.with_name(path.name + ".needs-repair")


def note_damage(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only disk: the sentence still says it
        damage_marker(path).touch()


def _connect(path: Path, key: DatabaseKey, *, create: bool) -> apsw.Connection:
    flags = apsw.SQLITE_OPEN_READWRITE | (apsw.SQLITE_OPEN_CREATE if create else 0)
    try:
        connection = apsw.Connection(str(path), flags=flags)
    except apsw.CantOpenError as error:
        if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
            raise read_only_error(path) from error
        raise HistoryIOError(
            f"Bastion could not open the conversation history {path}: check that the "
            "folder exists and can be written, and try again; nothing was changed."
        ) from error
    try:
        # SQLite quietly opens a file it cannot write read-only; the history must be
        # written to, so say so now rather than at the first reply.
        if connection.readonly("main"):
            raise read_only_error(path)
        connection.set_busy_timeout(BUSY_TIMEOUT_MS)
        if isinstance(key, bytes):
            # Not cached: a cached statement would keep the key's text in memory.
            connection.execute(_key_statement("key", key), can_cache=False)
        with _opening(connection, path):
            # Some of these read the schema: the first read, where a wrong key fails.
            for pragma in _CONNECTION_PRAGMAS:
                connection.execute(pragma)
    except BaseException:
        connection.close()
        raise
    return connection


def _unreadable(path: Path) -> HistoryError:
    """The error for a file SQLite calls "not a database" under this key.

    An authenticated cipher cannot tell a wrong key from a damaged first page, but the
    clear-text part of the header can tell a file that is no encrypted database at all.
    """
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
        size = path.stat().st_size
    except OSError:
        return damaged_error(path)
    if header.startswith(_SQLITE_PLAIN_HEADER):
        return NotAHistoryError(
            f"{path} is a plain, unencrypted SQLite file, not a Bastion conversation "
            "history: move it aside and Bastion will start a new history there."
        )
    page_size = int.from_bytes(header[16:18], "big") if len(header) == 100 else 0
    page_size = 65536 if page_size == 1 else page_size
    looks_encrypted = (
        page_size in _PAGE_SIZES
        and size % page_size == 0
        and header[18] in (1, 2)
        and header[19] in (1, 2)
        and header[20] == _CHACHA20_RESERVED_BYTES
        and header[21:24] == b"\x40\x20\x20"
    )
    return wrong_key_error(path) if looks_encrypted else damaged_error(path)


@contextlib.contextmanager
def _opening(connection: apsw.Connection, path: Path) -> Iterator[None]:
    """`translated`, telling apart why SQLite calls the file "not a database"."""
    with translated(connection, path):
        try:
            yield
        except apsw.NotADBError as error:
            raise _unreadable(path) from error


def _too_new_error(path: Path, version: int) -> HistoryTooNewError:
    return HistoryTooNewError(
        f"The conversation history {path} was written by a newer Bastion (schema "
        f"version {version}; this one reads up to {SCHEMA_VERSION}): update Bastion to "
        "open it; the file was left as it was."
    )


def _prepare(connection: apsw.Connection, path: Path) -> None:
    """Check the file, then (and only then) switch it to WAL and migrate it."""
    with _opening(connection, path):
        version = user_version(connection)
        page_size = connection.execute("PRAGMA page_size").get
    # SQLite writes whole pages only: a part page at the end is a copy cut short, which
    # SQLite itself would notice only when it reads that page.
    assert isinstance(page_size, int)
    if path.stat().st_size % page_size:
        raise damaged_error(path)
    if version > SCHEMA_VERSION:
        raise _too_new_error(path, version)
    with translated(connection, path):
        mode = connection.execute("PRAGMA journal_mode = WAL").get
        if mode != "wal":
            raise RuntimeError(f"SQLite refused WAL mode for the history ({mode})")
        migrate(connection)


def connect_exclusively(path: Path, key: bytes) -> apsw.Connection:
    """A connection that holds the history to itself, in a transaction, until it is
    closed: no other window or command can read or write it meanwhile. Raises the busy
    error while another one has it open (every connection to a WAL database holds a
    shared lock on the file), and the errors opening raises; it changes nothing."""
    _check_key(key)
    connection = _connect(path, key, create=False)
    try:
        with _opening(connection, path):
            connection.execute("PRAGMA locking_mode = EXCLUSIVE")
            connection.execute("BEGIN EXCLUSIVE")
            version = user_version(connection)
        if version > SCHEMA_VERSION:
            raise _too_new_error(path, version)
    except BaseException:
        connection.close()
        raise
    return connection


def remove_database_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _sqlite3mc_version(connection: apsw.Connection) -> tuple[int, ...]:
    text = connection.execute("SELECT sqlite3mc_version()").get
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", str(text))
    if match is None:
        raise RuntimeError(f"unexpected sqlite3mc version {text!r}")
    return tuple(int(part) for part in match.groups())


class HistoryDatabase:
    """The open history file: one writer connection, and read connections on demand."""

    def __init__(self, path: Path, key: DatabaseKey, writer: apsw.Connection) -> None:
        self.path = path
        self._key = key
        self._writer = writer

    @classmethod
    def open(cls, path: Path, key: DatabaseKey) -> HistoryDatabase:
        """Open the history at `path`, creating it only if no file is there.

        An existing empty file is initialised too: it holds nothing to lose (SQLite
        leaves one behind when a crash comes before the first commit).
        """
        _check_key(key)
        create = not path.exists()
        if create:
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as error:
                raise os_error(path, error.errno or 0) from error
        try:
            writer = _connect(path, key, create=create)
            try:
                if create:
                    # Encrypted, but still nobody else's business; SQLite gives the -wal
                    # and -shm files the database's mode.
                    path.chmod(0o600)
                _prepare(writer, path)
            except BaseException:
                writer.close()
                raise
        except BaseException:
            if create:  # never leave a half-made database where there was none
                remove_database_files(path)
            raise
        return cls(path, key, writer)

    @property
    def writer(self) -> apsw.Connection:
        return self._writer

    def translated(
        self, connection: apsw.Connection | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return translated(connection or self._writer, self.path)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[apsw.Connection]:
        """One write transaction on the writer, committed on exit, rolled back on error.

        IMMEDIATE takes the write lock up front (waiting out another writer for the busy
        timeout) instead of failing half-way when a read turns into a write.
        """
        connection = self._writer
        with translated(connection, self.path):
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    with contextlib.suppress(apsw.Error):  # report the first error
                        connection.execute("ROLLBACK")
                raise

    def connect_reader(self) -> apsw.Connection:
        """A connection for reads that must not wait for, or hold up, the writer."""
        connection = _connect(self.path, self._key, create=False)
        connection.execute("PRAGMA query_only = ON")
        return connection

    def checkpoint(self) -> None:
        """Copy the WAL into the database and empty it, so that pages holding deleted
        text do not linger in the -wal file."""
        try:
            with translated(self._writer, self.path):
                self._writer.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
        except HistoryError as error:
            # A reader in the middle of a query: the next checkpoint will do it.
            log.info("history checkpoint deferred: %s", type(error).__name__)

    def rekey(self, new_key: bytes) -> None:
        """Re-encrypt the whole file with `new_key`, in place, as one transaction: a
        crash leaves it under the old key or the new one. Close other connections first:
        they keep the old key."""
        _check_key(new_key)
        if not isinstance(self._key, bytes):
            raise TypeError("an unencrypted database cannot be re-keyed")
        connection = self._writer
        with translated(connection, self.path):
            if _sqlite3mc_version(connection) >= _WAL_REKEY_SINCE:
                result = connection.execute(_key_statement("rekey", new_key), can_cache=False).get
            else:
                connection.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
                connection.execute("PRAGMA journal_mode = DELETE")
                try:
                    result = connection.execute(
                        _key_statement("rekey", new_key), can_cache=False
                    ).get
                finally:
                    connection.execute("PRAGMA journal_mode = WAL")
        if result != "ok":
            raise RuntimeError(f"sqlite3mc did not re-key the history: {result!r}")
        self._key = new_key

    def close(self) -> None:
        with contextlib.suppress(apsw.Error):
            # Cheap, and keeps query plans good as the history grows.
            self._writer.execute("PRAGMA optimize")
        self._writer.close()
