"""Rotation with a grace window: the old secret works until the grace end, then nowhere."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator

import pytest

from e6auth.credentials.keys import Pepper
from e6auth.credentials.tokens import parse_token
from e6auth.errors import (
    InvalidTokenSecret,
    PolicyError,
    SessionRevoked,
    TokenNotFound,
    TokenRotatedOut,
)
from e6auth.store import TokenStore
from e6auth.testing import FakeClock, memory_store
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.parameters import CacheParameters, SessionParameters

HOUR = 3600.0
SESSION_KEY = b"s" * 32


@pytest.fixture
def auth(store: TokenStore, clock: FakeClock) -> Iterator[Authenticator]:
    """A caching authenticator: a cached verification of the old secret must not outlive its
    grace window (the TTL is far longer than the windows below)."""
    authenticator = Authenticator(
        store,
        clock=clock,
        cache=CacheParameters(ttl_seconds=24 * HOUR),
        sessions=SessionParameters(SESSION_KEY, idle_seconds=12 * HOUR),
    )
    yield authenticator
    authenticator.close()


def test_rotation_keeps_the_id_and_gives_a_new_secret(store: TokenStore) -> None:
    store.create_user("alice")
    old = store.create_token("alice", comment="ci", expires_days=30)

    new = store.rotate_token(old.id, grace=dt.timedelta(hours=2))

    assert new.id == old.id
    assert parse_token(new.token).id == old.id
    assert new.token != old.token
    assert (new.user, new.comment, new.expires_at) == ("alice", "ci", old.expires_at)
    assert new.previous_valid_until == store.now() + dt.timedelta(hours=2)
    assert old.token not in repr(new)
    assert new.token not in repr(new)
    record = store.find_token(old.id)
    assert record is not None
    assert record.rotated_at == store.now()
    assert record.previous_valid_until == store.now() + dt.timedelta(hours=2)


def test_the_old_secret_works_until_the_grace_end_even_cached(
    store: TokenStore, auth: Authenticator, clock: FakeClock
) -> None:
    store.create_user("alice")
    old = store.create_token("alice")
    auth.verify_token(old.token)  # cached for 24 h

    new = store.rotate_token(old.id, grace=dt.timedelta(hours=1))

    assert auth.verify_token(new.token).grace_until is None
    principal = auth.verify_token(old.token)
    assert principal.grace_until == store.now() + dt.timedelta(hours=1)
    assert auth.verify("alice", old.token).token_id == old.id
    clock.advance(HOUR - 1)
    auth.verify_token(old.token)  # a cache hit now

    clock.advance(1)
    with pytest.raises(TokenRotatedOut):
        auth.verify_token(old.token)
    assert auth.verify_token(new.token).username == "alice"


def test_grace_zero_refuses_the_old_secret_at_once(store: TokenStore, auth: Authenticator) -> None:
    store.create_user("alice")
    old = store.create_token("alice")
    auth.verify_token(old.token)

    new = store.rotate_token(old.id, grace=dt.timedelta(0))

    with pytest.raises(TokenRotatedOut):
        auth.verify_token(old.token)
    auth.verify_token(new.token)


def test_a_second_rotation_ends_the_first_secret_at_once(
    store: TokenStore, auth: Authenticator
) -> None:
    store.create_user("alice")
    first = store.create_token("alice")
    second = store.rotate_token(first.id)
    third = store.rotate_token(first.id)

    with pytest.raises(InvalidTokenSecret):
        auth.verify_token(first.token)
    assert auth.verify_token(second.token).grace_until is not None
    assert auth.verify_token(third.token).grace_until is None


def test_rotating_a_revoked_expired_or_unknown_token_is_refused(
    store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice")
    store.create_user("bob")
    revoked = store.create_token("alice")
    store.delete_tokens([revoked.id])
    expiring = store.create_token("alice", expires_days=1)
    clock.advance(24 * HOUR)

    with pytest.raises(PolicyError, match="revoked"):
        store.rotate_token(revoked.id)
    with pytest.raises(PolicyError, match="expired"):
        store.rotate_token(expiring.id)
    for unknown in ("AAAAAAAAAAAA", "not an id"):
        with pytest.raises(TokenNotFound):
            store.rotate_token(unknown)
    bobs = store.create_token("bob")
    with pytest.raises(TokenNotFound):
        store.rotate_token(bobs.id, user="alice")  # only one's own tokens
    store.rotate_token(bobs.id, user="bob")


@pytest.mark.parametrize("hours", [-1, 24 * 31])
def test_a_grace_window_out_of_range_is_refused(store: TokenStore, hours: int) -> None:
    store.create_user("alice")
    token = store.create_token("alice")

    with pytest.raises(PolicyError, match="grace window"):
        store.rotate_token(token.id, grace=dt.timedelta(hours=hours))


def test_sessions_made_with_the_old_secret_end_with_the_grace_window(
    store: TokenStore, auth: Authenticator, clock: FakeClock
) -> None:
    store.create_user("alice")
    old = store.create_token("alice")
    before = auth.create_session(auth.verify("alice", old.token))  # made before the rotation
    auth.verify_session(before)

    new = store.rotate_token(old.id, grace=dt.timedelta(hours=1))
    during = auth.create_session(auth.verify("alice", old.token))  # old secret, in the window
    current = auth.create_session(auth.verify("alice", new.token))
    for session in (before, during, current):
        assert auth.verify_session(session).username == "alice"
    assert auth.verify_session(during).grace_until == store.now() + dt.timedelta(hours=1)

    clock.advance(HOUR)
    for session in (before, during):
        with pytest.raises(SessionRevoked, match="rotated out"):
            auth.verify_session(session)
    assert auth.verify_session(current).grace_until is None


def test_a_new_rotation_ends_sessions_of_the_previous_secret_at_once(
    store: TokenStore, auth: Authenticator
) -> None:
    store.create_user("alice")
    old = store.create_token("alice")
    store.rotate_token(old.id)
    session = auth.create_session(auth.verify("alice", old.token))
    auth.verify_session(session)

    store.rotate_token(old.id)

    with pytest.raises(SessionRevoked):
        auth.verify_session(session)


def test_a_rotation_reaches_another_process_through_the_invalidation_log(
    store_url: str, clock: FakeClock
) -> None:
    """Two stores on one database stand for two processes (a real one is in
    test_connector_policy.py): the other learns of the rotation from the log, not from a
    listener, and drops its cached verification of the old secret."""
    pepper = [Pepper(secrets.token_bytes(32))]
    store = memory_store(clock=clock, url=store_url, peppers=pepper)
    other = Authenticator(
        memory_store(clock=clock, url=store_url, peppers=pepper),
        clock=clock,
        cache=CacheParameters(ttl_seconds=24 * HOUR),
    )
    try:
        store.create_user("alice")
        old = store.create_token("alice")
        other.poll_invalidations()
        other.verify_token(old.token)

        store.rotate_token(old.id, grace=dt.timedelta(0))
        other.poll_invalidations()

        with pytest.raises(TokenRotatedOut):
            other.verify_token(old.token)
    finally:
        other.close()
        store.close()
