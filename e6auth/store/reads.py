"""The reads on the verify path, as SQL prepared once and run on the pool's DBAPI connection.

A cache miss is one indexed read, and SQLAlchemy's Core made it 30 to 50 times the driver's own
cost (measured: building and cache-keying the statement on every call, then checking a
connection out with execution options, which on SQLite costs one more statement to undo). Here
each statement is compiled once for the engine's dialect; a read runs the SQL on the cursor of a
connection of the engine's own pool (the same pool, size and recycling the rest of the store
uses). Values pass through the column types' own processors, so a row is what SQLAlchemy would
have returned.

Checking a connection out of the pool and back in (a queue, a wrapper, a weak reference and a
ROLLBACK each time) cost more than the read itself (measured: 6 µs beside 5 on SQLite). So the
reads keep up to ``HELD_CONNECTIONS`` connections between calls, checked out of the pool once,
taken by one read at a time (any thread's) and given back to the pool after ``HOLD_SECONDS``,
after an error, and by :meth:`PreparedReads.close` (which ``TokenStore.close`` calls). Reads
beyond those run on connections checked out as before. A held connection never sits in a
transaction, so every read sees what other processes committed before it: Python's sqlite3
begins none for a SELECT and the cursor is closed (its statement reset) after each read; on
PostgreSQL the connection is in autocommit while held, and back out of it before the pool gets it
back.

What SQLAlchemy's ``Connection`` adds that a read still needs is kept: a connection that turns out
dead is invalidated (with the other held ones: a restarted server killed them all) and the read
goes on through :meth:`PreparedReads.fallback`, SQLAlchemy's own path with its retry on a fresh
connection and its invalidation of the whole pool; driver errors become the same
:mod:`sqlalchemy.exc` errors, hence the same ``StoreUnavailable``. When anyone listens to the
engine's statement events (a tracer, ``e6auth.testing.count_queries``), reads go through
SQLAlchemy so that the listener sees them.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from time import monotonic
from typing import Any, Literal

from sqlalchemy import Connection, Dialect, Engine, Select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import Pool

__all__ = ["HELD_CONNECTIONS", "HOLD_SECONDS", "PreparedRead", "PreparedReads"]

HELD_CONNECTIONS = 2
"""How many connections the reads keep checked out between calls (more concurrent reads use the
pool as it comes); the rest of the pool stays for writes."""
HOLD_SECONDS = 60.0
"""How long a connection is kept before it goes back to the pool, where recycling
(``pool_recycle``) and the invalidation that follows a disconnect apply to it again."""

Row = Sequence[Any]
Values = Mapping[str, Any] | tuple[Any, ...]
"""A read's values: by bind name, or (reads of one parameter) a tuple."""
Fetch = Literal["one", "all"]
_Processor = Callable[[Any], Any]


class PreparedRead:
    """One read compiled for one dialect: its SQL, how its parameters are bound, how its columns
    are converted. ``query`` is kept for the SQLAlchemy path (prebuilt, so it hits SQLAlchemy's
    compiled cache there too)."""

    __slots__ = (
        "_binders",
        "_names",
        "_plain",
        "_positional",
        "by_position",
        "processors",
        "query",
        "sql",
    )

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
        self._plain = all(
            required and processor is None for _name, required, _default, processor in self._binders
        )
        self.by_position = self._plain and self._positional
        """Whether a tuple of the values, in the statement's order, is the driver's parameters
        as it is (the verify path's reads on SQLite): nothing to build per read."""
        processors = [
            (index, processor)
            for index, column in enumerate(query.selected_columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None))
            is not None
        ]
        # A processor that turns NULL into None (all of ours and SQLAlchemy's, asked here once)
        # is skipped for NULL: a token's optional columns are mostly NULL, and a miss paid two
        # Python calls for each of them.
        self.processors: tuple[tuple[int, _Processor, bool], ...] = tuple(
            (index, processor, _keeps_null(processor)) for index, processor in processors
        )

    def parameters(self, values: Values) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for ``values``, in the dialect's paramstyle: by bind name, or
        a tuple in the statement's order (for reads of one parameter, where the order is plain)."""
        if isinstance(values, tuple):
            if self.by_position:
                return values
            values = self.by_name(values)
        if self._plain:
            # Every parameter given and passed as it is (the verify path's reads on SQLite and
            # PostgreSQL): no loop over binders to run.
            if self._positional:
                return tuple(map(values.__getitem__, self._names))  # no Python frame
            return {name: values[name] for name in self._names}
        bound = []
        for name, required, default, processor in self._binders:
            value = values[name] if required else values.get(name, default)
            bound.append((name, value if processor is None else processor(value)))
        if self._positional:
            return tuple(value for _name, value in bound)
        return dict(bound)

    def by_name(self, values: Values) -> dict[str, Any]:
        """``values`` by bind name, as SQLAlchemy takes them."""
        if isinstance(values, tuple):
            return dict(zip(self._names, values, strict=True))
        return dict(values)

    def convert(self, row: Row) -> Row:
        if not self.processors:
            return row
        converted = list(row)
        for index, processor, keeps_null in self.processors:
            value = converted[index]
            if value is not None or not keeps_null:
                converted[index] = processor(value)
        return converted


def _keeps_null(processor: _Processor) -> bool:
    """Whether ``processor`` gives None for NULL, as a result processor should."""
    try:
        return processor(None) is None
    except Exception:  # one that cannot take None is called for NULL too
        return False


class _Held:
    """A connection checked out of the pool for reads, and what its reads need to know of it."""

    __slots__ = ("autocommit_pending", "connection", "dbapi_connection", "epoch", "pool", "until")

    def __init__(
        self, connection: Any, pool: Pool, epoch: int, until: float, autocommit: bool
    ) -> None:
        self.connection = connection
        self.pool = pool
        self.dbapi_connection: Any = connection.dbapi_connection
        self.epoch = epoch
        self.until = until
        self.autocommit_pending = autocommit


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
        # more, and a held connection would sit idle in a transaction. Python's sqlite3 begins
        # none for a SELECT, and undoing the setting there costs a statement, so SQLite is left
        # as it is.
        self._autocommit = engine.dialect.name != "sqlite"
        # Connections free for the next read. Taken with list.pop (atomic: each goes to one
        # read), put back under the lock, after a look at the epoch: close() and a disconnect
        # move it on, and a connection taken before is then given back to the pool instead.
        self._idle: list[_Held] = []
        self._lock = threading.Lock()
        self._epoch = 0
        # A store dropped without close() gives its held connections back to the pool all the
        # same (the garbage collector would drop them with a warning).
        self._release = functools.partial(
            _release, dialect=self._dialect, autocommit=self._autocommit, error=self._dbapi_error
        )
        weakref.finalize(self, _release_all, self._idle, self._release)

    def prepare(self, query: Select[Any]) -> PreparedRead:
        return PreparedRead(query, self._engine)

    def all(self, read: PreparedRead, values: Values) -> list[Row]:
        return self.rows(read, values, "all")

    def close(self) -> None:
        """Give the held connections back to the pool (``TokenStore.close`` then disposes of
        it); a read under way gives its own back when it ends. Reads may go on afterwards."""
        with self._lock:
            self._epoch += 1
            idle = self._idle
        _release_all(idle, self._release)

    @property
    def held(self) -> int:
        """How many connections wait for the next read."""
        return len(self._idle)

    def _observed(self) -> bool:
        dispatch = self._engine.dispatch
        return bool(
            dispatch.before_cursor_execute
            or dispatch.after_cursor_execute
            or self._dialect.dispatch.handle_error
        )

    def rows(self, read: PreparedRead, values: Values, fetch: Fetch) -> list[Row]:
        """The rows of ``read``: the first only (none or one) with ``fetch="one"``, else all.

        One function on purpose: it is most of a cache miss's Python, and each call it made
        (binding, keeping the connection, converting the row) cost as much as its work (measured
        on SQLite, beside the driver's own cursor: 1.5 x its time with those calls, 1.26 x
        without)."""
        # Anyone listening to the engine's statement or error events (a tracer,
        # e6auth.testing.count_queries) sees the read through SQLAlchemy. First SQLAlchemy's own
        # flags, set on the engine (or Engine) and the dialect once anyone listens to one of
        # their events: two attribute reads, where asking the dispatch collections costs three
        # Python calls (measured). A flag stays set after its listener is removed, so then the
        # collections decide, and reads go back to the driver once nobody listens.
        if (self._engine._has_events or self._dialect._has_events) and self._observed():
            return self._through_sqlalchemy(read, values, fetch)
        if read.by_position and isinstance(values, tuple):
            parameters: tuple[Any, ...] | dict[str, Any] = values
        else:
            parameters = read.parameters(values)
        try:
            held = self._idle.pop()
        except IndexError:
            held = self._checkout()
        else:
            if held.pool is not self._engine.pool or monotonic() >= held.until:
                # The engine was disposed of since (to drop its connections, or in a forked
                # child), or the connection was held its time: back to its pool, as SQLAlchemy's
                # own would go, where recycling and disconnect handling see it again.
                self._release(held)
                held = self._checkout()
        dbapi_connection = held.dbapi_connection
        cursor = None
        try:
            if held.autocommit_pending:
                self._dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
                held.autocommit_pending = False
            cursor = dbapi_connection.cursor()
            cursor.execute(read.sql, parameters)
            rows = [cursor.fetchone()] if fetch == "one" else cursor.fetchall()
            # Closed before the connection waits for its next read: an open statement would
            # keep SQLite's read snapshot, and the next read would not see newer commits.
            cursor.close()
        except self._dbapi_error as exc:
            if self._dialect.is_disconnect(exc, dbapi_connection, cursor):
                # Dead (the database restarted), and so are the other held ones: dropped, and
                # the read goes on as SQLAlchemy does on a disconnect: a retry, dropping the
                # pool's connections of its age.
                held.connection.invalidate(exc)
                held.connection.close()
                self._invalidate_held()
                return self._through_sqlalchemy(read, values, fetch)
            # Alive, but in no state worth keeping: back to the pool as it was found.
            self._release(held)
            raise DBAPIError.instance(
                read.sql, parameters, exc, self._dbapi_error, dialect=self._dialect
            ) from exc
        except BaseException:
            # Interrupted midway, in no known state: never handed to anyone else.
            held.connection.invalidate()
            held.connection.close()
            raise
        # Kept for the next read (which gives it back if it was held its time), unless close()
        # or a disconnect came meanwhile, or enough are kept.
        with self._lock:
            kept = held.epoch == self._epoch and len(self._idle) < HELD_CONNECTIONS
            if kept:
                self._idle.append(held)
        if not kept:
            self._release(held)
        if fetch == "all":
            return [read.convert(row) for row in rows]
        row = rows[0]
        if row is None:
            return []
        if read.processors:  # read.convert(row), without the call: the verify path's reads
            row = list(row)
            for index, processor, keeps_null in read.processors:
                value = row[index]
                if value is not None or not keeps_null:
                    row[index] = processor(value)
        return [row]

    def _checkout(self) -> _Held:
        pool = self._engine.pool  # before: a dispose meanwhile then shows at the next read
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
        return _Held(
            connection,
            pool,
            self._epoch,
            monotonic() + HOLD_SECONDS,
            self._autocommit,
        )

    def _invalidate_held(self) -> None:
        with self._lock:
            self._epoch += 1
        while True:
            try:
                held = self._idle.pop()
            except IndexError:
                return
            held.connection.invalidate()
            held.connection.close()

    def _through_sqlalchemy(self, read: PreparedRead, values: Values, fetch: Fetch) -> list[Row]:
        def work(connection: Connection) -> list[Row]:
            result = connection.execute(read.query, read.by_name(values))
            if fetch == "one":
                row = result.one_or_none()
                return [] if row is None else [row]
            return list(result.all())

        rows: list[Row] = self._fallback(work)
        return rows


def _release(held: _Held, *, dialect: Dialect, autocommit: bool, error: Any) -> None:
    """Give a live connection back to the pool as the pool's other users expect it: writes
    begin transactions."""
    try:
        if autocommit:
            dialect.reset_isolation_level(held.dbapi_connection)
    except error as exc:
        held.connection.invalidate(exc)
    held.connection.close()


def _release_all(idle: list[_Held], release: Callable[[_Held], None]) -> None:
    # One pop at a time: a read may take one meanwhile, and each goes to one of us.
    while True:
        try:
            held = idle.pop()
        except IndexError:
            return
        release(held)
