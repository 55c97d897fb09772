"""What a SQLite query database needs to be shared by users: an authorizer on every statement,
a progress handler that stops one, and a pooled connection handed back clean.

SQLite has no roles, no read-only transactions and no cancel request. The sqlite3 driver's hooks
stand in for them: the authorizer refuses, when a statement is prepared, what would reach beyond
its database or change the pooled connection (and, for a read-only token, anything but reading);
the progress handler stops a statement that was cancelled or ran past its timeout; and the pool's
reset drops the temporary objects a user left, before the next user gets the connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from e6auth.errors import ReadOnlyViolation

__all__ = [
    "drop_temporary_objects",
    "plan_tree",
    "sqlite_driver",
    "statement_guard",
    "stop_watching",
    "watch",
]

_PROGRESS_STEPS = 1000
"""SQLite runs the cancel check every this many VM instructions: frequent enough to stop within
milliseconds, rare enough not to slow queries down."""
# Read-only pragmas a user statement may use on SQLite; every other pragma would change the pooled
# connection for the next user.
_READ_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "database_list",
        "collation_list",
    }
)
# What a read-only statement may do on SQLite: an allow-list, so that an action SQLite adds later
# is refused until someone decides otherwise. Everything else (INSERT, UPDATE, DELETE, CREATE,
# DROP, ALTER, ANALYZE, REINDEX, ATTACH and VACUUM INTO, BEGIN/COMMIT, SAVEPOINT, writing pragmas
# such as query_only itself) is denied when the statement is prepared.
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
_CREATE_TEMPORARY = frozenset(
    {
        sqlite3.SQLITE_CREATE_TEMP_INDEX,
        sqlite3.SQLITE_CREATE_TEMP_TABLE,
        sqlite3.SQLITE_CREATE_TEMP_TRIGGER,
        sqlite3.SQLITE_CREATE_TEMP_VIEW,
    }
)
_MADE_TEMPORARY_OBJECTS = "e6auth_made_temporary_objects"
"""Set in a pooled SQLite connection's info by a statement that created temporary objects."""
# Triggers first: a temporary trigger may watch a main table, which nothing else drops it with.
_TEMPORARY_DROP_ORDER = ("trigger", "view", "table")


def sqlite_driver(connection: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``connection``; None for another driver or database."""
    driver = connection.connection.driver_connection
    return driver if isinstance(driver, sqlite3.Connection) else None


@contextlib.contextmanager
def statement_guard(connection: Connection, *, read_only: bool = False) -> Iterator[None]:
    """While a user statement is prepared on SQLite: no ATTACH (it would open any file on
    this host, the token store included) and no pragma that changes the pooled connection;
    for a read-only token's statement, nothing but reading at all. A statement that creates
    temporary objects marks the connection, so that they are dropped before its next user
    gets it."""
    driver = sqlite_driver(connection)
    if driver is None:
        if read_only:
            raise ReadOnlyViolation("read-only tokens need the sqlite3 driver on SQLite")
        yield
        return
    decide = _read_only_authorizer if read_only else _authorizer
    pooled = connection.info

    def authorize(
        action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if action in _CREATE_TEMPORARY:
            pooled[_MADE_TEMPORARY_OBJECTS] = True
        return decide(action, arg1, arg2, db, trigger)

    driver.set_authorizer(authorize)
    try:
        yield
    finally:
        driver.set_authorizer(None)


def _authorizer(
    action: int, arg1: str | None, _arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in _READ_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _read_only_authorizer(
    action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
) -> int:
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        return _authorizer(action, arg1, arg2, db, trigger)
    return sqlite3.SQLITE_DENY


def watch(connection: Connection, should_stop: Callable[[], int]) -> None:
    """Have SQLite ask ``should_stop`` every few VM steps while a statement runs on
    ``connection`` (a true answer interrupts it)."""
    driver = sqlite_driver(connection)
    if driver is not None:
        driver.set_progress_handler(should_stop, _PROGRESS_STEPS)


def stop_watching(connection: Connection) -> None:
    """Undo :func:`watch`, before the connection goes back to the pool."""
    driver = sqlite_driver(connection)
    if driver is not None:
        driver.set_progress_handler(None, 0)


def drop_temporary_objects(
    dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, state: PoolResetState
) -> None:
    """Before a SQLite connection that a statement made temporary objects on goes back to the
    pool: drop them, or the next user, maybe someone else, would meet a temporary view that
    shadows a table, or a temporary trigger that copies their inserts. (Should a drop fail,
    the pool closes the connection, and the objects go with it.)"""
    if not record.info.pop(_MADE_TEMPORARY_OBJECTS, False) or state.terminate_only:
        return
    raw: Any = dbapi_connection
    raw.rollback()
    found = raw.execute("SELECT type, name FROM temp.sqlite_master").fetchall()
    for kind in _TEMPORARY_DROP_ORDER:
        for name in (name for found_kind, name in found if found_kind == kind):
            quoted = '"' + name.replace('"', '""') + '"'
            raw.execute(f"DROP {kind.upper()} IF EXISTS temp.{quoted}")
    raw.commit()


def plan_tree(rows: Sequence[Sequence[Any]]) -> str:
    """EXPLAIN QUERY PLAN's (id, parent, notused, detail) rows as an indented tree."""
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _unused, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return "\n".join(lines)
