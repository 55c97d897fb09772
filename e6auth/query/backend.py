"""Where statements run: the :class:`QueryBackend` hook, and what crosses it.

A backend answers the connector's browse calls (catalogs, schemas, tables, columns) and runs one
statement at a time as a :class:`QueryRun`. Everything it raises on purpose is a
:class:`~e6auth.errors.QueryError` whose detail is the database's own message: no driver exception,
database URL or password leaves it. e6auth's own backend, over any SQLAlchemy database, is
:class:`~e6auth.query.sqlalchemy_backend.SQLAlchemyBackend`.

The context a statement runs in (catalog, schema, read-only, user) is spelled once, as
:class:`StatementOptions`, for every call that takes a statement: the backend's ``run``,
``explain`` and ``dry_run`` and the manager's ``prepare`` and ``start_dry_run``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NotRequired, Protocol, Self, TypedDict, Unpack

from e6auth.errors import QueryCancelled

__all__ = [
    "DryRun",
    "PlainDryRun",
    "QueryBackend",
    "QueryRun",
    "Statement",
    "StatementOptions",
]


class StatementOptions(TypedDict):
    """What a statement runs in, besides its text.

    ``catalog`` and ``schema`` as the connector sends them (None or empty: the default).
    ``read_only`` (a read-only token's statement): the database itself must refuse any write, with
    :class:`~e6auth.errors.ReadOnlyViolation`; a backend that cannot promise that must refuse to
    run the statement. ``user``: the e6auth user the statement is run for, for a backend that runs
    each user's statements with their own database rights. Both are passed only when set, so
    backends written before them keep serving other tokens.
    """

    catalog: str | None
    schema: str | None
    read_only: NotRequired[bool]
    user: NotRequired[str | None]


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement's text with its :class:`StatementOptions`, as one value."""

    sql: str
    catalog: str | None
    schema: str | None
    read_only: bool = False
    user: str | None = None

    @classmethod
    def of(cls, sql: str, options: StatementOptions) -> Statement:
        return cls(
            sql,
            options["catalog"],
            options["schema"],
            options.get("read_only", False),
            options.get("user"),
        )

    def options(self) -> StatementOptions:
        """The keywords for a backend's call: ``read_only`` and ``user`` only when set, so that
        backends written before them keep serving the calls that do not need them, and fail
        (rather than ignore them) for those that do."""
        options = StatementOptions(catalog=self.catalog, schema=self.schema)
        if self.read_only:
            options["read_only"] = True
        if self.user is not None:
            options["user"] = self.user
        return options


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
    the user) for anything that goes wrong. The statement calls take their context as the
    keywords of :class:`StatementOptions`."""

    def catalogs(self) -> list[tuple[str, bool]]:
        """The catalogs served, each with whether it is the default."""
        ...

    def schemas(self, catalog: str | None) -> list[str]: ...

    def tables(self, catalog: str | None, schema: str | None) -> list[str]: ...

    def columns(self, catalog: str | None, schema: str | None, table: str) -> list[tuple[str, str]]:
        """Column names and Hive-style types: ``bigint``, ``varchar(20)``, ``decimal(10,2)``."""
        ...

    def run(self, sql: str, **options: Unpack[StatementOptions]) -> QueryRun:
        """A run of ``sql``; nothing happens until its ``execute()``."""
        ...

    def explain(self, sql: str, **options: Unpack[StatementOptions]) -> str: ...

    def dry_run(self, sql: str, **options: Unpack[StatementOptions]) -> str:
        """Check ``sql`` without running it; a small JSON document, or QueryError if invalid."""
        ...


class PlainDryRun:
    """A backend's ``dry_run`` as a :class:`DryRun` that cannot be stopped once begun (for a
    backend without ``start_dry_run``)."""

    def __init__(self, call: Callable[[], str]) -> None:
        self._call = call
        self._cancelled = threading.Event()

    def result(self) -> str:
        if self._cancelled.is_set():
            raise QueryCancelled()
        return self._call()

    def cancel(self) -> None:
        self._cancelled.set()
