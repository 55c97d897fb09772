"""What the gateway reads from a statement's text before sending it: its first keyword.

PostgreSQL accepts a server-side cursor (so a streamed result) and an EXPLAIN only for some
statements, and which it is can be told from the first keyword without parsing SQL.
"""

from __future__ import annotations

import re

__all__ = ["first_keyword", "postgres_can_explain", "postgres_can_stream"]

# Leading comments, whitespace and parentheses, then the statement's first keyword.
_FIRST_KEYWORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*([A-Za-z]+)", re.DOTALL)
_WRITES_OR_INTO = re.compile(r"\b(?:insert|update|delete|merge|into)\b", re.IGNORECASE)
# PostgreSQL can DECLARE a cursor (and so stream) only for plain queries.
_POSTGRES_CURSOR_KEYWORDS = frozenset({"select", "with", "values", "table"})
# What PostgreSQL's EXPLAIN accepts, and so what dry_run can check there without running it.
_POSTGRES_EXPLAINABLE = _POSTGRES_CURSOR_KEYWORDS | {"insert", "update", "delete", "merge"}


def first_keyword(sql: str) -> str:
    """The statement's first keyword, lower-cased ('' if there is none)."""
    match = _FIRST_KEYWORD.match(sql)
    return match.group(1).lower() if match else ""


def postgres_can_stream(sql: str) -> bool:
    """Whether PostgreSQL accepts ``sql`` in a server-side cursor: a DECLARE takes plain
    queries only (not one that writes, nor SELECT ... INTO)."""
    return first_keyword(sql) in _POSTGRES_CURSOR_KEYWORDS and not _WRITES_OR_INTO.search(sql)


def postgres_can_explain(sql: str) -> bool:
    """Whether PostgreSQL can EXPLAIN ``sql``: queries and DML; anything else it would have to
    run to check."""
    return first_keyword(sql) in _POSTGRES_EXPLAINABLE
