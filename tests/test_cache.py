"""VerificationCache on its own: expiry, bounds, invalidation, single-flight, generation guard."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

import pytest

from e6auth.errors import StoreUnavailable, TokenRevoked, UnknownToken
from e6auth.store import Invalidation
from e6auth.testing import FakeClock
from e6auth.verify.cache import (
    REORDER_EVERY,
    VerificationCache,
    credential_key,
    indexed_keys,
    session_cache_key,
)
from e6auth.verify.cache_entries import CacheEntry, IndexedEntries
from e6auth.verify.principal import Principal

THREADS = 16
# Only for threads that are already blocked or about to be: never for expiry.
JOIN_SECONDS = 10.0


A_TOKEN_ID = "tok000000001"


def _principal(
    token_id: str | None = A_TOKEN_ID, user_id: int = 1, expires_at: float | None = None
) -> Principal:
    return Principal(
        username=f"user{user_id}",
        user_id=user_id,
        method="token" if token_id is not None else "password",
        token_id=token_id,
        expires_at=None if expires_at is None else dt.datetime.fromtimestamp(expires_at, dt.UTC),
    )


def _key(name: str) -> bytes:
    return credential_key(name)


class CountingLoader:
    """A loader that returns (or raises) a fixed outcome and counts its calls."""

    def __init__(self, outcome: Principal | BaseException) -> None:
        self.outcome = outcome
        self.calls = 0

    def __call__(self) -> Principal:
        self.calls += 1
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class BlockingLoader:
    """A loader that announces it has read the store, then waits to be released."""

    def __init__(self, outcome: Principal | BaseException) -> None:
        self.outcome = outcome
        self.calls = 0
        self.read_done = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> Principal:
        self.calls += 1
        self.read_done.set()
        if not self.release.wait(JOIN_SECONDS):
            raise AssertionError("the test never released the loader")
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class Outcomes:
    """What each thread got from get_or_load: a principal or an exception."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.principals: list[Principal] = []
        self.errors: list[BaseException] = []

    def run(self, call: Callable[[], Principal]) -> None:
        try:
            principal = call()
        except BaseException as exc:
            with self._lock:
                self.errors.append(exc)
        else:
            with self._lock:
                self.principals.append(principal)


def _start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_SECONDS)
        assert not thread.is_alive(), "a thread did not finish"


def _wait_for_misses(cache: VerificationCache, misses: int) -> None:
    # A caller counts its miss under the lock just before it joins (or starts) a load, so once
    # the count is reached every caller is committed to the flight in progress.
    deadline = time.monotonic() + JOIN_SECONDS
    while cache.stats().misses < misses:
        assert time.monotonic() < deadline, "callers never reached the cache"
        time.sleep(0.001)


# -- hits and expiry ---------------------------------------------------------------------------


def test_a_hit_returns_the_loaded_principal_without_loading_again(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    principal = _principal()
    loader = CountingLoader(principal)

    assert cache.get_or_load(_key("a"), loader) is principal
    assert cache.get_or_load(_key("a"), loader) is principal
    assert cache.get(_key("a")) is principal
    assert loader.calls == 1
    assert cache.get(_key("b")) is None


def test_an_entry_lives_its_ttl_and_not_a_moment_longer(clock: FakeClock) -> None:
    cache = VerificationCache(ttl_seconds=60, clock=clock)
    cache.get_or_load(_key("a"), CountingLoader(_principal()))

    clock.advance(59.999)
    assert cache.get(_key("a")) is not None
    clock.advance(0.001)
    assert cache.get(_key("a")) is None


def test_a_per_call_ttl_overrides_the_default(clock: FakeClock) -> None:
    # The authenticator puts tokens and passwords into one cache with different TTLs.
    cache = VerificationCache(ttl_seconds=300, clock=clock)
    cache.get_or_load(_key("a"), CountingLoader(_principal()), ttl_seconds=10)

    clock.advance(9.5)
    assert cache.get(_key("a")) is not None
    clock.advance(0.5)
    assert cache.get(_key("a")) is None


def test_an_entry_never_outlives_its_credential(clock: FakeClock) -> None:
    cache = VerificationCache(ttl_seconds=60, clock=clock)
    expires_at = clock() + 10
    loader = CountingLoader(_principal(expires_at=expires_at))
    cache.get_or_load(_key("a"), loader)

    clock.advance(9.999)
    assert cache.get(_key("a")) is not None
    clock.advance(0.001)  # exactly expires_at: the credential is no longer good
    assert clock() == expires_at
    assert cache.get(_key("a")) is None
    cache.get_or_load(_key("a"), loader)
    assert loader.calls == 2, "an expired credential was served from the cache"


def test_an_already_expired_credential_is_not_cached(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    loader = CountingLoader(_principal(expires_at=clock() - 1))

    cache.get_or_load(_key("a"), loader)

    assert len(cache) == 0
    assert cache._entries.by_token == {}
    assert cache._entries.by_user == {}


@pytest.mark.parametrize("options", [{"max_entries": 0}, {"ttl_seconds": 0}])
def test_a_cache_without_room_or_ttl_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="room for one entry"):
        VerificationCache(**options)  # type: ignore[arg-type]


# -- bounds and indexes ------------------------------------------------------------------------


def test_max_entries_holds_and_the_least_recently_used_entry_goes_first(
    clock: FakeClock,
) -> None:
    cache = VerificationCache(max_entries=10, clock=clock)
    for n in range(10):
        cache.get_or_load(_key(f"k{n}"), CountingLoader(_principal(f"tok{n:09d}", user_id=n)))
    # The order is refreshed every REORDER_EVERY hits (hits take no lock): a key used that often
    # is the most recently used, and k1 the least.
    for _ in range(REORDER_EVERY):
        assert cache.get(_key("k0")) is not None

    cache.get_or_load(_key("k10"), CountingLoader(_principal("tok000000010", user_id=10)))

    assert len(cache) == 10
    assert cache.get(_key("k1")) is None
    assert cache.get(_key("k0")) is not None
    assert cache.get(_key("k10")) is not None
    assert cache.stats().evictions == 1


def test_peek_reads_the_lru_map_without_reordering_it() -> None:
    # The hit path reads with peek: it must see every entry held, and leave the LRU order alone.
    entries = IndexedEntries(2)
    first, second, third = (
        CacheEntry(_principal(f"tok{n:09d}", user_id=n), 10.0, 10.0, _key(f"k{n}"))
        for n in range(3)
    )
    entries.store(first.key, first, 0.0)
    entries.store(second.key, second, 0.0)

    assert entries.peek(first.key) is first
    assert entries.peek(_key("absent")) is None
    entries.store(third.key, third, 0.0)  # full: the least recently used goes

    assert entries.peek(first.key) is None  # peeking did not make it recently used
    assert entries.peek(second.key) is second
    assert entries.peek(third.key) is third


def test_indexes_follow_evictions(clock: FakeClock) -> None:
    cache = VerificationCache(max_entries=10, clock=clock)
    for n in range(1000):
        cache.get_or_load(_key(f"k{n}"), CountingLoader(_principal(f"tok{n:09d}", user_id=n)))

    assert len(cache) == 10
    # Exactly the survivors are indexed: an evicted entry leaves no trace behind.
    assert set(cache._entries.by_token) == {f"tok{n:09d}" for n in range(990, 1000)}
    assert set(cache._entries.by_user) == set(range(990, 1000))
    by_token = cache._entries.by_token
    assert sum(len(indexed_keys(by_token, name)) for name in by_token) == 10


def test_indexes_follow_expirations(clock: FakeClock) -> None:
    cache = VerificationCache(max_entries=10_000, ttl_seconds=60, clock=clock)
    for n in range(500):
        cache.get_or_load(_key(f"k{n}"), CountingLoader(_principal(f"tok{n:09d}", user_id=n)))
    clock.advance(60)

    # Expired entries are dropped lazily, on the next write.
    cache.get_or_load(_key("fresh"), CountingLoader(_principal("tokfresh0000", user_id=9999)))

    assert len(cache) == 1
    assert cache._entries.by_token == {"tokfresh0000": _key("fresh")}
    assert cache._entries.by_user == {9999: _key("fresh")}


def test_indexes_follow_credential_expiry_under_churn(clock: FakeClock) -> None:
    # Short-lived credentials that nobody asks for again: the indexes must not keep them.
    cache = VerificationCache(max_entries=100_000, ttl_seconds=60, clock=clock)
    for n in range(2000):
        principal = _principal(f"tok{n:09d}", user_id=n % 7, expires_at=clock() + 1)
        cache.get_or_load(_key(f"k{n}"), CountingLoader(principal))
        clock.advance(1)

    assert len(cache) <= 1
    assert len(cache._entries.by_token) <= 1
    assert len(cache._entries.by_user) <= 1


# -- invalidation ------------------------------------------------------------------------------


def _fill(cache: VerificationCache) -> None:
    # Two credentials of token A (e.g. the token and a session made from it), one of token B,
    # all of user 1; one token of user 2; one password login of user 1.
    cache.get_or_load(_key("a1"), CountingLoader(_principal("tokA00000000", user_id=1)))
    cache.get_or_load(_key("a2"), CountingLoader(_principal("tokA00000000", user_id=1)))
    cache.get_or_load(_key("b"), CountingLoader(_principal("tokB00000000", user_id=1)))
    cache.get_or_load(_key("c"), CountingLoader(_principal("tokC00000000", user_id=2)))
    cache.get_or_load(_key("pw1"), CountingLoader(_principal(None, user_id=1)))


def _cached(cache: VerificationCache) -> set[str]:
    return {name for name in ("a1", "a2", "b", "c", "pw1") if cache.get(_key(name)) is not None}


def test_invalidating_a_token_evicts_exactly_its_entries(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    _fill(cache)

    cache.invalidate([Invalidation(token_id="tokA00000000")])

    assert _cached(cache) == {"b", "c", "pw1"}
    assert "tokA00000000" not in cache._entries.by_token


def test_invalidating_a_user_evicts_all_their_entries_and_nobody_elses(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    _fill(cache)

    cache.invalidate([Invalidation(user_id=1)])

    assert _cached(cache) == {"c"}
    assert set(cache._entries.by_user) == {2}
    assert set(cache._entries.by_token) == {"tokC00000000"}


def test_invalidating_unknown_names_evicts_nothing(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    _fill(cache)

    cache.invalidate([Invalidation(token_id="tokZ00000000"), Invalidation(user_id=99)])

    assert _cached(cache) == {"a1", "a2", "b", "c", "pw1"}


def test_an_invalidation_naming_nothing_clears_everything(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    _fill(cache)

    cache.invalidate([Invalidation()])

    assert _cached(cache) == set()
    assert len(cache) == 0
    assert cache._entries.by_token == {}
    assert cache._entries.by_user == {}


# -- single flight -----------------------------------------------------------------------------


def test_concurrent_misses_on_one_key_share_one_load(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    principal = _principal()
    loader = BlockingLoader(principal)
    outcomes = Outcomes()

    threads = [
        _start(lambda: outcomes.run(lambda: cache.get_or_load(_key("a"), loader)))
        for _ in range(THREADS)
    ]
    _wait_for_misses(cache, THREADS)
    loader.release.set()
    _join(threads)

    assert loader.calls == 1
    assert outcomes.errors == []
    assert len(outcomes.principals) == THREADS
    assert all(got is principal for got in outcomes.principals)
    assert cache.stats().loads == 1


def test_a_failed_load_reaches_every_waiter_and_is_not_cached(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    loader = BlockingLoader(UnknownToken("token tok000000001: no such token"))
    outcomes = Outcomes()

    threads = [
        _start(lambda: outcomes.run(lambda: cache.get_or_load(_key("a"), loader)))
        for _ in range(THREADS)
    ]
    _wait_for_misses(cache, THREADS)
    loader.release.set()
    _join(threads)

    assert loader.calls == 1
    assert outcomes.principals == []
    assert len(outcomes.errors) == THREADS
    assert all(isinstance(error, UnknownToken) for error in outcomes.errors)
    # A refusal is not remembered here: the next caller loads again.
    retry = CountingLoader(_principal())
    cache.get_or_load(_key("a"), retry)
    assert retry.calls == 1


def test_a_waiter_gives_up_after_the_load_timeout(clock: FakeClock) -> None:
    cache = VerificationCache(load_timeout_seconds=0.2, clock=clock)
    principal = _principal()
    loader = BlockingLoader(principal)
    leader = Outcomes()
    thread = _start(lambda: leader.run(lambda: cache.get_or_load(_key("a"), loader)))
    assert loader.read_done.wait(JOIN_SECONDS)

    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timed out"):
            cache.get_or_load(_key("a"), CountingLoader(principal))
        waited = time.monotonic() - started
    finally:
        loader.release.set()
        _join([thread])

    assert 0.2 <= waited < 2.0
    assert leader.principals == [principal]
    assert cache.get(_key("a")) is principal  # the slow load still counts once it finishes


# -- generation guard --------------------------------------------------------------------------


def test_a_load_that_began_before_an_invalidation_is_not_cached(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    stale = _principal("tokA00000000")
    loader = BlockingLoader(stale)
    outcomes = Outcomes()
    thread = _start(lambda: outcomes.run(lambda: cache.get_or_load(_key("a"), loader)))
    assert loader.read_done.wait(JOIN_SECONDS)  # A has read the row as it was

    cache.invalidate([Invalidation(token_id="tokA00000000")])  # ... and now it is deleted
    loader.release.set()
    _join([thread])

    assert outcomes.principals == [stale]  # A's own call started before the change
    assert cache.get(_key("a")) is None
    assert len(cache) == 0
    assert cache._entries.by_token == {}


def test_a_load_without_an_invalidation_meanwhile_is_cached(clock: FakeClock) -> None:
    # The control for the test above: the same choreography, minus the invalidation.
    cache = VerificationCache(clock=clock)
    principal = _principal("tokA00000000")
    loader = BlockingLoader(principal)
    outcomes = Outcomes()
    thread = _start(lambda: outcomes.run(lambda: cache.get_or_load(_key("a"), loader)))
    assert loader.read_done.wait(JOIN_SECONDS)

    loader.release.set()
    _join([thread])

    assert outcomes.principals == [principal]
    assert cache.get(_key("a")) is principal


def test_a_caller_arriving_after_an_invalidation_does_not_join_the_stale_load(
    clock: FakeClock,
) -> None:
    # A's load read the token before it was deleted. B asks after the deletion has returned:
    # B must see the deletion, not A's stale answer, whether or not A is still in flight.
    cache = VerificationCache(clock=clock)
    stale_loader = BlockingLoader(_principal("tokA00000000"))
    first = Outcomes()
    thread_a = _start(lambda: first.run(lambda: cache.get_or_load(_key("a"), stale_loader)))
    assert stale_loader.read_done.wait(JOIN_SECONDS)
    cache.invalidate([Invalidation(token_id="tokA00000000")])

    fresh_loader = CountingLoader(TokenRevoked("token tokA00000000 of user1 was revoked"))
    second = Outcomes()
    thread_b = _start(lambda: second.run(lambda: cache.get_or_load(_key("a"), fresh_loader)))
    try:
        _wait_for_misses(cache, 2)
    finally:
        stale_loader.release.set()
        _join([thread_a, thread_b])

    assert second.principals == [], "a verify that began after the invalidation was accepted"
    assert len(second.errors) == 1
    assert isinstance(second.errors[0], TokenRevoked)
    assert fresh_loader.calls == 1


# -- negative cache ----------------------------------------------------------------------------


def test_an_unknown_id_is_remembered_for_the_negative_ttl(clock: FakeClock) -> None:
    cache = VerificationCache(negative_ttl_seconds=5, clock=clock)
    assert not cache.is_known_unknown("tokZ00000000")

    cache.remember_unknown("tokZ00000000")

    assert cache.is_known_unknown("tokZ00000000")
    assert not cache.is_known_unknown("tokY00000000")
    clock.advance(4.999)
    assert cache.is_known_unknown("tokZ00000000")
    clock.advance(0.001)
    assert not cache.is_known_unknown("tokZ00000000")


def test_the_negative_cache_is_bounded(clock: FakeClock) -> None:
    cache = VerificationCache(negative_max_entries=10, clock=clock)
    ids = [f"tokZ{n:08d}" for n in range(1000)]
    for token_id in ids:
        cache.remember_unknown(token_id)

    assert cache._unknown is not None
    assert len(cache._unknown) == 10
    assert sum(cache.is_known_unknown(token_id) for token_id in ids) == 10
    assert cache.is_known_unknown(ids[-1])
    assert not cache.is_known_unknown(ids[0])


def test_a_zero_negative_ttl_remembers_nothing(clock: FakeClock) -> None:
    cache = VerificationCache(negative_ttl_seconds=0, clock=clock)

    cache.remember_unknown("tokZ00000000")

    assert not cache.is_known_unknown("tokZ00000000")


def test_clear_forgets_entries_and_unknown_ids(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    _fill(cache)
    cache.remember_unknown("tokZ00000000")

    cache.clear()

    assert _cached(cache) == set()
    assert not cache.is_known_unknown("tokZ00000000")


# -- stats -------------------------------------------------------------------------------------


def test_stats_count_hits_misses_and_loads(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    principal = _principal()

    assert cache.get(_key("a")) is None  # miss
    cache.get_or_load(_key("a"), CountingLoader(principal))  # miss + load
    cache.get_or_load(_key("a"), CountingLoader(principal))  # hit
    cache.get(_key("a"))  # hit
    with pytest.raises(UnknownToken):
        cache.get_or_load(_key("b"), CountingLoader(UnknownToken("no such token")))  # miss

    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.size) == (2, 3, 1, 1)


# -- stale-if-error ----------------------------------------------------------------------------


def test_by_default_an_unreachable_store_fails_closed(clock: FakeClock) -> None:
    cache = VerificationCache(ttl_seconds=60, clock=clock)
    cache.get_or_load(_key("a"), CountingLoader(_principal()))
    clock.advance(60)

    with pytest.raises(StoreUnavailable):
        cache.get_or_load(_key("a"), CountingLoader(StoreUnavailable("down")))


def test_stale_if_error_serves_a_recent_verification_while_the_store_is_down(
    clock: FakeClock,
) -> None:
    cache = VerificationCache(ttl_seconds=60, stale_if_error_seconds=30, clock=clock)
    principal = _principal()
    cache.get_or_load(_key("a"), CountingLoader(principal))
    down = CountingLoader(StoreUnavailable("down"))

    clock.advance(89)
    assert cache.get_or_load(_key("a"), down) == principal
    assert (down.calls, cache.stale_served) == (1, 1), "the store is asked first every time"
    clock.advance(1)  # 60 s of TTL and 30 s of grace are over
    with pytest.raises(StoreUnavailable):
        cache.get_or_load(_key("a"), down)


def test_stale_if_error_never_outlives_the_credential(clock: FakeClock) -> None:
    cache = VerificationCache(ttl_seconds=60, stale_if_error_seconds=3600, clock=clock)
    cache.get_or_load(_key("a"), CountingLoader(_principal(expires_at=clock() + 100)))

    clock.advance(100)
    with pytest.raises(StoreUnavailable):
        cache.get_or_load(_key("a"), CountingLoader(StoreUnavailable("down")))


def test_stale_if_error_never_serves_an_invalidated_credential(clock: FakeClock) -> None:
    cache = VerificationCache(ttl_seconds=60, stale_if_error_seconds=3600, clock=clock)
    cache.get_or_load(_key("a"), CountingLoader(_principal()))
    clock.advance(61)

    cache.invalidate([Invalidation(token_id=A_TOKEN_ID)])

    with pytest.raises(StoreUnavailable):
        cache.get_or_load(_key("a"), CountingLoader(StoreUnavailable("down")))


def test_stale_if_error_does_not_hide_refusals(clock: FakeClock) -> None:
    # Only "store unavailable" falls back: a store that answers "revoked" is believed.
    cache = VerificationCache(ttl_seconds=60, stale_if_error_seconds=3600, clock=clock)
    cache.get_or_load(_key("a"), CountingLoader(_principal()))
    clock.advance(61)

    with pytest.raises(TokenRevoked):
        cache.get_or_load(_key("a"), CountingLoader(TokenRevoked("gone")))


# -- lookups by the credential's text ------------------------------------------------------------


def _linked(cache: VerificationCache, text: str, principal: Principal) -> None:
    cache.get_or_load(_key(text), CountingLoader(principal))
    cache.link(cache.tokens, text, _key(text))


def test_a_linked_text_finds_its_entry_until_its_deadline(clock: FakeClock) -> None:
    cache = VerificationCache(ttl_seconds=60, clock=clock)
    principal = _principal()
    assert cache.hit_presented(cache.tokens, "a", clock()) is None  # not linked yet
    _linked(cache, "a", principal)

    entry = cache.hit_presented(cache.tokens, "a", clock())
    assert entry is not None
    assert entry.principal is principal
    assert entry.key == _key("a")
    assert cache.hit_presented(cache.tokens, "b", clock()) is None
    # The same text as a session id is another credential: it finds nothing.
    assert cache.hit_presented(cache.sessions, "a", clock()) is None
    assert cache.stats().hits == 1

    clock.advance(60)
    assert cache.hit_presented(cache.tokens, "a", clock()) is None


def test_no_text_is_linked_to_an_entry_that_is_not_there(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    cache.link(cache.sessions, "a", session_cache_key("a"))

    assert dict(cache.sessions) == {}


@pytest.mark.parametrize(
    "event",
    [Invalidation(token_id=A_TOKEN_ID), Invalidation(user_id=1), Invalidation()],
    ids=["token", "user", "everything"],
)
def test_a_text_goes_with_its_invalidated_entry(clock: FakeClock, event: Invalidation) -> None:
    cache = VerificationCache(clock=clock)
    _linked(cache, "a", _principal())

    cache.invalidate([event])

    assert cache.hit_presented(cache.tokens, "a", clock()) is None
    assert dict(cache.tokens) == {}


def test_texts_go_with_evicted_and_expired_entries(clock: FakeClock) -> None:
    cache = VerificationCache(max_entries=10, ttl_seconds=60, clock=clock)
    for n in range(100):
        _linked(cache, f"k{n}", _principal(f"tok{n:09d}", user_id=n))
    # The cache holds no text longer than the entry it leads to.
    assert set(cache.tokens) == {f"k{n}" for n in range(90, 100)}
    assert {entry.key for entry in cache.tokens.values()} == {_key(f"k{n}") for n in range(90, 100)}

    clock.advance(60)
    cache.get_or_load(_key("fresh"), CountingLoader(_principal("tokfresh0000", user_id=9999)))
    assert dict(cache.tokens) == {}


def test_a_text_never_leads_to_a_replaced_entry(clock: FakeClock) -> None:
    cache = VerificationCache(ttl_seconds=60, stale_if_error_seconds=60, clock=clock)
    first, second = _principal(), _principal()
    _linked(cache, "a", first)
    clock.advance(60)  # past the deadline, still kept for stale-if-error
    assert cache.hit_presented(cache.tokens, "a", clock()) is None

    assert cache.get_or_load(_key("a"), CountingLoader(second)) is second
    assert cache.hit_presented(cache.tokens, "a", clock()) is None  # until linked again
    cache.link(cache.tokens, "a", _key("a"))

    entry = cache.hit_presented(cache.tokens, "a", clock())
    assert entry is not None
    assert entry.principal is second


def test_the_texts_are_never_shown(clock: FakeClock) -> None:
    cache = VerificationCache(clock=clock)
    secret = "e6a_secret_text_of_a_credential"
    _linked(cache, secret, _principal())

    for shown in (repr(cache.tokens), str(cache.tokens), repr(cache._entries), repr(cache)):
        assert secret not in shown
    assert repr(cache.tokens) == "<Presented: 1 credentials>"
