"""The reads on the verify path, as SQL prepared once and run on the pool's DBAPI connection.

A cache miss is one indexed read, and SQLAlchemy's Core made it 30 to 50 times the driver's own
cost (measured: building and cache-keying the statement on every call, then checking a
connection out with execution options, which on SQLite costs one more statement to undo). Here
each statement is compiled once for the engine's dialect; a read checks a connection out of the
engine's own pool (the same pool, size and recycling the rest of the store uses), runs the SQL on
its cursor and hands it back. Values pass through the column types' own processors, so a row is
what SQLAlchemy would have returned.

What SQLAlchemy's ``Connection`` adds that a read still needs is kept: a connection that turns out
dead is invalidated and the read goes on through :meth:`PreparedReads.fallback`, SQLAlchemy's own
path with its retry on a fresh connection and its invalidation of the whole pool; driver errors
become the same :mod:`sqlalchemy.exc` errors, hence the same ``StoreUnavailable``. When anyone
listens to the engine's statement events (a tracer, ``e6auth.testing.count_queries``), reads go
through SQLAlchemy so that the listener sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Select
from sqlalchemy.exc import DBAPIError

__all__ = ["PreparedRead", "PreparedReads"]

Row = Sequence[Any]
Fetch = Literal["one", "all"]
_Processor = Callable[[Any], Any]


class PreparedRead:
    """One read compiled for one dialect: its SQL, how its parameters are bound, how its columns
    are converted. ``query`` is kept for the SQLAlchemy path (prebuilt, so it hits SQLAlchemy's
    compiled cache there too)."""

    __slots__ = ("_binders", "_names", "_positional", "_processors", "query", "sql")

    def __init__(self, query: Select[Any], engine: Engine) -> None:
        dialect = engine.dialect
        compiled = query.compile(dialect=dialect)
        self.query = query
        self.sql = compiled.string
        self._positional = bool(dialect.positional)
        binds = compiled.binds
        self._names: tuple[str, ...] = tuple(
            compiled.positiontup if self._positional and compiled.positiontup else binds
        )
        if compiled.post_compile_params or compiled.literal_execute_params:
            # Rendered anew for each call's values (IN lists): no fixed SQL to prepare.
            raise ValueError(f"a read with parameters rendered per call: {self.sql}")
        # A value given in the statement itself (a literal) is bound on every call as it was;
        # a parameter without one must be given.
        self._binders: tuple[tuple[str, bool, Any, _Processor | None], ...] = tuple(
            (
                name,
                binds[name].required,
                binds[name].value,
                binds[name].type.dialect_impl(dialect).bind_processor(dialect),
            )
            for name in self._names
        )
        self._processors: tuple[tuple[int, _Processor], ...] = tuple(
            (index, processor)
            for index, column in enumerate(query.selected_columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
            is not None
        )

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for ``values`` (by bind name), in the dialect's paramstyle."""
        bound = []
        for name, required, default, processor in self._binders:
            value = values[name] if required else values.get(name, default)
            bound.append((name, value if processor is None else processor(value)))
        if self._positional:
            return tuple(value for _name, value in bound)
        return dict(bound)

    def convert(self, row: Row) -> Row:
        if not self._processors:
            return row
        converted = list(row)
        for index, processor in self._processors:
            converted[index] = processor(converted[index])
        return converted


class PreparedReads:
    """Runs :class:`PreparedRead` statements on ``engine``'s pool; see the module's docstring."""

    def __init__(
        self, engine: Engine, fallback: Callable[[Callable[[Connection], Any]], Any]
    ) -> None:
        """``fallback(work)`` runs ``work`` on a SQLAlchemy connection, retried once on a fresh
        connection if the pooled one is dead (``TokenStore._read``)."""
        self._engine = engine
        self._dialect = engine.dialect
        self._fallback = fallback
        self._dbapi_error: Any = engine.dialect.loaded_dbapi.Error  # the driver's exception root
        # Outside a transaction, as SQLAlchemy's AUTOCOMMIT reads were: with a driver that begins
        # one implicitly (psycopg), a read would otherwise cost a BEGIN and a ROLLBACK round trip
        # more. Python's sqlite3 begins none for a SELECT, and undoing the setting there costs a
        # statement, so SQLite is left as it is.
        self._autocommit = engine.dialect.name != "sqlite"

    def prepare(self, query: Select[Any]) -> PreparedRead:
        return PreparedRead(query, self._engine)

    def one(self, read: PreparedRead, values: Mapping[str, Any]) -> Row | None:
        rows = self._run(read, values, "one")
        return rows[0] if rows else None

    def all(self, read: PreparedRead, values: Mapping[str, Any]) -> list[Row]:
        return self._run(read, values, "all")

    def _observed(self) -> bool:
        dispatch = self._engine.dispatch
        return bool(
            dispatch.before_cursor_execute
            or dispatch.after_cursor_execute
            or self._dialect.dispatch.handle_error
        )

    def _run(self, read: PreparedRead, values: Mapping[str, Any], fetch: Fetch) -> list[Row]:
        if self._observed():
            return self._through_sqlalchemy(read, values, fetch)
        parameters = read.parameters(values)
        try:
            connection = self._engine.raw_connection()
        except self._dbapi_error as exc:
            # Told as SQLAlchemy tells it, so that the caller's unreachable_as_unavailable
            # turns "cannot connect" into StoreUnavailable.
            raise DBAPIError.instance(
                None,
                None,
                exc,
                self._dbapi_error,
                connection_invalidated=self._dialect.is_disconnect(exc, None, None),
                dialect=self._dialect,
            ) from exc
        dbapi_connection: Any = connection.dbapi_connection
        cursor = None
        try:
            if self._autocommit:
                self._dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
            cursor = dbapi_connection.cursor()
            cursor.execute(read.sql, parameters)
            rows = [cursor.fetchone()] if fetch == "one" else cursor.fetchall()
            cursor.close()
            if self._autocommit:
                # Back as the pool's other users expect it: writes begin transactions.
                self._dialect.reset_isolation_level(dbapi_connection)
        except self._dbapi_error as exc:
            if self._dialect.is_disconnect(exc, dbapi_connection, cursor):
                # Dead (the database restarted): dropped, and the read goes on as SQLAlchemy
                # does on a disconnect: a retry, dropping the pool's connections of its age.
                connection.invalidate(exc)
                connection.close()
                return self._through_sqlalchemy(read, values, fetch)
            self._release_after_error(connection, dbapi_connection)
            raise DBAPIError.instance(
                read.sql, parameters, exc, self._dbapi_error, dialect=self._dialect
            ) from exc
        except BaseException:
            # Interrupted midway, in no known state: never handed to anyone else.
            connection.invalidate()
            connection.close()
            raise
        connection.close()
        return [read.convert(row) for row in rows if row is not None]

    def _release_after_error(self, connection: Any, dbapi_connection: Any) -> None:
        """Return a connection that refused a statement (alive) to the pool as it was found."""
        try:
            if self._autocommit:
                self._dialect.reset_isolation_level(dbapi_connection)
        except self._dbapi_error as exc:
            connection.invalidate(exc)
        connection.close()

    def _through_sqlalchemy(
        self, read: PreparedRead, values: Mapping[str, Any], fetch: Fetch
    ) -> list[Row]:
        def work(connection: Connection) -> list[Row]:
            result = connection.execute(read.query, dict(values))
            if fetch == "one":
                row = result.one_or_none()
                return [] if row is None else [row]
            return list(result.all())

        rows: list[Row] = self._fallback(work)
        return rows
