"""The audit trail: handshakes, refused calls, token changes, new addresses and queries, taken on
the request path by an append to memory and written in batches by a background thread.

What is recorded, and the rule for "a token used from a new address":

- ``handshake``: every connector login, ``ok`` or ``refused`` with the error's ``reason`` code and
  ``method`` ``password`` or ``token``. The user name of a refused login is stored in its
  canonical form only if a user has that name; any other name (a password typed into the user
  field, say) only as ``unknown:<16 hex digits>``, a keyed hash that groups the attempts made
  with one name and cannot be read back (:meth:`AuditLog.hashed_name`). A name with a token's
  shape (a token typed into the user field) is not stored at all.
- ``call``: every gRPC call refused by the interceptor, with the RPC method and the reason.
- ``web_signin``: every sign-in on the web page, ``ok`` or ``refused`` with the reason code,
  ``method`` ``password``, the user name stored as for handshakes.
- ``token_created`` / ``token_deleted``: written by the ``e6auth token`` commands (``method``
  ``cli``) and by the web page (``web``, or ``web:<name>`` when an administrator deleted another
  user's token; with the browser's address as ``peer``).
- ``new_address``: detected when last-used peers are flushed (not on the request path), in the
  transaction that merges them with the stored ``last_used_peers``: an address the token was seen
  at is new if the token already had stored addresses and it is not among them. A token's first
  address is not reported (``token_created`` covers that). Peers are sampled (a cached
  credential's first use, its first use after each second and every 256th use), and only the last
  five distinct addresses are kept, so an address unused for a while can be reported again.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from e6auth.background.buffer import WriteBehindBuffer
from e6auth.clock import Clock
from e6auth.credentials.tokens import ID_LENGTH, PREFIX, looks_like_token
from e6auth.credentials.usernames import normalize_username
from e6auth.errors import E6AuthError, InvalidUsername
from e6auth.store.audit import AuditStore, AuthEvent, QueryEvent
from e6auth.verify.principal import Principal

__all__ = ["AuditLog", "is_hashed_name", "name_key", "safe_username"]

log = logging.getLogger("e6auth.audit")

DEFAULT_FLUSH_SECONDS = 5.0
DEFAULT_MAX_PENDING = 100_000
DEFAULT_RETENTION_DAYS = 90.0
PRUNE_EVERY_SECONDS = 3600.0
MAX_STATEMENT_LENGTH = 4000
MAX_PEER_LENGTH = 100
MAX_METHOD_LENGTH = 100
MAX_QUERY_ID_LENGTH = 64

UNKNOWN_PREFIX = "unknown:"
HASHED_NAME_DIGITS = 16
_HASHED_NAME = re.compile(rf"{UNKNOWN_PREFIX}[0-9a-f]{{{HASHED_NAME_DIGITS}}}")
# Fixed: every replica derives the same key from the same deployment key.
_NAME_KEY_LABEL = b"e6auth audit: names of unknown users, v1"

Event: TypeAlias = AuthEvent | QueryEvent


def name_key(key: bytes) -> bytes:
    """The key that hashes unknown user names, derived from a deployment key (the session key).

    Derived, never the key itself: a key used for two purposes would let one leak into the
    other (the name hashes are shown to every operator; the session key signs sessions)."""
    return hmac.new(key, _NAME_KEY_LABEL, hashlib.sha256).digest()


def is_hashed_name(text: str) -> bool:
    """Whether ``text`` is a stored name of an unknown user (``unknown:<16 hex digits>``)."""
    return _HASHED_NAME.fullmatch(text) is not None


def safe_username(sent: str) -> str | None:
    """What may be stored of a user name as a client sent it: its canonical form, or None if it
    is not a valid user name or could be a secret (it has a token's shape)."""
    if PREFIX in sent or looks_like_token(sent):
        return None
    try:
        return normalize_username(sent)
    except InvalidUsername:
        return None


def token_id_of(credential: str) -> str | None:
    """The public id of a credential with a token's shape; None for anything else."""
    if not looks_like_token(credential):
        return None
    return credential[len(PREFIX) : len(PREFIX) + ID_LENGTH]


class AuditLog(WriteBehindBuffer[collections.deque[Event]]):
    """Collects audit events in a bounded buffer and writes them in one batch per interval.

    Recording is an append under a lock, with no I/O. :meth:`flush` takes the whole buffer and
    writes it in one transaction; if that fails (the store is unreachable) the events go back to
    the front of the buffer and are tried again on the next flush. The buffer holds at most
    ``max_pending`` events: beyond that the oldest are dropped and counted in ``dropped``, with one
    warning per outage (the newest events say most about an outage under way). Rows older than
    ``retention_days`` are pruned about once an hour.
    """

    _thread_name = "e6auth-audit"
    _log = log
    _shutdown_error = "could not write %d audit events at shutdown (%s)"
    _full_warning = "audit buffer full (%d events): dropped %d of the oldest so far"

    def __init__(
        self,
        store: AuditStore,
        *,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_pending: int = DEFAULT_MAX_PENDING,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        clock: Clock = time.time,
        key: bytes | None = None,
    ) -> None:
        """``key`` is a secret every replica of the deployment has (``from_settings`` passes the
        session key): the key hashing names of unknown users is derived from it, so that replicas
        and restarts store one name as one hash. Without it, a random key of this process: its
        hashes group only its own attempts."""
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        if retention_days <= 0:
            raise ValueError("retention_days must be positive")
        super().__init__(flush_seconds=flush_seconds, max_pending=max_pending, clock=clock)
        self.store = store
        self._name_key = name_key(key if key is not None else secrets.token_bytes(32))
        self._retention = dt.timedelta(days=retention_days)
        self._next_prune = clock()
        self.pruned = 0

    # -- the request path ----------------------------------------------------------------------

    def record(self, event: Event) -> None:
        with self._lock:
            if self._full:
                self._pending.popleft()
                self.dropped += 1
            self._pending.append(event)

    def handshake(
        self,
        sent_username: str,
        *,
        method: str,
        peer: str | None,
        principal: Principal | None = None,
        error: E6AuthError | None = None,
        token_id: str | None = None,
    ) -> None:
        """A connector login: accepted as ``principal`` or refused with ``error``."""
        if principal is not None:
            token_id = principal.token_id
        self._attempt(
            "handshake",
            sent_username,
            method=method,
            peer=peer,
            principal=principal,
            error=error,
            token_id=token_id,
        )

    def web_sign_in(
        self,
        sent_username: str,
        *,
        peer: str | None,
        principal: Principal | None = None,
        error: E6AuthError | None = None,
        method: str = "password",
    ) -> None:
        """A sign-in on the web page: accepted as ``principal`` or refused with ``error``;
        ``method``: ``password``, or ``web-oidc`` through the identity provider."""
        self._attempt(
            "web_signin", sent_username, method=method, peer=peer, principal=principal, error=error
        )

    def _attempt(
        self,
        kind: str,
        sent_username: str,
        *,
        method: str,
        peer: str | None,
        principal: Principal | None,
        error: E6AuthError | None,
        token_id: str | None = None,
    ) -> None:
        """A sign-in of any kind: ``ok``, or ``refused`` with the error's reason; the names
        stored as :meth:`_who` allows."""
        username, unproven = self._who(sent_username, principal, error)
        self.record(
            AuthEvent(
                at=self._now(),
                kind=kind,
                result="ok" if error is None else "refused",
                reason=None if error is None else error.reason,
                username=username,
                token_id=token_id,
                peer=_cut(peer, MAX_PEER_LENGTH),
                method=method,
                sent_username=unproven,
            )
        )

    def _who(
        self, sent: str, principal: Principal | None, error: E6AuthError | None
    ) -> tuple[str | None, str | None]:
        """The user name to store for an attempt, and the name a client sent that nobody proved
        (kept until the event is written, which stores it only if a user has that name)."""
        if principal is not None:
            return principal.username, None
        if not sent:
            return None, None  # no name was sent (a refused single sign-on names none)
        if error is None:
            return safe_username(sent), None  # accepted: the caller proved the name
        return self.hashed_name(sent), safe_username(sent)

    def hashed_name(self, sent: str) -> str | None:
        """``unknown:`` and 16 hex digits of a keyed hash (HMAC-SHA256) of a user name as a client
        sent it (canonical if it is a valid name): what is stored of a name that may be a
        password typed into the user field. Equal names give equal hashes; without the key no
        guess can be tested against one. None for a name with a token's shape."""
        if PREFIX in sent or looks_like_token(sent):
            return None
        name = safe_username(sent) or sent
        digest = hmac.new(
            self._name_key, name.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()
        return UNKNOWN_PREFIX + digest[:HASHED_NAME_DIGITS]

    def refused_call(
        self, method: str, error: E6AuthError, peer: str | None, *, token_id: str | None = None
    ) -> None:
        self.record(
            AuthEvent(
                at=self._now(),
                kind="call",
                result="refused",
                reason=error.reason,
                token_id=token_id,
                peer=_cut(peer, MAX_PEER_LENGTH),
                method=_cut(method, MAX_METHOD_LENGTH),
            )
        )

    def token_event(
        self,
        kind: str,
        username: str | None,
        token_id: str,
        *,
        method: str,
        peer: str | None = None,
    ) -> None:
        """``token_created``, ``token_rotated``, ``token_deleted``…; ``username`` is the token's
        owner (None: looked up when the event is written)."""
        self.record(
            AuthEvent(
                at=self._now(),
                kind=kind,
                result="ok",
                username=username,
                token_id=token_id,
                peer=_cut(peer, MAX_PEER_LENGTH),
                method=_cut(method, MAX_METHOD_LENGTH),
            )
        )

    def new_addresses(self, token_id: str, peers: Iterable[str]) -> None:
        """Called by the last-used flush with the addresses not stored for ``token_id`` before."""
        at = self._now()
        for peer in peers:
            self.record(
                AuthEvent(
                    at=at,
                    kind="new_address",
                    result="ok",
                    token_id=token_id,
                    peer=_cut(peer, MAX_PEER_LENGTH),
                )
            )

    def query(
        self, principal: Principal, *, peer: str | None, query_id: str, statement: str, result: str
    ) -> None:
        self.record(
            QueryEvent(
                at=self._now(),
                username=principal.username,
                token_id=principal.token_id,
                peer=_cut(peer, MAX_PEER_LENGTH),
                query_id=query_id[:MAX_QUERY_ID_LENGTH],
                statement=statement[:MAX_STATEMENT_LENGTH],
                result=result,
            )
        )

    # -- the background side -------------------------------------------------------------------

    def _empty(self) -> collections.deque[Event]:
        return collections.deque()

    def _write(self, batch: collections.deque[Event]) -> int:
        """One transaction for the batch; returns the number of events written."""
        self.store.write(*_split(batch))
        return len(batch)

    def prune(self) -> int:
        """Delete events older than the retention period; returns how many rows went."""
        removed = self.store.prune(self._now() - self._retention)
        self.pruned += removed
        self._next_prune = self._clock() + PRUNE_EVERY_SECONDS
        return removed

    def _run(self) -> None:
        self.flush()  # a failure here means an outage: pruning waits for the next run
        if self._clock() >= self._next_prune:
            self.prune()

    def _put_back(self, batch: collections.deque[Event]) -> None:
        """Older events go before those recorded during the failed write; the oldest give way."""
        batch.extend(self._pending)
        excess = len(batch) - self._max_pending
        for _ in range(max(excess, 0)):
            batch.popleft()
        self.dropped += max(excess, 0)
        self._pending = batch

    def _now(self) -> dt.datetime:
        # Audit times keep their sub-second part: events of one second stay in order.
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)


def _split(batch: Iterable[Event]) -> tuple[Sequence[AuthEvent], Sequence[QueryEvent]]:
    auth: list[AuthEvent] = []
    queries: list[QueryEvent] = []
    for event in batch:
        if isinstance(event, AuthEvent):
            auth.append(event)
        else:
            queries.append(event)
    return auth, queries


def _cut(text: str | None, limit: int) -> str | None:
    return None if text is None else text[:limit]
