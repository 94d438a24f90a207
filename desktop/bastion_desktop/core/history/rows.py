"""Rows of the history tables as the core's dataclasses, and the queries both of the
store's connections share."""

from __future__ import annotations

from typing import Final, cast

import apsw

from bastion_desktop.core.conversation_store import (
    Conversation,
    GuardEventRecord,
    MessageState,
    StoredMessage,
)
from bastion_desktop.core.inference.types import FinishReason, GenerationStats, Role
from bastion_guardrails.decisions import Judgement

CONVERSATION_COLUMNS: Final = (
    "c.id, c.title, c.model_id, c.profile_id, c.system_prompt, c.created_at, c.updated_at, "
    "c.pinned, c.archived"
)

# The last two count the message's siblings (alternatives): up to it, and in all.
MESSAGE_COLUMNS: Final = """m.id, m.conversation_id, m.role, m.content, m.state, m.created_at,
    m.model_id, m.profile_id, m.prompt_tokens, m.generated_tokens, m.ttft_ms,
    m.tokens_per_second, m.total_ms, m.finish_reason, m.parent_id,
    (SELECT count(*) FROM messages AS s WHERE s.conversation_id = m.conversation_id
        AND s.parent_id IS m.parent_id AND s.id <= m.id),
    (SELECT count(*) FROM messages AS s WHERE s.conversation_id = m.conversation_id
        AND s.parent_id IS m.parent_id)"""

GUARD_EVENT_COLUMNS: Final = (
    "conversation_id, message_id, verdict, stage, profile_id, rail, category, latency_ms, "
    "created_at, judge, self_check, probability, threshold"
)

# The branch shown: from the conversation's shown message up through its parents.
_BRANCH_SQL: Final = f"""
WITH RECURSIVE branch (id) AS (
    SELECT shown_message_id FROM conversations
        WHERE id = ? AND shown_message_id IS NOT NULL
    UNION ALL
    SELECT m.parent_id FROM messages AS m JOIN branch ON m.id = branch.id
        WHERE m.parent_id IS NOT NULL
)
SELECT {MESSAGE_COLUMNS} FROM branch JOIN messages AS m ON m.id = branch.id ORDER BY m.id
"""  # noqa: S608  (constant column lists, no user input)


def _text(value: apsw.SQLiteValue) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text in the history, found {type(value).__name__}")
    return value


def _optional_text(value: apsw.SQLiteValue) -> str | None:
    return None if value is None else _text(value)


def _integer(value: apsw.SQLiteValue) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an integer in the history, found {type(value).__name__}")
    return value


def _optional_integer(value: apsw.SQLiteValue) -> int | None:
    return None if value is None else _integer(value)


def _real(value: apsw.SQLiteValue) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number in the history, found {type(value).__name__}")
    return float(value)


def _optional_real(value: apsw.SQLiteValue) -> float | None:
    return None if value is None else _real(value)


def conversation(row: apsw.SQLiteValues) -> Conversation:
    return Conversation(
        id=_text(row[0]),
        title=_text(row[1]),
        model_id=_text(row[2]),
        profile_id=_text(row[3]),
        system_prompt=_text(row[4]),
        created_at=_real(row[5]),
        updated_at=_real(row[6]),
        pinned=bool(row[7]),
        archived=bool(row[8]),
    )


def message(row: apsw.SQLiteValues) -> StoredMessage:
    stats = None
    if row[13] is not None:  # finish_reason: set together with the other statistics
        stats = GenerationStats(
            prompt_tokens=_integer(row[8]),
            generated_tokens=_integer(row[9]),
            ttft_ms=_real(row[10]),
            tokens_per_second=_real(row[11]),
            total_ms=_real(row[12]),
            finish_reason=cast(FinishReason, _text(row[13])),  # the schema CHECKs it
        )
    return StoredMessage(
        id=_integer(row[0]),
        conversation_id=_text(row[1]),
        role=Role(_text(row[2])),
        content=_text(row[3]),
        state=MessageState(_text(row[4])),
        created_at=_real(row[5]),
        model_id=_optional_text(row[6]),
        profile_id=_optional_text(row[7]),
        stats=stats,
        parent_id=_optional_integer(row[14]),
        alternative_number=_integer(row[15]),
        alternative_count=_integer(row[16]),
    )


def guard_event(row: apsw.SQLiteValues) -> GuardEventRecord:
    return GuardEventRecord(
        conversation_id=_text(row[0]),
        message_id=_optional_integer(row[1]),
        verdict=_text(row[2]),
        stage=_text(row[3]),
        profile_id=_text(row[4]),
        rail=_optional_text(row[5]),
        category=_optional_text(row[6]),
        latency_ms=_real(row[7]),
        created_at=_real(row[8]),
        judgement=_judgement(row[9:13]),
    )


def _judgement(row: apsw.SQLiteValues) -> Judgement | None:
    judge, self_check, probability, threshold = row
    if judge is None:
        return None
    return Judgement(
        _text(judge),
        bool(_integer(self_check)),
        _optional_real(probability),
        _optional_real(threshold),
    )


def find_conversation(connection: apsw.Connection, conversation_id: str) -> Conversation | None:
    row = connection.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM conversations AS c WHERE c.id = ?",  # noqa: S608
        (conversation_id,),
    ).fetchone()
    return None if row is None else conversation(row)


def shown_message_id(connection: apsw.Connection, conversation_id: str) -> int | None:
    value = connection.execute(
        "SELECT shown_message_id FROM conversations WHERE id = ?", (conversation_id,)
    ).get
    return _optional_integer(value)


def branch(connection: apsw.Connection, conversation_id: str) -> list[StoredMessage]:
    return [message(row) for row in connection.execute(_BRANCH_SQL, (conversation_id,))]


def all_messages(connection: apsw.Connection, conversation_id: str) -> list[StoredMessage]:
    """Every message of the conversation, every alternative, oldest first."""
    rows = connection.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages AS m WHERE m.conversation_id = ? "  # noqa: S608
        "ORDER BY m.id",
        (conversation_id,),
    )
    return [message(row) for row in rows]


def find_message(connection: apsw.Connection, message_id: int) -> StoredMessage | None:
    row = connection.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages AS m WHERE m.id = ?",  # noqa: S608
        (message_id,),
    ).fetchone()
    return None if row is None else message(row)
