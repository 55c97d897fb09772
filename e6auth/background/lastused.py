"""When each token was last used, without a database write per request: uses coalesce in a
bounded write-behind buffer, one entry per token (its latest time and its last few addresses), and
a background thread writes them in one batch per interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from e6auth.background.buffer import WriteBehindBuffer
from e6auth.clock import Clock, to_datetime
from e6auth.store.records import TokenUse
from e6auth.verify.restrictions import Peer

if TYPE_CHECKING:
    from e6auth.store.token_store import TokenStore

__all__ = ["LastUsedRecorder"]

log = logging.getLogger("e6auth.lastused")

DEFAULT_FLUSH_SECONDS = 15.0
DEFAULT_MAX_PENDING = 100_000
MAX_PEERS = 5
MAX_PEER_LENGTH = 100
PEER_SAMPLE_EVERY = 16


@dataclass(slots=True)
class _Pending:
    at: float
    peers: list[str]
    uses: int = 0


class LastUsedRecorder(WriteBehindBuffer[dict[str, _Pending]]):
    """Collects token uses in memory and writes them in one batch per interval.

    :meth:`record` is the request path: a dictionary update under a lock. :meth:`flush` swaps
    the collected uses out and hands them to the store; if the write fails they are merged back
    (the newest time wins) and tried again on the next flush. At most ``max_pending`` tokens are
    held: beyond that, uses of further tokens are dropped and counted in ``dropped`` (a metric,
    not logged: the tokens already held keep being recorded). ``max_pending=0`` keeps nothing.
    """

    _thread_name = "e6auth-last-used"
    _log = log
    _shutdown_error = "could not write last-used times of %d tokens at shutdown (%s)"
    _run_on_stop = True  # the last uses are written as the thread stops, then close() retries

    def __init__(
        self,
        store: TokenStore,
        *,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: Clock = time.time,
        on_new_peers: Callable[[str, tuple[str, ...]], None] | None = None,
    ) -> None:
        """``on_new_peers`` is passed to :meth:`TokenStore.record_token_uses` (the audit's
        "token used from a new address")."""
        super().__init__(flush_seconds=flush_seconds, max_pending=max_pending, clock=clock)
        self._store = store
        self._on_new_peers = on_new_peers

    def record(self, token_id: str, *, at: float | None = None, peer: Peer | None = None) -> None:
        """Note a use of ``token_id``. ``peer`` may be a callable: it is then asked for the
        address only on the token's first use in a flush interval and on every
        ``PEER_SAMPLE_EVERY``-th use after, because asking gRPC costs more than the rest of a
        cached verification."""
        moment = self._clock() if at is None else at
        with self._lock:
            pending = self._pending.get(token_id)
            if pending is None:
                if len(self._pending) >= self._max_pending:  # self._full, without its call
                    self.dropped += 1
                    return
                pending = self._pending[token_id] = _Pending(moment, [])
            elif moment > pending.at:
                pending.at = moment
            pending.uses += 1
            if peer is None or (callable(peer) and pending.uses % PEER_SAMPLE_EVERY != 1):
                return
        address = peer() if callable(peer) else peer  # outside the lock: it may be slow
        if address:
            with self._lock:
                current = self._pending.get(token_id)  # a flush may have taken the old one
                if current is not None:
                    _remember_peer(current.peers, address[:MAX_PEER_LENGTH])

    def _empty(self) -> dict[str, _Pending]:
        return {}

    def _write(self, batch: dict[str, _Pending]) -> int:
        """Returns the number of tokens written (a token deleted meanwhile is not)."""
        uses = {
            token_id: TokenUse(to_datetime(item.at), tuple(item.peers))
            for token_id, item in batch.items()
        }
        if self._on_new_peers is None:
            return self._store.record_token_uses(uses, max_peers=MAX_PEERS)
        return self._store.record_token_uses(
            uses, max_peers=MAX_PEERS, on_new_peers=self._on_new_peers
        )

    def _put_back(self, batch: dict[str, _Pending]) -> None:
        """Kept uses merge with those recorded during the failed write (the newest time wins);
        a kept token that no longer fits gives way to the tokens used meanwhile."""
        for token_id, old in batch.items():
            current = self._pending.get(token_id)
            if current is None:
                if self._full:
                    self.dropped += 1
                    continue
                self._pending[token_id] = old
                continue
            current.at = max(current.at, old.at)
            # The kept peers are older than any recorded since: they go after, newest first.
            for peer in old.peers:
                if peer not in current.peers:
                    current.peers.append(peer)
            del current.peers[MAX_PEERS:]


def _remember_peer(peers: list[str], peer: str) -> None:
    if peers and peers[0] == peer:
        return
    if peer in peers:
        peers.remove(peer)
    peers.insert(0, peer)
    del peers[MAX_PEERS:]
