"""One query in flight: its state, and the handoff of its results from the worker that runs it to
the calls that read them.

The connector's fetch protocol has no "not ready yet": a read blocks until there is something to
say. So the worker publishes the metadata and puts encoded batches into a buffer of one batch, and
readers take them out, all under the query's condition; a worker whose reader falls behind waits,
which bounds the memory a query holds to about two batches. A cancel (or clear, or timeout) wakes
both sides: the worker stops producing (:class:`Stopped`), readers get the error.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from e6auth.clock import Clock
from e6auth.errors import QueryCancelled, QueryError
from e6auth.query.backend import QueryRun, Statement

__all__ = ["QueryDone", "QueryState", "Stopped", "fresh"]

log = logging.getLogger("e6auth")

_BUFFERED_BATCHES = 1
"""Encoded batches waiting for the reader. With the one the worker is preparing, a query holds
about two batches."""
_DRAIN_ABANDONED_SECONDS = 2.0
"""While draining, a query nobody waits on and nobody has touched for this long is taken as
abandoned (connectors leave many): the stop does not wait for it."""

QueryDone = Callable[[str, str, str], None]
"""Told once when an executed query ends: its id, its statement, and ``ok``, ``error`` or
``cancelled``. Called on the worker thread; it must be quick and must not raise."""


class Stopped(Exception):
    """The query was cancelled or cleared while its worker was producing."""


def fresh(error: QueryError) -> QueryError:
    """A copy of a query's error to raise: one exception object raised in many threads would
    collect all their tracebacks."""
    copy = type(error)(error.detail)
    copy.__cause__ = error.__cause__
    return copy


class QueryState:
    """One query's state, guarded by its condition ``changed``."""

    def __init__(
        self, query_id: str, owner: str, statement: Statement, now: float, *, share: str
    ) -> None:
        self.id = query_id
        self.owner = owner
        self.user = share  # whose share of the gateway it takes
        self.statement = statement  # its user, when known: as whom the backend runs it
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

    @property
    def sql(self) -> str:
        return self.statement.sql

    # --- the worker's side ---------------------------------------------------------------------

    def publish_metadata(self, metadata: bytes) -> None:
        with self.changed:
            if self.cancelled:
                raise Stopped
            self.metadata = metadata
            self.changed.notify_all()

    def put(self, batch: bytes, rows: int) -> None:
        """Hand a batch to the reader, waiting while the buffer is full."""
        with self.changed:
            while len(self.batches) >= _BUFFERED_BATCHES and not self.cancelled:
                self.changed.wait()
            if self.cancelled:
                raise Stopped
            if batch:
                self.batches.append(batch)
                self.rows += rows
                self.changed.notify_all()

    def fail(self, error: QueryError) -> None:
        with self.changed:
            if self.error is None and not self.cancelled:
                self.error = error
            self.end()

    def end(self) -> None:
        """The worker is done with it (or it will never run). Caller holds ``changed``."""
        self.finished = True
        self.run = None
        self.changed.notify_all()

    def stop(self, *, error: QueryError | None = None) -> None:
        """Cancel the query; with ``error``, its readers get that instead of QueryCancelled."""
        with self.changed:
            if error is not None and self.error is None and not self.cancelled:
                self.error = error
            self.cancelled = True
            self.batches.clear()  # nobody will read them: free the memory now
            run = self.run
            self.changed.notify_all()
        if run is not None:
            run.cancel()

    def report(self) -> None:
        """Tell ``on_done`` how the query ended, once."""
        on_done, self.on_done = self.on_done, None
        if on_done is None:
            return
        result = "error" if self.error is not None else "cancelled" if self.cancelled else "ok"
        try:
            on_done(self.id, self.sql, result)
        except Exception:
            log.exception("reporting the end of query %s failed", self.id)

    # --- the readers' side (callers hold ``changed``) ------------------------------------------

    @contextlib.contextmanager
    def reading(self, clock: Clock) -> Iterator[None]:
        """A blocking read: holds the query's condition, and counts as a reader so that the
        query is not idle while someone waits on it."""
        with self.changed:
            self.readers += 1
            self.touched = clock()
            try:
                yield
            finally:
                self.readers -= 1
                self.touched = clock()

    def take_metadata(self) -> bytes | None:
        """The metadata, or None while the worker has not published it yet."""
        if self.metadata is not None:
            self.delivered = self.delivered or self.rowless
            return self.metadata
        self._raise_if_over()
        return None

    def take_batch(self) -> bytes | None:
        """The next batch (``b""`` at the end), or None while the worker is producing it."""
        if self.cancelled:
            self._raise_if_over()
        if self.batches:
            batch = self.batches.popleft()
            self.changed.notify_all()  # room for the worker's next batch
            return batch
        if self.error is not None:
            raise fresh(self.error)
        if self.finished:
            self.delivered = True
            return b""
        self._raise_if_not_started()
        return None

    def _raise_if_over(self) -> None:
        if self.error is not None:
            raise fresh(self.error)
        if self.cancelled:
            raise QueryCancelled()
        self._raise_if_not_started()

    def _raise_if_not_started(self) -> None:
        if not self.started:
            raise QueryError("the query was prepared but not executed")

    # --- for housekeeping (callers hold the manager's lock) ------------------------------------

    def read_out(self) -> bool:
        """Whether nobody needs to read it any more: all rows read, failed or cancelled."""
        return self.readers == 0 and (self.cancelled or (self.finished and not self.batches))

    def settled(self, now: float) -> bool:
        """Whether a drain may end without this query: its client has had all it will ask for."""
        if self.cancelled or (self.finished and self.delivered):
            return True
        return self.readers == 0 and now - self.touched >= _DRAIN_ABANDONED_SECONDS
