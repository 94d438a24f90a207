"""What can go wrong with the history file, as sentences a user can act on.

SQLite reports problems as `apsw` exceptions; the ones a user can cause or fix (a wrong
key, a damaged or read-only file, a full disk, another Bastion holding the lock) become
`HistoryError`s here. The rest (a malformed statement, a broken constraint) are bugs
and propagate unchanged.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import apsw

from bastion_desktop.core.errors import BastionError
from bastion_desktop.core.files import DiskFullError, disk_full_sentence


class HistoryError(BastionError):
    """The conversation history cannot be opened, read or written."""


class WrongKeyError(HistoryError):
    """The key does not open the file (or its first page is damaged: the two look the
    same to an authenticated cipher)."""


class HistoryDamagedError(HistoryError):
    """The file is cut short, overwritten, or not a Bastion history at all."""


class NotAHistoryError(HistoryDamagedError):
    """The file is a plain SQLite database, not a history: nothing to repair."""


class HistoryPartlyReadError(HistoryDamagedError):
    """An export of a damaged history wrote what could be read; this names the rest."""


class HistoryTooNewError(HistoryError):
    """A newer Bastion wrote the file; this one would not know how to keep it intact."""


class HistoryReadOnlyError(HistoryError):
    """The file or its folder cannot be written."""


class HistoryBusyError(HistoryError):
    """Another Bastion process holds the file's write lock."""


class HistoryDiskFullError(DiskFullError, HistoryError):
    """The disk is full: a `DiskFullError` that code handling every `HistoryError` catches."""


class HistoryIOError(HistoryError):
    """The operating system failed a read or write for another reason."""


class HistoryImportError(HistoryError):
    """A file offered for import is not a valid Bastion export."""


def wrong_key_error(path: Path) -> WrongKeyError:
    return WrongKeyError(
        f"The conversation history {path} could not be unlocked with this key (or its first "
        "page is damaged): use the passphrase or keychain entry it was created with, or "
        "restore the file from a backup; it was left as it was."
    )


def damaged_error(path: Path) -> HistoryDamagedError:
    return HistoryDamagedError(
        f"The conversation history {path} is damaged, so Bastion cannot read all of it: "
        "start Bastion again, or run `bastion history repair`, to rebuild it from every "
        "conversation that can still be read (the damaged file is kept beside it); "
        "nothing was changed."
    )


def read_only_error(path: Path) -> HistoryReadOnlyError:
    return HistoryReadOnlyError(
        f"Bastion cannot write the conversation history in {path.parent} because the file or "
        "its folder is read-only: make them writable and try again; nothing was changed."
    )


def busy_error(path: Path) -> HistoryBusyError:
    return HistoryBusyError(
        f"The conversation history {path} is in use by another Bastion window or command: "
        "close it and try again."
    )


def disk_full_error(path: Path) -> HistoryDiskFullError:
    return HistoryDiskFullError(disk_full_sentence(path.parent))


def os_error(path: Path, os_errno: int) -> HistoryError:
    """The error for an operating-system failure with `os_errno` on the history."""
    if os_errno == errno.ENOSPC:
        return disk_full_error(path)
    if os_errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return read_only_error(path)
    reason = os.strerror(os_errno) if os_errno else "an input/output error"
    return HistoryIOError(
        f"Bastion could not read or write the conversation history {path} ({reason}): "
        "check the disk and try again; nothing was changed."
    )


_TRANSLATIONS: tuple[tuple[tuple[type[apsw.Error], ...], Callable[[Path], HistoryError]], ...] = (
    ((apsw.FullError,), disk_full_error),
    ((apsw.CorruptError, apsw.NotADBError), damaged_error),
    ((apsw.ReadOnlyError,), read_only_error),
    ((apsw.BusyError, apsw.LockedError), busy_error),
)


def translate(error: apsw.Error, path: Path, os_errno: int) -> HistoryError | None:
    """The user-facing error for `error`, or None when it is a bug.

    `os_errno` is the connection's `system_errno`: SQLite's own codes do not say whether
    an I/O error was a full disk or a read-only filesystem.
    """
    if isinstance(error, apsw.IOError | apsw.CantOpenError | apsw.PermissionsError):
        if getattr(error, "extendedresult", None) == apsw.SQLITE_IOERR_SHMSIZE:
            os_errno = errno.ENOSPC  # SQLite could not grow its shared-memory file
        return os_error(path, os_errno)
    for kinds, make in _TRANSLATIONS:
        if isinstance(error, kinds):
            return make(path)
    return None
