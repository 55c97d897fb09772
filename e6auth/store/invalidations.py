"""The invalidation log: the changes after which no process may trust a cached verification.

Every change that ends a credential (a revoked or rotated token, a disabled user, a new password)
appends an entry in the same transaction as the change, so that the log never announces a change
that did not commit nor misses one that did. After the commit, this process's listeners are told
at once (its own cache); the others read the log (``TokenStore.invalidations_after``), woken on
PostgreSQL by a NOTIFY sent with the commit (e6auth.background.invalidation).

Reading the log is on the poll's hot path and stays with the store's other prepared reads
(e6auth.store.reads); here is the writing side, shared by the users and the tokens.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import Connection, Engine, delete, insert, text

from e6auth.store.database import write_transaction
from e6auth.store.records import Invalidation
from e6auth.store.schema import invalidations

__all__ = ["NOTIFY_CHANNEL", "InvalidationListener", "InvalidationLog"]

# The store's logger: a listener's failure is told where it always was.
log = logging.getLogger("e6auth.store")

InvalidationListener = Callable[[Sequence[Invalidation]], None]
NOTIFY_CHANNEL = "e6auth_invalidation"


class InvalidationLog:
    """Writes the log and tells this process's listeners; ``now`` stamps the entries."""

    def __init__(self, engine: Engine, now: Callable[[], dt.datetime]) -> None:
        self._engine = engine
        self._now = now
        self._listeners: list[InvalidationListener] = []

    def add_listener(self, listener: InvalidationListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: InvalidationListener) -> None:
        self._listeners.remove(listener)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[tuple[Connection, list[Invalidation]]]:
        """A write transaction in which the caller makes a change and appends to the list what it
        invalidates: the entries are logged in that transaction, just before it commits, and
        announced after the commit. Nothing is logged or announced if the block raises."""
        events: list[Invalidation] = []
        with write_transaction(self._engine) as connection:
            yield connection, events
            self._write(connection, events)
        self._announce(events)

    def prune(self, older_than: dt.datetime) -> int:
        with write_transaction(self._engine) as connection:
            result = connection.execute(
                delete(invalidations).where(invalidations.c.created_at < older_than)
            )
        return result.rowcount

    def _write(self, connection: Connection, events: list[Invalidation]) -> None:
        if not events:
            return
        if connection.dialect.name == "postgresql":
            # Serialise writers of the log so that its ids become visible in commit order: a
            # reader that has seen id N can then never later find a smaller id appear.
            connection.execute(text(f"LOCK TABLE {invalidations.name} IN EXCLUSIVE MODE"))
        now = self._now()
        connection.execute(
            insert(invalidations),
            [
                {"created_at": now, "token_id": event.token_id, "user_id": event.user_id}
                for event in events
            ],
        )
        if connection.dialect.name == "postgresql":
            # Delivered when this transaction commits: listeners read the log at once instead of
            # at their next poll. The payload is empty; the log is the one source of truth.
            connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})

    def _announce(self, events: list[Invalidation]) -> None:
        if not events:
            return
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:
                log.exception("invalidation listener failed")
