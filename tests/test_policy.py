"""The token policy: tokens-only logins, lifetime and count limits, revoking unused tokens."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e6auth.credentials.keys import Pepper
from e6auth.errors import (
    InvalidPassword,
    PasswordLoginsDisabled,
    PolicyError,
    SessionRevoked,
    SettingsError,
    TokenRevoked,
)
from e6auth.settings import Settings
from e6auth.store import TokenStore
from e6auth.testing import FakeClock, memory_store
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.parameters import CacheParameters, SessionParameters, TaskParameters
from e6auth.verify.policy import Policy

PASSWORD = "correct horse battery staple"
DAY = 86_400


WithPolicy = Callable[..., TokenStore]


@pytest.fixture
def with_policy(store_url: str, clock: FakeClock) -> Iterator[WithPolicy]:
    """Opens a store on each backend with the policy rules given as keywords."""
    opened: list[TokenStore] = []

    def make(**rules: object) -> TokenStore:
        opened.append(memory_store(clock=clock, url=store_url, policy=Policy(**rules)))  # type: ignore[arg-type]
        return opened[-1]

    yield make
    for token_store in opened:
        token_store.close()


def test_the_default_policy_allows_everything_as_before() -> None:
    policy = Policy()

    policy.check_password_login()
    policy.check_lifetime(None)
    policy.check_lifetime(36_500)
    policy.check_token_count("alice", 10_000)
    assert policy.unused_cutoff(dt.datetime.now(dt.UTC)) is None


@pytest.mark.parametrize(
    "field", ["max_token_lifetime_days", "max_tokens_per_user", "revoke_unused_after_days"]
)
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_limits_must_be_positive_whole_numbers(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        Policy(**{field: value})  # type: ignore[arg-type]


def test_the_policy_is_read_from_environment_and_config_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = Path(os.environ["E6AUTH_HOME"])
    (home / "config.toml").write_text("max_tokens_per_user = 3\nrevoke_unused_after_days = 90\n")
    monkeypatch.setenv("E6AUTH_PASSWORD_LOGINS", "false")
    monkeypatch.setenv("E6AUTH_MAX_TOKEN_LIFETIME_DAYS", "30")

    assert Policy.from_settings(Settings()) == Policy(
        password_logins=False,
        max_token_lifetime_days=30,
        max_tokens_per_user=3,
        revoke_unused_after_days=90,
    )


def test_a_zero_limit_in_the_settings_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E6AUTH_MAX_TOKENS_PER_USER", "0")

    with pytest.raises(SettingsError, match="max_tokens_per_user"):
        Settings()


# -- lifetime and count, on both backends --------------------------------------------------------


def test_a_token_longer_than_the_maximum_lifetime_is_refused(with_policy: WithPolicy) -> None:
    policy_store = with_policy(max_token_lifetime_days=30)
    policy_store.create_user("alice")

    with pytest.raises(PolicyError, match="longer than the policy's maximum token lifetime of 30"):
        policy_store.create_token("alice", expires_days=31)
    with pytest.raises(PolicyError, match=r"must expire within 30 days.*--expires-days"):
        policy_store.create_token("alice")
    assert policy_store.list_tokens("alice") == []

    new = policy_store.create_token("alice", expires_days=30)
    assert new.expires_at == policy_store.now() + dt.timedelta(days=30)


def test_only_active_tokens_count_against_the_per_user_maximum(
    with_policy: WithPolicy, clock: FakeClock
) -> None:
    policy_store = with_policy(max_tokens_per_user=2)
    policy_store.create_user("alice")
    policy_store.create_user("bob")
    first = policy_store.create_token("alice")
    policy_store.create_token("alice", expires_days=1)

    with pytest.raises(PolicyError, match="alice already has 2 active tokens"):
        policy_store.create_token("alice")
    policy_store.create_token("bob")  # the limit is per user

    policy_store.delete_tokens([first.id])  # a revoked token no longer counts
    policy_store.create_token("alice")
    with pytest.raises(PolicyError):
        policy_store.create_token("alice")

    clock.advance(DAY)  # nor does an expired one
    policy_store.create_token("alice")


# -- tokens only -------------------------------------------------------------------------------


def test_tokens_only_refuses_every_password_login_alike_and_accepts_tokens(
    with_policy: WithPolicy, clock: FakeClock
) -> None:
    policy_store = with_policy(password_logins=False)
    policy_store.create_user("alice", PASSWORD)
    token = policy_store.create_token("alice").token
    with Authenticator(policy_store, clock=clock) as auth:
        refusals = []
        for user, password in [("alice", PASSWORD), ("alice", "wrong"), ("nobody", PASSWORD)]:
            with pytest.raises(PasswordLoginsDisabled) as refused:
                auth.verify(user, password)
            refusals.append((refused.value.grpc_status, refused.value.client_message()))

        assert principal_user(auth.verify("alice", token)) == "alice"
    # Nothing about the user shows: every password attempt gets the same specific answer.
    assert set(refusals) == {
        ("PERMISSION_DENIED", "password logins are disabled; use an access token")
    }


def principal_user(principal: object) -> str:
    return str(principal.username)  # type: ignore[attr-defined]


def test_password_sessions_end_when_a_process_starts_with_tokens_only(
    store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice", PASSWORD)
    key = b"k" * 32
    with Authenticator(store, clock=clock, sessions=SessionParameters(key)) as before:
        session = before.create_session(before.verify("alice", PASSWORD))
        before.verify_session(session)
    # Another process on the same database, started with the tokens-only policy.
    tokens_only = TokenStore(
        store.engine, pepper=Pepper(b"p" * 32), clock=clock, policy=Policy(password_logins=False)
    )
    with Authenticator(tokens_only, clock=clock, sessions=SessionParameters(key)) as after:
        with pytest.raises(SessionRevoked, match="password logins are disabled"):
            after.verify_session(session)
        with pytest.raises(PasswordLoginsDisabled):
            after.verify("alice", PASSWORD)


def test_password_logins_still_work_by_default(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("alice", PASSWORD)
    with Authenticator(store, clock=clock) as auth:
        assert auth.verify("alice", PASSWORD).method == "password"
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "wrong")


# -- revoking unused tokens --------------------------------------------------------------------


def test_tokens_unused_for_the_policy_days_are_revoked_and_refused(
    with_policy: WithPolicy, clock: FakeClock
) -> None:
    policy_store = with_policy(revoke_unused_after_days=30)
    policy_store.create_user("alice")
    never_used = policy_store.create_token("alice", comment="never used")
    used = policy_store.create_token("alice", comment="used")
    with Authenticator(policy_store, clock=clock, cache=CacheParameters(ttl_seconds=3600)) as auth:
        auth.verify_token(never_used.token)  # cached from now on
        clock.advance(20 * DAY)
        auth.verify_token(used.token)
        auth.flush_last_used()
        clock.advance(11 * DAY)
        # Both are 31 days old; one was last used 31 days ago, the other 11 days ago.
        assert [token.id for token in policy_store.revoke_unused(dry_run=True)] == [never_used.id]
        assert policy_store.list_tokens()[0].revoked_at is None  # a dry run changes nothing

        assert auth.revoke_unused() == 1

        # Through the normal revoke path: the cached verification is evicted at once.
        with pytest.raises(TokenRevoked):
            auth.verify_token(never_used.token)
        auth.verify_token(used.token)
        assert policy_store.revoke_unused() == []


def test_a_token_never_used_counts_from_its_creation(
    with_policy: WithPolicy, clock: FakeClock
) -> None:
    policy_store = with_policy(revoke_unused_after_days=30)
    policy_store.create_user("alice")
    old = policy_store.create_token("alice")
    clock.advance(29 * DAY)
    young = policy_store.create_token("alice")
    clock.advance(2 * DAY)

    assert [token.id for token in policy_store.revoke_unused()] == [old.id]
    statuses = {token.id: token.revoked_at is not None for token in policy_store.list_tokens()}
    assert statuses == {old.id: True, young.id: False}


def test_without_the_rule_nothing_is_revoked(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("alice")
    store.create_token("alice")
    clock.advance(10_000 * DAY)

    assert store.revoke_unused() == []
    with Authenticator(store, clock=clock) as auth:
        assert auth.revoke_unused() == 0


def test_a_long_running_authenticator_revokes_unused_tokens_in_the_background(
    with_policy: WithPolicy, clock: FakeClock
) -> None:
    policy_store = with_policy(revoke_unused_after_days=30)
    policy_store.create_user("alice")
    token = policy_store.create_token("alice")
    clock.advance(31 * DAY)
    with Authenticator(
        policy_store, clock=clock, background=True, tasks=TaskParameters(revoke_unused_seconds=0.05)
    ) as auth:
        deadline = time.monotonic() + 10
        while policy_store.list_tokens()[0].revoked_at is None:
            assert time.monotonic() < deadline, "not revoked by the background thread"
            time.sleep(0.05)  # waiting for a thread, not for expiry: the clock is fake
        with pytest.raises(TokenRevoked):
            auth.verify_token(token.token)
