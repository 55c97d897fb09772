"""The queries in flight: prepared, running on worker threads, read batch by batch.

The connector's fetch protocol has no "not ready yet": ``getResultMetadata`` and
``getNextResultBatch`` must block until there is something to say, and an empty batch means the
end. So a worker runs each statement and hands encoded batches to the reader through a buffer of
one batch; a worker whose reader falls behind waits, which bounds the memory a query holds to
about two batches.

Queries belong to an opaque ``owner`` (a session). Another owner's query id is treated exactly
like an unknown one. The connector abandons queries (it re-executes without clearing them), so
``collect_idle`` clears those nobody has touched for a while.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from e6auth.clock import Clock
from e6auth.engine.backend import QueryBackend, QueryRun
from e6auth.engine.wire import VectorType, encode_chunk_with_types, encode_metadata
from e6auth.errors import QueryCancelled, QueryError, QueryNotFound, TooManyQueries

__all__ = ["QueryDone", "QueryManager"]

log = logging.getLogger("e6auth")

DEFAULT_BATCH_ROWS = 10_000
DEFAULT_MAX_QUERIES_PER_OWNER = 100
DEFAULT_IDLE_SECONDS = 600.0
DEFAULT_WORKERS = 16
_BUFFERED_BATCHES = 1
"""Encoded batches waiting for the reader. With the one the worker is preparing, a query holds
about two batches."""


QueryDone = Callable[[str, str, str], None]
"""Told once when an executed query ends: its id, its statement, and ``ok``, ``error`` or
``cancelled``. Called on the worker thread; it must be quick and must not raise."""


class _Stopped(Exception):
    """The query was cancelled or cleared while its worker was producing."""


class _Query:
    """One query's state, guarded by its condition."""

    def __init__(
        self,
        query_id: str,
        owner: str,
        sql: str,
        catalog: str,
        schema: str,
        now: float,
        *,
        read_only: bool = False,
    ) -> None:
        self.id = query_id
        self.read_only = read_only
        self.owner = owner
        self.sql = sql
        self.catalog = catalog
        self.schema = schema
        self.changed = threading.Condition()
        self.touched = now
        self.readers = 0  # calls blocked on this query: it is not idle while anyone waits
        self.started = False
        self.metadata: bytes | None = None
        self.batches: collections.deque[bytes] = collections.deque()
        self.rows = 0
        self.finished = False  # the worker is done; with no error: every row was produced
        self.error: QueryError | None = None
        self.cancelled = False
        self.run: QueryRun | None = None
        self.on_done: QueryDone | None = None


def _fresh(error: QueryError) -> QueryError:
    """A copy of a query's error to raise: one exception object raised in many threads would
    collect all their tracebacks."""
    copy = type(error)(error.detail)
    copy.__cause__ = error.__cause__
    return copy


class QueryManager:
    """Prepares, runs and streams queries on a :class:`~e6auth.engine.backend.QueryBackend`.

    ``batch_rows`` rows go in one result batch. An owner may hold ``max_queries_per_owner``
    queries until it clears some; ``collect_idle()`` clears queries untouched for
    ``idle_seconds``. At most ``workers`` statements run at once; more wait their turn.
    """

    def __init__(
        self,
        backend: QueryBackend,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        max_queries_per_owner: int = DEFAULT_MAX_QUERIES_PER_OWNER,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        workers: int = DEFAULT_WORKERS,
        clock: Clock = time.monotonic,
    ) -> None:
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        if max_queries_per_owner < 1:
            raise ValueError("max_queries_per_owner must be at least 1")
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.backend = backend
        self.batch_rows = batch_rows
        self.max_queries_per_owner = max_queries_per_owner
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._queries: dict[str, _Query] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="e6auth-query")

    # --- the connector's calls -----------------------------------------------------------------

    def prepare(
        self,
        owner: str,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
    ) -> str:
        """Register ``sql``; returns the new query's id. Nothing runs until :meth:`execute`.
        ``read_only``: the backend runs it (and explains it) read-only."""
        if not sql.strip():
            raise QueryError("empty statement")
        query_id = secrets.token_urlsafe(16)
        query = _Query(
            query_id,
            owner,
            sql,
            catalog or "",
            schema or "",
            self._clock(),
            read_only=read_only,
        )
        with self._lock:
            if self._closed:
                raise QueryError("the query service is shutting down")
            owned = self._by_owner.setdefault(owner, set())
            evicted = None
            if len(owned) >= self.max_queries_per_owner:
                # The connector re-executes without clearing: a loop of execute + fetchall on
                # one cursor leaves a trail of read-out queries. Make room from those.
                evicted = self._oldest_done(owned)
                if evicted is None:
                    raise TooManyQueries(
                        f"{len(owned)} open queries (at most {self.max_queries_per_owner})"
                    )
                self._forget(evicted)
            owned.add(query_id)
            self._queries[query_id] = query
        if evicted is not None:
            self._stop(evicted)
        return query_id

    def execute(self, owner: str, query_id: str, *, on_done: QueryDone | None = None) -> None:
        """Start the query on a worker. Executing a started query again does nothing.
        ``on_done`` is told how the query ended (the audit uses it)."""
        query = self._get(owner, query_id)
        with query.changed:
            if query.started:
                return
            query.started = True
            query.on_done = on_done
        try:
            self._executor.submit(self._produce, query)
        except RuntimeError:  # the executor is shut down: close() is under way
            self._fail(query, QueryError("the query service is shutting down"))
            _report(query)

    def metadata(self, owner: str, query_id: str) -> bytes:
        """The result's metadata; blocks until the columns are known. Always the same bytes."""
        query = self._get(owner, query_id)
        with self._reading(query):
            while True:
                if query.metadata is not None:
                    return query.metadata
                self._raise_if_over(query)
                query.changed.wait()

    def next_batch(self, owner: str, query_id: str) -> bytes:
        """The next batch of rows; blocks until there is one. ``b""`` at the end of the results,
        and again on every later call."""
        query = self._get(owner, query_id)
        with self._reading(query):
            while True:
                if query.cancelled:
                    raise QueryCancelled()
                if query.batches:
                    batch = query.batches.popleft()
                    query.changed.notify_all()  # room for the worker's next batch
                    return batch
                if query.error is not None:
                    raise _fresh(query.error)
                if query.finished:
                    return b""
                self._raise_if_not_started(query)
                query.changed.wait()

    def status(self, owner: str, query_id: str) -> tuple[bool, int]:
        """Whether the query has produced all its rows without error, and how many so far."""
        query = self._get(owner, query_id)
        with query.changed:
            query.touched = self._clock()
            return (query.finished and query.error is None and not query.cancelled, query.rows)

    def cancel(self, owner: str, query_id: str) -> None:
        """Stop the query (its later reads raise QueryCancelled); it stays until cleared."""
        self._stop(self._get(owner, query_id))

    def clear(self, owner: str, query_id: str) -> None:
        """Stop the query and forget it. An unknown (or empty) id is fine: the connector clears
        queries it never ran."""
        with self._lock:
            query = self._queries.get(query_id)
            if query is None or query.owner != owner:
                return
            self._forget(query)
        self._stop(query)

    def explain(self, owner: str, query_id: str) -> str:
        query = self._get(owner, query_id)
        with query.changed:
            query.touched = self._clock()
        if query.read_only:
            return self.backend.explain(
                query.sql, catalog=query.catalog, schema=query.schema, read_only=True
            )
        return self.backend.explain(query.sql, catalog=query.catalog, schema=query.schema)

    def dry_run(
        self, sql: str, *, catalog: str | None, schema: str | None, read_only: bool = False
    ) -> str:
        # read_only is passed only when set, so that backends written before it keep working
        # for other tokens, and fail (rather than write) for read-only ones.
        if read_only:
            return self.backend.dry_run(sql, catalog=catalog, schema=schema, read_only=True)
        return self.backend.dry_run(sql, catalog=catalog, schema=schema)

    # --- housekeeping --------------------------------------------------------------------------

    def collect_idle(self) -> int:
        """Clear the queries nobody has touched for ``idle_seconds``; returns how many."""
        deadline = self._clock() - self.idle_seconds
        with self._lock:
            idle = [
                query
                for query in self._queries.values()
                if query.readers == 0 and query.touched <= deadline
            ]
            for query in idle:
                self._forget(query)
        for query in idle:
            self._stop(query)
        if idle:
            log.info("cleared %d idle queries", len(idle))
        return len(idle)

    def clear_owner(self, owner: str) -> None:
        """Clear every query of ``owner`` (its session ended)."""
        with self._lock:
            queries = [self._queries[query_id] for query_id in self._by_owner.get(owner, ())]
            for query in queries:
                self._forget(query)
        for query in queries:
            self._stop(query)

    def open_queries(self, owner: str | None = None) -> int:
        """How many queries are held, in all or for one owner."""
        with self._lock:
            if owner is None:
                return len(self._queries)
            return len(self._by_owner.get(owner, ()))

    def close(self) -> None:
        """Cancel every query and stop the workers. The backend stays open: it is the caller's."""
        with self._lock:
            self._closed = True
            queries = list(self._queries.values())
            for query in queries:
                self._forget(query)
        for query in queries:
            self._stop(query)
        self._executor.shutdown(wait=True, cancel_futures=True)

    # --- internals -----------------------------------------------------------------------------

    def _get(self, owner: str, query_id: str) -> _Query:
        with self._lock:
            query = self._queries.get(query_id)
        if query is None or query.owner != owner:
            raise QueryNotFound(f"no query {query_id[:32]!r} for this session")
        return query

    def _oldest_done(self, query_ids: set[str]) -> _Query | None:
        """The least recently used of these queries that nobody needs to read any more (all
        rows read, failed or cancelled). Caller holds ``self._lock``."""
        done = [
            query
            for query in map(self._queries.__getitem__, query_ids)
            if query.readers == 0 and (query.cancelled or (query.finished and not query.batches))
        ]
        return min(done, key=lambda query: query.touched, default=None)

    def _forget(self, query: _Query) -> None:
        """Drop the query from the indexes. Caller holds ``self._lock``."""
        self._queries.pop(query.id, None)
        owned = self._by_owner.get(query.owner)
        if owned is not None:
            owned.discard(query.id)
            if not owned:
                del self._by_owner[query.owner]

    def _stop(self, query: _Query) -> None:
        with query.changed:
            query.cancelled = True
            query.batches.clear()  # nobody will read them: free the memory now
            run = query.run
            query.changed.notify_all()
        if run is not None:
            run.cancel()

    @contextlib.contextmanager
    def _reading(self, query: _Query) -> Iterator[None]:
        """A blocking read: holds the query's condition, and counts as a reader so that the
        query is not idle while someone waits on it."""
        with query.changed:
            query.readers += 1
            query.touched = self._clock()
            try:
                yield
            finally:
                query.readers -= 1
                query.touched = self._clock()

    def _raise_if_over(self, query: _Query) -> None:
        if query.cancelled:
            raise QueryCancelled()
        if query.error is not None:
            raise _fresh(query.error)
        self._raise_if_not_started(query)

    @staticmethod
    def _raise_if_not_started(query: _Query) -> None:
        if not query.started:
            raise QueryError("the query was prepared but not executed")

    def _fail(self, query: _Query, error: QueryError) -> None:
        with query.changed:
            if query.error is None and not query.cancelled:
                query.error = error
            query.finished = True
            query.run = None
            query.changed.notify_all()

    # --- the worker ----------------------------------------------------------------------------

    def _produce(self, query: _Query) -> None:
        try:
            run = (
                self.backend.run(
                    query.sql, catalog=query.catalog, schema=query.schema, read_only=True
                )
                if query.read_only
                else self.backend.run(query.sql, catalog=query.catalog, schema=query.schema)
            )
            with query.changed:
                if query.cancelled:
                    return
                query.run = run
            names = self._stream(query, run)
            if not names:
                # Published only now, after the commit: a statement without rows has succeeded
                # only once its transaction has.
                self._publish_metadata(query, encode_metadata(run.affected_rows, []))
        except _Stopped:
            pass
        except QueryError as exc:
            self._fail(query, exc)
        except Exception as exc:
            # A bug, or a backend that let a driver error through: its text stays in the log.
            log.exception("query %s failed unexpectedly", query.id)
            self._fail(query, QueryError(f"query failed ({type(exc).__name__})"))
        finally:
            with query.changed:
                query.finished = True
                query.run = None
                query.changed.notify_all()
            _report(query)

    def _stream(self, query: _Query, run: QueryRun) -> list[str]:
        """Run the statement and hand its rows to the reader; returns the column names. The
        run's block ends (commits) before this returns."""
        with run:
            names = run.execute()
            if not names:
                return names
            rows = run.fetch(self.batch_rows)
            following: Sequence[Sequence[object]] | None = None
            row_count = -1
            if len(rows) < self.batch_rows:
                # Probably all there is: one more fetch makes sure, and gives an exact row count.
                following = run.fetch(self.batch_rows)
                if not following:
                    row_count = len(rows)
            if rows:
                batch, types = _encode(rows)
            else:
                batch, types = b"", (VectorType.NULL,) * len(names)
            columns = [(name, kind.name) for name, kind in zip(names, types, strict=True)]
            self._publish_metadata(query, encode_metadata(row_count, columns))
            while True:
                count = len(rows)
                rows = []  # only the encoded batch waits for the reader
                self._put(query, batch, count)
                if following is not None:
                    rows, following = following, None
                else:
                    rows = run.fetch(self.batch_rows)
                if not rows:
                    return names
                batch = _encode(rows)[0]

    def _publish_metadata(self, query: _Query, metadata: bytes) -> None:
        with query.changed:
            if query.cancelled:
                raise _Stopped
            query.metadata = metadata
            query.changed.notify_all()

    def _put(self, query: _Query, batch: bytes, rows: int) -> None:
        """Hand a batch to the reader, waiting while the buffer is full."""
        with query.changed:
            while len(query.batches) >= _BUFFERED_BATCHES and not query.cancelled:
                query.changed.wait()
            if query.cancelled:
                raise _Stopped
            if batch:
                query.batches.append(batch)
                query.rows += rows
                query.changed.notify_all()


def _encode(rows: Sequence[Sequence[object]]) -> tuple[bytes, tuple[VectorType, ...]]:
    return encode_chunk_with_types(list(zip(*rows, strict=True)))


def _report(query: _Query) -> None:
    on_done, query.on_done = query.on_done, None
    if on_done is None:
        return
    result = "cancelled" if query.cancelled else "error" if query.error is not None else "ok"
    try:
        on_done(query.id, query.sql, result)
    except Exception:
        log.exception("reporting the end of query %s failed", query.id)
