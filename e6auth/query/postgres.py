"""What a PostgreSQL query database needs to be shared by users: one statement per transaction,
a user's role for it, a cancel request, a pooled connection handed back clean, and the server's
errors told apart.

The gateway logs in as one role and runs every user's statement on pooled connections, so each
statement's transaction carries its own settings (``SET LOCAL``), must not end early (a
``COMMIT;`` in the text would run the rest outside it), and leaves nothing in the session for the
connection's next user.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from e6auth.errors import QueryError, ReadOnlyViolation

__all__ = [
    "MAX_NAME_BYTES",
    "cancel_statement",
    "discard_session_state",
    "execute_plain",
    "is_statement_timeout",
    "no_automatic_prepares",
    "read_only_refusal",
    "set_local_role",
    "single_statement",
    "without_cursor_declaration",
]

log = logging.getLogger("e6auth")

MAX_NAME_BYTES = 63
"""NAMEDATALEN - 1: PostgreSQL would silently truncate a longer role name to another role's."""
_CANCEL_TIMEOUT_SECONDS = 5.0
_READ_ONLY_STATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: the write itself
        "25001",  # active_sql_transaction: SET TRANSACTION READ WRITE after the snapshot
        "2D000",  # invalid_transaction_termination: COMMIT inside DO or a procedure
    }
)
_CURSOR_DECLARATION = re.compile(r'DECLARE "[^"\n]*" (?:[A-Z]+ )*CURSOR (?:[A-Z]+ )*FOR ')


def execute_plain(connection: Connection, sql: str) -> None:
    """Run one of the gateway's own statements (never a user's), without parameters."""
    connection.exec_driver_sql(sql, execution_options={"no_parameters": True})


def set_local_role(connection: Connection, role: str, user: str) -> None:
    """``SET LOCAL ROLE`` for the transaction: the user's statement runs with their rights."""
    # Quoted by the dialect: a user name cannot become SQL, and the case is kept.
    quoted = connection.dialect.identifier_preparer.quote(role)
    try:
        execute_plain(connection, f"SET LOCAL ROLE {quoted}")
    except DBAPIError as exc:
        # The database's text could tell which other roles exist: say only what to fix.
        state = getattr(exc.orig, "sqlstate", None)
        if state == "22023":  # invalid_parameter_value: no such role
            raise QueryError(f"no database role {role!r} for user {user}") from None
        if state == "42501":  # insufficient_privilege: not granted to the login role
            raise QueryError(
                f"the gateway's database login may not act as role {role!r} for user {user}"
            ) from None
        raise


@contextlib.contextmanager
def single_statement(
    connection: Connection, *, enabled: bool, read_only: bool = False
) -> Iterator[None]:
    """While a statement that must be one statement is sent (a read-only token's, any explain
    or dry run, any statement run as a user's role): psycopg sends a statement without
    parameters by the simple protocol, which runs "COMMIT; DELETE ..." as two statements, the
    second outside the transaction. Prepared, it must be one statement; and with at most 0 kept,
    psycopg deallocates it as soon as it has run, so that nothing it prepared is left for the
    pool's DISCARD ALL to pull from under its cache."""
    driver: Any = connection.connection.driver_connection
    if not enabled or not hasattr(driver, "prepare_threshold"):
        if enabled:
            refusal = ReadOnlyViolation if read_only else QueryError
            raise refusal("this statement needs the psycopg driver on PostgreSQL")
        yield
        return
    threshold, kept = driver.prepare_threshold, driver.prepared_max
    driver.prepare_threshold, driver.prepared_max = 0, 0
    try:
        yield
    finally:
        driver.prepare_threshold, driver.prepared_max = threshold, kept


def cancel_statement(driver: Any) -> None:
    """Ask the database to stop what this DBAPI connection is running (psycopg's cancel)."""
    try:
        if hasattr(driver, "cancel_safe"):
            driver.cancel_safe(timeout=_CANCEL_TIMEOUT_SECONDS)
        elif hasattr(driver, "cancel"):
            driver.cancel()
    except Exception as exc:  # best effort: the flag still stops the next fetch
        log.debug("driver cancel failed: %s", type(exc).__name__)


def no_automatic_prepares(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """psycopg prepares a statement on the server after it has run it 5 times and then only
    names it; the pool's DISCARD ALL drops every prepared statement, so the next run of that
    statement on the connection failed ("prepared statement "_pg3_0" does not exist"), and
    DISCARD ALL itself, once prepared, failed in the pool's reset. Query connections prepare
    only what :func:`single_statement` prepares, and never keep it."""
    driver: Any = dbapi_connection
    if hasattr(driver, "prepare_threshold"):
        driver.prepare_threshold = None


def discard_session_state(
    dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry, state: PoolResetState
) -> None:
    """Before a PostgreSQL connection goes back to the pool: forget what the last user's
    statements left in the session (SET, temporary tables, prepared statements), so that the
    next user, maybe someone else, starts clean."""
    dbapi_connection.rollback()
    if state.terminate_only:
        return
    raw: Any = dbapi_connection
    raw.autocommit = True  # DISCARD ALL refuses to run inside a transaction
    try:
        raw.execute("DISCARD ALL")
    finally:
        raw.autocommit = False


def is_statement_timeout(error: BaseException | None) -> bool:
    """PostgreSQL's query_canceled (57014) for statement_timeout, not for a cancel request."""
    return getattr(error, "sqlstate", None) == "57014" and "statement timeout" in str(error)


def read_only_refusal(error: BaseException | None) -> str | None:
    """For a read-only statement's error: None if it is not PostgreSQL refusing a write or an
    escape from the read-only transaction, else a message ("" for the database's own)."""
    state = getattr(error, "sqlstate", None)
    if state in _READ_ONLY_STATES:
        return ""
    if state == "42601" and "multiple commands" in str(error):
        return "a read-only token runs one statement at a time"
    return None


def without_cursor_declaration(message: str) -> str:
    """PostgreSQL quotes the failing line, which for a streamed query starts with the DECLARE
    that SQLAlchemy wraps it in: show the user's statement, with the error marker moved along."""
    match = _CURSOR_DECLARATION.search(message)
    if match is None:
        return message
    width = len(match.group(0))
    lines = message[: match.start()] + message[match.end() :]
    return "\n".join(
        line[width:] if line.strip() == "^" and line.startswith(" " * width) else line
        for line in lines.split("\n")
    )
