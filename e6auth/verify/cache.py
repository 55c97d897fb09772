"""The verification cache: credential digests to verified principals, with exact expiry,
race-free invalidation and single-flight loading."""

from __future__ import annotations

import hashlib
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from cachetools import Cache, TTLCache

from e6auth.clock import Clock
from e6auth.errors import StoreUnavailable
from e6auth.store.records import Invalidation
from e6auth.verify.cache_entries import (
    CacheEntry,
    IndexedEntries,
    Presented,
    indexed_keys,
)
from e6auth.verify.principal import Principal

log = logging.getLogger("e6auth.cache")
_A = TypeVar("_A")

__all__ = [
    "CacheEntry",
    "CacheStats",
    "Presented",
    "VerificationCache",
    "credential_key",
    "indexed_keys",
    "session_cache_key",
]

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_TTL_SECONDS = 60.0
DEFAULT_NEGATIVE_TTL_SECONDS = 5.0
DEFAULT_NEGATIVE_MAX_ENTRIES = 10_000
DEFAULT_LOAD_TIMEOUT_SECONDS = 10.0
REORDER_EVERY = 32


# BLAKE2b rather than SHA-256: as preimage-resistant, and in CPython 3.11 with OpenSSL 3 each
# hashlib.sha256() call pays for an EVP_MD_fetch that costs more than the rest of a cache hit;
# copying a ready BLAKE2b state pays for nothing of the kind (about half the time, measured).
# Tokens and session ids hash under different personalisations: a token presented as a session id
# (or the reverse) never finds the other's entry.
_TOKEN_HASH = hashlib.blake2b(digest_size=32, person=b"e6auth-token")
_SESSION_HASH = hashlib.blake2b(digest_size=32, person=b"e6auth-session")


def credential_key(token: str) -> bytes:
    """The cache key of a token: a 256-bit BLAKE2b digest, so the cache never holds a secret."""
    hasher = _TOKEN_HASH.copy()
    hasher.update(token.encode("utf-8", "surrogatepass"))
    return hasher.digest()


def session_cache_key(session_id: str) -> bytes:
    """The cache key of a session id, as :func:`credential_key` is for tokens."""
    hasher = _SESSION_HASH.copy()
    hasher.update(session_id.encode("utf-8", "surrogatepass"))
    return hasher.digest()


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    loads: int
    evictions: int
    size: int


class _Flight:
    """One load under way, which other threads asking for the same key wait for.

    Its outcome is set under the cache's lock, at the moment the load leaves
    ``VerificationCache._loading``; a thread that found it there (under the same lock) made the
    event first, so no wake-up is lost. Only a thread that has to wait makes an event: the
    leader alone, the case of nearly every load, makes none (a ``Future`` made a condition
    variable for each, measured at a tenth of a miss's own cost).
    """

    # Class defaults and no __init__: making one runs no Python (a miss makes one).
    event: threading.Event | None = None
    outcome: CacheEntry | BaseException | None = None


def _entries_of(cache: Cache[str, bool]) -> dict[str, bool]:
    """The plain dict a cachetools cache keeps its entries in (``Cache.__data``, the same in
    every release since 1.0)."""
    data = vars(cache).get("_Cache__data")
    if not isinstance(data, dict):
        raise TypeError("this cachetools version keeps its entries elsewhere")
    return data


class VerificationCache:
    """Thread-safe cache of verified credentials, behind one lock.

    - A hit re-checks the credential's expiry against the clock, so expiry is exact while cached.
    - :meth:`get_or_load` is single-flight: concurrent misses on one key share one load.
    - :meth:`invalidate` evicts what an :class:`Invalidation` names and bumps a generation; a load
      that began before can then not put its (possibly stale) result back.
    - Unknown token ids are remembered briefly (:meth:`remember_unknown`), so a flood of random
      well-formed tokens does not turn into a flood of queries.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        negative_ttl_seconds: float = DEFAULT_NEGATIVE_TTL_SECONDS,
        negative_max_entries: int = DEFAULT_NEGATIVE_MAX_ENTRIES,
        load_timeout_seconds: float = DEFAULT_LOAD_TIMEOUT_SECONDS,
        stale_if_error_seconds: float = 0.0,
        clock: Clock = time.time,
    ) -> None:
        if max_entries < 1 or ttl_seconds <= 0:
            raise ValueError("a cache needs room for one entry and a positive TTL")
        self.ttl_seconds = ttl_seconds
        self.load_timeout_seconds = load_timeout_seconds
        self.stale_if_error_seconds = stale_if_error_seconds
        self.stale_served = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._entries = IndexedEntries(max_entries)
        # Attributes, not properties: the request path reads them on every call.
        self.tokens = self._entries.tokens
        """Cached token entries by the token's text: see :meth:`hit_presented`."""
        self.sessions = self._entries.sessions
        """Cached session entries by the session id's text: see :meth:`hit_presented`."""
        self._unknown: TTLCache[str, bool] | None = (
            TTLCache(negative_max_entries, negative_ttl_seconds, clock)
            if negative_ttl_seconds > 0
            else None
        )
        self._unknown_ids: dict[str, bool] = (
            {} if self._unknown is None else _entries_of(self._unknown)
        )
        self._loading: dict[bytes, _Flight] = {}
        self._generation = 0
        self._hits = 0
        self._misses = 0
        self._loads = 0
        self.hits_by_text = 0
        """Hits the owner's request path found in :attr:`tokens` or :attr:`sessions` itself,
        counted there (in :attr:`CacheStats.hits` too): a call to count them would cost it more."""

    def __len__(self) -> int:
        with self._lock:
            self._entries.purge(self._clock())
            return len(self._entries)

    def get(self, key: bytes) -> Principal | None:
        """The cached principal for ``key``, or None; never one whose credential has expired."""
        principal = self.hit(key)
        if principal is None:
            self._misses += 1
        return principal

    def hit(self, key: bytes, now: float | None = None) -> Principal | None:
        """The cached principal for ``key`` if it is fresh at ``now`` (default: the clock), else
        None. Lock-free: one dictionary read and a comparison.

        Taking the lock on every hit makes busy gRPC servers queue on it (the GIL can switch
        threads while one holds it). A read is atomic under the GIL; writes still take the lock.
        The LRU order is refreshed on every ``REORDER_EVERY``-th hit only, which is enough to
        keep frequently used entries from being evicted first.
        """
        entry = self._entries.peek(key)
        # Every hit compares with the clock: expiry is exact while cached.
        if entry is None or (self._clock() if now is None else now) >= entry.deadline:
            return None
        self._hits += 1  # a statistic: an increment lost to a race does not matter
        if not self._hits % REORDER_EVERY:
            with self._lock:
                self._entries.touch(key)
        return entry.principal

    def hit_presented(self, presented: Presented, text: str, now: float) -> CacheEntry | None:
        """:meth:`hit` by a credential's text (``presented`` is :attr:`tokens` or
        :attr:`sessions`), without hashing it: the entry if it is fresh at ``now``, else None.
        Only a text :meth:`link` was given is found."""
        entry = presented.get(text)
        if entry is None or now >= entry.deadline:
            return None
        self._hits += 1
        if not self._hits % REORDER_EVERY:
            with self._lock:
                self._entries.touch(entry.key)
        return entry

    def link(self, presented: Presented, text: str, key: bytes) -> None:
        """Let :meth:`hit_presented` find the entry of ``key`` (if there is one) by ``text``,
        the credential it was verified from, until the entry goes."""
        if presented.get(text) is not None:
            return
        with self._lock:
            self._entries.link(presented, text, key)

    def get_or_load(
        self,
        key: bytes,
        load: Callable[[], Principal],
        *,
        ttl_seconds: float | None = None,
        link: tuple[Presented, str] | None = None,
    ) -> Principal:
        """The cached principal, or the result of ``load()`` (cached), or its exception.

        Only one thread runs ``load`` for a key at a time; the others wait for its outcome, at
        most ``load_timeout_seconds``, then get :class:`StoreUnavailable`. ``link``: the
        :meth:`link` to make once the entry is there, in the same turn of the lock.
        """
        principal = self.hit(key)
        if principal is not None:
            if link is not None:
                self.link(link[0], link[1], key)
            return principal
        return self.load_missed(key, operator.call, load, ttl_seconds=ttl_seconds, link=link)

    def load_missed(
        self,
        key: bytes,
        load: Callable[[_A], Principal],
        argument: _A,
        *,
        ttl_seconds: float | None = None,
        link: tuple[Presented, str] | None = None,
    ) -> Principal:
        """:meth:`get_or_load` of ``load(argument)``, for a caller whose :meth:`hit` just missed
        (the verify path): the same, without asking again. The argument is passed rather than
        bound in a ``functools.partial``, whose call would run the load in a C frame of its own
        (measured on the miss)."""
        with self._lock:
            entry = self._entries.peek(key)
            now = self._clock()
            if entry is not None and now < entry.deadline:  # filled meanwhile
                self._hits += 1
                if link is not None:
                    self._entries.link(link[0], link[1], key)
                return entry.principal
            self._misses += 1
            flight = self._loading.get(key)
            leader = flight is None
            if flight is None:
                flight = self._loading[key] = _Flight()
                generation = self._generation
                stale = entry if entry is not None and now < entry.keep_until else None
            elif flight.event is None:
                flight.event = threading.Event()
            event = flight.event
        if not leader:
            return self._await(flight, event, key, link)
        try:
            principal = load(argument)
        except StoreUnavailable as exc:
            with self._lock:
                # Serve what was verified before, unless it was invalidated or ran out since.
                if stale is not None and (
                    generation != self._generation or self._clock() >= stale.keep_until
                ):
                    stale = None
                if stale is not None:
                    self.stale_served += 1
                self._finish_loading(key, flight, stale or exc)
            if stale is None:
                raise
            log.warning("token store unavailable: serving a cached verification (stale-if-error)")
            return stale.principal
        except BaseException as exc:
            with self._lock:
                self._finish_loading(key, flight, exc)
            raise
        with self._lock:
            now = self._clock()
            deadline = now + (self.ttl_seconds if ttl_seconds is None else ttl_seconds)
            keep_until = deadline + self.stale_if_error_seconds
            # valid_until: the credential's expiry, or the end of a rotated secret's grace window.
            # principal.valid_until, without the property's call when there is no grace end.
            valid_until = (
                principal.expires_at if principal.grace_until is None else principal.valid_until
            )
            if valid_until is not None:
                expiry = valid_until.timestamp()
                deadline, keep_until = min(deadline, expiry), min(keep_until, expiry)
            entry = CacheEntry(principal, deadline, keep_until, key)
            self._loads += 1
            if generation == self._generation:
                self._entries.store(key, entry, now, link)
            self._finish_loading(key, flight, entry)
        return principal

    def _finish_loading(
        self, key: bytes, flight: _Flight, outcome: CacheEntry | BaseException
    ) -> None:
        """Settle ``flight`` (caller holds the lock) and wake whoever waits for it."""
        # An invalidation may have detached this load and a newer one may have taken its place.
        if self._loading.get(key) is flight:
            del self._loading[key]
        flight.outcome = outcome
        if flight.event is not None:
            flight.event.set()  # the waiters run once the lock is released

    def _await(
        self,
        flight: _Flight,
        event: threading.Event | None,
        key: bytes,
        link: tuple[Presented, str] | None,
    ) -> Principal:
        if event is None or not event.wait(self.load_timeout_seconds):
            raise StoreUnavailable("timed out waiting for a verification in progress")
        outcome = flight.outcome
        if isinstance(outcome, CacheEntry):
            if link is not None:
                self.link(link[0], link[1], key)
            return outcome.principal
        if outcome is None:  # never: the outcome is set before the event
            raise StoreUnavailable("a verification in progress ended without an outcome")
        raise outcome

    def seed_session(self, key: bytes, session: Principal, *, ttl_seconds: float) -> bool:
        """Cache a session just issued for a credential this cache holds, on that credential's
        terms: trusted no longer than the credential's own entry (and kept for stale-if-error no
        longer either), so that the session's first call needs no store read and a session can
        never outlive what it was made from. Returns whether there was such an entry."""
        with self._lock:
            now = self._clock()
            credential = self._credential_entry(session)
            if credential is None:
                return False
            deadline = min(now + ttl_seconds, credential.deadline)
            keep_until = min(deadline + self.stale_if_error_seconds, credential.keep_until)
            valid_until = session.valid_until
            if valid_until is not None:
                deadline = min(deadline, valid_until.timestamp())
                keep_until = min(keep_until, valid_until.timestamp())
            self._entries.store(key, CacheEntry(session, deadline, keep_until, key), now)
            return keep_until > now

    def _credential_entry(self, session: Principal) -> CacheEntry | None:
        """The entry of the credential ``session`` was made from: its token's, or its user's
        password entry of the same password. Caller holds the lock."""
        if session.token_id is not None:
            keys = indexed_keys(self._entries.by_token, session.token_id)
        else:
            keys = indexed_keys(self._entries.by_user, session.user_id)
        found = [
            entry
            for key in keys
            if (entry := self._entries.peek(key)) is not None
            and entry.principal.session_id is None
            and entry.principal.method == session.method
            and entry.principal.token_id == session.token_id
            and entry.principal.password_generation == session.password_generation
        ]
        return max(found, key=lambda entry: entry.keep_until, default=None)

    def invalidate(self, events: Iterable[Invalidation]) -> None:
        """Evict what ``events`` name, and stop loads already under way from caching.

        An event that names neither a token nor a user evicts everything.
        """
        with self._lock:
            self._generation += 1
            # Loads under way may have read the row before the change: callers arriving from now
            # on must not wait for them, but start a load of their own.
            self._loading.clear()
            for event in events:
                if event.token_id is None and event.user_id is None:
                    self._entries.clear()
                    continue
                keys: set[bytes] = set()
                if event.token_id is not None:
                    keys |= indexed_keys(self._entries.by_token, event.token_id)
                if event.user_id is not None:
                    keys |= indexed_keys(self._entries.by_user, event.user_id)
                for key in keys:
                    self._entries.discard(key)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._loading.clear()
            self._entries.clear()
            if self._unknown is not None:
                self._unknown.clear()

    def is_known_unknown(self, token_id: str) -> bool:
        # None remembered (the usual case): no lock to take, and no Python call on a miss.
        # TTLCache's len() would expire entries, a write, which needs the lock; the dict it keeps
        # its entries in is read instead (tests/test_cache.py fails if a release moves it).
        if not self._unknown_ids:
            return False
        with self._lock:
            return self._unknown is not None and token_id in self._unknown

    def remember_unknown(self, token_id: str) -> None:
        if self._unknown is None:
            return
        with self._lock:
            self._unknown[token_id] = True

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits + self.hits_by_text,
                self._misses,
                self._loads,
                self._entries.evictions,
                len(self._entries),
            )
