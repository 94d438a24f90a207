"""Full-text search over the history: what the user typed, turned into a safe FTS5
query, and the hits as plain data (the UI and the CLI each render the highlights)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import apsw

from bastion_desktop.core.inference.types import Role

# Around each matched term in a snippet; control characters that chat text does not
# carry, removed from the text handed out.
_OPEN: Final = "\x02"
_CLOSE: Final = "\x03"
_SNIPPET_TOKENS: Final = 16

_SEARCH_SQL: Final = """
SELECT m.id, m.conversation_id, c.title, m.role, m.created_at,
       snippet(message_search, 0, char(2), char(3), '…', :tokens),
       bm25(message_search)
FROM message_search
JOIN messages AS m ON m.id = message_search.rowid
JOIN conversations AS c ON c.id = m.conversation_id
WHERE message_search MATCH :query
ORDER BY rank
LIMIT :limit OFFSET :offset
"""


@dataclass(frozen=True)
class SearchHit:
    """A message that matches, best first. `highlights` are (start, end) offsets of the
    matched terms in `snippet`."""

    conversation_id: str
    conversation_title: str
    message_id: int
    role: Role
    snippet: str
    highlights: tuple[tuple[int, int], ...]
    score: float  # bm25, negated so that higher is better
    created_at: float


def match_expression(query: str) -> str | None:
    """An FTS5 expression for what the user typed: every word must appear, the last one
    as a prefix (so results follow typing). Words are quoted, so FTS5 operators and
    punctuation in the query can never be a syntax error. None: nothing to search."""
    words = re.findall(r"[^\W_]+", query)
    if not words:
        return None
    quoted = [f'"{word}"' for word in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def split_snippet(marked: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The snippet without its markers, and where the markers were."""
    text: list[str] = []
    highlights: list[tuple[int, int]] = []
    length = 0
    start: int | None = None
    for part in re.split(f"([{_OPEN}{_CLOSE}])", marked):
        if part == _OPEN:
            start = length
        elif part == _CLOSE:
            if start is not None and length > start:
                highlights.append((start, length))
            start = None
        else:
            text.append(part)
            length += len(part)
    return "".join(text), tuple(highlights)


def search(connection: apsw.Connection, query: str, limit: int, offset: int) -> list[SearchHit]:
    expression = match_expression(query)
    if expression is None:
        return []
    rows = connection.execute(
        _SEARCH_SQL,
        {"query": expression, "tokens": _SNIPPET_TOKENS, "limit": limit, "offset": offset},
    ).fetchall()
    hits = []
    for message_id, conversation_id, title, role, created_at, marked, bm25 in rows:
        assert isinstance(message_id, int)
        assert isinstance(conversation_id, str)
        assert isinstance(title, str)
        assert isinstance(role, str)
        assert isinstance(created_at, float)
        assert isinstance(marked, str)
        assert isinstance(bm25, float)
        snippet, highlights = split_snippet(marked)
        hits.append(
            SearchHit(
                conversation_id,
                title,
                message_id,
                Role(role),
                snippet,
                highlights,
                -bm25,
                created_at,
            )
        )
    return hits
