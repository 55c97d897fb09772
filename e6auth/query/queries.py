"""The queries in flight: prepared, run on worker threads, read batch by batch.

The connector's fetch protocol has no "not ready yet": ``getResultMetadata`` and
``getNextResultBatch`` must block until there is something to say, and an empty batch means the
end. So a worker runs each statement and hands encoded batches to the reader (see
:mod:`e6auth.query.state`).

Queries belong to an opaque ``owner`` (a session). Another owner's query id is treated exactly
like an unknown one. The connector abandons queries (it re-executes without clearing them), so
``collect_idle`` cancels and clears those nobody has touched for a while.

The workers and the server's threads are shared by every user, so one user's queries are held to
limits that leave room for the others (:mod:`e6auth.query.limits`), a statement timeout that the
gateway enforces on top of the database's own, and batches cut by bytes as well as rows
(:mod:`e6auth.query.batches`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Unpack

from e6auth.clock import Clock
from e6auth.errors import QueryCancelled, QueryError, QueryNotFound, ShuttingDown, TooManyQueries
from e6auth.query.backend import (
    DryRun,
    PlainDryRun,
    QueryBackend,
    QueryRun,
    Statement,
    StatementOptions,
)
from e6auth.query.batches import encode_rows, row_batches
from e6auth.query.limits import DEFAULT_MAX_RUNNING_PER_USER, UserLimits
from e6auth.query.state import QueryDone, QueryState, Stopped, fresh
from e6auth.query.wire import VectorType, encode_metadata

__all__ = ["DryRun", "QueryDone", "QueryManager"]

log = logging.getLogger("e6auth")

DEFAULT_BATCH_ROWS = 10_000
DEFAULT_MAX_QUERIES_PER_OWNER = 100
DEFAULT_IDLE_SECONDS = 600.0
DEFAULT_WORKERS = 16
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
"""A batch holds rows up to about this many bytes (and at most ``batch_rows`` rows); one row over
it is refused. With about two batches per query, the workers hold at most
``workers * 2 * max_batch_bytes`` of results: 128 MiB by default."""
_READ_POLL_SECONDS = 0.25
"""How often a waiting read looks whether its client is still there."""
_TIMEOUT_GRACE_SECONDS = 1.0
"""The database enforces the statement timeout itself where it can; the gateway steps in this
much later, for the rest (a worker waiting on its reader, a backend without a timeout)."""


class QueryManager:
    """Prepares, runs and streams queries on a :class:`~e6auth.query.backend.QueryBackend`.

    ``batch_rows`` rows, and about ``max_batch_bytes`` bytes, go in one result batch. An owner may
    hold ``max_queries_per_owner`` queries until it clears some; ``collect_idle()`` cancels and
    clears queries untouched for ``idle_seconds``. At most ``workers`` statements run at once;
    more wait their turn, and one user (``user`` of :meth:`prepare`) may have at most
    ``max_running_per_user`` executing or waiting for a worker: the user's next ones wait behind
    them, holding no worker, up to four times as many, and are refused beyond (QueryLimit).
    ``expire_overdue()`` stops queries executing for longer than ``statement_timeout_seconds``.

    A read that waits for rows stops when its client goes away, and after ``idle_seconds``.
    ``max_waiting_calls`` bounds the calls waiting at once in all (None: no bound), and twice
    ``max_running_per_user`` those of one user, so that a server thread is always left for the
    calls that do not wait (authenticate, cancel, clear, health).
    """

    def __init__(
        self,
        backend: QueryBackend,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        max_queries_per_owner: int = DEFAULT_MAX_QUERIES_PER_OWNER,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        workers: int = DEFAULT_WORKERS,
        statement_timeout_seconds: float | None = None,
        max_running_per_user: int = DEFAULT_MAX_RUNNING_PER_USER,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_waiting_calls: int | None = None,
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
        if statement_timeout_seconds is not None and statement_timeout_seconds <= 0:
            raise ValueError("statement_timeout_seconds must be positive (None: no timeout)")
        if max_running_per_user < 1:
            raise ValueError("max_running_per_user must be at least 1")
        if max_batch_bytes < 1:
            raise ValueError("max_batch_bytes must be at least 1")
        if max_waiting_calls is not None and max_waiting_calls < 1:
            raise ValueError("max_waiting_calls must be at least 1")
        self.backend = backend
        self.statement_timeout_seconds = statement_timeout_seconds
        self._limits = UserLimits(
            max_running_per_user=max_running_per_user, max_waiting_calls=max_waiting_calls
        )
        self.max_running_per_user = max_running_per_user
        self.max_queued_per_user = self._limits.max_queued_per_user
        self.max_waiting_per_user = self._limits.max_waiting_per_user
        self.max_waiting_calls = max_waiting_calls
        self.max_batch_bytes = max_batch_bytes
        self.batch_rows = batch_rows
        self.max_queries_per_owner = max_queries_per_owner
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._queries: dict[str, QueryState] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._closed = False
        self._draining = False
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="e6auth-query")

    # --- the connector's calls -----------------------------------------------------------------

    def prepare(self, owner: str, sql: str, **options: Unpack[StatementOptions]) -> str:
        """Register ``sql``; returns the new query's id. Nothing runs until :meth:`execute`.
        ``read_only``: the backend runs it (and explains it) read-only. ``user``: the e6auth user
        name, whose share of the gateway it takes (default: the owner's) and as whom the backend
        runs it (its database role, where one is mapped)."""
        if not sql.strip():
            raise QueryError("empty statement")
        query_id = secrets.token_urlsafe(16)
        user = options.get("user")
        statement = Statement(
            sql,
            options["catalog"] or "",
            options["schema"] or "",
            options.get("read_only", False),
            user or None,
        )
        query = QueryState(query_id, owner, statement, self._clock(), share=user or owner)
        with self._lock:
            if self._closed or self._draining:
                raise ShuttingDown()
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
            evicted.stop()
        return query_id

    def execute(self, owner: str, query_id: str, *, on_done: QueryDone | None = None) -> None:
        """Start the query on a worker. Executing a started query again does nothing.
        ``on_done`` is told how the query ended (the audit uses it)."""
        query = self._get(owner, query_id)
        with query.changed:
            if query.started:
                return
            run_now = self._limits.admit(query)
            query.started = True
            query.on_done = on_done
        if run_now:
            self._submit(query)

    def _submit(self, query: QueryState) -> None:
        """Hand an admitted query to the workers."""
        query.executed_at = self._clock()
        try:
            self._executor.submit(self._produce, query)
        except RuntimeError:  # the executor is shut down: close() is under way
            query.fail(QueryError("the query service is shutting down"))
            self._release(query)
            query.report()

    def metadata(
        self, owner: str, query_id: str, *, active: Callable[[], bool] | None = None
    ) -> bytes:
        """The result's metadata; blocks until the columns are known. Always the same bytes.
        ``active``: whether the client still waits (the wait stops once it says no)."""
        return self._read(self._get(owner, query_id), QueryState.take_metadata, active)

    def next_batch(
        self, owner: str, query_id: str, *, active: Callable[[], bool] | None = None
    ) -> bytes:
        """The next batch of rows; blocks until there is one. ``b""`` at the end of the results,
        and again on every later call. ``active`` as for :meth:`metadata`."""
        return self._read(self._get(owner, query_id), QueryState.take_batch, active)

    def status(self, owner: str, query_id: str) -> tuple[bool, int]:
        """Whether the query has produced all its rows without error, and how many so far."""
        query = self._get(owner, query_id)
        with query.changed:
            query.touched = self._clock()
            return (query.finished and query.error is None and not query.cancelled, query.rows)

    def cancel(self, owner: str, query_id: str) -> None:
        """Stop the query (its later reads raise QueryCancelled); it stays until cleared."""
        self._get(owner, query_id).stop()

    def clear(self, owner: str, query_id: str) -> None:
        """Stop the query and forget it. An unknown (or empty) id is fine: the connector clears
        queries it never ran."""
        with self._lock:
            query = self._queries.get(query_id)
            if query is None or query.owner != owner:
                return
            self._forget(query)
        query.stop()

    def explain(self, owner: str, query_id: str) -> str:
        query = self._get(owner, query_id)
        with query.changed:
            query.touched = self._clock()
        with self.waiting_call(query.user):
            return self.backend.explain(query.sql, **query.statement.options())

    def start_dry_run(self, sql: str, **options: Unpack[StatementOptions]) -> DryRun:
        """A dry run to do with ``result()`` and stop with ``cancel()``: the backend's own when
        it offers one (``start_dry_run``), else one around its ``dry_run`` that cancel cannot
        stop once begun."""
        # read_only is passed only when set, so that backends written before it keep working
        # for other tokens, and fail (rather than write) for read-only ones.
        given = Statement.of(sql, options).options()
        start = getattr(self.backend, "start_dry_run", None)
        if start is not None:
            started: DryRun = start(sql, **given)
            return started
        return PlainDryRun(lambda: self.backend.dry_run(sql, **given))

    def waiting_call(self, user: str) -> contextlib.AbstractContextManager[None]:
        """Around a call that may hold its server thread a long time (a read waiting for rows,
        explain, a dry run, browsing): refused with QueryLimit past the per-user and the total
        bounds, so that threads stay free for everyone else and for the quick calls."""
        return self._limits.waiting_call(user)

    @property
    def waiting_calls(self) -> int:
        """Calls waiting for results (or in explain, a dry run, browsing) now, of all users."""
        return self._limits.waiting_calls

    def running_queries(self, user: str) -> int:
        """How many queries ``user`` has executing or waiting for a worker."""
        return self._limits.running(user)

    # --- housekeeping --------------------------------------------------------------------------

    def housekeep(self) -> None:
        """What a timer calls every second or so: time out overdue queries, collect idle ones."""
        self.expire_overdue()
        self.collect_idle()

    def expire_overdue(self) -> int:
        """Stop the queries executing for longer than the statement timeout (plus a second, for
        the database's own to come first); their reads raise the timeout. Returns how many."""
        timeout = self.statement_timeout_seconds
        if timeout is None:
            return 0
        deadline = self._clock() - timeout - _TIMEOUT_GRACE_SECONDS
        with self._lock:
            overdue = [
                query
                for query in self._queries.values()
                if query.executed_at is not None
                and not query.finished
                and not query.cancelled
                and query.executed_at <= deadline
            ]
        for query in overdue:
            query.stop(error=QueryError(f"statement timeout ({timeout:g} s) exceeded"))
        if overdue:
            log.info("stopped %d queries past the statement timeout", len(overdue))
        return len(overdue)

    def collect_idle(self) -> int:
        """Cancel and clear the queries nobody has touched for ``idle_seconds``, a read that has
        waited that long included (it ends with an error); returns how many."""
        deadline = self._clock() - self.idle_seconds
        with self._lock:
            idle = [query for query in self._queries.values() if query.touched <= deadline]
            for query in idle:
                self._forget(query)
        for query in idle:
            query.stop()
        if idle:
            log.info("cleared %d idle queries", len(idle))
        return len(idle)

    def begin_drain(self) -> None:
        """Take no new queries (prepare raises ShuttingDown); those already prepared go on,
        and every call on them is served."""
        with self._lock:
            self._draining = True

    @property
    def draining(self) -> bool:
        return self._draining

    def wait_drained(self, timeout: float) -> bool:
        """After :meth:`begin_drain`: wait up to ``timeout`` seconds until every query's client
        has had its end (the last batch, its error, a statement's row count), or it was
        cancelled or abandoned. Returns whether they all were."""
        deadline = time.monotonic() + timeout
        while True:
            now = self._clock()
            with self._lock:
                busy = [query for query in self._queries.values() if not query.settled(now)]
            if not busy:
                return True
            if time.monotonic() >= deadline:
                log.warning("stopping with %d queries unfinished", len(busy))
                return False
            time.sleep(0.05)

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
            query.stop()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # --- internals -----------------------------------------------------------------------------

    def _get(self, owner: str, query_id: str) -> QueryState:
        with self._lock:
            query = self._queries.get(query_id)
        if query is None or query.owner != owner:
            raise QueryNotFound(f"no query {query_id[:32]!r} for this session")
        return query

    def _oldest_done(self, query_ids: set[str]) -> QueryState | None:
        """The least recently used of these queries that nobody needs to read any more (all
        rows read, failed or cancelled). Caller holds ``self._lock``."""
        done = [query for query in map(self._queries.__getitem__, query_ids) if query.read_out()]
        return min(done, key=lambda query: query.touched, default=None)

    def _forget(self, query: QueryState) -> None:
        """Drop the query from the indexes. Caller holds ``self._lock``."""
        self._queries.pop(query.id, None)
        owned = self._by_owner.get(query.owner)
        if owned is not None:
            owned.discard(query.id)
            if not owned:
                del self._by_owner[query.owner]

    def _read(
        self,
        query: QueryState,
        take: Callable[[QueryState], bytes | None],
        active: Callable[[], bool] | None,
    ) -> bytes:
        """What ``take`` finds, waiting for it: a waiting read takes one of the waiting-call
        places, stops when its client goes away, and after ``idle_seconds`` cancels the query."""
        placed = False  # whether this read holds a waiting-call place
        try:
            with query.reading(self._clock):
                started = self._clock()
                while True:
                    try:
                        found = take(query)
                    except QueryError:
                        query.delivered = True
                        raise
                    if found is not None:
                        return found
                    if not placed:
                        self._limits.enter_waiting(query.user)
                        placed = True
                    if active is not None and not active():
                        # Nobody receives this; the thread is what matters.
                        raise QueryCancelled("the client stopped waiting")
                    if self._clock() - started >= self.idle_seconds:
                        break
                    query.changed.wait(_READ_POLL_SECONDS)
        finally:
            if placed:
                self._limits.leave_waiting(query.user)
        error = QueryError(
            f"no result within {self.idle_seconds:g} s (query_idle_seconds): query cancelled"
        )
        query.stop(error=error)
        raise fresh(error)

    def _release(self, query: QueryState) -> None:
        """The query no longer runs: its place goes to its user's next queued query, if any
        (cancelled ones are told they ended, and skipped)."""
        following, skipped = self._limits.release(query)
        for cancelled in skipped:
            with cancelled.changed:
                cancelled.end()
            cancelled.report()
        if following is not None:
            self._submit(following)

    # --- the worker ----------------------------------------------------------------------------

    def _produce(self, query: QueryState) -> None:
        try:
            run = self.backend.run(query.sql, **query.statement.options())
            with query.changed:
                if query.cancelled:
                    return
                query.run = run
            names = self._stream(query, run)
            if not names:
                query.rowless = True
                # Published only now, after the commit: a statement without rows has succeeded
                # only once its transaction has.
                query.publish_metadata(encode_metadata(run.affected_rows, []))
        except Stopped:
            pass
        except QueryError as exc:
            query.fail(exc)
        except Exception as exc:
            # A bug, or a backend that let a driver error through: its text stays in the log.
            log.exception("query %s failed unexpectedly", query.id)
            query.fail(QueryError(f"query failed ({type(exc).__name__})"))
        finally:
            with query.changed:
                query.end()
            self._release(query)
            query.report()

    def _stream(self, query: QueryState, run: QueryRun) -> list[str]:
        """Run the statement and hand its rows to the reader; returns the column names. The
        run's block ends (commits) before this returns."""
        with run:
            names = run.execute()
            if not names:
                return names
            batches = row_batches(
                run, names, batch_rows=self.batch_rows, max_batch_bytes=self.max_batch_bytes
            )
            rows = next(batches, [])
            following: list[Sequence[object]] | None = None
            row_count = -1
            if len(rows) < self.batch_rows:
                # Probably all there is: one more batch makes sure, and gives an exact row count.
                following = next(batches, [])
                if not following:
                    row_count = len(rows)
            if rows:
                batch, types = encode_rows(rows)
            else:
                batch, types = b"", (VectorType.NULL,) * len(names)
            columns = [(name, kind.name) for name, kind in zip(names, types, strict=True)]
            query.publish_metadata(encode_metadata(row_count, columns))
            while True:
                count = len(rows)
                rows = []  # only the encoded batch waits for the reader
                query.put(batch, count)
                if following is not None:
                    rows, following = following, None
                else:
                    rows = next(batches, [])
                if not rows:
                    return names
                batch = encode_rows(rows)[0]
