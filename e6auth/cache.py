"""The verification cache: credential digests to verified principals, with exact expiry,
race-free invalidation and single-flight loading."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from cachetools import Cache, TLRUCache, TTLCache

from e6auth.clock import Clock
from e6auth.errors import StoreUnavailable
from e6auth.principal import Principal
from e6auth.store import Invalidation

__all__ = ["CacheEntry", "CacheStats", "VerificationCache", "credential_key"]

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_TTL_SECONDS = 60.0
DEFAULT_NEGATIVE_TTL_SECONDS = 5.0
DEFAULT_NEGATIVE_MAX_ENTRIES = 10_000
DEFAULT_LOAD_TIMEOUT_SECONDS = 10.0


def credential_key(credential: str) -> bytes:
    """The cache key of a token or session id: its SHA-256, so the cache never holds a secret."""
    return hashlib.sha256(credential.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A verified credential. ``expires_at`` is the credential's own expiry (POSIX seconds)."""

    principal: Principal
    expires_at: float | None
    ttl: float


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    loads: int
    evictions: int
    size: int


class _IndexedCache(TLRUCache[bytes, CacheEntry]):
    """A TLRU cache that keeps token-id and user-id indexes in step with what it holds."""

    def __init__(self, maxsize: int, timer: Clock) -> None:
        super().__init__(maxsize, _time_to_use, timer)
        self.by_token: dict[str, set[bytes]] = {}
        self.by_user: dict[int, set[bytes]] = {}
        self.evictions = 0

    def __setitem__(self, key: bytes, value: CacheEntry, *args: Any) -> None:
        if Cache.__contains__(self, key):
            # Replaced, or dropped unseen if the new value is already past its time to use.
            self._unindex(key, Cache.__getitem__(self, key))
        super().__setitem__(key, value, *args)
        if not super().__contains__(key):  # already past its time to use: not stored
            return
        if value.principal.token_id is not None:
            self.by_token.setdefault(value.principal.token_id, set()).add(key)
        self.by_user.setdefault(value.principal.user_id, set()).add(key)

    def __delitem__(self, key: bytes, *args: Any) -> None:
        # Read past the expiry check: an expired entry must leave the indexes too.
        entry: CacheEntry | None = (
            Cache.__getitem__(self, key) if Cache.__contains__(self, key) else None
        )
        super().__delitem__(key, *args)
        if entry is not None:
            self._unindex(key, entry)

    def popitem(self) -> tuple[bytes, CacheEntry]:
        self.evictions += 1  # full: the least recently used entry makes room
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self.by_token.clear()
        self.by_user.clear()

    def expire(self, time: float | None = None) -> list[tuple[bytes, CacheEntry]]:
        expired = super().expire(time)
        for key, entry in expired:
            self._unindex(key, entry)
        self.evictions += len(expired)
        return expired

    def _unindex(self, key: bytes, entry: CacheEntry) -> None:
        token_id = entry.principal.token_id
        if token_id is not None:
            _discard(self.by_token, token_id, key)
        _discard(self.by_user, entry.principal.user_id, key)


def _discard(index: dict[Any, set[bytes]], name: Hashable, key: bytes) -> None:
    keys = index.get(name)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[name]


def _time_to_use(_key: bytes, entry: CacheEntry, now: float) -> float:
    # An entry lives its TTL, and never past the credential's own expiry.
    until = now + entry.ttl
    return until if entry.expires_at is None else min(until, entry.expires_at)


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
        clock: Clock = time.time,
    ) -> None:
        if max_entries < 1 or ttl_seconds <= 0:
            raise ValueError("a cache needs room for one entry and a positive TTL")
        self.ttl_seconds = ttl_seconds
        self.load_timeout_seconds = load_timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries = _IndexedCache(max_entries, clock)
        self._unknown: TTLCache[str, bool] | None = (
            TTLCache(negative_max_entries, negative_ttl_seconds, clock)
            if negative_ttl_seconds > 0
            else None
        )
        self._loading: dict[bytes, Future[CacheEntry]] = {}
        self._generation = 0
        self._hits = 0
        self._misses = 0
        self._loads = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: bytes) -> Principal | None:
        """The cached principal for ``key``, or None; never one whose credential has expired."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and (entry.expires_at is None or self._clock() < entry.expires_at):
                self._hits += 1
                return entry.principal
            self._misses += 1
            return None

    def get_or_load(
        self,
        key: bytes,
        load: Callable[[], Principal],
        *,
        ttl_seconds: float | None = None,
    ) -> Principal:
        """The cached principal, or the result of ``load()`` (cached), or its exception.

        Only one thread runs ``load`` for a key at a time; the others wait for its outcome, at
        most ``load_timeout_seconds``, then get :class:`StoreUnavailable`.
        """
        with self._lock:
            entry = self._entries.get(key)
            now = self._clock()
            if entry is not None and (entry.expires_at is None or now < entry.expires_at):
                self._hits += 1
                return entry.principal
            self._misses += 1
            pending = self._loading.get(key)
            leader = pending is None
            if pending is None:
                pending = self._loading[key] = Future()
                generation = self._generation
        if not leader:
            return self._await(pending)
        try:
            principal = load()
        except BaseException as exc:
            with self._lock:
                self._finish_loading(key, pending)
            pending.set_exception(exc)
            raise
        entry = CacheEntry(
            principal,
            None if principal.expires_at is None else principal.expires_at.timestamp(),
            self.ttl_seconds if ttl_seconds is None else ttl_seconds,
        )
        with self._lock:
            self._finish_loading(key, pending)
            self._loads += 1
            if generation == self._generation:
                self._entries[key] = entry
        pending.set_result(entry)
        return principal

    def _finish_loading(self, key: bytes, pending: Future[CacheEntry]) -> None:
        # An invalidation may have detached this load and a newer one may have taken its place.
        if self._loading.get(key) is pending:
            del self._loading[key]

    def _await(self, pending: Future[CacheEntry]) -> Principal:
        try:
            return pending.result(timeout=self.load_timeout_seconds).principal
        except FutureTimeout as exc:
            raise StoreUnavailable("timed out waiting for a verification in progress") from exc

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
                    keys |= self._entries.by_token.get(event.token_id, set())
                if event.user_id is not None:
                    keys |= self._entries.by_user.get(event.user_id, set())
                for key in keys:
                    self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._loading.clear()
            self._entries.clear()
            if self._unknown is not None:
                self._unknown.clear()

    def is_known_unknown(self, token_id: str) -> bool:
        if self._unknown is None:
            return False
        with self._lock:
            return token_id in self._unknown

    def remember_unknown(self, token_id: str) -> None:
        if self._unknown is None:
            return
        with self._lock:
            self._unknown[token_id] = True

    def forget_unknown(self, token_id: str) -> None:
        if self._unknown is None:
            return
        with self._lock:
            self._unknown.pop(token_id, None)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._loads, self._entries.evictions, len(self._entries)
            )
