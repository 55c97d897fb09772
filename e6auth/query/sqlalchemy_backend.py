"""e6auth's :class:`~e6auth.query.backend.QueryBackend`: any SQLAlchemy database as one catalog.

This module holds the backend's connections and the transaction each user statement starts in
(schema, statement timeout, database role, read-only), and turns what the database raises into
:class:`~e6auth.errors.QueryError` with the database's own message: no driver exception,
database URL or password leaves it. A statement's run, from connection to release, is
:mod:`e6auth.query.runs`; what SQLite and PostgreSQL each need is in :mod:`e6auth.query.sqlite`
and :mod:`e6auth.query.postgres`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from typing import Any, Unpack

from sqlalchemy import Connection, event, inspect, make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from e6auth.errors import QueryError, ReadOnlyViolation
from e6auth.query import postgres, sqlite
from e6auth.query.backend import Statement, StatementOptions
from e6auth.query.literals import standard_string_literals
from e6auth.query.roles import check_role_template, role_for
from e6auth.query.runs import SQLAlchemyDryRun, SQLAlchemyRun
from e6auth.query.type_names import hive_type_name
from e6auth.store.database import create_store_engine

__all__ = ["DEFAULT_CATALOG", "DEFAULT_POOL_SIZE", "SQLAlchemyBackend"]

log = logging.getLogger("e6auth")

DEFAULT_CATALOG = "default"
DEFAULT_POOL_SIZE = 20
"""Connections kept for queries and browsing; more than QueryManager's default 16 workers, so that
browse calls still get one while every worker runs a query."""
_MAX_NAME_IN_MESSAGE = 128


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
        if role_template is not None and not self.is_postgres:
            raise ValueError("role_template needs a PostgreSQL query database")
        options: dict[str, Any] = {}
        if not (self.is_sqlite and parsed.database in (None, "", ":memory:")):
            # An in-memory SQLite database is one shared connection (StaticPool): no pool size.
            options.update(pool_size=pool_size, max_overflow=0)
        self._engine = create_store_engine(url, **options)
        self._secrets = [
            secret
            for secret in (parsed.password, str(url), parsed.render_as_string(hide_password=False))
            if secret and len(secret) >= 4
        ]
        if self.is_postgres:
            event.listen(self._engine, "connect", postgres.no_automatic_prepares)
            event.listen(self._engine, "reset", postgres.discard_session_state)
            if role_template is None:
                log.warning(
                    "every user's statements run as one database role, the gateway's login: "
                    "users can see and cancel each other's statements; set query_role to give "
                    "each user a role of their own"
                )
        if self.is_sqlite:
            event.listen(self._engine, "reset", sqlite.drop_temporary_objects)

    @property
    def is_sqlite(self) -> bool:
        return self._dialect_name == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self._dialect_name == "postgresql"

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    # --- browsing ------------------------------------------------------------------------------

    def catalogs(self) -> list[tuple[str, bool]]:
        return [(self.catalog, True)]

    def schemas(self, catalog: str | None) -> list[str]:
        self.check_catalog(catalog)
        with self._connection() as connection, self.database_errors():
            return list(inspect(connection).get_schema_names())

    def tables(self, catalog: str | None, schema: str | None) -> list[str]:
        self.check_catalog(catalog)
        with self._connection() as connection, self.database_errors():
            name = self._checked_schema(connection, schema)
            inspector = inspect(connection)
            found = inspector.get_table_names(schema=name) + inspector.get_view_names(schema=name)
            return sorted(set(found))

    def columns(self, catalog: str | None, schema: str | None, table: str) -> list[tuple[str, str]]:
        self.check_catalog(catalog)
        if "\x00" in table:
            # No database names a table so, and the drivers refuse a NUL in their own words.
            raise QueryError(f"unknown table {_bounded(table)}")
        with self._connection() as connection, self.database_errors():
            name = self._checked_schema(connection, schema)
            try:
                found = inspect(connection).get_columns(table, schema=name)
            except NoSuchTableError:
                raise QueryError(f"unknown table {_bounded(table)}") from None
            return [(column["name"], hive_type_name(column["type"])) for column in found]

    # --- statements ----------------------------------------------------------------------------

    def run(self, sql: str, **options: Unpack[StatementOptions]) -> SQLAlchemyRun:
        return SQLAlchemyRun(self, self._statement(sql, options))

    def explain(self, sql: str, **options: Unpack[StatementOptions]) -> str:
        return self.start_dry_run(sql, **options).plan()

    def dry_run(self, sql: str, **options: Unpack[StatementOptions]) -> str:
        return self.start_dry_run(sql, **options).result()

    def start_dry_run(self, sql: str, **options: Unpack[StatementOptions]) -> SQLAlchemyDryRun:
        """A dry run of ``sql`` that :meth:`DryRun.cancel` can stop from another thread;
        nothing happens until its ``result()``."""
        return SQLAlchemyDryRun(self, self._statement(sql, options))

    @staticmethod
    def _statement(sql: str, options: StatementOptions) -> Statement:
        # The connector writes string literals Hive style; the database reads standard ones.
        return Statement.of(standard_string_literals(sql), options)

    # --- for the runs (e6auth.query.runs) ------------------------------------------------------

    def check_catalog(self, catalog: str | None) -> None:
        if catalog and catalog != self.catalog:
            raise QueryError(
                f"unknown catalog {_bounded(catalog)}: this gateway serves catalog "
                f"{self.catalog!r} (an empty catalog means {self.catalog!r})"
            )

    def connect(self) -> Connection:
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
        connection = self.connect()
        try:
            yield connection
        finally:
            connection.close()

    @contextlib.contextmanager
    def database_errors(self, *, read_only: bool = False) -> Iterator[None]:
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
            if timeout is not None and postgres.is_statement_timeout(exc.orig):
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
        message = str(exc.orig).strip() or type(exc.orig).__name__
        message = postgres.without_cursor_declaration(message)
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

    def begin_statement(self, connection: Connection, statement: Statement) -> None:
        """Start the transaction a user statement runs in: its schema, time limit and database
        role, and for a read-only token's statement, read-only."""
        read_only, user = statement.read_only, statement.user
        if read_only and not (self.is_sqlite or self.is_postgres):
            # Fail closed: read-only is enforced only where it is implemented and tested.
            raise ReadOnlyViolation(
                f"read-only tokens cannot run statements on this gateway's {self._dialect_name} "
                "database: e6auth enforces read-only on SQLite and PostgreSQL only"
            )
        role = self._role_of(user)
        if read_only and self.is_postgres:
            # First in the transaction: SET TRANSACTION must come before any query.
            postgres.execute_plain(connection, "SET TRANSACTION READ ONLY")
        name = self._checked_schema(connection, statement.schema)
        if not self.is_postgres:
            return
        if read_only:
            # A query takes the transaction's snapshot, after which PostgreSQL refuses to make
            # the transaction read-write again ("SET TRANSACTION READ WRITE" from the statement).
            postgres.execute_plain(connection, "SELECT 1")
        if role is not None and user is not None:
            postgres.set_local_role(connection, role, user)
        if name is not None:
            # Quoted by the dialect, and known to exist: a hostile name cannot become SQL.
            quoted = connection.dialect.identifier_preparer.quote(name)
            postgres.execute_plain(connection, f"SET LOCAL search_path TO {quoted}")
        if self.statement_timeout_seconds is not None:
            milliseconds = max(1, round(self.statement_timeout_seconds * 1000))
            postgres.execute_plain(connection, f"SET LOCAL statement_timeout = {milliseconds}")

    def _role_of(self, user: str | None) -> str | None:
        """The database role ``user``'s statements run as; None: the login role's."""
        if self.role_template is None:
            return None
        if user is None:
            # Fail closed: the login role may see and cancel every user's statements.
            raise QueryError("this gateway runs statements as their user's database role: no user")
        role = role_for(self.role_template, user)
        if "\x00" in role or len(role.encode()) > postgres.MAX_NAME_BYTES:
            raise QueryError(
                f"user {_bounded(user)} makes no valid database role name (at most "
                f"{postgres.MAX_NAME_BYTES} bytes): ask the operator to change query_role"
            )
        return role


def _read_only_refusal(error: BaseException | None) -> str | None:
    """For a read-only statement's error: None if it is not the database refusing a write or
    an escape from the read-only transaction, else a message ("" for the database's own)."""
    if isinstance(error, sqlite3.DatabaseError):
        text = str(error)
        return "" if "not authorized" in text or "readonly database" in text else None
    return postgres.read_only_refusal(error)
