"""A bounded write-behind buffer: what the request path hands over is kept in memory, and a
background thread writes it to the store in batches, once per interval and once more on close.

The audit trail and the last-used times keep different things (every event, in order; the latest
use of each token) but follow one discipline, which lives here so the two cannot drift apart:

- memory is bounded by ``max_pending``; what is dropped for lack of room is counted in
  ``dropped`` (and, where the owner gives a warning, logged once per outage);
- a flush swaps the whole buffer out under the lock and writes it outside, so the request path
  never waits for the store;
- a failed write is counted in ``failures``, its batch goes back to the buffer (the owner decides
  how it meets what was recorded meanwhile) and the error propagates to the periodic thread,
  which logs it and tries again on schedule;
- close stops the thread and writes what is left; at shutdown a failure is logged, not raised.

What is kept and what gives way when full is the owner's policy: a subclass names its container,
its thread and its log lines as class attributes, implements :meth:`_write` and :meth:`_put_back`,
and its recording methods decide, with :attr:`_full`, whether to drop the oldest entry or refuse a
new one.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sized
from typing import ClassVar, Generic, TypeVar

from e6auth.background.periodic import PeriodicTask
from e6auth.clock import Clock

__all__ = ["WriteBehindBuffer"]

Pending = TypeVar("Pending", bound=Sized)


class WriteBehindBuffer(ABC, Generic[Pending]):
    """Holds up to ``max_pending`` entries in a ``Pending`` container and writes them in batches;
    the periodic thread runs :meth:`_run` every ``flush_seconds``."""

    _thread_name: ClassVar[str]
    """The periodic thread's name (its failures are logged under it)."""
    _log: ClassVar[logging.Logger]
    _shutdown_error: ClassVar[str]
    """Logged when the last write at close fails (``%d`` pending, ``%s`` the error's class)."""
    _full_warning: ClassVar[str | None] = None
    """If set, logged once after a write that follows drops (``%d`` max_pending, ``%d`` dropped so
    far), and again only once a write has succeeded since; None: drops are only counted."""
    _run_on_stop: ClassVar[bool] = False
    """Whether the thread runs once more as it stops (before :meth:`close` writes what is left)."""

    def __init__(self, *, flush_seconds: float, max_pending: int, clock: Clock) -> None:
        self._clock = clock
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time: the thread's and close()'s
        self._pending: Pending = self._empty()
        self._warned = False
        self._dropped_reported = 0
        self._task = PeriodicTask(
            self._thread_name, flush_seconds, self._run, run_on_stop=self._run_on_stop
        )
        self.dropped = 0
        self.writes = 0
        self.failures = 0
        self.last_flush_at = clock()
        """When the last flush succeeded or found nothing to write (or the buffer was made)."""

    # -- the owner's policy --------------------------------------------------------------------

    @abstractmethod
    def _empty(self) -> Pending:
        """A new, empty container."""

    @abstractmethod
    def _write(self, batch: Pending) -> int:
        """Write ``batch`` (never empty) to the store; returns what the owner counts as written."""

    @abstractmethod
    def _put_back(self, batch: Pending) -> None:
        """Return a batch whose write failed to ``self._pending``, which may have gained entries
        meanwhile; count in ``dropped`` what no longer fits. Called with the lock held."""

    @property
    def _full(self) -> bool:
        """Whether the buffer holds ``max_pending`` entries (call with the lock held)."""
        return len(self._pending) >= self._max_pending

    def _run(self) -> None:
        """One run of the periodic thread."""
        self.flush()

    # -- the background side -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Write what was collected; returns what :meth:`_write` counted (0 if nothing was
        pending). A failed write raises, after its batch went back to the buffer."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, self._empty()
            if not batch:
                self.last_flush_at = self._clock()
                return 0
            try:
                written = self._write(batch)
            except Exception:
                self.failures += 1
                with self._lock:
                    self._put_back(batch)
                raise
            finally:
                self._warn_if_dropping()
            self.writes += 1
            self._warned = False  # the outage is over: the next one warns again
            self._dropped_reported = self.dropped
            self.last_flush_at = self._clock()
            return written

    def _warn_if_dropping(self) -> None:
        if self._full_warning is None or self._warned:
            return
        if self.dropped > self._dropped_reported:
            self._warned = True
            self._log.warning(self._full_warning, self._max_pending, self.dropped)

    def start(self) -> None:
        self._task.start()

    def close(self) -> None:
        """Stop the background writer and write what is left. At shutdown there is no later
        retry: a failed last write is logged, not raised."""
        self._task.stop()
        if not self.pending:
            return
        try:
            self.flush()
        except Exception as exc:
            self._log.error(self._shutdown_error, self.pending, type(exc).__name__)
