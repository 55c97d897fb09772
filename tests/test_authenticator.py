"""The verify pipeline on SQLite and PostgreSQL: what is accepted, what is refused and how."""

from __future__ import annotations

import datetime as dt
import secrets
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import argon2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e6auth.credentials.keys import Pepper
from e6auth.credentials.passwords import Argon2Parameters, Passwords
from e6auth.credentials.tokens import (
    ALPHABET,
    PREFIX,
    generate_token,
    looks_like_token,
    parse_token,
)
from e6auth.errors import (
    UNIFORM_REFUSAL,
    AuthenticationError,
    CredentialTooLong,
    InvalidPassword,
    InvalidTokenSecret,
    MalformedCredential,
    PasswordLoginsDisabled,
    SessionRevoked,
    Throttled,
    TokenExpired,
    TokenOwnerMismatch,
    TokenRevoked,
    UnknownToken,
    UnknownUser,
    UserDisabled,
)
from e6auth.store import NewToken, TokenStore
from e6auth.testing import FakeClock, count_queries, memory_store
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.parameters import CacheParameters, SessionParameters
from e6auth.verify.policy import Policy
from e6auth.verify.sessions import SessionSigner
from e6auth.verify.throttle import LoginThrottle, SlowdownLimit, ThrottleLimit

PASSWORD = "correct horse battery staple"
FAST_HASH_PREFIX = "$argon2id$v=19$m=64,t=1,p=1$"
DAY = 86_400

# Hypothesis reuses one store per test function across examples: that is what we want here
# (the data under test is made once), so the function-scoped fixture check does not apply.
EXAMPLES = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(params=["cached", "uncached"])
def auth(
    request: pytest.FixtureRequest, store: TokenStore, clock: FakeClock
) -> Iterator[Authenticator]:
    """An authenticator with and without its verification cache: every rule below must hold
    either way, a cache hit included."""
    ttl = 300.0 if request.param == "cached" else 0.0
    authenticator = Authenticator(
        store, clock=clock, cache=CacheParameters(ttl_seconds=ttl, password_ttl_seconds=ttl)
    )
    yield authenticator
    authenticator.close()


@pytest.fixture
def alice(store: TokenStore) -> NewToken:
    """User alice with a password and one token; user bob with a password and no token."""
    store.create_user("alice", PASSWORD)
    store.create_user("bob", "bobs password")
    return store.create_token("alice", comment="laptop")


@dataclass
class Argon2Spy:
    verified: list[str]


@pytest.fixture
def argon2_spy(monkeypatch: pytest.MonkeyPatch) -> Argon2Spy:
    """Records the hash of every argon2 verify (patched on the class: PasswordHasher has slots)."""
    spy = Argon2Spy([])
    real_verify = argon2.PasswordHasher.verify

    def verify(self: argon2.PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        spy.verified.append(hash if isinstance(hash, str) else hash.decode())
        return real_verify(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", verify)
    return spy


def _checksummed(body: str) -> str:
    """``body`` with a valid checksum, computed independently of e6auth.credentials.tokens."""
    number, digits = zlib.crc32(body.encode("ascii")), []
    for _ in range(6):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return body + "".join(reversed(digits))


def _forged(token_id: str, secret: str) -> str:
    return _checksummed(f"{PREFIX}{token_id}_{secret}")


# -- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["alice", "ALICE", "Alice"])
def test_token_login_with_the_user_name_in_any_case(
    auth: Authenticator, alice: NewToken, username: str
) -> None:
    principal = auth.verify(username, alice.token, peer="10.0.0.1")

    assert principal.username == "alice"
    assert principal.method == "token"
    assert principal.token_id == alice.id
    assert principal.expires_at is None
    assert principal.password_generation is None


def test_bare_token(auth: Authenticator, alice: NewToken) -> None:
    principal = auth.verify_token(alice.token)
    assert (principal.username, principal.token_id) == ("alice", alice.id)


def test_password_login(auth: Authenticator, store: TokenStore, alice: NewToken) -> None:
    principal = auth.verify("Alice", PASSWORD)

    assert principal.username == "alice"
    assert principal.method == "password"
    assert principal.token_id is None
    user = store.find_user("alice")
    assert user is not None
    assert principal.user_id == user.id
    assert principal.password_generation == 0

    store.set_password("alice", "a new password")
    assert auth.verify("alice", "a new password").password_generation == 1
    with pytest.raises(InvalidPassword):
        auth.verify("alice", PASSWORD)


def test_a_cached_token_verify_makes_no_query(
    store: TokenStore, clock: FakeClock, alice: NewToken
) -> None:
    with Authenticator(store, clock=clock, cache=CacheParameters(ttl_seconds=60)) as auth:
        auth.verify_token(alice.token)

        with count_queries(store.engine) as queries:
            auth.verify("alice", alice.token)
            auth.verify_token(alice.token)

    # No store read, and no write either: last-used times are batched elsewhere.
    assert queries.statements == []


# -- refused before the secret is proven -------------------------------------------------------


def test_token_of_another_user(auth: Authenticator, alice: NewToken) -> None:
    with pytest.raises(TokenOwnerMismatch) as caught:
        auth.verify("bob", alice.token)
    assert alice.id in str(caught.value)
    with pytest.raises(TokenOwnerMismatch):
        auth.verify("nobody", alice.token)
    with pytest.raises(TokenOwnerMismatch):
        auth.verify("not a user name", alice.token)


def test_wrong_password(auth: Authenticator, alice: NewToken) -> None:
    with pytest.raises(InvalidPassword):
        auth.verify("alice", PASSWORD + "!")
    with pytest.raises(InvalidPassword):
        auth.verify("alice", "")
    with pytest.raises(InvalidPassword):
        auth.verify("bob", PASSWORD)


@pytest.mark.parametrize("username", ["carol", "Carol@Example.com", "not a name", "x'; drop--", ""])
def test_unknown_user_costs_an_argon2_verify(
    auth: Authenticator, alice: NewToken, argon2_spy: Argon2Spy, username: str
) -> None:
    with pytest.raises(UnknownUser):
        auth.verify(username, PASSWORD)

    # A dummy hash with the store's parameters was checked: the refusal took as long as for a
    # known user.
    assert len(argon2_spy.verified) == 1
    assert argon2_spy.verified[0].startswith(FAST_HASH_PREFIX)


def test_known_user_costs_the_same_argon2_verify(
    auth: Authenticator, alice: NewToken, argon2_spy: Argon2Spy
) -> None:
    with pytest.raises(InvalidPassword):
        auth.verify("alice", "wrong")
    assert len(argon2_spy.verified) == 1
    assert argon2_spy.verified[0].startswith(FAST_HASH_PREFIX)


def test_password_login_of_a_user_without_password(
    auth: Authenticator, store: TokenStore, argon2_spy: Argon2Spy
) -> None:
    store.create_user("robot")
    with pytest.raises(InvalidPassword):
        auth.verify("robot", PASSWORD)
    assert len(argon2_spy.verified) == 1


def test_too_long_password(auth: Authenticator, alice: NewToken) -> None:
    with pytest.raises(CredentialTooLong):
        auth.verify("alice", "p" * 5000)


def test_token_with_a_wrong_secret(auth: Authenticator, alice: NewToken) -> None:
    other_secret = generate_token()[0].secret
    with pytest.raises(InvalidTokenSecret):
        auth.verify_token(_forged(alice.id, other_secret))
    with pytest.raises(InvalidTokenSecret):
        auth.verify("alice", _forged(alice.id, other_secret))


def test_unknown_token(auth: Authenticator, alice: NewToken) -> None:
    _, token = generate_token()
    with pytest.raises(UnknownToken):
        auth.verify_token(token)
    with pytest.raises(UnknownToken):
        auth.verify("alice", token)


def test_token_with_a_typo_is_malformed_not_a_password(
    auth: Authenticator, alice: NewToken, argon2_spy: Argon2Spy
) -> None:
    typo = alice.token[:20] + ("a" if alice.token[20] != "a" else "b") + alice.token[21:]
    with pytest.raises(MalformedCredential):
        auth.verify("alice", typo)
    assert argon2_spy.verified == []


# -- refused after the secret is proven --------------------------------------------------------


def test_disabled_user_is_refused_on_the_very_next_verify(
    auth: Authenticator, store: TokenStore, alice: NewToken
) -> None:
    # Verified (and, with the cache, cached) first: the disable must still take effect at once.
    auth.verify("alice", alice.token)
    auth.verify("alice", PASSWORD)

    store.disable_user("alice")

    with pytest.raises(UserDisabled):
        auth.verify("alice", alice.token)
    with pytest.raises(UserDisabled):
        auth.verify_token(alice.token)
    with pytest.raises(UserDisabled):
        auth.verify("alice", PASSWORD)
    # A disabled user with the wrong password learns nothing more than anyone else.
    with pytest.raises(InvalidPassword):
        auth.verify("alice", "wrong")

    store.enable_user("alice")
    assert auth.verify("alice", alice.token).username == "alice"
    assert auth.verify("alice", PASSWORD).username == "alice"


def test_deleted_token_is_revoked_on_the_very_next_verify(
    auth: Authenticator, store: TokenStore, alice: NewToken
) -> None:
    other = store.create_token("alice")
    auth.verify("alice", alice.token)
    auth.verify("alice", other.token)

    store.delete_tokens([alice.id])

    with pytest.raises(TokenRevoked):
        auth.verify("alice", alice.token)
    with pytest.raises(TokenRevoked):
        auth.verify_token(alice.token)
    assert auth.verify("alice", other.token).token_id == other.id


def test_changes_by_another_process_are_refused_after_one_poll(
    auth: Authenticator, store: TokenStore, clock: FakeClock, alice: NewToken
) -> None:
    bobs = store.create_token("bob")
    auth.verify("alice", alice.token)
    auth.verify("bob", bobs.token)
    # The command line: another TokenStore on the same database, whose changes this process's
    # store does not announce; only the invalidation log carries them.
    command_line = TokenStore(
        store.engine, pepper=Pepper(secrets.token_bytes(32)), passwords=store.passwords, clock=clock
    )
    command_line.delete_tokens([alice.id])
    command_line.disable_user("bob")

    auth.poll_invalidations()

    with pytest.raises(TokenRevoked):
        auth.verify("alice", alice.token)
    with pytest.raises(UserDisabled):
        auth.verify("bob", bobs.token)


def test_expiry_is_exact_to_the_second(
    auth: Authenticator, store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice")
    clock.advance(0.5)
    new = store.create_token("alice", expires_days=1)
    assert new.expires_at is not None
    expires = new.expires_at.timestamp()

    clock.advance(expires - 1 - clock())
    assert clock() == expires - 1
    principal = auth.verify("alice", new.token)
    assert principal.expires_at == new.expires_at

    # Still good a hair before: refusal is at the second, not a second early.
    clock.advance(0.999)
    assert auth.verify_token(new.token).token_id == new.id

    clock.advance(expires - clock())
    assert clock() == expires
    with pytest.raises(TokenExpired):
        auth.verify("alice", new.token)
    with pytest.raises(TokenExpired):
        auth.verify_token(new.token)
    clock.advance(DAY)
    with pytest.raises(TokenExpired):
        auth.verify_token(new.token)


def test_revoked_beats_expired_and_both_beat_disabled(
    auth: Authenticator, store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice")
    revoked = store.create_token("alice", expires_days=1)
    expired = store.create_token("alice", expires_days=1)
    store.delete_tokens([revoked.id])
    store.disable_user("alice")
    clock.advance(2 * DAY)

    with pytest.raises(TokenRevoked):
        auth.verify_token(revoked.token)
    with pytest.raises(TokenExpired):
        auth.verify_token(expired.token)


# -- what callers and logs are told ------------------------------------------------------------


@dataclass
class Refusals:
    errors: dict[str, AuthenticationError]
    secrets: list[str]
    """Every password, token and token secret the attempts used."""


def _refusals(auth: Authenticator, store: TokenStore, clock: FakeClock) -> Refusals:
    """One refusal of each kind, from real verifies."""
    store.create_user("alice", PASSWORD)
    store.create_user("bob", "bobs password")
    store.create_user("dave", PASSWORD)
    good = store.create_token("alice")
    revoked = store.create_token("alice")
    expiring = store.create_token("alice", expires_days=1)
    of_dave = store.create_token("dave")
    store.delete_tokens([revoked.id])
    store.disable_user("dave")
    clock.advance(DAY)
    typo = good.token[:-1] + ("x" if good.token[-1] != "x" else "y")
    unknown = generate_token()[1]
    wrong_secret = _forged(good.id, generate_token()[0].secret)
    tokens = [good.token, typo, unknown, wrong_secret, revoked.token, expiring.token, of_dave.token]
    attempts: dict[str, Callable[[], object]] = {
        "malformed": lambda: auth.verify_token(good.token[:-1] + "!"),
        "checksum": lambda: auth.verify("alice", typo),
        "too_long": lambda: auth.verify("alice", PASSWORD * 100),
        "unknown_token": lambda: auth.verify_token(unknown),
        "bad_token_secret": lambda: auth.verify_token(wrong_secret),
        "wrong_owner": lambda: auth.verify("bob", good.token),
        "unknown_user": lambda: auth.verify("carol", PASSWORD),
        "bad_password": lambda: auth.verify("alice", "not " + PASSWORD),
        "expired": lambda: auth.verify_token(expiring.token),
        "revoked": lambda: auth.verify_token(revoked.token),
        "user_disabled": lambda: auth.verify("dave", PASSWORD),
        "user_disabled_token": lambda: auth.verify_token(of_dave.token),
    }
    refusals: dict[str, AuthenticationError] = {}
    for name, attempt in attempts.items():
        with pytest.raises(AuthenticationError) as caught:
            attempt()
        refusals[name] = caught.value
    used = [PASSWORD, "bobs password", "not " + PASSWORD]
    used += tokens + [token[len(PREFIX) + 13 : -6] for token in tokens]
    return Refusals(refusals, used)


PRE_PROOF = {
    "malformed": MalformedCredential,
    "checksum": MalformedCredential,
    "too_long": CredentialTooLong,
    "unknown_token": UnknownToken,
    "bad_token_secret": InvalidTokenSecret,
    "wrong_owner": TokenOwnerMismatch,
    "unknown_user": UnknownUser,
    "bad_password": InvalidPassword,
}
POST_PROOF = {
    "expired": (TokenExpired, "token expired"),
    "revoked": (TokenRevoked, "token revoked"),
    "user_disabled": (UserDisabled, "user disabled"),
    "user_disabled_token": (UserDisabled, "user disabled"),
}


def test_refusals_before_proof_all_look_the_same_outside(
    auth: Authenticator, store: TokenStore, clock: FakeClock
) -> None:
    refusals = _refusals(auth, store, clock).errors

    for name, kind in PRE_PROOF.items():
        error = refusals[name]
        assert type(error) is kind, name
        # A client must not learn whether the user or the token exists.
        assert error.public_message == UNIFORM_REFUSAL == "invalid credentials", name
        assert error.grpc_status == "UNAUTHENTICATED", name
    assert len({refusals[name].reason for name in PRE_PROOF}) == len(PRE_PROOF) - 1


def test_refusals_after_proof_say_what_happened(
    auth: Authenticator, store: TokenStore, clock: FakeClock
) -> None:
    refusals = _refusals(auth, store, clock).errors

    for name, (kind, message) in POST_PROOF.items():
        error = refusals[name]
        assert type(error) is kind, name
        assert error.public_message == message, name
        assert error.grpc_status == "UNAUTHENTICATED", name


def test_no_refusal_shows_a_secret(
    auth: Authenticator, store: TokenStore, clock: FakeClock
) -> None:
    refusals = _refusals(auth, store, clock)
    assert len(refusals.secrets) > 10

    for name, error in refusals.errors.items():
        chained: BaseException | None = error
        while chained is not None:
            texts = [str(chained), repr(chained), *(str(arg) for arg in chained.args)]
            for text in texts:
                assert "e6pat_" not in text, (name, text)
                for secret in refusals.secrets:
                    assert secret not in text, (name, text)
            chained = chained.__cause__ or chained.__context__


# -- re-hashing --------------------------------------------------------------------------------


def test_password_is_rehashed_after_a_good_login_when_parameters_change(
    store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice", PASSWORD)
    old = store.find_user("alice")
    assert old is not None
    assert old.password_hash is not None
    assert old.password_hash.startswith(FAST_HASH_PREFIX)
    # The same database, opened by a process configured with other parameters.
    stronger = Passwords(Argon2Parameters(memory_kib=128, time_cost=2, parallelism=1))
    upgraded_store = TokenStore(
        store.engine, pepper=Pepper(secrets.token_bytes(32)), passwords=stronger, clock=clock
    )
    auth = Authenticator(upgraded_store, clock=clock)

    with pytest.raises(InvalidPassword):
        auth.verify("alice", "wrong")
    unchanged = store.find_user("alice")
    assert unchanged is not None
    assert unchanged.password_hash == old.password_hash  # only a good login may re-hash

    principal = auth.verify("alice", PASSWORD)

    new = store.find_user("alice")
    assert new is not None
    assert new.password_hash is not None
    assert new.password_hash != old.password_hash
    assert new.password_hash.startswith("$argon2id$v=19$m=128,t=2,p=1$")
    # Re-hashing the same password is not a password change: sessions bound to it live on.
    assert new.password_generation == old.password_generation == principal.password_generation
    assert auth.verify("alice", PASSWORD).username == "alice"
    again = store.find_user("alice")
    assert again is not None
    assert again.password_hash == new.password_hash  # once is enough


def test_no_rehash_when_parameters_are_current(auth: Authenticator, store: TokenStore) -> None:
    store.create_user("alice", PASSWORD)
    before = store.find_user("alice")

    auth.verify("alice", PASSWORD)

    after = store.find_user("alice")
    assert before is not None
    assert after is not None
    assert after.password_hash == before.password_hash


# -- random and mutated input ------------------------------------------------------------------


@EXAMPLES
@given(text=st.text(max_size=80))
def test_random_strings_are_refused_without_a_query(
    auth: Authenticator, store: TokenStore, alice: NewToken, text: str
) -> None:
    with count_queries(store.engine) as queries, pytest.raises(MalformedCredential):
        auth.verify_token(text)
    assert queries.count == 0


@EXAMPLES
@given(position=st.integers(0, len(generate_token()[1]) - 1), replacement=st.characters())
def test_mutated_tokens_are_refused_without_a_query(
    auth: Authenticator, store: TokenStore, alice: NewToken, position: int, replacement: str
) -> None:
    token = alice.token
    mutated = token[:position] + replacement + token[position + 1 :]
    if mutated == token:
        return
    with count_queries(store.engine) as queries:
        with pytest.raises(MalformedCredential):
            auth.verify_token(mutated)
        # The handshake: a token-shaped secret with a typo is a bad token, not a password.
        if looks_like_token(mutated):
            with pytest.raises(MalformedCredential):
                auth.verify("alice", mutated)
    assert queries.statements == []


@EXAMPLES
@given(
    id_position=st.integers(0, 11),
    secret_position=st.integers(0, 31),
    char=st.sampled_from(ALPHABET),
    keep_id=st.booleans(),
)
def test_well_formed_forgeries_are_refused(
    auth: Authenticator,
    alice: NewToken,
    id_position: int,
    secret_position: int,
    char: str,
    keep_id: bool,
) -> None:
    # A forger who can compute checksums gets past the shape check, and no further.
    secret = parse_token(alice.token).secret
    forged_secret = secret[:secret_position] + char + secret[secret_position + 1 :]
    forged_id = alice.id if keep_id else alice.id[:id_position] + char + alice.id[id_position + 1 :]
    forged = _forged(forged_id, forged_secret)
    if forged == alice.token:
        return
    expected = InvalidTokenSecret if forged_id == alice.id else UnknownToken

    with pytest.raises(expected):
        auth.verify_token(forged)
    with pytest.raises(expected):
        auth.verify("alice", forged)


def test_the_real_token_still_works_after_forgeries(auth: Authenticator, alice: NewToken) -> None:
    # Failed attempts on a token id must not lock out or poison the cache for its owner.
    for char in "0aZ":
        forged = _forged(alice.id, char * 32)
        with pytest.raises(InvalidTokenSecret):
            auth.verify_token(forged)
    assert auth.verify("alice", alice.token).token_id == alice.id


def test_principal_expiry_is_utc(auth: Authenticator, store: TokenStore) -> None:
    store.create_user("alice")
    new = store.create_token("alice", expires_days=30)
    principal = auth.verify_token(new.token)
    assert principal.expires_at is not None
    assert principal.expires_at.utcoffset() == dt.timedelta(0)


# -- password-only sign-in (the web page's) ------------------------------------------------------


def test_verify_password_takes_a_password_and_never_a_token(
    auth: Authenticator, store: TokenStore, alice: NewToken
) -> None:
    store.set_admin("alice", True)
    principal = auth.verify_password("ALICE", PASSWORD, peer="10.0.0.1")
    assert (principal.username, principal.method, principal.admin) == ("alice", "password", True)

    with pytest.raises(InvalidPassword) as refused:
        auth.verify_password("alice", alice.token)
    assert refused.value.public_message == UNIFORM_REFUSAL
    with pytest.raises(InvalidPassword):
        auth.verify_password("alice", "not her password")
    with pytest.raises(UnknownUser):
        auth.verify_password("nobody", PASSWORD)


def test_verify_password_counts_with_the_handshakes_throttle(
    store: TokenStore, clock: FakeClock, alice: NewToken
) -> None:
    throttle = LoginThrottle(
        address=ThrottleLimit(3, 60, 600), user=SlowdownLimit(100, 60, 600), clock=clock
    )
    auth = Authenticator(store, clock=clock, throttle=throttle)
    try:
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "wrong", peer="10.0.0.9")  # a handshake
        with pytest.raises(InvalidPassword):
            auth.verify_password("alice", alice.token, peer="10.0.0.9")  # a token on the page
        with pytest.raises(InvalidPassword):
            auth.verify_password("alice", "wrong", peer="10.0.0.9")
        # Blocked now for passwords, on either path, before any store read or hash.
        with pytest.raises(Throttled):
            auth.verify_password("alice", PASSWORD, peer="10.0.0.9")
        with pytest.raises(Throttled):
            auth.verify("alice", PASSWORD, peer="10.0.0.9")
        # A valid token is let through a blocked address.
        assert auth.verify("alice", alice.token, peer="10.0.0.9").username == "alice"
    finally:
        auth.close()


def test_verify_password_obeys_a_tokens_only_policy(clock: FakeClock) -> None:
    store = memory_store(clock=clock, policy=Policy(password_logins=False))
    store.create_user("alice", PASSWORD)
    auth = Authenticator(store, clock=clock)
    try:
        with pytest.raises(PasswordLoginsDisabled):
            auth.verify_password("alice", PASSWORD)
    finally:
        auth.close()


def test_a_password_session_is_rechecked_in_the_store(
    store: TokenStore, clock: FakeClock, alice: NewToken
) -> None:
    auth = Authenticator(store, clock=clock, sessions=SessionParameters(secrets.token_bytes(32)))
    signer = SessionSigner(secrets.token_bytes(32), clock=clock, audience="test")
    try:
        user = store.find_user("alice")
        assert user is not None
        _, claims = signer.issue(
            username=user.name,
            user_id=user.id,
            method="password",
            password_generation=user.password_generation,
        )
        assert auth.password_session(claims).admin is False
        store.set_admin("alice", True)
        assert auth.password_session(claims).admin is True  # read on every check
        store.disable_user("alice")
        with pytest.raises(SessionRevoked):
            auth.password_session(claims)
        store.enable_user("alice")
        store.set_password("alice", "another password")
        with pytest.raises(SessionRevoked):
            auth.password_session(claims)
    finally:
        auth.close()
