"""Following the invalidation log, so that changes made by other processes (the command line,
other gateways) evict this process's cached verifications."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence

from e6auth.background import PeriodicTask
from e6auth.clock import Clock, to_datetime
from e6auth.store import Invalidation, TokenStore

__all__ = ["InvalidationPoller"]

log = logging.getLogger("e6auth.invalidation")

DEFAULT_POLL_SECONDS = 1.0
DEFAULT_RETENTION_SECONDS = 24 * 3600.0
PRUNE_EVERY_SECONDS = 600.0


class InvalidationPoller:
    """Reads the log from the last id it has seen, every ``poll_seconds``, and passes what it
    finds to ``on_invalidation``. Old entries are pruned after ``retention_seconds``.

    A process that could not read the log for longer than the retention may have missed entries
    that are gone now: it then passes one :class:`Invalidation` naming nothing, which means
    "forget everything".
    """

    def __init__(
        self,
        store: TokenStore,
        on_invalidation: Callable[[Sequence[Invalidation]], None],
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._on_invalidation = on_invalidation
        self._retention = dt.timedelta(seconds=retention_seconds)
        self._clock = clock
        # Nothing is cached yet, so history before now needs no replay.
        self.last_id = store.latest_invalidation_id()
        self._next_prune = clock()
        self._last_success = clock()
        self._retention_seconds = retention_seconds
        self._task = PeriodicTask("e6auth-invalidation-poller", poll_seconds, self.poll)

    def poll(self) -> int:
        """Apply every new log entry; returns how many there were."""
        if self._clock() - self._last_success > self._retention_seconds:
            log.warning("invalidation log unread for longer than its retention: clearing caches")
            self._on_invalidation([Invalidation()])
        applied = 0
        while True:
            events = self._store.invalidations_after(self.last_id)
            if not events:
                break
            self._on_invalidation(events)
            last = events[-1].id
            if last is not None:
                self.last_id = last
            applied += len(events)
        self._last_success = self._clock()
        if self._clock() >= self._next_prune:
            self._next_prune = self._clock() + PRUNE_EVERY_SECONDS
            pruned = self._store.prune_invalidations(to_datetime(self._clock()) - self._retention)
            if pruned:
                log.debug("pruned %d old invalidation log entries", pruned)
        return applied

    def start(self) -> None:
        self._task.start()

    def close(self) -> None:
        self._task.stop()
