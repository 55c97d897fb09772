"""Each user's share of a gateway that every user shares: queries running at once, queries queued
behind them, and calls waiting for results.

The query workers and the server's threads are shared, so one user's queries are held to limits
that leave room for the others: a few running at once per user (the user's next ones wait behind
them, holding no worker, up to a bound), and a few calls waiting for results per user and in all,
so that a server thread is always left for the calls that do not wait (authenticate, cancel,
clear, health).
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator

from e6auth.errors import QueryLimit
from e6auth.query.state import QueryState

__all__ = ["DEFAULT_MAX_RUNNING_PER_USER", "UserLimits"]

DEFAULT_MAX_RUNNING_PER_USER = 8
"""Queries one user may have executing (or waiting for a worker) at once: half the default
workers, enough for a dashboard's tiles, and one user's abandoned or endless queries leave the
other half to everyone else."""


class UserLimits:
    """The per-user counts and their bounds: ``max_running_per_user`` queries executing or
    waiting for a worker, four times as many queued behind them; twice ``max_running_per_user``
    waiting calls of one user, and ``max_waiting_calls`` in all (None: no bound)."""

    def __init__(
        self,
        *,
        max_running_per_user: int = DEFAULT_MAX_RUNNING_PER_USER,
        max_waiting_calls: int | None = None,
    ) -> None:
        self.max_running_per_user = max_running_per_user
        self.max_queued_per_user = 4 * max_running_per_user
        self.max_waiting_per_user = 2 * max_running_per_user
        self.max_waiting_calls = max_waiting_calls
        self._lock = threading.Lock()  # guards _running and _queued
        self._running: dict[str, int] = {}  # user -> queries executing or queued for a worker
        # user -> executed queries waiting for one of that user's running ones to end
        self._queued: dict[str, collections.deque[QueryState]] = {}
        self._gate = threading.Lock()  # guards _waiting and _waiting_total
        self._waiting: dict[str, int] = {}  # user -> calls waiting (reads, dry runs, browsing)
        self._waiting_total = 0

    # --- queries running -----------------------------------------------------------------------

    def admit(self, query: QueryState) -> bool:
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

    def release(self, query: QueryState) -> tuple[QueryState | None, list[QueryState]]:
        """The query no longer runs: its place goes to its user's next queued query, returned
        first (to be run now; None if there is none), with the cancelled ones skipped on the way
        (to be told they ended)."""
        skipped: list[QueryState] = []
        following = None
        with self._lock:
            if not query.counted:
                return None, skipped
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
        return following, skipped

    def running(self, user: str) -> int:
        """How many queries ``user`` has executing or waiting for a worker."""
        with self._lock:
            return self._running.get(user, 0)

    # --- calls waiting -------------------------------------------------------------------------

    @contextlib.contextmanager
    def waiting_call(self, user: str) -> Iterator[None]:
        """Around a call that may hold its server thread a long time: refused with QueryLimit
        past the per-user and the total bounds."""
        self.enter_waiting(user)
        try:
            yield
        finally:
            self.leave_waiting(user)

    def enter_waiting(self, user: str) -> None:
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

    def leave_waiting(self, user: str) -> None:
        with self._gate:
            self._waiting_total -= 1
            left = self._waiting[user] - 1
            if left:
                self._waiting[user] = left
            else:
                del self._waiting[user]

    @property
    def waiting_calls(self) -> int:
        """Calls waiting now, of all users."""
        with self._gate:
            return self._waiting_total
