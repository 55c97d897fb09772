"""The hot path through Authenticator, on SQLite and PostgreSQL: what the cache saves, and that
every invalidating change is seen at once here and after a poll in other processes."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import argon2
import pytest

from e6auth import (
    AddressNotAllowed,
    Authenticator,
    InvalidPassword,
    MalformedCredential,
    SessionError,
    SessionRevoked,
    TokenExpired,
    TokenRevoked,
    TokenStore,
    UnknownToken,
    UnknownUser,
    UserDisabled,
)
from e6auth.credentials.passwords import Passwords
from e6auth.credentials.tokens import (
    ALPHABET,
    PREFIX,
    SECRET_LENGTH,
    _checksum,
    generate_token,
    parse_token,
)
from e6auth.store.database import create_store_engine
from e6auth.testing import FakeClock, count_queries
from e6auth.verify.authenticator import SAMPLE_EVERY
from e6auth.verify.parameters import CacheParameters, SessionParameters

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ub4dor&3 is not better"


class Argon2Verifies:
    """Counts argon2 verifications made by one Passwords object: the cost a cache must save."""

    def __init__(self, passwords: Passwords, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        hasher = passwords._hasher
        original = argon2.PasswordHasher.verify

        # PasswordHasher has __slots__, so the spy goes on the class and counts only our hasher.
        def spy(self_: argon2.PasswordHasher, *args: Any, **kwargs: Any) -> Any:
            if self_ is hasher:
                self.calls += 1
            return original(self_, *args, **kwargs)

        monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)


@pytest.fixture
def argon2_verifies(store: TokenStore, monkeypatch: pytest.MonkeyPatch) -> Argon2Verifies:
    return Argon2Verifies(store.passwords, monkeypatch)


@pytest.fixture
def auth(store: TokenStore, clock: FakeClock) -> Iterator[Authenticator]:
    authenticator = Authenticator(store, clock=clock)
    try:
        yield authenticator
    finally:
        authenticator.close()


@pytest.fixture
def other_store(store: TokenStore, store_url: str, clock: FakeClock) -> Iterator[TokenStore]:
    """The same database as another process sees it: its own engine and its own listeners.

    Another process would read the same pepper from its configuration; here it is borrowed.
    """
    second = TokenStore(
        create_store_engine(store_url), pepper=store._pepper, passwords=store.passwords, clock=clock
    )
    try:
        yield second
    finally:
        second.close()


def _token_with_id(token_id: str) -> str:
    # Right shape and checksum, so it passes parsing and costs a lookup, for an id we choose.
    secret = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    body = f"{PREFIX}{token_id}_{secret}"
    token = body + _checksum(body)
    assert parse_token(token).id == token_id
    return token


def _unknown_id() -> str:
    return generate_token()[0].id


# -- what a hit saves --------------------------------------------------------------------------


def test_a_second_verify_of_a_token_makes_no_query(store: TokenStore, auth: Authenticator) -> None:
    store.create_user("alice")
    new = store.create_token("alice")
    first = auth.verify_token(new.token)

    with count_queries(store.engine) as queries:
        second = auth.verify_token(new.token)

    assert queries.count == 0, queries.statements
    assert second == first
    assert second.token_id == new.id
    assert second.username == "alice"


def test_a_cached_token_is_exact_about_expiry(
    store: TokenStore, auth: Authenticator, clock: FakeClock
) -> None:
    store.create_user("alice")
    new = store.create_token("alice", expires_days=1)
    assert new.expires_at is not None
    expires_at = new.expires_at.timestamp()
    clock.advance(expires_at - 30 - clock())
    assert auth.verify_token(new.token).expires_at == new.expires_at  # loaded and cached

    clock.advance(29)  # one second before expiry
    with count_queries(store.engine) as queries:
        auth.verify_token(new.token)
    assert queries.count == 0, "expected a hit one second before expiry"

    clock.advance(1)  # exactly expires_at
    assert clock() == expires_at
    with pytest.raises(TokenExpired):
        auth.verify_token(new.token)


# -- invalidation in this process --------------------------------------------------------------


def test_a_deleted_token_is_refused_on_the_next_verify_although_cached(
    store: TokenStore, auth: Authenticator
) -> None:
    store.create_user("alice")
    new = store.create_token("alice")
    kept = store.create_token("alice")
    auth.verify_token(new.token)
    auth.verify_token(kept.token)
    with count_queries(store.engine) as queries:
        auth.verify_token(new.token)
    assert queries.count == 0, "the token was not cached to begin with"

    store.delete_tokens([new.id])

    with pytest.raises(TokenRevoked):
        auth.verify_token(new.token)
    with count_queries(store.engine) as queries:
        auth.verify_token(kept.token)
    assert queries.count == 0, "deleting one token evicted another"


def test_disable_user_evicts_their_cached_tokens_and_password_logins(
    store: TokenStore, auth: Authenticator, argon2_verifies: Argon2Verifies
) -> None:
    store.create_user("alice", PASSWORD)
    store.create_user("bob")
    alice_token = store.create_token("alice")
    bob_token = store.create_token("bob")
    auth.verify_token(alice_token.token)
    auth.verify_token(bob_token.token)
    auth.verify("alice", PASSWORD)
    with count_queries(store.engine) as queries:
        auth.verify_token(alice_token.token)
        auth.verify_token(bob_token.token)
    assert queries.count == 0, "the tokens were not cached to begin with"
    before = argon2_verifies.calls
    auth.verify("alice", PASSWORD)
    # Checked at the end, so that the eviction checks below run either way.
    password_login_was_cached = argon2_verifies.calls == before

    store.disable_user("alice")

    with pytest.raises(UserDisabled):
        auth.verify_token(alice_token.token)
    with pytest.raises(UserDisabled):
        auth.verify("alice", PASSWORD)
    with count_queries(store.engine) as queries:
        auth.verify_token(bob_token.token)
    assert queries.count == 0, "disabling alice evicted bob's token"
    assert password_login_was_cached, "a repeated password login ran argon2 again"


def test_set_password_evicts_cached_password_logins(
    store: TokenStore, auth: Authenticator, argon2_verifies: Argon2Verifies
) -> None:
    store.create_user("alice", PASSWORD)
    first = auth.verify("alice", PASSWORD)
    before = argon2_verifies.calls
    auth.verify("alice", PASSWORD)
    password_login_was_cached = argon2_verifies.calls == before

    store.set_password("alice", NEW_PASSWORD)

    with pytest.raises(InvalidPassword):
        auth.verify("alice", PASSWORD)
    principal = auth.verify("alice", NEW_PASSWORD)
    assert principal.password_generation == (first.password_generation or 0) + 1
    assert password_login_was_cached, "a repeated password login ran argon2 again"


# -- the negative cache and malformed input ----------------------------------------------------


def test_a_flood_of_tokens_with_one_unknown_id_costs_one_query(
    store: TokenStore, auth: Authenticator
) -> None:
    token_id = _unknown_id()
    flood = [_token_with_id(token_id) for _ in range(1000)]
    assert len(set(flood)) == 1000  # distinct secrets: each is its own cache key

    with count_queries(store.engine) as queries:
        for token in flood:
            with pytest.raises(UnknownToken):
                auth.verify_token(token)

    assert queries.count == 1, queries.statements


def test_distinct_unknown_ids_cost_one_query_each_until_the_negative_ttl_ends(
    store: TokenStore, auth: Authenticator, clock: FakeClock
) -> None:
    tokens = [_token_with_id(_unknown_id()) for _ in range(20)]

    def queries_for_all() -> int:
        with count_queries(store.engine) as queries:
            for token in tokens:
                with pytest.raises(UnknownToken):
                    auth.verify_token(token)
        return queries.count

    assert queries_for_all() == 20
    assert queries_for_all() == 0
    clock.advance(5)  # the default negative TTL
    assert queries_for_all() == 20


@pytest.mark.parametrize(
    "text",
    [
        "",
        "e6pat_",
        "not a token at all",
        "e6pat_" + "A" * 12 + "_" + "B" * 38,  # the shape, a wrong checksum
        "x" * 10_000,
        "e6pat_" + "A" * 12 + "_" + "B" * 32 + "\u0661" * 6,  # non-ASCII digits
    ],
)
def test_malformed_input_never_reaches_the_store(
    store: TokenStore, auth: Authenticator, text: str
) -> None:
    with count_queries(store.engine) as queries, pytest.raises(MalformedCredential):
        auth.verify_token(text)
    assert queries.count == 0


# -- password logins ---------------------------------------------------------------------------


def test_a_repeated_password_login_costs_one_argon2_verify_per_ttl(
    store: TokenStore, auth: Authenticator, clock: FakeClock, argon2_verifies: Argon2Verifies
) -> None:
    store.create_user("alice", PASSWORD)

    for _ in range(5):
        auth.verify("alice", PASSWORD)
    clock.advance(299.9)  # just inside the default password TTL
    auth.verify("alice", PASSWORD)
    assert argon2_verifies.calls == 1

    clock.advance(0.1)
    auth.verify("alice", PASSWORD)
    assert argon2_verifies.calls == 2


def test_a_wrong_password_is_never_cached(
    store: TokenStore, auth: Authenticator, argon2_verifies: Argon2Verifies
) -> None:
    store.create_user("alice", PASSWORD)
    auth.verify("alice", PASSWORD)
    before = argon2_verifies.calls

    for _ in range(3):
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "not the password")
    for _ in range(3):
        with pytest.raises(UnknownUser):
            auth.verify("nobody", PASSWORD)

    # Every failed attempt pays the full price: a cache must not make guessing cheaper.
    assert argon2_verifies.calls - before == 6


# -- other processes ---------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["delete", "disable"])
def test_another_process_keeps_its_entry_until_it_polls_the_log(
    store: TokenStore, other_store: TokenStore, clock: FakeClock, change: str
) -> None:
    store.create_user("alice")
    new = store.create_token("alice")
    with (
        Authenticator(store, clock=clock) as here,
        Authenticator(other_store, clock=clock) as there,
    ):
        here.verify_token(new.token)
        there.verify_token(new.token)

        if change == "delete":
            store.delete_tokens([new.id])
        else:
            store.disable_user("alice")
        expected = TokenRevoked if change == "delete" else UserDisabled

        with pytest.raises(expected):
            here.verify_token(new.token)
        # The other process cannot know yet: it still trusts its cached entry...
        with count_queries(other_store.engine) as queries:
            there.verify_token(new.token)
        assert queries.count == 0
        # ... until it reads the log, which carries the event.
        assert there.poll_invalidations() == 1
        with pytest.raises(expected):
            there.verify_token(new.token)
        assert there.poll_invalidations() == 0


@pytest.mark.parametrize(
    ("login", "change", "refusal"),
    [
        ("token", "disable", UserDisabled),
        ("token", "delete", TokenRevoked),
        ("password", "disable", UserDisabled),
        ("password", "new password", InvalidPassword),
    ],
)
def test_a_session_refused_for_a_change_not_yet_polled_ends_its_cached_login_too(
    store: TokenStore,
    other_store: TokenStore,
    clock: FakeClock,
    login: str,
    change: str,
    refusal: type[Exception],
) -> None:
    """A store read that refuses a session proves a change this process has not polled yet: the
    re-login that follows (the connector's answer to "Access denied") must not be answered from
    the cache as still valid, which would mint session after session that the store ends again.

    The session was made by another replica (same key, same database), so this one reads it from
    the store; alice's credential is cached here since she logged in here too. The poll is held
    back: nothing here polls."""
    store.create_user("alice", PASSWORD)
    new = store.create_token("alice")
    secret = new.token if login == "token" else PASSWORD
    key = SessionParameters(secrets.token_bytes(32))
    with (
        Authenticator(store, clock=clock, sessions=key) as replica,
        Authenticator(other_store, clock=clock, sessions=key) as here,
    ):
        here.verify("alice", secret)
        session_id = replica.create_session(replica.verify("alice", secret))

        if change == "disable":
            store.disable_user("alice")
        elif change == "delete":
            store.delete_tokens([new.id])
        else:
            store.set_password("alice", NEW_PASSWORD)

        with pytest.raises(SessionRevoked):
            here.verify_session(session_id)
        with pytest.raises(refusal):
            here.verify("alice", secret)


def test_prune_invalidations_removes_only_older_entries(
    store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice")
    old, new = store.create_token("alice"), store.create_token("alice")
    store.delete_tokens([old.id])
    clock.advance(3600)
    store.delete_tokens([new.id])
    assert [event.token_id for event in store.invalidations_after(0)] == [old.id, new.id]

    pruned = store.prune_invalidations(store.now() - dt.timedelta(seconds=1800))

    assert pruned == 1
    assert [event.token_id for event in store.invalidations_after(0)] == [new.id]


def test_the_poller_prunes_entries_past_their_retention(
    store: TokenStore, auth: Authenticator, clock: FakeClock
) -> None:
    store.create_user("alice")
    store.delete_tokens([store.create_token("alice").id])
    assert len(store.invalidations_after(0)) == 1

    clock.advance(24 * 3600 + 1)  # the default retention
    auth.poll_invalidations()

    assert store.invalidations_after(0) == []


def test_invalidations_after_a_fully_pruned_log_still_reach_other_processes(
    store: TokenStore, other_store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice")
    first, second = store.create_token("alice"), store.create_token("alice")
    with Authenticator(other_store, clock=clock) as there:
        store.delete_tokens([first.id])
        assert there.poll_invalidations() == 1
        # A quiet day: the whole log ages out.
        clock.advance(2 * 24 * 3600)
        store.prune_invalidations(store.now())
        assert store.invalidations_after(0) == []
        there.verify_token(second.token)

        store.delete_tokens([second.id])

        assert there.poll_invalidations() == 1, "the poller missed an entry written after a prune"
        with pytest.raises(TokenRevoked):
            there.verify_token(second.token)


# -- without a cache ---------------------------------------------------------------------------


def test_without_a_cache_every_verify_reads_the_store(
    store: TokenStore, clock: FakeClock, argon2_verifies: Argon2Verifies
) -> None:
    store.create_user("alice", PASSWORD)
    new = store.create_token("alice")
    with Authenticator(
        store, clock=clock, cache=CacheParameters(ttl_seconds=0, password_ttl_seconds=0)
    ) as uncached:
        assert uncached.cache is None
        for _ in range(3):
            with count_queries(store.engine) as queries:
                uncached.verify_token(new.token)
            assert queries.count == 1
        for _ in range(3):
            uncached.verify("alice", PASSWORD)
        assert argon2_verifies.calls == 3
        # Nothing remembered means a deletion is seen at once, with no invalidation needed.
        store.delete_tokens([new.id])
        with pytest.raises(TokenRevoked):
            uncached.verify_token(new.token)


def test_a_cached_token_is_no_session_id_and_a_cached_session_id_no_token(
    store: TokenStore, clock: FakeClock
) -> None:
    """Tokens and session ids share the cache but not its keys: a credential presented in the
    other's place is refused although its own entry is cached."""
    store.create_user("alice")
    token = store.create_token("alice").token
    with Authenticator(
        store, clock=clock, sessions=SessionParameters(secrets.token_bytes(32))
    ) as auth:
        session_id = auth.create_session(auth.verify("alice", token))
        assert auth.verify_session(session_id).username == "alice"  # both cached now
        assert auth.verify_token(token).session_id is None

        with pytest.raises(SessionError):
            auth.verify_session(token)
        with pytest.raises(MalformedCredential):
            auth.verify_token(session_id)


# -- noting uses of cached credentials ---------------------------------------------------------


class CountingPeer:
    """A peer callable that counts how often the address was asked for."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.address


def test_uses_of_a_cached_token_are_noted_once_a_second_and_every_sample_everyth_use(
    store: TokenStore, auth: Authenticator, clock: FakeClock
) -> None:
    """Hits within a second of the last noted use skip the last-used record and the peer lookup,
    but for every SAMPLE_EVERY-th; the stored time is still the last use to within a second."""
    store.create_user("alice")
    new = store.create_token("alice")
    peer = CountingPeer("10.1.2.3")
    auth.verify_token(new.token, peer=peer)  # the miss notes its use, with the address
    assert peer.calls == 1
    auth.flush_last_used()
    for _ in range(SAMPLE_EVERY - 1):
        clock.advance(0.001)
        auth.verify_token(new.token, peer=peer)
    assert auth.last_used.pending == 0, "hits within a second noted a use"
    assert peer.calls == 1

    auth.verify_token(new.token, peer=CountingPeer("192.0.2.7"))  # the SAMPLE_EVERY-th: a sample
    assert auth.last_used.pending == 1
    auth.flush_last_used()

    clock.advance(1.0)
    auth.verify_token(new.token, peer=peer)
    assert (auth.last_used.pending, peer.calls) == (1, 2)
    auth.flush_last_used()
    info = store.find_token_info(new.id)
    assert info is not None
    assert info.last_used_at is not None
    assert abs(info.last_used_at.timestamp() - clock()) < 1.0  # the store keeps seconds
    assert set(info.last_used_peers) == {"10.1.2.3", "192.0.2.7"}


def test_a_session_used_within_the_second_still_ends_when_idle(
    store: TokenStore, clock: FakeClock
) -> None:
    """Skipping the touch within a second never keeps an idle session alive: the idle limit is
    measured from the last noted use, which is at most a second before the last use."""
    store.create_user("alice")
    token = store.create_token("alice").token
    with Authenticator(
        store, clock=clock, sessions=SessionParameters(secrets.token_bytes(32), idle_seconds=60)
    ) as auth:
        session_id = auth.create_session(auth.verify("alice", token))
        for _ in range(10):
            clock.advance(0.5)
            auth.verify_session(session_id)
        clock.advance(59)
        auth.verify_session(session_id)  # 59 s after the last use: alive
        clock.advance(60.5)
        with pytest.raises(SessionError):
            auth.verify_session(session_id)


def test_a_restricted_token_is_checked_on_every_hit(
    store: TokenStore, auth: Authenticator, clock: FakeClock
) -> None:
    """Address-restricted tokens never skip: the peer is checked on every call, also within the
    second."""
    store.create_user("alice")
    new = store.create_token("alice", allow_from=["10.0.0.0/8"])
    inside = CountingPeer("10.1.2.3")
    auth.verify_token(new.token, peer=inside)
    for _ in range(5):
        auth.verify_token(new.token, peer=inside)
    assert inside.calls >= 6
    with pytest.raises(AddressNotAllowed):
        auth.verify_token(new.token, peer="192.168.1.1")


def test_the_cache_only_answers_leave_noting_and_refusing_to_the_full_path(
    store: TokenStore, clock: FakeClock
) -> None:
    """cached_session and cached_token answer only what the cache alone can tell; a use due to
    be noted (by time or by count) is left to verify_session / verify_token, which note it."""
    store.create_user("alice")
    new = store.create_token("alice")
    with Authenticator(
        store, clock=clock, sessions=SessionParameters(secrets.token_bytes(32))
    ) as auth:
        assert auth.cached_call(f"Bearer {new.token}", None, clock()) is None  # not cached yet
        session_id = auth.create_session(auth.verify("alice", new.token))
        assert auth.cached_call(None, session_id, clock()) is None  # its use was never noted
        auth.verify_session(session_id)
        auth.flush_last_used()

        answered = [auth.cached_call(None, session_id, clock()) for _ in range(SAMPLE_EVERY)]
        assert all(principal is not None for principal in answered[:-1])
        assert answered[-1] is None, "the SAMPLE_EVERY-th use is due to be noted"
        assert auth.last_used.pending == 0
        assert auth.verify_session(session_id).token_id == new.id
        assert auth.last_used.pending == 1, "the full path noted the use left to it"
        assert auth.cached_call(None, session_id, clock()) is not None

        clock.advance(1.0)
        assert auth.cached_call(None, session_id, clock()) is None  # a second on: due by time
        store.delete_tokens([new.id])
        assert auth.cached_call(None, session_id, clock()) is None
        with pytest.raises(SessionError):
            auth.verify_session(session_id)
        assert auth.cached_call(f"Bearer {new.token}", None, clock()) is None
        assert auth.cached_call(f"Bearer {'e6pat_short'}", None, clock()) is None
        assert auth.cached_call(None, "x" * 100_000, clock()) is None
