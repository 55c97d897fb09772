"""Following the invalidation log, so that changes made by other processes (the command line,
other gateways) evict this process's cached verifications.

Every process polls the log. On PostgreSQL each change is also announced with NOTIFY, and a
:class:`NotifyListener` makes the poller read the log the moment one arrives; polling stays on as
the catch-up path for notifications lost while the listener was disconnected.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from e6auth.background.periodic import PeriodicTask
from e6auth.clock import Clock, to_datetime
from e6auth.store.records import Invalidation
from e6auth.store.token_store import NOTIFY_CHANNEL

if TYPE_CHECKING:
    from e6auth.store.token_store import TokenStore

__all__ = ["InvalidationPoller", "NotifyListener", "listen_conninfo"]

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
        self._lock = threading.Lock()
        self._task = PeriodicTask("e6auth-invalidation-poller", poll_seconds, self.poll)

    def poll(self) -> int:
        """Apply every new log entry; returns how many there were. Safe from any thread."""
        with self._lock:
            return self._poll()

    def _poll(self) -> int:
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


MIN_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0
WAIT_SECONDS = 0.5


def listen_conninfo(url: str) -> str:
    """A libpq connection string for psycopg from a SQLAlchemy PostgreSQL URL."""
    from sqlalchemy import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class NotifyListener:
    """LISTENs for invalidation NOTIFYs on a dedicated connection and calls ``on_notify`` for each.

    Give it a direct connection (not through a transaction-pooling proxy, which does not carry
    LISTEN). On a lost connection it reconnects with exponential backoff, and after every
    (re)connect it calls ``on_notify`` once, to catch up on what it missed. It runs on its own
    thread and never touches the request path.
    """

    def __init__(
        self,
        conninfo: str,
        on_notify: Callable[[], object],
        *,
        channel: str = NOTIFY_CHANNEL,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self._conninfo = conninfo
        self._on_notify = on_notify
        self._channel = channel
        self._max_backoff = max_backoff_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = MIN_BACKOFF_SECONDS
        self.connected = threading.Event()
        self.connects = 0
        self.notifications = 0

    def __repr__(self) -> str:
        return f"NotifyListener(channel={self._channel!r}, connects={self.connects})"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="e6auth-invalidation-listener", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        # Imported here: only PostgreSQL deployments listen, and psycopg takes 0.15 s to load.
        import psycopg

        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg.Error as exc:
                self.connected.clear()
                log.warning(
                    "invalidation listener lost its connection (%s); retrying in %.1f s",
                    type(exc).__name__,
                    self._backoff,
                )
                self._stopping.wait(self._backoff)
                self._backoff = min(self._backoff * 2, self._max_backoff)

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as connection:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self._backoff = MIN_BACKOFF_SECONDS  # healthy again: the next drop starts over
            self.connects += 1
            self.connected.set()
            self._call()  # catch up on anything that happened while not listening
            while not self._stopping.is_set():
                for _ in connection.notifies(timeout=WAIT_SECONDS, stop_after=1):
                    self.notifications += 1
                    self._call()

    def _call(self) -> None:
        try:
            self._on_notify()
        except Exception:
            log.exception("reading the invalidation log after a notification failed")
