"""The verification cache's storage: entries, the LRU map that holds them with its indexes by
token id and user id, and the maps from a credential's presented text to its entry.

Apart from :class:`~e6auth.verify.cache.VerificationCache` (the policy: TTLs, single-flight,
invalidation, stale-if-error), which takes its lock around every change made here: nothing in
this module locks.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from e6auth.verify.principal import Principal

__all__ = ["CacheEntry", "IndexedEntries", "Presented", "indexed_keys"]


@dataclass(slots=True)
class CacheEntry:
    """A verified credential, trusted until ``deadline`` (POSIX seconds): its TTL from when it
    was stored, but never past the credential's own expiry. Until ``keep_until`` (the deadline
    plus the stale-if-error window, again never past the credential's expiry) it may still be
    served while the store cannot be reached. Nothing changes an entry but linking its text."""

    principal: Principal
    deadline: float
    keep_until: float
    key: bytes
    """The key the entry is stored under (its credential's digest)."""
    text: str | None = None
    """The credential's text, once linked (see :class:`Presented`), to drop it with the entry
    (kept here rather than in an index of its own: a tuple and an index slot cost about 90
    bytes an entry, measured)."""
    presented: Presented | None = None
    """Which of the cache's :class:`Presented` maps ``text`` is in."""

    def __repr__(self) -> str:  # never the text
        linked = self.text is not None
        return f"CacheEntry({self.principal!r}, deadline={self.deadline}, linked={linked})"


class Presented(dict[str, CacheEntry]):
    """Cached entries by the text of their credential as it was presented, for the request path.

    Hashing the credential was half of what authentication cost a gRPC call served from the
    cache (BLAKE2b's code and state fall out of the CPU caches between two calls on a busy
    server; measured in the gateway). A verified credential's text leads to its entry with one
    dictionary read instead, for exactly as long as the entry lives: it is dropped with it.

    This holds secrets in memory, as the process already does for each call it serves (and as
    it holds the pepper and the session key, which are worth more): its repr shows none.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<Presented: {len(self)} credentials>"


class IndexedEntries:
    """An LRU map of entries that keeps token-id and user-id indexes in step with what it holds,
    and drops entries past their deadline (a heap of deadlines, purged when one is due).

    The map is an :class:`~collections.OrderedDict`, whose reads, inserts, reorderings and
    evictions all run in C. cachetools' ``LRUCache``, which this was, spent two Python calls on
    every insert (its own ``__setitem__`` and its base class's, beside a dict and an OrderedDict
    of its own) and four on every eviction: a tenth of a cache miss (measured). Lookups are plain
    reads (:attr:`peek`): the caller compares the deadline with its clock, which keeps the hit
    path to one dictionary read.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("an LRU map needs room for one entry")
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self.peek: Callable[[bytes], CacheEntry | None] = self._data.get
        """The entry of a key, or None; the LRU order unchanged."""
        # Most tokens and users have one cached key: it is stored bare, a set only from two on
        # (a one-element set costs over 200 bytes an entry).
        self.by_token: dict[str, bytes | set[bytes]] = {}
        self.by_user: dict[int, bytes | set[bytes]] = {}
        self.evictions = 0
        self._deadlines: list[tuple[float, bytes]] = []
        self.tokens = Presented()
        self.sessions = Presented()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def touch(self, key: bytes) -> None:
        """Make the entry of ``key``, if there is one, the most recently used."""
        if key in self._data:
            self._data.move_to_end(key)

    def store(
        self,
        key: bytes,
        entry: CacheEntry,
        now: float,
        link: tuple[Presented, str] | None = None,
    ) -> bool:
        """Hold ``entry`` under ``key``, in place of any entry there (and its text: the next
        verification by text links the new one), the least recently used making room; with
        ``link``, let that text lead to it (see :meth:`link`). False if it is past keeping."""
        deadlines, data = self._deadlines, self._data
        # purge()'s own tests, without its call when there is nothing to purge (most stores).
        if (deadlines and deadlines[0][0] <= now) or len(deadlines) > 2 * len(data) + 64:
            self.purge(now)
        if entry.keep_until <= now:
            return False
        if key in data:
            self.discard(key)
        elif len(data) >= self.maxsize:
            self.evictions += 1  # full: the least recently used entry makes room
            self._forget(*data.popitem(last=False))
        data[key] = entry
        principal = entry.principal
        # _add's usual case, the first key of its token and of its user, in C.
        if principal.token_id is not None:
            keys = self.by_token.setdefault(principal.token_id, key)
            if keys is not key:
                _add(self.by_token, principal.token_id, key, keys)
        keys = self.by_user.setdefault(principal.user_id, key)
        if keys is not key:
            _add(self.by_user, principal.user_id, key, keys)
        heapq.heappush(deadlines, (entry.keep_until, key))
        if link is not None:
            # A text leads to one key only (the key is its digest), whose old entry and its
            # text went above: nothing else to unlink.
            presented, text = link
            presented[text] = entry
            entry.text, entry.presented = text, presented
        return True

    def purge(self, now: float) -> None:
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, key = heapq.heappop(deadlines)
            entry = self._data.get(key)
            if entry is not None and entry.keep_until == deadline:
                self.discard(key)
                self.evictions += 1
        if len(deadlines) > 2 * len(self._data) + 64:  # replaced and deleted entries left behind
            self._deadlines = [(d, k) for d, k in deadlines if k in self._data]
            heapq.heapify(self._deadlines)

    def link(self, presented: Presented, text: str, key: bytes) -> None:
        """Let ``text`` lead to the entry of ``key`` in ``presented``, if there is one."""
        entry = self._data.get(key)
        if entry is None:
            return
        if entry.presented is not None and entry.text is not None:  # linked already (a race)
            entry.presented.pop(entry.text, None)
        presented[text] = entry
        entry.text, entry.presented = text, presented

    def discard(self, key: bytes) -> CacheEntry | None:
        """Drop the entry of ``key`` (and its text and index keys); the entry, or None."""
        entry = self._data.pop(key, None)
        if entry is not None:
            self._forget(key, entry)
        return entry

    def _forget(self, key: bytes, entry: CacheEntry) -> None:
        """Unlink and unindex ``entry``, just taken out of the map."""
        if entry.presented is not None and entry.text is not None:
            entry.presented.pop(entry.text, None)
        principal = entry.principal
        if principal.token_id is not None:
            _discard(self.by_token, principal.token_id, key)
        _discard(self.by_user, principal.user_id, key)

    def clear(self) -> None:
        self._data.clear()
        self.by_token.clear()
        self.by_user.clear()
        self._deadlines.clear()
        self.tokens.clear()
        self.sessions.clear()


Index = dict[Any, bytes | set[bytes]]


def _add(index: Index, name: Hashable, key: bytes, keys: bytes | set[bytes]) -> None:
    """Index ``key`` under ``name``, which has ``keys`` already."""
    if isinstance(keys, set):
        keys.add(key)
    elif keys != key:
        index[name] = {keys, key}


def _discard(index: Index, name: Hashable, key: bytes) -> None:
    keys = index.get(name)
    if keys is None:
        return
    if isinstance(keys, set):
        keys.discard(key)
        if len(keys) == 1:
            index[name] = next(iter(keys))
    elif keys == key:
        del index[name]


def indexed_keys(index: Index, name: Hashable) -> set[bytes]:
    keys = index.get(name)
    if keys is None:
        return set()
    return set(keys) if isinstance(keys, set) else {keys}
