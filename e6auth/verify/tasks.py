"""The authenticator's background tasks, started and stopped together.

A long-running process (``Authenticator.from_settings``, ``background=True``) writes last-used
times and audit events behind the request path, polls the invalidation log (and on PostgreSQL
also LISTENs, to apply a change the moment it is announced), and, when the policy revokes unused
tokens, does so hourly. Tests leave them stopped and call ``flush_last_used``,
``poll_invalidations`` and ``revoke_unused`` themselves. :meth:`BackgroundTasks.close` stops them
in an order that loses nothing: last-used times are written before the audit closes, because the
write may report new addresses to the audit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from e6auth.background.invalidation import InvalidationPoller, NotifyListener, listen_conninfo
from e6auth.background.lastused import LastUsedRecorder
from e6auth.background.periodic import PeriodicTask
from e6auth.clock import Clock
from e6auth.verify.parameters import TaskParameters
from e6auth.verify.policy import Policy

if TYPE_CHECKING:
    from e6auth.background.audit import AuditLog
    from e6auth.store import Invalidation, TokenStore

__all__ = ["BackgroundTasks"]


class BackgroundTasks:
    """The last-used recorder, the invalidation poller and listener, the revoke-unused thread,
    and the start and close of the audit log."""

    def __init__(
        self,
        store: TokenStore,
        parameters: TaskParameters,
        *,
        policy: Policy,
        invalidate: Callable[[Sequence[Invalidation]], None],
        audit: AuditLog | None,
        clock: Clock,
    ) -> None:
        self._store = store
        self._policy = policy
        self.recorder = LastUsedRecorder(
            store,
            flush_seconds=parameters.last_used_flush_seconds,
            max_pending=parameters.last_used_max_pending,
            clock=clock,
            on_new_peers=audit.new_addresses if audit is not None else None,
        )
        self.poller = InvalidationPoller(
            store,
            invalidate,
            poll_seconds=parameters.invalidation_poll_seconds,
            retention_seconds=parameters.invalidation_retention_seconds,
            clock=clock,
        )
        # On PostgreSQL: read the log the moment a change is announced, not at the next poll.
        self.listener = (
            NotifyListener(listen_conninfo(parameters.listen_url), self.poller.poll)
            if parameters.listen_url is not None
            else None
        )
        self._unused_revoker = (
            PeriodicTask(
                "e6auth-revoke-unused", parameters.revoke_unused_seconds, self.revoke_unused
            )
            if policy.revoke_unused_after_days is not None
            else None
        )

    def start(self, audit: AuditLog | None) -> None:
        """Start every task, and ``audit``'s writer."""
        if audit is not None:
            audit.start()
        self.recorder.start()
        self.poller.start()
        if self.listener is not None:
            self.listener.start()
        if self._unused_revoker is not None:
            self._unused_revoker.start()

    def revoke_unused(self) -> int:
        """Apply the policy's revoke-unused rule now, pending last-used times written first, so
        that a token in use is never revoked."""
        if self._policy.revoke_unused_after_days is None:
            return 0
        self.recorder.flush()
        return len(self._store.revoke_unused())

    def close(self, audit: AuditLog | None) -> None:
        """Stop every task; write what is pending: last-used times, then ``audit``'s events
        (the last-used write may report new addresses to it)."""
        if self._unused_revoker is not None:
            self._unused_revoker.stop()
        if self.listener is not None:
            self.listener.close()
        self.poller.close()
        self.recorder.close()
        if audit is not None:
            audit.close()
