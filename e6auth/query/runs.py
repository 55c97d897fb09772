"""A statement's run on :class:`~e6auth.query.sqlalchemy_backend.SQLAlchemyBackend`, from taking
a pooled connection to handing it back: its transaction, cancel, timeout and cleanup.

There is one lifecycle, :class:`SQLAlchemyRun`; an explain or dry run
(:class:`SQLAlchemyDryRun`) is such a run of ``EXPLAIN ...`` whose transaction never keeps
changes, so that a fix to the lifecycle reaches both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Connection, CursorResult

from e6auth.errors import QueryCancelled, QueryError
from e6auth.query import postgres, sqlite
from e6auth.query.backend import Statement
from e6auth.query.keywords import postgres_can_explain, postgres_can_stream

if TYPE_CHECKING:
    from e6auth.query.sqlalchemy_backend import SQLAlchemyBackend

__all__ = ["MAX_PLAN_CHARS", "SQLAlchemyDryRun", "SQLAlchemyRun"]

MAX_PLAN_CHARS = 4000


class SQLAlchemyRun:
    """A statement on one pooled connection, in one transaction. The transaction commits only
    if the statement may change anything (``keeps_changes``, not read-only) and succeeded: a
    read-only statement's, or an explain's, is always rolled back, so that whatever the
    database let it do (such as create a large object) does not last."""

    def __init__(
        self, backend: SQLAlchemyBackend, statement: Statement, *, keeps_changes: bool = True
    ) -> None:
        self._backend = backend
        self._statement = statement
        self._commits = keeps_changes and not statement.read_only
        # One statement, whatever the text holds: else "COMMIT; ..." would end the read-only
        # (or explain's, or user role's) transaction and run the rest outside it.
        self._single = (
            statement.read_only or not keeps_changes or backend.role_template is not None
        ) and backend.is_postgres
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
        backend, statement = self._backend, self._statement
        backend.check_catalog(statement.catalog)
        self.raise_if_cancelled()
        connection = backend.connect()
        with self._lock:
            self._connection = connection
            self._driver = connection.connection.driver_connection
        self.raise_if_cancelled()
        read_only = statement.read_only
        with self._errors():
            backend.begin_statement(connection, statement)
            options: dict[str, Any] = {"no_parameters": True, "stream_results": self._streams()}
            if backend.is_sqlite:
                sqlite.watch(connection, self._sqlite_should_stop)
                guard = sqlite.statement_guard(connection, read_only=read_only)
            else:
                guard = postgres.single_statement(
                    connection, enabled=self._single, read_only=read_only
                )
            with guard:
                result = connection.exec_driver_sql(statement.sql, execution_options=options)
        self.raise_if_cancelled()
        if not result.returns_rows:
            self._affected = result.rowcount
            result.close()
            return []
        self._result = result
        return list(result.keys())

    def fetch(self, max_rows: int) -> Sequence[Sequence[object]]:
        self.raise_if_cancelled()
        if self._result is None:
            return []
        with self._errors():
            rows = self._result.fetchmany(max_rows)
        self.raise_if_cancelled()
        return rows

    def cancel(self) -> None:
        self._cancelled.set()
        # SQLite needs nothing more: its progress handler sees the flag within milliseconds.
        if self._backend.is_sqlite:
            return
        with self._lock:
            if self._driver is not None:
                postgres.cancel_statement(self._driver)

    def raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise QueryCancelled()

    # -------------------------------------------------------------------------------------------

    def _streams(self) -> bool:
        # A server-side cursor is a DECLARE, which PostgreSQL accepts for plain queries only.
        return not self._backend.is_postgres or postgres_can_stream(self._statement.sql)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Around each step that waits on the database: the statement timeout starts again, and
        the database's error says whether it was cancelled or timed out, as a QueryError."""
        timeout = self._backend.statement_timeout_seconds
        self._deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._backend.database_errors(read_only=self._statement.read_only):
                yield
        except QueryError:
            if self._cancelled.is_set():
                raise QueryCancelled() from None
            if self._timed_out:
                raise QueryError(f"statement timeout ({timeout:g} s) exceeded") from None
            raise

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
            sqlite.stop_watching(connection)
            connection.close()


class SQLAlchemyDryRun:
    """An explain or dry run: the statement's plan, made by a :class:`SQLAlchemyRun` of its
    EXPLAIN that keeps no changes, so cancellable and under the statement timeout as a run is."""

    def __init__(self, backend: SQLAlchemyBackend, statement: Statement) -> None:
        self._backend = backend
        self._statement = statement
        prefix = "EXPLAIN QUERY PLAN " if backend.is_sqlite else "EXPLAIN "
        explain = dataclasses.replace(statement, sql=prefix + statement.sql)
        self._run = SQLAlchemyRun(backend, explain, keeps_changes=False)

    def cancel(self) -> None:
        self._run.cancel()

    def plan(self) -> str:
        """The plan as text: SQLite's as an indented tree, PostgreSQL's as it prints it."""
        with self._run as run:
            run.execute()
            rows: list[Sequence[Any]] = []
            while batch := run.fetch(1000):
                rows.extend(batch)
        if self._backend.is_sqlite:
            return sqlite.plan_tree(rows)
        return "\n".join("\t".join(map(str, row)) for row in rows)

    def result(self) -> str:
        if self._backend.is_postgres and not postgres_can_explain(self._statement.sql):
            # Deliberately unlike a run: it answers without taking a connection, so it checks
            # only what needs none (the catalog, a cancel), not the schema or the user's role.
            self._backend.check_catalog(self._statement.catalog)
            self._run.raise_if_cancelled()
            return json.dumps(
                {
                    "valid": None,
                    "message": "PostgreSQL can check only queries and DML without running them",
                }
            )
        plan = self.plan()
        return json.dumps({"valid": True, "plan": plan[:MAX_PLAN_CHARS]}, ensure_ascii=False)
