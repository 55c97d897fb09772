"""The queries in flight: prepared, running on worker threads, read batch by batch.

The connector's fetch protocol has no "not ready yet": ``getResultMetadata`` and
``getNextResultBatch`` must block until there is something to say, and an empty batch means the
end. So a worker runs each statement and hands encoded batches to the reader through a buffer of
one batch; a worker whose reader falls behind waits, which bounds the memory a query holds to
about two batches.

Queries belong to an opaque ``owner`` (a session). Another owner's query id is treated exactly
like an unknown one. The connector abandons queries (it re-executes without clearing them), so
``collect_idle`` cancels and clears those nobody has touched for a while.

The workers and the server's threads are shared by every user, so one user's queries are held to
limits that leave room for the others: a few running at once per user, a few calls waiting for
results per user and in all, a statement timeout that the gateway enforces on top of the
database's own, and batches cut by bytes as well as rows.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from e6auth.clock import Clock
from e6auth.errors import (
    QueryCancelled,
    QueryError,
    QueryLimit,
    QueryNotFound,
    ShuttingDown,
    TooManyQueries,
)
from e6auth.query.backend import QueryBackend, QueryRun
from e6auth.query.wire import VectorType, encode_chunk_with_types, encode_metadata

__all__ = ["DryRun", "QueryDone", "QueryManager"]

log = logging.getLogger("e6auth")

DEFAULT_BATCH_ROWS = 10_000
DEFAULT_MAX_QUERIES_PER_OWNER = 100
DEFAULT_IDLE_SECONDS = 600.0
DEFAULT_WORKERS = 16
DEFAULT_MAX_RUNNING_PER_USER = 8
"""Queries one user may have executing (or waiting for a worker) at once: half the default
workers, enough for a dashboard's tiles, and one user's abandoned or endless queries leave the
other half to everyone else."""
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
"""A batch holds rows up to about this many bytes (and at most ``batch_rows`` rows); one row over
it is refused. With about two batches per query, the workers hold at most
``workers * 2 * max_batch_bytes`` of results: 128 MiB by default."""
_READ_POLL_SECONDS = 0.25
"""How often a waiting read looks whether its client is still there."""
_TIMEOUT_GRACE_SECONDS = 1.0
"""The database enforces the statement timeout itself where it can; the gateway steps in this
much later, for the rest (a worker waiting on its reader, a backend without a timeout)."""
_FIXED_VALUE_BYTES = 16
_DRAIN_ABANDONED_SECONDS = 2.0
"""While draining, a query nobody waits on and nobody has touched for this long is taken as
abandoned (connectors leave many): the stop does not wait for it."""
_BUFFERED_BATCHES = 1
"""Encoded batches waiting for the reader. With the one the worker is preparing, a query holds
about two batches."""


class DryRun(Protocol):
    """A dry run started on a backend: ``result()`` does the work; ``cancel()`` stops it from
    any thread."""

    def result(self) -> str: ...

    def cancel(self) -> None: ...


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
        user: str | None = None,
    ) -> None:
        self.id = query_id
        self.read_only = read_only
        self.owner = owner
        self.user = user or owner  # whose share of the gateway it takes
        self.db_user = user or None  # the e6auth user the backend runs it as, when known
        self.sql = sql
        self.catalog = catalog
        self.schema = schema
        self.changed = threading.Condition()
        self.touched = now
        self.readers = 0  # calls blocked on this query: it is not idle while anyone waits
        self.started = False
        self.rowless = False  # a statement without a result (its metadata is all there is)
        self.delivered = False  # the client has had the end: b"", the error, a rowless metadata
        self.executed_at: float | None = None  # when execute() handed it to the workers
        self.counted = False  # whether it counts among its user's running queries
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
        self.max_running_per_user = max_running_per_user
        self.max_waiting_per_user = 2 * max_running_per_user
        self.max_batch_bytes = max_batch_bytes
        self.max_waiting_calls = max_waiting_calls
        self._running: dict[str, int] = {}  # user -> queries executing or queued for a worker
        self.max_queued_per_user = 4 * max_running_per_user
        # user -> executed queries waiting for one of that user's running ones to end
        self._queued: dict[str, collections.deque[_Query]] = {}
        self._waiting: dict[str, int] = {}  # user -> calls waiting (reads, dry runs, browsing)
        self._waiting_total = 0
        self._gate = threading.Lock()  # guards _waiting and _waiting_total
        self.batch_rows = batch_rows
        self.max_queries_per_owner = max_queries_per_owner
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._queries: dict[str, _Query] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._closed = False
        self._draining = False
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
        user: str | None = None,
    ) -> str:
        """Register ``sql``; returns the new query's id. Nothing runs until :meth:`execute`.
        ``read_only``: the backend runs it (and explains it) read-only. ``user``: the e6auth user
        name, whose share of the gateway it takes (default: the owner's) and as whom the backend
        runs it (its database role, where one is mapped)."""
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
            user=user,
        )
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
            self._stop(evicted)
        return query_id

    def execute(self, owner: str, query_id: str, *, on_done: QueryDone | None = None) -> None:
        """Start the query on a worker. Executing a started query again does nothing.
        ``on_done`` is told how the query ended (the audit uses it)."""
        query = self._get(owner, query_id)
        with query.changed:
            if query.started:
                return
            run_now = self._admit(query)
            query.started = True
            query.on_done = on_done
        if run_now:
            self._submit(query)

    def _submit(self, query: _Query) -> None:
        """Hand an admitted query to the workers."""
        query.executed_at = self._clock()
        try:
            self._executor.submit(self._produce, query)
        except RuntimeError:  # the executor is shut down: close() is under way
            self._fail(query, QueryError("the query service is shutting down"))
            self._release(query)
            _report(query)

    def metadata(
        self, owner: str, query_id: str, *, active: Callable[[], bool] | None = None
    ) -> bytes:
        """The result's metadata; blocks until the columns are known. Always the same bytes.
        ``active``: whether the client still waits (the wait stops once it says no)."""
        return self._read(self._get(owner, query_id), self._metadata_of, active)

    def next_batch(
        self, owner: str, query_id: str, *, active: Callable[[], bool] | None = None
    ) -> bytes:
        """The next batch of rows; blocks until there is one. ``b""`` at the end of the results,
        and again on every later call. ``active`` as for :meth:`metadata`."""
        return self._read(self._get(owner, query_id), self._batch_of, active)

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
        with self.waiting_call(query.user):
            options = _run_options(query.read_only, query.db_user)
            return self.backend.explain(
                query.sql,
                catalog=query.catalog,
                schema=query.schema,
                **options,  # type: ignore[arg-type]
            )

    def start_dry_run(
        self,
        sql: str,
        *,
        catalog: str | None,
        schema: str | None,
        read_only: bool = False,
        user: str | None = None,
    ) -> DryRun:
        """A dry run to do with ``result()`` and stop with ``cancel()``: the backend's own when
        it offers one (``start_dry_run``), else one around its ``dry_run`` that cancel cannot
        stop once begun."""
        # read_only is passed only when set, so that backends written before it keep working
        # for other tokens, and fail (rather than write) for read-only ones.
        options: dict[str, object] = {"catalog": catalog, "schema": schema}
        options.update(_run_options(read_only, user))
        start = getattr(self.backend, "start_dry_run", None)
        if start is not None:
            started: DryRun = start(sql, **options)
            return started
        return _PlainDryRun(lambda: self.backend.dry_run(sql, **options))  # type: ignore[arg-type]

    @contextlib.contextmanager
    def waiting_call(self, user: str) -> Iterator[None]:
        """Around a call that may hold its server thread a long time (a read waiting for rows,
        explain, a dry run, browsing): refused with QueryLimit past the per-user and the total
        bounds, so that threads stay free for everyone else and for the quick calls."""
        self._enter_waiting(user)
        try:
            yield
        finally:
            self._leave_waiting(user)

    def _enter_waiting(self, user: str) -> None:
        with self._gate:
            if self.max_waiting_calls is not None and self._waiting_total >= self.max_waiting_calls:
                raise QueryLimit(
                    f"the gateway is busy: {self._waiting_total} calls are waiting for results "
                    "(its limit); try again shortly"
                )
            mine = self._waiting.get(user, 0)
            if mine >= self.max_waiting_per_user:
                raise QueryLimit(
                    f"{mine} calls of this user are already waiting for results (at most "
                    f"{self.max_waiting_per_user}); cancel or read the queries you have"
                )
            self._waiting[user] = mine + 1
            self._waiting_total += 1

    def _leave_waiting(self, user: str) -> None:
        with self._gate:
            self._waiting_total -= 1
            left = self._waiting[user] - 1
            if left:
                self._waiting[user] = left
            else:
                del self._waiting[user]

    @property
    def waiting_calls(self) -> int:
        """Calls waiting for results (or in explain, a dry run, browsing) now, of all users."""
        with self._gate:
            return self._waiting_total

    def running_queries(self, user: str) -> int:
        """How many queries ``user`` has executing or waiting for a worker."""
        with self._lock:
            return self._running.get(user, 0)

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
            self._stop(query, error=QueryError(f"statement timeout ({timeout:g} s) exceeded"))
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
            self._stop(query)
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
                busy = [query for query in self._queries.values() if not _settled(query, now)]
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

    def _stop(self, query: _Query, *, error: QueryError | None = None) -> None:
        """Cancel the query; with ``error``, its readers get that instead of QueryCancelled."""
        with query.changed:
            if error is not None and query.error is None and not query.cancelled:
                query.error = error
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

    def _read(
        self,
        query: _Query,
        take: Callable[[_Query], bytes | None],
        active: Callable[[], bool] | None,
    ) -> bytes:
        """What ``take`` finds, waiting for it: a waiting read takes one of the waiting-call
        places, stops when its client goes away, and after ``idle_seconds`` cancels the query."""
        placed = False  # whether this read holds a waiting-call place
        try:
            with self._reading(query):
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
                        self._enter_waiting(query.user)
                        placed = True
                    if active is not None and not active():
                        # Nobody receives this; the thread is what matters.
                        raise QueryCancelled("the client stopped waiting")
                    if self._clock() - started >= self.idle_seconds:
                        break
                    query.changed.wait(_READ_POLL_SECONDS)
        finally:
            if placed:
                self._leave_waiting(query.user)
        error = QueryError(
            f"no result within {self.idle_seconds:g} s (query_idle_seconds): query cancelled"
        )
        self._stop(query, error=error)
        raise _fresh(error)

    def _metadata_of(self, query: _Query) -> bytes | None:
        if query.metadata is not None:
            query.delivered = query.delivered or query.rowless
            return query.metadata
        self._raise_if_over(query)
        return None

    def _batch_of(self, query: _Query) -> bytes | None:
        if query.cancelled:
            self._raise_if_over(query)
        if query.batches:
            batch = query.batches.popleft()
            query.changed.notify_all()  # room for the worker's next batch
            return batch
        if query.error is not None:
            raise _fresh(query.error)
        if query.finished:
            query.delivered = True
            return b""
        self._raise_if_not_started(query)
        return None

    def _raise_if_over(self, query: _Query) -> None:
        if query.error is not None:
            raise _fresh(query.error)
        if query.cancelled:
            raise QueryCancelled()
        self._raise_if_not_started(query)

    @staticmethod
    def _raise_if_not_started(query: _Query) -> None:
        if not query.started:
            raise QueryError("the query was prepared but not executed")

    def _admit(self, query: _Query) -> bool:
        """Count the query among its user's running ones (True: run it now), or queue it behind
        them (False: it runs when one of them ends), or refuse it once the user's queue is full
        too. A queued query holds no worker. Caller holds ``query.changed``."""
        with self._lock:
            running = self._running.get(query.user, 0)
            if running < self.max_running_per_user:
                self._running[query.user] = running + 1
                query.counted = True
                return True
            queued = self._queued.setdefault(query.user, collections.deque())
            waiting = [waiter for waiter in queued if not waiter.cancelled]
            if len(waiting) >= self.max_queued_per_user:
                raise QueryLimit(
                    f"{running} queries of this user are running and {len(waiting)} waiting (at "
                    f"most {self.max_running_per_user} running and {self.max_queued_per_user} "
                    "waiting); wait for some to finish or cancel them"
                )
            queued.clear()
            queued.extend(waiting)
            queued.append(query)
            return False

    def _release(self, query: _Query) -> None:
        """The query no longer runs: its place goes to its user's next queued query, if any
        (cancelled ones are told they ended, and skipped)."""
        skipped: list[_Query] = []
        following = None
        with self._lock:
            if not query.counted:
                return
            query.counted = False
            queued = self._queued.get(query.user)
            while queued:
                candidate = queued.popleft()
                if not candidate.cancelled:
                    following = candidate
                    following.counted = True  # takes over the place: the count stays
                    break
                skipped.append(candidate)
            if queued is not None and not queued:
                del self._queued[query.user]
            if following is None:
                left = self._running[query.user] - 1
                if left:
                    self._running[query.user] = left
                else:
                    del self._running[query.user]
        for cancelled in skipped:
            with cancelled.changed:
                cancelled.finished = True
                cancelled.changed.notify_all()
            _report(cancelled)
        if following is not None:
            self._submit(following)

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
            options = _run_options(query.read_only, query.db_user)
            run = self.backend.run(
                query.sql,
                catalog=query.catalog,
                schema=query.schema,
                **options,  # type: ignore[arg-type]
            )
            with query.changed:
                if query.cancelled:
                    return
                query.run = run
            names = self._stream(query, run)
            if not names:
                query.rowless = True
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
            self._release(query)
            _report(query)

    def _stream(self, query: _Query, run: QueryRun) -> list[str]:
        """Run the statement and hand its rows to the reader; returns the column names. The
        run's block ends (commits) before this returns."""
        with run:
            names = run.execute()
            if not names:
                return names
            batches = self._row_batches(run, names)
            rows = next(batches, [])
            following: list[Sequence[object]] | None = None
            row_count = -1
            if len(rows) < self.batch_rows:
                # Probably all there is: one more batch makes sure, and gives an exact row count.
                following = next(batches, [])
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
                    rows = next(batches, [])
                if not rows:
                    return names
                batch = _encode(rows)[0]

    def _row_batches(self, run: QueryRun, names: list[str]) -> Iterator[list[Sequence[object]]]:
        """The result's rows cut into batches of at most ``batch_rows`` rows and about
        ``max_batch_bytes`` bytes. Each fetch asks for as many rows as the largest row seen so
        far leaves room for, so that the driver never holds much more than a batch either."""
        pending: collections.deque[Sequence[object]] = collections.deque()
        largest = 0  # bytes of the largest row seen: 0 until the first fetch, which takes one
        number = 0
        exhausted = False
        while True:
            batch: list[Sequence[object]] = []
            size = 0
            while len(batch) < self.batch_rows:
                if not pending:
                    if exhausted:
                        break
                    room = self.max_batch_bytes - size
                    wanted = 1 if largest == 0 else max(1, room // largest)
                    fetched = run.fetch(min(wanted, self.batch_rows - len(batch)))
                    if not fetched:
                        exhausted = True
                        break
                    pending.extend(fetched)
                row_bytes = _row_bytes(pending[0])
                if row_bytes > self.max_batch_bytes:
                    limit = self.max_batch_bytes
                    row_bytes = sum(_exact_value_bytes(value, limit) for value in pending[0])
                    if row_bytes > limit:
                        raise QueryLimit(_too_large(pending[0], names, number + 1, limit))
                largest = max(largest, row_bytes)
                if batch and size + row_bytes > self.max_batch_bytes:
                    break
                batch.append(pending.popleft())
                size += row_bytes
                number += 1
            if not batch:
                return
            yield batch

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


def _run_options(read_only: bool, user: str | None) -> dict[str, object]:
    """``read_only`` and ``user`` for a backend's run, explain and dry run, each passed only when
    set: backends written before them keep serving the calls that do not need them, and fail
    (rather than ignore them) for those that do."""
    options: dict[str, object] = {}
    if read_only:
        options["read_only"] = True
    if user is not None:
        options["user"] = user
    return options


def _settled(query: _Query, now: float) -> bool:
    """Whether a drain may end without this query: its client has had all it will ask for."""
    if query.cancelled or (query.finished and query.delivered):
        return True
    return query.readers == 0 and now - query.touched >= _DRAIN_ABANDONED_SECONDS


def _encode(rows: Sequence[Sequence[object]]) -> tuple[bytes, tuple[VectorType, ...]]:
    return encode_chunk_with_types(list(zip(*rows, strict=True)))


def _value_bytes(value: object) -> int:
    """At least what a value takes in a batch, quickly: text and bytes by their length, times
    the most UTF-8 can make of a character (4) or the wire's decoding of a byte that is not
    UTF-8 (3: U+FFFD) unless they are ASCII; containers by their JSON; a fixed few bytes for
    everything else."""
    if isinstance(value, str):
        return len(value) * (1 if value.isascii() else 4) + 4
    if isinstance(value, bytes | bytearray):
        return len(value) * (1 if value.isascii() else 3) + 4
    if isinstance(value, memoryview):
        return value.nbytes * 3 + 4
    if isinstance(value, dict | list):
        return len(json.dumps(value, default=str).encode()) + 4
    return _FIXED_VALUE_BYTES


def _exact_value_bytes(value: object, limit: int) -> int:
    """What a value takes in a batch, exactly for text and bytes up to ``limit``: for a row
    that the quick bound puts over the limit. Text and bytes take at least their length, so a
    value longer than the limit is not copied to be measured."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        if size > limit:
            return size + 4
        if isinstance(value, str):
            return len(value.encode("utf-8", "replace")) + 4
        return len(bytes(value).decode("utf-8", "replace").encode()) + 4
    return _value_bytes(value)


def _row_bytes(row: Sequence[object]) -> int:
    return sum(map(_value_bytes, row))


def _too_large(row: Sequence[object], names: Sequence[str], number: int, limit: int) -> str:
    sizes = [_exact_value_bytes(value, limit) for value in row]
    column = max(range(len(sizes)), key=sizes.__getitem__)
    return (
        f"row {number} is too large: its value in column {names[column][:64]!r} takes at "
        f"least {sizes[column]:,} bytes, over the gateway's limit of {limit:,} bytes per batch "
        "(max_batch_bytes)"
    )


class _PlainDryRun:
    """A backend's ``dry_run`` as a :class:`DryRun` that cannot be stopped once begun."""

    def __init__(self, call: Callable[[], str]) -> None:
        self._call = call
        self._cancelled = threading.Event()

    def result(self) -> str:
        if self._cancelled.is_set():
            raise QueryCancelled()
        return self._call()

    def cancel(self) -> None:
        self._cancelled.set()


def _report(query: _Query) -> None:
    on_done, query.on_done = query.on_done, None
    if on_done is None:
        return
    result = "error" if query.error is not None else "cancelled" if query.cancelled else "ok"
    try:
        on_done(query.id, query.sql, result)
    except Exception:
        log.exception("reporting the end of query %s failed", query.id)
