"""`EncryptedConversationStore`: the `ConversationStore` that keeps conversations in the
encrypted history file, plus what the history list needs (list, search, rename, pin,
archive, delete, export, import, retention).

Writes run on the caller's thread, the engine loop, on the one writer connection: each
is one short transaction, committed before the call returns, so a reply saved while it
streams is on disk the moment `update_message` returns, and a crash (even SIGKILL)
loses nothing already saved. Reads for the history list (list, search, export) run on
a worker thread with a connection of their own: WAL lets them proceed while the writer
commits, and a slow search never stalls the token stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypeVar

import apsw

from bastion_desktop.core.conversation_store import (
    Conversation,
    ConversationNotFoundError,
    GuardEventRecord,
    MessageNotFoundError,
    MessageState,
    StoredMessage,
)
from bastion_desktop.core.files import write_atomically
from bastion_desktop.core.history import rows
from bastion_desktop.core.history.database import DatabaseKey, HistoryDatabase, note_damage
from bastion_desktop.core.history.errors import (
    HistoryImportError,
    HistoryPartlyReadError,
    damaged_error,
)
from bastion_desktop.core.history.export import (
    ExportedConversation,
    exported_conversation,
    parse_export,
    render_json,
    render_markdown,
    stats_of,
)
from bastion_desktop.core.history.search import SearchHit, search
from bastion_desktop.core.inference.types import GenerationStats, Role
from bastion_guardrails.decisions import GuardDecision

T = TypeVar("T")

SECONDS_PER_DAY: Final = 86_400

# Deleted text must leave the search index too, not linger in it as dead entries. FTS5
# can remove each entry as its row goes ('secure-delete': about 3 ms per message of
# chat-like text in a 20,000-message index, 11 ms in a 100,000-message one), or the
# whole index can be rewritten without the dead entries ('optimize': about 7 µs per
# indexed message). The cheaper is used: deleting N messages from an index of M,
# rewrite when N * this >= M.
_REWRITE_INDEX_BREAK_EVEN: Final = 1000


@dataclass(frozen=True)
class ImportResult:
    imported: int
    skipped: int  # already in the history (same conversation id): left as they were


def _not_found(conversation_id: str) -> ConversationNotFoundError:
    return ConversationNotFoundError(f"No conversation with id {conversation_id}.")


def _readable(
    conversations: list[Conversation], read: Callable[[Conversation], T]
) -> tuple[list[T], list[Conversation]]:
    """Each conversation read, and those a damaged page keeps from being read; a
    history where nothing can be read is damaged, as any other read would say."""
    done: list[T] = []
    unreadable: list[Conversation] = []
    for conversation in conversations:
        try:
            done.append(read(conversation))
        except (apsw.CorruptError, apsw.NotADBError):
            if len(conversations) == 1:
                raise
            unreadable.append(conversation)
    return done, unreadable


def _message_not_found(message_id: int) -> MessageNotFoundError:
    return MessageNotFoundError(f"No message with id {message_id}.")


def _stats_columns(stats: GenerationStats | None) -> tuple[int | float | str | None, ...]:
    if stats is None:
        return (None,) * 6
    return (
        stats.prompt_tokens,
        stats.generated_tokens,
        stats.ttft_ms,
        stats.tokens_per_second,
        stats.total_ms,
        stats.finish_reason,
    )


def _delete_conversations(
    connection: apsw.Connection, condition: str, parameters: tuple[str | float, ...]
) -> int:
    """Delete the conversations matching `condition`, inside the caller's transaction,
    leaving none of their words in the search index. Returns how many."""
    doomed = connection.execute(
        "SELECT count(*) FROM messages WHERE conversation_id IN "  # noqa: S608
        f"(SELECT id FROM conversations WHERE {condition})",
        parameters,
    ).get
    indexed = connection.execute("SELECT count(*) FROM messages").get
    assert isinstance(doomed, int)
    assert isinstance(indexed, int)
    rewrite = doomed > 0 and doomed * _REWRITE_INDEX_BREAK_EVEN >= indexed
    if rewrite:
        _set_index_secure_delete(connection, on=False)
    deleted = connection.execute(
        f"DELETE FROM conversations WHERE {condition} RETURNING id",  # noqa: S608
        parameters,
    ).fetchall()
    if rewrite:
        connection.execute("INSERT INTO message_search (message_search) VALUES ('optimize')")
        _set_index_secure_delete(connection, on=True)
    return len(deleted)


def _set_index_secure_delete(connection: apsw.Connection, *, on: bool) -> None:
    connection.execute(
        "INSERT INTO message_search (message_search, rank) VALUES ('secure-delete', ?)",
        (int(on),),
    )


class EncryptedConversationStore:
    """Conversations in the encrypted history file. Open with `open`, close with `close`
    (or use it as a context manager)."""

    def __init__(self, database: HistoryDatabase) -> None:
        self._db = database
        # One thread, so the read connection is never used by two threads at once.
        self._reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-reads")
        self._reader: apsw.Connection | None = None
        # Held while heavy writing (an import, a deletion and its checkpoint, a rekey)
        # has the write connection on a worker thread: the loop's own small writes wait
        # for it rather than use the connection beside it (or hold the loop meanwhile).
        self._heavy = asyncio.Lock()
        self._closed = False
        self.interrupted_on_open = 0

    @classmethod
    def open(cls, path: Path, key: DatabaseKey) -> EncryptedConversationStore:
        """Open (or create) the history at `path` and mark the replies a crash left
        streaming as interrupted. Raises a `HistoryError` (wrong key, damaged, newer,
        read-only, full disk, busy) and then leaves the file as it was."""
        store = cls(HistoryDatabase.open(path, key))
        try:
            store.interrupted_on_open = store.recover_interrupted_replies()
        except BaseException:
            store.close()
            raise
        return store

    @property
    def path(self) -> Path:
        return self._db.path

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._reads.submit(self._close_reader).result()
        self._reads.shutdown(wait=True)
        self._db.close()

    def __enter__(self) -> EncryptedConversationStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- the ConversationStore protocol ----------------------------------------------

    async def create_conversation(
        self, *, title: str, model_id: str, profile_id: str, system_prompt: str
    ) -> Conversation:
        await self._writer_free()
        now = time.time()
        conversation = Conversation(
            uuid.uuid4().hex, title, model_id, profile_id, system_prompt, now, now
        )
        with self._db.transaction() as connection:
            connection.execute(
                "INSERT INTO conversations (id, title, model_id, profile_id, system_prompt, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation.id, title, model_id, profile_id, system_prompt, now, now),
            )
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation:
        await self._writer_free()
        with self._db.translated():
            conversation = rows.find_conversation(self._db.writer, conversation_id)
        if conversation is None:
            raise _not_found(conversation_id)
        return conversation

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        await self._writer_free()
        await self.get_conversation(conversation_id)
        with self._db.translated():
            return rows.branch(self._db.writer, conversation_id)

    async def add_message(
        self,
        conversation_id: str,
        role: Role,
        content: str,
        state: MessageState,
        *,
        model_id: str | None = None,
        profile_id: str | None = None,
        after: int | None = None,
    ) -> StoredMessage:
        await self._writer_free()
        now = time.time()
        with self._db.transaction() as connection:
            found = connection.execute(
                "SELECT shown_message_id FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchall()
            if not found:
                raise _not_found(conversation_id)
            message_id = connection.execute(
                "INSERT INTO messages (conversation_id, parent_id, role, content, state, "
                "model_id, profile_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    conversation_id,
                    found[0][0] if after is None else after,
                    role.value,
                    content,
                    state.value,
                    model_id,
                    profile_id,
                    now,
                ),
            ).get
            connection.execute(
                "UPDATE conversations SET shown_message_id = ?, updated_at = ? WHERE id = ?",
                (message_id, now, conversation_id),
            )
            assert isinstance(message_id, int)
            message = rows.find_message(connection, message_id)
        assert message is not None
        return message

    async def update_message(
        self,
        message_id: int,
        *,
        content: str,
        state: MessageState,
        stats: GenerationStats | None = None,
    ) -> None:
        await self._writer_free()
        # Its own committed transaction: ChatService calls this at least every second
        # while a reply streams, and what it wrote must survive a kill right after.
        with self._db.transaction() as connection:
            if stats is None:
                updated = connection.execute(
                    "UPDATE messages SET content = ?, state = ? WHERE id = ? RETURNING id",
                    (content, state.value, message_id),
                ).fetchall()
            else:
                updated = connection.execute(
                    "UPDATE messages SET content = ?, state = ?, prompt_tokens = ?, "
                    "generated_tokens = ?, ttft_ms = ?, tokens_per_second = ?, total_ms = ?, "
                    "finish_reason = ? WHERE id = ? RETURNING id",
                    (content, state.value, *_stats_columns(stats), message_id),
                ).fetchall()
            if not updated:
                raise _message_not_found(message_id)

    async def record_guard_event(
        self, conversation_id: str, message_id: int | None, decision: GuardDecision
    ) -> None:
        await self._writer_free()
        # Which rail decided what, and how fast, and which judge: never the explanation
        # or the rewritten text, which can quote what was said.
        judgement = decision.judgement
        judged: tuple[str | int | float | None, ...] = (None, None, None, None)
        if judgement is not None:
            judged = (
                judgement.judge,
                int(judgement.self_check),
                judgement.probability,
                judgement.threshold,
            )
        with self._db.transaction() as connection:
            connection.execute(
                "INSERT INTO guard_events (conversation_id, message_id, verdict, stage, "
                "profile_id, rail, category, latency_ms, created_at, judge, self_check, "
                "probability, threshold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    message_id,
                    decision.verdict.value,
                    decision.stage.value,
                    decision.profile_id,
                    decision.rail,
                    decision.category,
                    decision.latency_ms,
                    time.time(),
                    *judged,
                ),
            )

    async def branch_from(self, message_id: int) -> None:
        await self._writer_free()
        with self._db.transaction() as connection:
            found = connection.execute(
                "SELECT conversation_id, parent_id FROM messages WHERE id = ?", (message_id,)
            ).fetchall()
            if not found:
                raise _message_not_found(message_id)
            conversation_id, parent_id = found[0]
            connection.execute(
                "UPDATE conversations SET shown_message_id = ? WHERE id = ?",
                (parent_id, conversation_id),
            )

    async def alternatives(self, message_id: int) -> list[StoredMessage]:
        await self._writer_free()
        with self._db.translated():
            siblings = [
                rows.message(row)
                for row in self._db.writer.execute(
                    f"SELECT {rows.MESSAGE_COLUMNS} FROM messages AS m "  # noqa: S608
                    "JOIN messages AS this ON this.id = ? "
                    "WHERE m.conversation_id = this.conversation_id "
                    "AND m.parent_id IS this.parent_id ORDER BY m.id",
                    (message_id,),
                )
            ]
        if not siblings:
            raise _message_not_found(message_id)
        return siblings

    async def select_alternative(self, message_id: int) -> None:
        await self._writer_free()
        with self._db.transaction() as connection:
            conversation_id = connection.execute(
                "SELECT conversation_id FROM messages WHERE id = ?", (message_id,)
            ).get
            if conversation_id is None:
                raise _message_not_found(message_id)
            # Down to the newest reply at each step: the branch as it was last continued.
            shown = message_id
            while True:
                child = connection.execute(
                    "SELECT max(id) FROM messages WHERE parent_id = ?", (shown,)
                ).get
                if child is None:
                    break
                assert isinstance(child, int)
                shown = child
            connection.execute(
                "UPDATE conversations SET shown_message_id = ? WHERE id = ?",
                (shown, conversation_id),
            )

    # -- the history list ------------------------------------------------------------

    async def list_conversations(
        self, *, limit: int = 50, offset: int = 0, archived: bool = False
    ) -> list[Conversation]:
        """Pinned first, then the most recently active first."""

        def work(connection: apsw.Connection) -> list[Conversation]:
            found = connection.execute(
                f"SELECT {rows.CONVERSATION_COLUMNS} FROM conversations AS c "  # noqa: S608
                "WHERE c.archived = ? ORDER BY c.pinned DESC, c.updated_at DESC "
                "LIMIT ? OFFSET ?",
                (int(archived), limit, offset),
            )
            return [rows.conversation(row) for row in found]

        return await self._read(work)

    async def count_conversations(self, *, archived: bool = False) -> int:
        def work(connection: apsw.Connection) -> int:
            count = connection.execute(
                "SELECT count(*) FROM conversations WHERE archived = ?", (int(archived),)
            ).get
            assert isinstance(count, int)
            return count

        return await self._read(work)

    async def search(self, query: str, *, limit: int = 20, offset: int = 0) -> list[SearchHit]:
        """Messages matching every word of `query` (the last as a prefix), best first."""
        return await self._read(lambda connection: search(connection, query, limit, offset))

    async def list_guard_events(self, conversation_id: str) -> list[GuardEventRecord]:
        def work(connection: apsw.Connection) -> list[GuardEventRecord]:
            found = connection.execute(
                f"SELECT {rows.GUARD_EVENT_COLUMNS} FROM guard_events "  # noqa: S608
                "WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            )
            return [rows.guard_event(row) for row in found]

        return await self._read(work)

    async def rename_conversation(self, conversation_id: str, title: str) -> None:
        await self._writer_free()
        self._set(conversation_id, "UPDATE conversations SET title = ?", title)

    async def set_conversation_model(self, conversation_id: str, model_id: str) -> None:
        await self._writer_free()
        self._set(conversation_id, "UPDATE conversations SET model_id = ?", model_id)

    async def set_pinned(self, conversation_id: str, pinned: bool) -> None:
        await self._writer_free()
        self._set(conversation_id, "UPDATE conversations SET pinned = ?", int(pinned))

    async def set_archived(self, conversation_id: str, archived: bool) -> None:
        await self._writer_free()
        self._set(conversation_id, "UPDATE conversations SET archived = ?", int(archived))

    def _set(self, conversation_id: str, update: str, value: str | int) -> None:
        with self._db.transaction() as connection:
            changed = connection.execute(
                f"{update} WHERE id = ? RETURNING id", (value, conversation_id)
            ).fetchall()
            if not changed:
                raise _not_found(conversation_id)

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete it with its messages, their search index entries and its guardrail
        events; the freed pages are zeroed (secure_delete) and the WAL emptied."""

        def work() -> None:
            with self._db.transaction() as connection:
                if not _delete_conversations(connection, "id = ?", (conversation_id,)):
                    raise _not_found(conversation_id)
            self._db.checkpoint()

        await self._heavy_write(work)

    async def delete_older_than(self, days: float, *, now: float | None = None) -> int:
        """The retention sweep: delete conversations with no new message for `days`
        days (pinned ones too: retention may be an administrator's rule). Returns how
        many were deleted."""
        if days <= 0:
            raise ValueError("a retention period is a positive number of days")
        cutoff = (time.time() if now is None else now) - days * SECONDS_PER_DAY

        def work() -> int:
            with self._db.transaction() as connection:
                deleted = _delete_conversations(connection, "updated_at < ?", (cutoff,))
            if deleted:
                self._db.checkpoint()
            return deleted

        return await self._heavy_write(work)

    # -- export and import -----------------------------------------------------------

    async def export_json(self, path: Path, conversation_ids: Sequence[str] | None = None) -> int:
        """Write the conversations (all when None) to `path` in Bastion's JSON format,
        atomically. Returns how many were written. In a damaged history, what can still
        be read is written, then HistoryPartlyReadError names what could not."""

        def work(connection: apsw.Connection) -> int:
            exported, unreadable = _readable(
                self._exported(connection, conversation_ids),
                lambda conversation: exported_conversation(
                    conversation,
                    rows.all_messages(connection, conversation.id),
                    rows.shown_message_id(connection, conversation.id),
                ),
            )
            write_atomically(path, render_json(exported))
            self._say_unreadable(path, len(exported), unreadable)
            return len(exported)

        return await self._read(work, snapshot=True)

    async def export_markdown(
        self, path: Path, conversation_ids: Sequence[str] | None = None
    ) -> int:
        """Write the conversations (all when None), each as its shown branch, to `path`
        as one Markdown document. Returns how many were written."""

        def work(connection: apsw.Connection) -> int:
            conversations, unreadable = _readable(
                self._exported(connection, conversation_ids),
                lambda conversation: (conversation, rows.branch(connection, conversation.id)),
            )
            write_atomically(path, render_markdown(conversations).encode("utf-8"))
            self._say_unreadable(path, len(conversations), unreadable)
            return len(conversations)

        return await self._read(work, snapshot=True)

    def _say_unreadable(self, path: Path, written: int, unreadable: list[Conversation]) -> None:
        if not unreadable:
            return
        note_damage(self.path)
        names = ", ".join(repr(c.title or c.id) for c in unreadable[:5])
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        raise HistoryPartlyReadError(
            f"Exported {written} conversation{'s' if written != 1 else ''} to {path}; "
            f"{len(unreadable)} could not be read because the history is damaged: "
            f"{names}{more}."
        )

    @staticmethod
    def _exported(
        connection: apsw.Connection, conversation_ids: Sequence[str] | None
    ) -> list[Conversation]:
        if conversation_ids is None:
            found = connection.execute(
                f"SELECT {rows.CONVERSATION_COLUMNS} FROM conversations AS c "  # noqa: S608
                "ORDER BY c.created_at, c.id"
            )
            return [rows.conversation(row) for row in found]
        conversations = []
        for conversation_id in conversation_ids:
            conversation = rows.find_conversation(connection, conversation_id)
            if conversation is None:
                raise _not_found(conversation_id)
            conversations.append(conversation)
        return conversations

    async def import_json(self, path: Path) -> ImportResult:
        """Add the conversations of a Bastion JSON export. The whole file is validated
        first and written in one transaction: a damaged file changes nothing.
        Conversations already here (same id) are skipped, so importing twice is safe."""

        def parse() -> list[ExportedConversation]:
            try:
                data = path.read_bytes()
            except OSError as error:
                raise HistoryImportError(
                    f"Bastion could not read {path} ({error.strerror or error}); "
                    "nothing was imported."
                ) from error
            return parse_export(data, path).conversations

        def work() -> ImportResult:
            conversations = parse()
            imported = 0
            with self._db.transaction() as connection:
                for conversation in conversations:
                    if rows.find_conversation(connection, conversation.id) is None:
                        self._insert(connection, conversation)
                        imported += 1
            return ImportResult(imported, len(conversations) - imported)

        return await self._heavy_write(work)

    @staticmethod
    def _insert(connection: apsw.Connection, conversation: ExportedConversation) -> None:
        connection.execute(
            "INSERT INTO conversations (id, title, model_id, profile_id, system_prompt, "
            "created_at, updated_at, pinned, archived) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                conversation.id,
                conversation.title,
                conversation.model_id,
                conversation.profile_id,
                conversation.system_prompt,
                conversation.created_at,
                conversation.updated_at,
                int(conversation.pinned),
                int(conversation.archived),
            ),
        )
        new_ids: dict[int, int] = {}
        for message in conversation.messages:
            # A reply exported while it streamed will never be finished now.
            state = (
                MessageState.INTERRUPTED
                if message.state is MessageState.STREAMING
                else message.state
            )
            new_id = connection.execute(
                "INSERT INTO messages (conversation_id, parent_id, role, content, state, "
                "model_id, profile_id, prompt_tokens, generated_tokens, ttft_ms, "
                "tokens_per_second, total_ms, finish_reason, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    conversation.id,
                    None if message.parent_id is None else new_ids[message.parent_id],
                    message.role.value,
                    message.content,
                    state.value,
                    message.model_id,
                    message.profile_id,
                    *_stats_columns(stats_of(message)),
                    message.created_at,
                ),
            ).get
            assert isinstance(new_id, int)
            new_ids[message.id] = new_id
        if conversation.shown_message_id is not None:
            connection.execute(
                "UPDATE conversations SET shown_message_id = ? WHERE id = ?",
                (new_ids[conversation.shown_message_id], conversation.id),
            )

    # -- upkeep ----------------------------------------------------------------------

    def recover_interrupted_replies(self) -> int:
        """Mark replies left `streaming` as `interrupted` and return how many: only a
        crash leaves one so. `open` calls it; their text is what was last saved."""
        with self._db.transaction() as connection:
            marked = connection.execute(
                "UPDATE messages SET state = ? WHERE state = ? RETURNING id",
                (MessageState.INTERRUPTED.value, MessageState.STREAMING.value),
            ).fetchall()
        return len(marked)

    async def check_integrity(self) -> None:
        """Read every page (so every page's authentication tag is checked) and check
        the search index against the messages; raise `HistoryDamagedError` if anything
        is wrong. Slow on a large history: for `bastion doctor`, not for every start."""
        await self._writer_free()

        def work(connection: apsw.Connection) -> list[apsw.SQLiteValues]:
            return connection.execute("PRAGMA quick_check").fetchall()

        if await self._read(work) != [("ok",)]:
            raise damaged_error(self.path)
        # An INSERT by syntax only: FTS5 commands go through INSERT, this one writes
        # nothing, but the read connection is query_only.
        with self._db.translated():
            self._db.writer.execute(
                "INSERT INTO message_search (message_search, rank) VALUES ('integrity-check', 1)"
            )

    async def rekey(self, new_key: bytes) -> None:
        """Re-encrypt the whole file with `new_key`, in place and atomically: after a
        crash it opens with the old key or the new one, never neither."""
        await self._writer_free()
        # The read connection keeps the old key: closed first, on its own thread.
        await asyncio.get_running_loop().run_in_executor(self._reads, self._close_reader)
        await self._heavy_write(lambda: self._db.rekey(new_key))

    # -- the read connection ---------------------------------------------------------

    async def _writer_free(self) -> None:
        """Return once no heavy writing has the write connection; what follows on the
        loop then has it to itself (nothing can start heavy work before the next await)."""
        if self._heavy.locked():
            async with self._heavy:
                pass

    async def _heavy_write(self, work: Callable[[], T]) -> T:
        """Run `work`, which writes a lot, on a worker thread with the write connection
        kept to it: the loop that streams replies is never held by it. A cancelled
        caller still waits for the thread: the connection is not free before then."""
        async with self._heavy:
            running = asyncio.ensure_future(asyncio.to_thread(work))
            try:
                return await asyncio.shield(running)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await running
                raise

    async def _read(self, work: Callable[[apsw.Connection], T], *, snapshot: bool = False) -> T:
        """Run `work` on the read thread; `snapshot` runs it in one read transaction,
        so that it sees the history as of one moment."""
        await self._writer_free()  # a rekey replaces the read connection's key
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reads, self._run_read, work, snapshot)

    def _run_read(self, work: Callable[[apsw.Connection], T], snapshot: bool) -> T:
        if self._reader is None:
            self._reader = self._db.connect_reader()
        connection = self._reader
        with self._db.translated(connection):
            if not snapshot:
                return work(connection)
            connection.execute("BEGIN")
            try:
                result = work(connection)
            except BaseException:
                # What went wrong is the error to tell, not the end of the read after it.
                with contextlib.suppress(apsw.Error):
                    connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return result

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
