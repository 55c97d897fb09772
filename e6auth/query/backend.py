"""Where statements run: the :class:`QueryBackend` hook, and its SQLAlchemy implementation.

A backend answers the connector's browse calls (catalogs, schemas, tables, columns) and runs one
statement at a time as a :class:`QueryRun`. Everything it raises on purpose is a
:class:`~e6auth.errors.QueryError` whose detail is the database's own message: no driver exception,
database URL or password leaves this module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from sqlalchemy import Connection, CursorResult, event, inspect, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from e6auth.errors import QueryCancelled, QueryError, ReadOnlyViolation
from e6auth.query.literals import standard_string_literals
from e6auth.query.roles import check_role_template, role_for
from e6auth.query.type_names import hive_type_name
from e6auth.store.database import create_store_engine

__all__ = ["DryRun", "QueryBackend", "QueryRun", "SQLAlchemyBackend"]

log = logging.getLogger("e6auth")

DEFAULT_CATALOG = "default"
DEFAULT_POOL_SIZE = 20
"""Connections kept for queries and browsing; more than QueryManager's default 16 workers, so that
browse calls still get one while every worker runs a query."""
MAX_PLAN_CHARS = 4000
_MAX_NAME_IN_MESSAGE = 128
_SQLITE_PROGRESS_STEPS = 1000
"""SQLite runs the cancel check every this many VM instructions: frequent enough to stop within
milliseconds, rare enough not to slow queries down."""
_POSTGRES_CANCEL_TIMEOUT_SECONDS = 5.0
_POSTGRES_MAX_NAME_BYTES = 63
"""NAMEDATALEN - 1: PostgreSQL would silently truncate a longer role name to another role's."""


class QueryRun(Protocol):
    """One statement being run. Use it as a context manager: leaving the block without an error
    commits, an error or a cancel rolls back; either way the connection is released."""

    def execute(self) -> list[str]:
        """Run the statement; return its result's column names (empty for statements without
        rows, such as INSERT or CREATE)."""
        ...

    def fetch(self, max_rows: int) -> Sequence[Sequence[object]]:
        """Up to ``max_rows`` further rows (row-major); empty once the result is exhausted."""
        ...

    @property
    def affected_rows(self) -> int:
        """For statements without a result: the rows they changed, or -1 if unknown."""
        ...

    def cancel(self) -> None:
        """Stop the statement. Called from any thread, at any time, any number of times."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class DryRun(Protocol):
    """A dry run (see :meth:`SQLAlchemyBackend.start_dry_run`) that another thread may stop."""

    def result(self) -> str:
        """Check the statement (blocking); the dry run's JSON document, or QueryError."""
        ...

    def cancel(self) -> None:
        """Stop the check; ``result()`` then raises QueryCancelled. Any thread, any time, any
        number of times."""
        ...


class QueryBackend(Protocol):
    """What the query endpoint needs from a database. Implement it to put e6auth's gateway in
    front of another engine; raise :class:`~e6auth.errors.QueryError` (with a message fit for
    the user) for anything that goes wrong."""

    def catalogs(self) -> list[tuple[str, bool]]:
        """The catalogs served, each with whether it is the default."""
        ...

    def schemas(self, catalog: str | None) -> list[str]: ...

    def tables(self, catalog: str | None, schema: str | None) -> list[str]: ...

    def columns(self, catalog: str | None, schema: str | None, table: str) -> list[tuple[str, str]]:
        """Column names and Hive-style types: ``bigint``, ``varchar(20)``, ``decimal(10,2)``."""
        ...

    def run(
        self,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> QueryRun:
        """A run of ``sql``; nothing happens until its ``execute()``.

        ``read_only`` (a read-only token's statement): the database itself must refuse any write,
        with :class:`~e6auth.errors.ReadOnlyViolation`; a backend that cannot promise that must
        refuse to run the statement. ``user``: the e6auth user the statement is run for, for a
        backend that runs each user's statements with their own database rights. Both are passed
        only when set, so backends written before them keep serving other tokens.
        """
        ...

    def explain(
        self,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> str: ...

    def dry_run(
        self,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> str:
        """Check ``sql`` without running it; a small JSON document, or QueryError if invalid."""
        ...


# ---------------------------------------------------------------------------------------------


# Leading comments, whitespace and parentheses, then the statement's first keyword.
_FIRST_KEYWORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*([A-Za-z]+)", re.DOTALL)
_WRITES_OR_INTO = re.compile(r"\b(?:insert|update|delete|merge|into)\b", re.IGNORECASE)
# PostgreSQL can DECLARE a cursor (and so stream) only for plain queries.
_POSTGRES_CURSOR_KEYWORDS = frozenset({"select", "with", "values", "table"})
# What PostgreSQL's EXPLAIN accepts, and so what dry_run can check there without running it.
_POSTGRES_EXPLAINABLE = _POSTGRES_CURSOR_KEYWORDS | {"insert", "update", "delete", "merge"}
# Read-only pragmas a user statement may use on SQLite; every other pragma would change the pooled
# connection for the next user.
_SQLITE_READ_PRAGMAS = frozenset(
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


def first_keyword(sql: str) -> str:
    """The statement's first keyword, lower-cased ('' if there is none)."""
    match = _FIRST_KEYWORD.match(sql)
    return match.group(1).lower() if match else ""


def _bounded(name: str) -> str:
    return repr(name if len(name) <= _MAX_NAME_IN_MESSAGE else name[:_MAX_NAME_IN_MESSAGE] + "…")


class SQLAlchemyBackend:
    """A :class:`QueryBackend` over any SQLAlchemy database, serving it as one catalog.

    The request's schema (the connector's ``database``) must be one of :meth:`schemas`; on
    PostgreSQL it becomes the transaction's ``search_path``. ``statement_timeout_seconds`` bounds
    each statement, explain and dry run (and each fetch of a streamed result). ``pool_size``
    connections at most.

    ``role_template`` (PostgreSQL): the database role each user's statements run as, such as
    ``e6_{username}``, where ``{username}`` is the e6auth user name. The gateway logs in as one
    role and switches, for the transaction of each statement, explain and dry run, with
    ``SET LOCAL ROLE`` (PostgREST's pattern); the login role must be granted every such role.
    Browsing (schemas, tables, columns) stays with the login role.

    An in-memory SQLite URL (``sqlite://``) is one connection shared by every query: for tests
    only, not for concurrent queries.
    """

    def __init__(
        self,
        url: str,
        *,
        catalog: str = DEFAULT_CATALOG,
        statement_timeout_seconds: float | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        role_template: str | None = None,
    ) -> None:
        if not catalog:
            raise ValueError("catalog must not be empty")
        if statement_timeout_seconds is not None and statement_timeout_seconds <= 0:
            raise ValueError("statement_timeout_seconds must be positive")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if role_template is not None:
            try:
                check_role_template(role_template)
            except ValueError as exc:
                raise ValueError(f"role_template: {exc}") from None
        self.catalog = catalog
        self.statement_timeout_seconds = statement_timeout_seconds
        self.role_template = role_template
        parsed = make_url(url)
        self._dialect_name = parsed.get_backend_name()
        if role_template is not None and not self._is_postgres:
            raise ValueError("role_template needs a PostgreSQL query database")
        options: dict[str, Any] = {}
        if not (self._is_sqlite and parsed.database in (None, "", ":memory:")):
            # An in-memory SQLite database is one shared connection (StaticPool): no pool size.
            options.update(pool_size=pool_size, max_overflow=0)
        self._engine = create_store_engine(url, **options)
        self._secrets = [
            secret
            for secret in (parsed.password, str(url), parsed.render_as_string(hide_password=False))
            if secret and len(secret) >= 4
        ]
        if self._is_postgres:
            event.listen(self._engine, "connect", _no_automatic_prepares)
            event.listen(self._engine, "reset", _discard_session_state)
            if role_template is None:
                log.warning(
                    "every user's statements run as one database role, the gateway's login: "
                    "users can see and cancel each other's statements; set query_role to give "
                    "each user a role of their own"
                )
        if self._is_sqlite:
            event.listen(self._engine, "reset", _drop_temporary_objects)

    @property
    def _is_sqlite(self) -> bool:
        return self._dialect_name == "sqlite"

    @property
    def _is_postgres(self) -> bool:
        return self._dialect_name == "postgresql"

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    # --- browsing ------------------------------------------------------------------------------

    def catalogs(self) -> list[tuple[str, bool]]:
        return [(self.catalog, True)]

    def schemas(self, catalog: str | None) -> list[str]:
        self._check_catalog(catalog)
        with self._connection() as connection, self._database_errors():
            return list(inspect(connection).get_schema_names())

    def tables(self, catalog: str | None, schema: str | None) -> list[str]:
        self._check_catalog(catalog)
        with self._connection() as connection, self._database_errors():
            name = self._checked_schema(connection, schema)
            inspector = inspect(connection)
            found = inspector.get_table_names(schema=name) + inspector.get_view_names(schema=name)
            return sorted(set(found))

    def columns(self, catalog: str | None, schema: str | None, table: str) -> list[tuple[str, str]]:
        self._check_catalog(catalog)
        if "\x00" in table:
            # No database names a table so, and the drivers refuse a NUL in their own words.
            raise QueryError(f"unknown table {_bounded(table)}")
        with self._connection() as connection, self._database_errors():
            name = self._checked_schema(connection, schema)
            try:
                found = inspect(connection).get_columns(table, schema=name)
            except NoSuchTableError:
                raise QueryError(f"unknown table {_bounded(table)}") from None
            return [(column["name"], hive_type_name(column["type"])) for column in found]

    # --- statements ----------------------------------------------------------------------------

    def run(
        self,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> _SQLAlchemyRun:
        return _SQLAlchemyRun(
            self,
            standard_string_literals(sql),
            catalog=catalog,
            schema=schema,
            read_only=read_only,
            user=user,
        )

    def explain(
        self,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> str:
        return _SQLAlchemyDryRun(
            self, sql, catalog=catalog, schema=schema, read_only=read_only, user=user
        ).plan()

    def dry_run(
        self,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> str:
        return self.start_dry_run(
            sql, catalog=catalog, schema=schema, read_only=read_only, user=user
        ).result()

    def start_dry_run(
        self,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> _SQLAlchemyDryRun:
        """A dry run of ``sql`` that :meth:`DryRun.cancel` can stop from another thread;
        nothing happens until its ``result()``."""
        return _SQLAlchemyDryRun(
            self, sql, catalog=catalog, schema=schema, read_only=read_only, user=user
        )

    # --- shared with _SQLAlchemyRun -------------------------------------------------------------

    def _check_catalog(self, catalog: str | None) -> None:
        if catalog and catalog != self.catalog:
            raise QueryError(
                f"unknown catalog {_bounded(catalog)}: this gateway serves catalog "
                f"{self.catalog!r} (an empty catalog means {self.catalog!r})"
            )

    def _connect(self) -> Connection:
        try:
            return self._engine.connect()
        except PoolTimeout:
            raise QueryError("database busy: no free connection, try again later") from None
        except SQLAlchemyError as exc:
            # The driver's text can name hosts and users: say only what kind of failure it was.
            kind = type(getattr(exc, "orig", None) or exc).__name__
            raise QueryError(f"database unavailable ({kind})") from None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        connection = self._connect()
        try:
            yield connection
        finally:
            connection.close()

    @contextlib.contextmanager
    def _database_errors(self, *, read_only: bool = False) -> Iterator[None]:
        """Turn what the database raises into QueryError with its message; for a read-only
        statement, the database's refusal to write into ReadOnlyViolation."""
        try:
            yield
        except QueryError:
            raise
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise QueryError("database connection lost") from None
            timeout = self.statement_timeout_seconds
            if timeout is not None and _is_statement_timeout(exc.orig):
                # The same words as the SQLite progress handler's and the gateway's own.
                raise QueryError(f"statement timeout ({timeout:g} s) exceeded") from None
            if read_only:
                refusal = _read_only_refusal(exc.orig)
                if refusal is not None:
                    raise ReadOnlyViolation(
                        f"read-only token: {refusal or self._message_of(exc)}"
                    ) from None
            raise QueryError(self._message_of(exc)) from None
        except SQLAlchemyError as exc:
            raise QueryError(f"database error ({type(exc).__name__})") from None

    def _message_of(self, exc: DBAPIError) -> str:
        message = _without_cursor_declaration(str(exc.orig).strip() or type(exc.orig).__name__)
        for secret in self._secrets:
            message = message.replace(secret, "***")
        return message

    def _checked_schema(self, connection: Connection, schema: str | None) -> str | None:
        """The schema to use (None: the connection's default), known to exist."""
        if not schema:
            return None
        if schema not in inspect(connection).get_schema_names():
            raise QueryError(f"unknown schema {_bounded(schema)} in catalog {self.catalog!r}")
        return schema

    def _begin_statement(
        self,
        connection: Connection,
        schema: str | None,
        *,
        read_only: bool = False,
        user: str | None = None,
    ) -> None:
        """Start the transaction a user statement runs in: its schema, time limit and database
        role, and for a read-only token's statement, read-only."""
        if read_only and not (self._is_sqlite or self._is_postgres):
            # Fail closed: read-only is enforced only where it is implemented and tested.
            raise ReadOnlyViolation(
                f"read-only tokens cannot run statements on this gateway's {self._dialect_name} "
                "database: e6auth enforces read-only on SQLite and PostgreSQL only"
            )
        role = self._role_of(user)
        if read_only and self._is_postgres:
            # First in the transaction: SET TRANSACTION must come before any query.
            connection.exec_driver_sql(
                "SET TRANSACTION READ ONLY", execution_options={"no_parameters": True}
            )
        name = self._checked_schema(connection, schema)
        if not self._is_postgres:
            return
        if read_only:
            # A query takes the transaction's snapshot, after which PostgreSQL refuses to make
            # the transaction read-write again ("SET TRANSACTION READ WRITE" from the statement).
            connection.exec_driver_sql("SELECT 1", execution_options={"no_parameters": True})
        if role is not None and user is not None:
            self._set_role(connection, role, user)
        if name is not None:
            # Quoted by the dialect, and known to exist: a hostile name cannot become SQL.
            quoted = connection.dialect.identifier_preparer.quote(name)
            connection.exec_driver_sql(
                f"SET LOCAL search_path TO {quoted}", execution_options={"no_parameters": True}
            )
        if self.statement_timeout_seconds is not None:
            milliseconds = max(1, round(self.statement_timeout_seconds * 1000))
            connection.exec_driver_sql(
                f"SET LOCAL statement_timeout = {milliseconds}",
                execution_options={"no_parameters": True},
            )

    def _role_of(self, user: str | None) -> str | None:
        """The database role ``user``'s statements run as; None: the login role's."""
        if self.role_template is None:
            return None
        if user is None:
            # Fail closed: the login role may see and cancel every user's statements.
            raise QueryError("this gateway runs statements as their user's database role: no user")
        role = role_for(self.role_template, user)
        if "\x00" in role or len(role.encode()) > _POSTGRES_MAX_NAME_BYTES:
            raise QueryError(
                f"user {_bounded(user)} makes no valid database role name (at most "
                f"{_POSTGRES_MAX_NAME_BYTES} bytes): ask the operator to change query_role"
            )
        return role

    @staticmethod
    def _set_role(connection: Connection, role: str, user: str) -> None:
        # Quoted by the dialect: a user name cannot become SQL, and the case is kept.
        quoted = connection.dialect.identifier_preparer.quote(role)
        try:
            connection.exec_driver_sql(
                f"SET LOCAL ROLE {quoted}", execution_options={"no_parameters": True}
            )
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
    def _sqlite_guard(self, connection: Connection, *, read_only: bool = False) -> Iterator[None]:
        """While a user statement is prepared on SQLite: no ATTACH (it would open any file on
        this host, the token store included) and no pragma that changes the pooled connection;
        for a read-only token's statement, nothing but reading at all. A statement that creates
        temporary objects marks the connection, so that they are dropped before its next user
        gets it."""
        driver = _sqlite_driver(connection)
        if driver is None:
            if read_only:
                raise ReadOnlyViolation("read-only tokens need the sqlite3 driver on SQLite")
            yield
            return
        decide = _sqlite_read_only_authorizer if read_only else _sqlite_authorizer
        pooled = connection.info

        def authorize(
            action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
        ) -> int:
            if action in _SQLITE_CREATE_TEMPORARY:
                pooled[_MADE_TEMPORARY_OBJECTS] = True
            return decide(action, arg1, arg2, db, trigger)

        driver.set_authorizer(authorize)
        try:
            yield
        finally:
            driver.set_authorizer(None)


_CURSOR_DECLARATION = re.compile(r'DECLARE "[^"\n]*" (?:[A-Z]+ )*CURSOR (?:[A-Z]+ )*FOR ')


def _without_cursor_declaration(message: str) -> str:
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


def _sqlite_authorizer(
    action: int, arg1: str | None, _arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in _SQLITE_READ_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


# What a read-only statement may do on SQLite: an allow-list, so that an action SQLite adds later
# is refused until someone decides otherwise. Everything else (INSERT, UPDATE, DELETE, CREATE,
# DROP, ALTER, ANALYZE, REINDEX, ATTACH and VACUUM INTO, BEGIN/COMMIT, SAVEPOINT, writing pragmas
# such as query_only itself) is denied when the statement is prepared.
_SQLITE_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _sqlite_read_only_authorizer(
    action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
) -> int:
    if action in _SQLITE_READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA:
        return _sqlite_authorizer(action, arg1, arg2, db, trigger)
    return sqlite3.SQLITE_DENY


_SQLITE_CREATE_TEMPORARY = frozenset(
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


def _is_statement_timeout(error: BaseException | None) -> bool:
    """PostgreSQL's query_canceled (57014) for statement_timeout, not for a cancel request."""
    return getattr(error, "sqlstate", None) == "57014" and "statement timeout" in str(error)


_POSTGRES_READ_ONLY_STATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: the write itself
        "25001",  # active_sql_transaction: SET TRANSACTION READ WRITE after the snapshot
        "2D000",  # invalid_transaction_termination: COMMIT inside DO or a procedure
    }
)


def _read_only_refusal(error: BaseException | None) -> str | None:
    """For a read-only statement's error: None if it is not the database refusing a write or
    an escape from the read-only transaction, else a message ("" for the database's own)."""
    if isinstance(error, sqlite3.DatabaseError):
        text = str(error)
        return "" if "not authorized" in text or "readonly database" in text else None
    state = getattr(error, "sqlstate", None)
    if state in _POSTGRES_READ_ONLY_STATES:
        return ""
    if state == "42601" and "multiple commands" in str(error):
        return "a read-only token runs one statement at a time"
    return None


@contextlib.contextmanager
def _single_statement(
    connection: Connection, *, enabled: bool, read_only: bool = False
) -> Iterator[None]:
    """On PostgreSQL, while a statement that must be one statement is sent (a read-only token's,
    any explain or dry run, any statement run as a user's role): psycopg sends a statement
    without parameters by the simple protocol, which runs "COMMIT; DELETE ..." as two
    statements, the second outside the transaction. Prepared, it must be one statement; and
    with at most 0 kept, psycopg deallocates it as soon as it has run, so that nothing it
    prepared is left for the pool's DISCARD ALL to pull from under its cache."""
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


def _no_automatic_prepares(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """psycopg prepares a statement on the server after it has run it 5 times and then only
    names it; the pool's DISCARD ALL drops every prepared statement, so the next run of that
    statement on the connection failed ("prepared statement "_pg3_0" does not exist"), and
    DISCARD ALL itself, once prepared, failed in the pool's reset. Query connections prepare
    only what :func:`_single_statement` prepares, and never keep it."""
    driver: Any = dbapi_connection
    if hasattr(driver, "prepare_threshold"):
        driver.prepare_threshold = None


def _discard_session_state(
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


def _drop_temporary_objects(
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


def _sqlite_plan(rows: Sequence[Sequence[Any]]) -> str:
    """EXPLAIN QUERY PLAN's (id, parent, notused, detail) rows as an indented tree."""
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _unused, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


class _SQLAlchemyRun:
    """A statement on one pooled connection, in one transaction. The transaction commits only
    if the statement may change anything (``keeps_changes``, not read-only) and succeeded: a
    read-only statement's, or an explain's, is always rolled back, so that whatever the
    database let it do (such as create a large object) does not last."""

    def __init__(
        self,
        backend: SQLAlchemyBackend,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
        keeps_changes: bool = True,
    ) -> None:
        self._backend = backend
        self._sql = sql
        self._read_only = read_only
        self._user = user
        self._commits = keeps_changes and not read_only
        # One statement, whatever the text holds: else "COMMIT; ..." would end the read-only
        # (or explain's, or user role's) transaction and run the rest outside it.
        self._single = (
            read_only or not keeps_changes or backend.role_template is not None
        ) and backend._is_postgres
        self._catalog = catalog or ""
        self._schema = schema or ""
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._connection: Connection | None = None
        self._driver: Any = None  # the DBAPI connection, while a statement may be running
        self._result: CursorResult[Any] | None = None
        self._affected = -1
        self._deadline: float | None = None
        self._timed_out = False

    @property
    def affected_rows(self) -> int:
        return self._affected

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish(commit=exc_type is None and not self._cancelled.is_set())

    def execute(self) -> list[str]:
        backend = self._backend
        backend._check_catalog(self._catalog)
        self._raise_if_cancelled()
        connection = backend._connect()
        with self._lock:
            self._connection = connection
            self._driver = connection.connection.driver_connection
        self._raise_if_cancelled()
        with self._errors():
            backend._begin_statement(
                connection, self._schema, read_only=self._read_only, user=self._user
            )
            options: dict[str, Any] = {"no_parameters": True, "stream_results": self._streams()}
            if backend._is_sqlite:
                self._watch_sqlite(connection)
                with backend._sqlite_guard(connection, read_only=self._read_only):
                    result = connection.exec_driver_sql(self._sql, execution_options=options)
            else:
                with _single_statement(connection, enabled=self._single, read_only=self._read_only):
                    result = connection.exec_driver_sql(self._sql, execution_options=options)
        self._raise_if_cancelled()
        if not result.returns_rows:
            self._affected = result.rowcount
            result.close()
            return []
        self._result = result
        return list(result.keys())

    def fetch(self, max_rows: int) -> Sequence[Sequence[object]]:
        self._raise_if_cancelled()
        if self._result is None:
            return []
        with self._errors():
            rows = self._result.fetchmany(max_rows)
        self._raise_if_cancelled()
        return rows

    def cancel(self) -> None:
        self._cancelled.set()
        # SQLite needs nothing more: its progress handler sees the flag within milliseconds.
        if self._backend._is_sqlite:
            return
        with self._lock:
            if self._driver is not None:
                _cancel_statement(self._driver)

    # -------------------------------------------------------------------------------------------

    def _streams(self) -> bool:
        if not self._backend._is_postgres:
            return True
        # A server-side cursor is a DECLARE, which PostgreSQL accepts for plain queries only.
        return first_keyword(self._sql) in _POSTGRES_CURSOR_KEYWORDS and not (
            _WRITES_OR_INTO.search(self._sql)
        )

    def _raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise QueryCancelled()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        self._deadline = (
            None
            if self._backend.statement_timeout_seconds is None
            else time.monotonic() + self._backend.statement_timeout_seconds
        )
        try:
            with self._backend._database_errors(read_only=self._read_only):
                yield
        except QueryError:
            if self._cancelled.is_set():
                raise QueryCancelled() from None
            if self._timed_out:
                timeout = self._backend.statement_timeout_seconds
                raise QueryError(f"statement timeout ({timeout:g} s) exceeded") from None
            raise

    def _watch_sqlite(self, connection: Connection) -> None:
        driver = _sqlite_driver(connection)
        if driver is not None:
            driver.set_progress_handler(self._sqlite_should_stop, _SQLITE_PROGRESS_STEPS)

    def _sqlite_should_stop(self) -> int:
        if self._cancelled.is_set():
            return 1
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._timed_out = True
            return 1
        return 0

    def _finish(self, *, commit: bool) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
            self._driver = None  # a late cancel must not reach the connection's next user
        if connection is None:
            return
        try:
            if commit:
                with self._errors():
                    if self._result is not None:
                        self._result.close()
                    if self._commits:
                        connection.commit()
                    else:
                        connection.rollback()
            else:
                # Already failing or cancelled: a rollback error would only hide the first one.
                with contextlib.suppress(Exception):
                    connection.rollback()
        finally:
            driver = _sqlite_driver(connection)
            if driver is not None:
                driver.set_progress_handler(None, 0)
            connection.close()


class _SQLAlchemyDryRun:
    """An explain or dry run: the statement's plan, made as one statement in a transaction that
    is rolled back, cancellable and under the statement timeout as a run is."""

    def __init__(
        self,
        backend: SQLAlchemyBackend,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> None:
        sql = standard_string_literals(sql)
        self._backend = backend
        self._catalog = catalog
        # PostgreSQL can EXPLAIN only queries and DML; anything else it would have to run.
        self._checkable = not backend._is_postgres or first_keyword(sql) in _POSTGRES_EXPLAINABLE
        prefix = "EXPLAIN QUERY PLAN " if backend._is_sqlite else "EXPLAIN "
        self._run = _SQLAlchemyRun(
            backend,
            prefix + sql,
            catalog=catalog,
            schema=schema,
            read_only=read_only,
            user=user,
            keeps_changes=False,
        )

    def cancel(self) -> None:
        self._run.cancel()

    def plan(self) -> str:
        """The plan as text: SQLite's as an indented tree, PostgreSQL's as it prints it."""
        with self._run as run:
            run.execute()
            rows: list[Sequence[Any]] = []
            while batch := run.fetch(1000):
                rows.extend(batch)
        if self._backend._is_sqlite:
            return _sqlite_plan(rows)
        return "\n".join("\t".join(map(str, row)) for row in rows)

    def result(self) -> str:
        if not self._checkable:
            self._backend._check_catalog(self._catalog)
            self._run._raise_if_cancelled()
            return json.dumps(
                {
                    "valid": None,
                    "message": "PostgreSQL can check only queries and DML without running them",
                }
            )
        plan = self.plan()
        return json.dumps({"valid": True, "plan": plan[:MAX_PLAN_CHARS]}, ensure_ascii=False)


def _cancel_statement(driver: Any) -> None:
    """Ask the database to stop what this DBAPI connection is running (psycopg's cancel)."""
    try:
        if hasattr(driver, "cancel_safe"):
            driver.cancel_safe(timeout=_POSTGRES_CANCEL_TIMEOUT_SECONDS)
        elif hasattr(driver, "cancel"):
            driver.cancel()
    except Exception as exc:  # best effort: the flag still stops the next fetch
        log.debug("driver cancel failed: %s", type(exc).__name__)


def _sqlite_driver(connection: Connection) -> sqlite3.Connection | None:
    driver = connection.connection.driver_connection
    return driver if isinstance(driver, sqlite3.Connection) else None
