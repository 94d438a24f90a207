"""Repairing a damaged history: everything that can still be read goes into a new file
under the same key, and the damaged file is kept beside it.

A page that fails its authentication tag (a bad sector, a flipped bit, a copy cut
short) makes SQLite refuse every read that touches it, deletes included: one bad page
would cost the user the whole history. The repair copies conversation by conversation,
each whole or not at all, with its messages (every branch, their ids and stats) and
its guardrail events. It never writes plain text anywhere: the new file is encrypted
as it is written, and the damaged one is copied byte for byte.

It works alone: it takes the file's exclusive lock first, so an open window or another
command makes it stop with a sentence before anything is changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import apsw

from bastion_desktop.core.history.database import (
    HistoryDatabase,
    connect_exclusively,
    damage_marker,
    remove_database_files,
    translated,
)
from bastion_desktop.core.history.errors import (
    HistoryDamagedError,
    HistoryError,
    NotAHistoryError,
    os_error,
)

# What reading a damaged part of the file raises: a page that fails its check (or lies
# past the end of a file cut short), or a sector the disk cannot read at all.
_DAMAGE: Final = (apsw.CorruptError, apsw.NotADBError, apsw.IOError)

# Copied in this order: each table's rows refer only to rows of the tables before it.
_TABLES: Final = ("conversations", "messages", "guard_events")


@dataclass(frozen=True)
class RepairResult:
    kept: int  # conversations in the repaired history
    lost: tuple[str, ...]  # those that could not be read: titles, or ids where none was
    damaged_copy: Path | None  # the damaged file, kept; None when nothing needed repair

    @property
    def repaired(self) -> bool:
        return self.damaged_copy is not None

    def summary(self) -> str:
        """What the repair did, in a few sentences."""
        kept = f"{self.kept} conversation{'s' if self.kept != 1 else ''}"
        if not self.repaired:
            return f"The history is not damaged ({kept}): nothing was changed."
        said = [f"The history was repaired: it keeps {kept}."]
        if self.lost:
            names = ", ".join(f"“{name}”" for name in self.lost[:10])
            more = f" and {len(self.lost) - 10} more" if len(self.lost) > 10 else ""
            verb = "was" if len(self.lost) == 1 else "were"
            said.append(f"{len(self.lost)} could not be read and {verb} left out: {names}{more}.")
        said.append(f"The damaged file is kept as {self.damaged_copy}.")
        return " ".join(said)


def repair_history(path: Path, key: bytes, *, now: float | None = None) -> RepairResult:
    """Rebuild the history at `path` from what can still be read with `key`.

    A history that is not damaged is left exactly as it was. Otherwise the damaged file
    is kept as `<name>.damaged-<date>-<time><suffix>` beside it and the history is
    replaced by the rebuilt one. Raises a `HistoryError` (wrong key, busy, disk full,
    read-only, nothing readable at all) and then nothing was changed.
    """
    require_history(path)
    rebuilt = path.with_name(path.name + ".repairing")
    try:
        source = connect_exclusively(path, key)
    except NotAHistoryError:
        raise
    except HistoryDamagedError as error:  # its first pages: the schema itself is gone
        raise _keeps_nothing(path, "Nothing") from error
    try:
        if _intact(source):
            damage_marker(path).unlink(missing_ok=True)
            return RepairResult(_count(source, path), (), None)
        remove_database_files(rebuilt)
        try:
            kept, lost = _rebuild(source, path, rebuilt, key)
            aside = _keep_damaged_copy(path, now)
        except BaseException:
            remove_database_files(rebuilt)
            raise
    finally:
        with contextlib.suppress(apsw.Error):
            source.execute("ROLLBACK")
        source.close()
    _replace(path, rebuilt)
    damage_marker(path).unlink(missing_ok=True)
    return RepairResult(kept, lost, aside)


def require_history(path: Path) -> None:
    """Raise the sentence for a repair where no history is; before the key is looked for,
    whose record is missing too when no history was ever made."""
    if not path.exists():
        raise HistoryError(f"There is no conversation history at {path}: nothing to repair.")


def _keeps_nothing(path: Path, what: str) -> HistoryDamagedError:
    return HistoryDamagedError(
        f"{what} in {path} can be read any more, so a repair would keep nothing: restore "
        "the file from a backup, or move it aside and Bastion will start a new history; it "
        "was left as it was."
    )


def _intact(source: apsw.Connection) -> bool:
    """Whether every page reads and the search index matches the messages."""
    try:
        if source.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
            return False
        # Writes nothing; a mismatch raises SQLITE_CORRUPT_VTAB.
        source.execute(
            "INSERT INTO message_search (message_search, rank) VALUES ('integrity-check', 1)"
        )
    except _DAMAGE:
        _after_damage(source)
        return False
    return True


def _after_damage(source: apsw.Connection) -> None:
    """A read that met damage leaves its transaction unusable: start another. The lock
    stays held throughout (exclusive locking mode keeps it past the end of one)."""
    if source.in_transaction:
        source.execute("ROLLBACK")
    source.execute("BEGIN EXCLUSIVE")


def _count(source: apsw.Connection, path: Path) -> int:
    with translated(source, path):
        count = source.execute("SELECT count(*) FROM conversations").get
    assert isinstance(count, int)
    return count


def _rebuild(
    source: apsw.Connection, path: Path, rebuilt: Path, key: bytes
) -> tuple[int, tuple[str, ...]]:
    """Copy every readable conversation into a new history at `rebuilt`."""
    target = HistoryDatabase.open(rebuilt, key)
    try:
        columns = {table: _shared_columns(source, target.writer, table) for table in _TABLES}
        kept, lost = 0, []
        with target.transaction() as connection:
            for conversation_id in _conversation_ids(source, path):
                try:
                    rows = _read_conversation(source, columns, conversation_id)
                except _DAMAGE:
                    _after_damage(source)
                    lost.append(_name_of(source, conversation_id))
                    continue
                for table, table_rows in zip(_TABLES, rows, strict=True):
                    _insert(connection, table, columns[table], table_rows)
                kept += 1
        if not kept and lost:
            raise _keeps_nothing(path, "No conversation")
        target.checkpoint()
    finally:
        target.close()
    return kept, tuple(lost)


def _shared_columns(source: apsw.Connection, target: apsw.Connection, table: str) -> list[str]:
    """The columns of `table` both files have: an older history lacks later columns,
    which the rebuilt one leaves empty, as its migration would have."""
    have = {row[1] for row in source.execute(f"PRAGMA table_info({table})")}
    return [row[1] for row in target.execute(f"PRAGMA table_info({table})") if row[1] in have]


def _conversation_ids(source: apsw.Connection, path: Path) -> list[str]:
    """Every conversation's id, oldest first; from the primary key's index alone when
    the table itself cannot be read through, so a damaged page there costs only the
    conversations on it."""
    for statement in (
        "SELECT id FROM conversations ORDER BY created_at, id",
        "SELECT id FROM conversations INDEXED BY sqlite_autoindex_conversations_1",
    ):
        try:
            return [str(row[0]) for row in source.execute(statement)]
        except _DAMAGE:
            _after_damage(source)
    raise _keeps_nothing(path, "Not even the list of conversations")


def _read_conversation(
    source: apsw.Connection, columns: dict[str, list[str]], conversation_id: str
) -> list[list[apsw.SQLiteValues]]:
    """The conversation's rows in each table, read whole before anything is written. A
    damaged index is read around: the same rows are looked for in the table itself."""
    found = []
    for table in _TABLES:
        key_column = "id" if table == "conversations" else "conversation_id"
        listed = ", ".join(columns[table])
        query = f"SELECT {listed} FROM {table} {{}} WHERE {key_column} = ? ORDER BY rowid"  # noqa: S608
        try:
            rows = source.execute(query.format(""), (conversation_id,)).fetchall()
        except _DAMAGE:
            _after_damage(source)
            rows = source.execute(query.format("NOT INDEXED"), (conversation_id,)).fetchall()
        found.append(rows)
    return found


def _insert(
    connection: apsw.Connection, table: str, columns: list[str], rows: list[apsw.SQLiteValues]
) -> None:
    """The rows as they were; a reply a crash left streaming is marked interrupted when
    the repaired history is opened, as any other."""
    statement = (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
        f"VALUES ({', '.join('?' * len(columns))})"
    )
    connection.executemany(statement, rows)


def _name_of(source: apsw.Connection, conversation_id: str) -> str:
    """The conversation's title for the sentence, if its row can still be read."""
    try:
        title = source.execute(
            "SELECT title FROM conversations WHERE id = ?", (conversation_id,)
        ).get
    except _DAMAGE:
        _after_damage(source)
        return conversation_id
    return title if isinstance(title, str) and title else conversation_id


def _keep_damaged_copy(path: Path, now: float | None) -> Path:
    """Copy the damaged file (and its write-ahead log, which holds its latest commits)
    to a dated name beside it; the copy appears whole or not at all."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    aside = path.with_name(f"{path.stem}.damaged-{stamp}{path.suffix}")
    partial = aside.with_name(aside.name + ".part")
    try:
        wal = Path(f"{path}-wal")
        if wal.exists():
            _copy(wal, Path(f"{aside}-wal"))
        _copy(path, partial)
        partial.replace(aside)
    except OSError as error:
        for leftover in (partial, Path(f"{aside}-wal")):
            leftover.unlink(missing_ok=True)
        raise os_error(path, error.errno or 0) from error
    return aside


def _copy(source: Path, target: Path) -> None:
    shutil.copyfile(source, target)
    target.chmod(0o600)
    with target.open("rb+") as handle:
        os.fsync(handle.fileno())


def _replace(path: Path, rebuilt: Path) -> None:
    """Put the rebuilt file in the damaged one's place. The damaged file's log goes
    first: beside the new file, SQLite would read it as the new file's own."""
    for leftover in ("-wal", "-shm"):
        Path(f"{path}{leftover}").unlink(missing_ok=True)
    try:
        rebuilt.replace(path)
        if os.name == "posix":  # the rename itself on disk; Windows cannot open a folder
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except OSError as error:
        raise os_error(path, error.errno or 0) from error
