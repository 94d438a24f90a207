"""The history database's tables, and the migrations that build them.

The schema version is `PRAGMA user_version`. Migration N takes the database from
version N-1 to N inside one transaction that also sets the version, so a crash during a
migration leaves the previous version intact. A released migration is never edited:
a change of schema is a new entry at the end of `MIGRATIONS`.
"""

from __future__ import annotations

import contextlib

import apsw

_VERSION_1 = """
CREATE TABLE conversations (
    id TEXT PRIMARY KEY NOT NULL,
    title TEXT NOT NULL,
    model_id TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    system_prompt TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    archived INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
    -- The last message of the branch shown (NULL while empty). Not a foreign key: it
    -- would make conversations and messages reference each other.
    shown_message_id INTEGER
) STRICT;

-- The history list: not archived, pinned first, most recent first.
CREATE INDEX conversations_listed ON conversations (archived, pinned DESC, updated_at DESC);
CREATE INDEX conversations_by_age ON conversations (updated_at);

-- AUTOINCREMENT: a deleted message's id is never reused, so an id held by the UI or by
-- a streaming reply can never come to mean another message.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- The message this one answers or follows; siblings are alternatives (a regenerated
    -- reply, an edited question).
    parent_id INTEGER REFERENCES messages (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('streaming', 'complete', 'stopped', 'interrupted', 'blocked')),
    model_id TEXT,
    profile_id TEXT,
    prompt_tokens INTEGER,
    generated_tokens INTEGER,
    ttft_ms REAL,
    tokens_per_second REAL,
    total_ms REAL,
    finish_reason TEXT CHECK (finish_reason IN ('stop', 'length', 'cancelled')),
    created_at REAL NOT NULL
) STRICT;

CREATE INDEX messages_by_conversation ON messages (conversation_id, parent_id);
CREATE INDEX messages_by_parent ON messages (parent_id);
-- Only the replies a crash left behind: found on open without scanning every message.
CREATE INDEX messages_streaming ON messages (state) WHERE state = 'streaming';

-- What the guardrails decided, never what was said: no message text in this table.
CREATE TABLE guard_events (
    id INTEGER PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id INTEGER REFERENCES messages (id) ON DELETE CASCADE,
    verdict TEXT NOT NULL,
    stage TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    rail TEXT,
    category TEXT,
    latency_ms REAL NOT NULL,
    created_at REAL NOT NULL
) STRICT;

CREATE INDEX guard_events_by_conversation ON guard_events (conversation_id);
CREATE INDEX guard_events_by_message ON guard_events (message_id);

-- Full-text index over message text. External content: the text is stored once, in
-- messages, and the index holds only terms; the triggers keep the two in step. A reply
-- is indexed once it stops streaming (complete, stopped, interrupted, blocked), not at
-- each save while it grows: re-indexing means a secure delete of every term of the
-- previous text, tens of milliseconds for a long reply, on every save. The view is
-- exactly what is indexed, so FTS5's own integrity check can hold the index to it.
CREATE VIEW searchable_messages AS
    SELECT id, content FROM messages WHERE state != 'streaming';

CREATE VIRTUAL TABLE message_search USING fts5 (
    content,
    content = 'searchable_messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Without this, deleting a row leaves its terms in the index until a merge: a deleted
-- conversation's words would stay in the file.
INSERT INTO message_search (message_search, rank) VALUES ('secure-delete', 1);

-- The 'delete' command must only ever name a row that is in the index, with the text it
-- was indexed with: hence the state tests.
CREATE TRIGGER messages_indexed AFTER INSERT ON messages
WHEN new.state != 'streaming' BEGIN
    INSERT INTO message_search (rowid, content) VALUES (new.id, new.content);
END;

CREATE TRIGGER messages_unindexed AFTER DELETE ON messages
WHEN old.state != 'streaming' BEGIN
    INSERT INTO message_search (message_search, rowid, content)
        VALUES ('delete', old.id, old.content);
END;

CREATE TRIGGER messages_reindexed AFTER UPDATE OF content, state ON messages
WHEN old.content IS NOT new.content
    OR (old.state = 'streaming') != (new.state = 'streaming') BEGIN
    INSERT INTO message_search (message_search, rowid, content)
        SELECT 'delete', old.id, old.content WHERE old.state != 'streaming';
    INSERT INTO message_search (rowid, content)
        SELECT new.id, new.content WHERE new.state != 'streaming';
END;
"""

# Who flagged a content-safety block: the judge's name, whether it was the chat model's
# own check, and the probability it gave against the profile's threshold. A name and
# two numbers, never text: the sentence read back names the judge as the live one did.
_VERSION_2 = """
ALTER TABLE guard_events ADD COLUMN judge TEXT;
ALTER TABLE guard_events ADD COLUMN self_check INTEGER CHECK (self_check IN (0, 1));
ALTER TABLE guard_events ADD COLUMN probability REAL;
ALTER TABLE guard_events ADD COLUMN threshold REAL;
"""

MIGRATIONS: tuple[str, ...] = (_VERSION_1, _VERSION_2)

SCHEMA_VERSION = len(MIGRATIONS)


def user_version(connection: apsw.Connection) -> int:
    version = connection.execute("PRAGMA user_version").get
    assert isinstance(version, int)
    return version


def migrate(connection: apsw.Connection) -> None:
    """Bring the database up to `SCHEMA_VERSION`, one transaction per step.

    The caller has checked that the database is not newer than this code.
    """
    for version in range(user_version(connection) + 1, SCHEMA_VERSION + 1):
        connection.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated it.
            if user_version(connection) >= version:
                connection.execute("ROLLBACK")
                continue
            connection.execute(MIGRATIONS[version - 1])
            connection.execute(f"PRAGMA user_version = {version:d}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                with contextlib.suppress(apsw.Error):  # the first error is the one to report
                    connection.execute("ROLLBACK")
            raise
