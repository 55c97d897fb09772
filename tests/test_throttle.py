"""Brute-force throttling: the counters themselves, the authenticator on SQLite and PostgreSQL,
a real gRPC gateway, and the real e6data connector seeing RESOURCE_EXHAUSTED."""

from __future__ import annotations

import contextlib
import secrets
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import event

# The connector test's helpers: the same `e6auth serve` process and the same connector worker.
from test_connector import Connector, assert_error, demo_connection
from test_connector import Gateway as ServeProcess
from test_interceptor import WHOAMI, _AioServer, _SyncServer

from e6auth import Authenticator, Settings, TokenStore
from e6auth.credentials.passwords import Passwords
from e6auth.credentials.tokens import ALPHABET, CHECKSUM_LENGTH, PREFIX, SECRET_LENGTH
from e6auth.errors import (
    InvalidPassword,
    InvalidTokenSecret,
    MalformedCredential,
    SessionError,
    StoreUnavailable,
    Throttled,
    TokenExpired,
    TokenOwnerMismatch,
    UnknownUser,
)
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.refusals import RETRY_AFTER
from e6auth.grpc.server import Gateway, build_gateway
from e6auth.store import NewToken
from e6auth.testing import FAST_ARGON2, FAST_ARGON2_SETTINGS, FakeClock, count_queries, memory_store
from e6auth.verify.parameters import CacheParameters, SessionParameters
from e6auth.verify.throttle import LoginThrottle, SlowdownLimit, ThrottleLimit, counts_as_failure

PASSWORD = "correct horse battery staple"
ATTACKER = "203.0.113.66"
ELSEWHERE = "198.51.100.7"
# Small limits keep the tests short; the defaults are checked on their own.
ADDRESS = ThrottleLimit(failures=6, window_seconds=180.0, block_seconds=600.0)
USER = SlowdownLimit(failures=3, window_seconds=300.0, max_delay_seconds=8.0)


class CountingPasswords(Passwords):
    """The real argon2 hasher, counting its verifications."""

    def __init__(self) -> None:
        super().__init__(FAST_ARGON2)
        self.verifications = 0

    def verify(self, encoded_hash: str | None, password: str) -> bool:
        self.verifications += 1
        return super().verify(encoded_hash, password)


# -- the counters ------------------------------------------------------------------------------


def test_the_defaults_are_gitlabs_per_address_and_a_slowdown_per_name(clock: FakeClock) -> None:
    throttle = LoginThrottle(clock=clock)
    for _ in range(29):
        throttle.failed(ATTACKER)
    throttle.check(ATTACKER)
    throttle.failed(ATTACKER)
    with pytest.raises(Throttled):
        throttle.check(ATTACKER)

    for _ in range(9):
        throttle.failed(ELSEWHERE, "alice")
    throttle.end(throttle.begin(ELSEWHERE, "alice"), failed=True)
    with pytest.raises(Throttled) as refused:
        throttle.begin(ELSEWHERE, "alice")
    assert refused.value.retry_after_seconds == 1
    throttle.end(throttle.begin("192.0.2.1", "alice"), failed=False)  # a clean address
    limit = SlowdownLimit(10, 900.0, 300.0)
    assert [limit.delay(failures) for failures in (9, 10, 11, 18, 19, 10_000)] == [
        0,
        1,
        2,
        256,
        300,
        300,
    ]


def test_an_address_is_blocked_at_the_limit_for_the_block_period(clock: FakeClock) -> None:
    throttle = LoginThrottle(address=ADDRESS, user=USER, clock=clock)
    for _ in range(ADDRESS.failures - 1):
        throttle.failed(ATTACKER)
        throttle.check(ATTACKER)
    throttle.failed(ATTACKER)

    with pytest.raises(Throttled) as refused:
        throttle.check(ATTACKER)
    assert refused.value.retry_after_seconds == 600
    assert refused.value.client_message() == "too many failed attempts; retry in 600 s"
    assert refused.value.grpc_status == "RESOURCE_EXHAUSTED"
    assert refused.value.reason == "throttled"
    throttle.check(ELSEWHERE)  # others are not affected

    clock.advance(599.5)
    with pytest.raises(Throttled) as refused:
        throttle.check(ATTACKER)
    assert refused.value.retry_after_seconds == 1  # rounded up, never 0
    clock.advance(0.5)
    throttle.check(ATTACKER)
    # A fresh window after the block: one failure does not block again.
    throttle.failed(ATTACKER)
    throttle.check(ATTACKER)


def test_failures_spread_over_more_than_a_window_never_block(clock: FakeClock) -> None:
    throttle = LoginThrottle(address=ADDRESS, user=USER, clock=clock)
    for _ in range(4):
        for _ in range(ADDRESS.failures - 1):
            throttle.failed(ATTACKER)
            clock.advance(1)
        clock.advance(ADDRESS.window_seconds)
    throttle.check(ATTACKER)


def test_user_names_are_counted_only_when_given_and_case_insensitively(clock: FakeClock) -> None:
    throttle = LoginThrottle(address=ADDRESS, user=USER, clock=clock)
    for number in range(USER.failures):
        throttle.failed(f"192.0.2.{number}", "Alice" if number % 2 else "ALICE")
    throttle.failed(ELSEWHERE)  # no name: a token attempt

    with pytest.raises(Throttled) as refused:
        throttle.begin(ELSEWHERE, "alice")
    assert refused.value.retry_after_seconds == 1
    throttle.check(ELSEWHERE)
    throttle.end(throttle.begin(ELSEWHERE, "bob"), failed=False)
    clock.advance(1)
    throttle.end(throttle.begin(ELSEWHERE, "alice"), failed=False)


def test_invalid_user_names_are_throttled_like_valid_ones(clock: FakeClock) -> None:
    throttle = LoginThrottle(address=ADDRESS, user=USER, clock=clock)
    name = "not a name; it may be a password"
    for number in range(USER.failures):
        throttle.failed(f"192.0.2.{number}", name)
    with pytest.raises(Throttled):
        throttle.begin("192.0.2.0", name)
    throttle.end(throttle.begin("192.0.2.0", name + "!"), failed=False)


def test_an_ipv6_64_counts_as_one_address_and_mapped_ipv4_as_ipv4(clock: FakeClock) -> None:
    throttle = LoginThrottle(address=ADDRESS, user=USER, clock=clock)
    for number in range(ADDRESS.failures):
        throttle.failed(f"2001:db8:1:2::{number + 1:x}")
    with pytest.raises(Throttled):
        throttle.check("2001:db8:1:2:ffff::1")
    throttle.check("2001:db8:1:3::1")

    for _ in range(ADDRESS.failures):
        throttle.failed("::ffff:192.0.2.9")
    with pytest.raises(Throttled):
        throttle.check("192.0.2.9")


def test_a_zero_limit_turns_that_limit_off(clock: FakeClock) -> None:
    throttle = LoginThrottle(
        address=ThrottleLimit(0, 180.0, 600.0), user=SlowdownLimit(0, 300.0, 600.0), clock=clock
    )
    for _ in range(1000):
        throttle.failed(ATTACKER, "alice")
    throttle.check(ATTACKER)
    throttle.end(throttle.begin(ATTACKER, "alice"), failed=True)
    assert throttle.tracked == (0, 0)
    assert Settings(throttle_address_failures=0, throttle_user_failures=0).build_throttle() is None


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E6AUTH_THROTTLE_USER_FAILURES", "0")
    monkeypatch.setenv("E6AUTH_THROTTLE_ADDRESS_FAILURES", "5")
    monkeypatch.setenv("E6AUTH_THROTTLE_USER_MAX_DELAY_SECONDS", "60")
    monkeypatch.setenv("E6AUTH_THROTTLE_CLEAN_AFTER_SECONDS", "3600")
    settings = Settings()
    assert (settings.throttle_user_failures, settings.throttle_address_failures) == (0, 5)
    assert settings.throttle_address_window_seconds == 180.0
    assert settings.throttle_user_max_delay_seconds == 60.0
    assert settings.throttle_clean_after_seconds == 3600.0
    assert settings.build_throttle() is not None


def test_parallel_attempts_cannot_all_slip_through_one_opening(clock: FakeClock) -> None:
    """The slot is taken when an attempt starts; a clean address's exemption is held while its
    attempt runs: a burst of parallel guesses gets one of them verified."""
    throttle = LoginThrottle(address=ADDRESS, user=USER, clock=clock)
    for _ in range(USER.failures):
        throttle.failed(ATTACKER, "alice")
    clock.advance(1)
    first = throttle.begin(ATTACKER, "alice")
    with pytest.raises(Throttled) as refused:
        throttle.begin(ATTACKER, "alice")
    assert refused.value.retry_after_seconds == 2
    throttle.end(first, failed=True)

    exempt = throttle.begin("192.0.2.10", "alice")
    with pytest.raises(Throttled):
        throttle.begin("192.0.2.10", "alice")
    throttle.end(exempt, failed=False)  # the right password: the address stays clean
    throttle.end(throttle.begin("192.0.2.10", "alice"), failed=False)


def test_an_address_that_failed_is_clean_again_after_the_clean_period(clock: FakeClock) -> None:
    throttle = LoginThrottle(
        address=ADDRESS, user=SlowdownLimit(3, 3600.0, 8.0), clean_after_seconds=600, clock=clock
    )
    for _ in range(3):
        throttle.failed(ATTACKER, "alice")
    clock.advance(599)
    throttle.failed(ELSEWHERE, "alice")  # the name stays slowed down: next slot at 601
    with pytest.raises(Throttled):
        throttle.begin(ATTACKER, "alice")
    clock.advance(1)
    throttle.end(throttle.begin(ATTACKER, "alice"), failed=False)
    with pytest.raises(Throttled):
        throttle.begin(ELSEWHERE, "alice")


def test_memory_stays_bounded_under_many_distinct_addresses_and_names(clock: FakeClock) -> None:
    throttle = LoginThrottle(address=ADDRESS, user=USER, max_tracked=500, clock=clock)
    for number in range(5_000):
        throttle.failed(f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}", f"u{number}")
    assert throttle.tracked == (500, 500)
    # The newest counters are the ones kept: the last address is one failure from its limit.
    last = "10.0.19.135"
    for _ in range(ADDRESS.failures - 1):
        throttle.failed(last)
    with pytest.raises(Throttled):
        throttle.check(last)


def test_which_refusals_count() -> None:
    assert counts_as_failure(InvalidPassword("x"))
    assert counts_as_failure(UnknownUser("x"))
    assert counts_as_failure(InvalidTokenSecret("x"))
    assert counts_as_failure(MalformedCredential("x"))
    assert counts_as_failure(SessionError("x"))
    assert not counts_as_failure(TokenExpired("x"))
    assert not counts_as_failure(StoreUnavailable("x"))
    assert not counts_as_failure(Throttled("x"))


# -- the authenticator, on SQLite and PostgreSQL -----------------------------------------------


@pytest.fixture
def passwords() -> CountingPasswords:
    return CountingPasswords()


@pytest.fixture
def counted_store(
    store_url: str, clock: FakeClock, passwords: CountingPasswords
) -> Iterator[TokenStore]:
    token_store = memory_store(clock=clock, url=store_url, passwords=passwords)
    token_store.create_user("alice", PASSWORD)
    token_store.create_user("bob", "bobs password")
    try:
        yield token_store
    finally:
        token_store.close()


@pytest.fixture
def throttle(clock: FakeClock) -> LoginThrottle:
    return LoginThrottle(address=ADDRESS, user=USER, clock=clock)


@pytest.fixture
def auth(
    counted_store: TokenStore, clock: FakeClock, throttle: LoginThrottle
) -> Iterator[Authenticator]:
    authenticator = Authenticator(
        counted_store,
        clock=clock,
        sessions=SessionParameters(secrets.token_bytes(32)),
        throttle=throttle,
    )
    yield authenticator
    authenticator.close()


@pytest.fixture
def token(counted_store: TokenStore) -> NewToken:
    return counted_store.create_token("alice")


def test_a_throttled_password_attempt_costs_no_hash_and_no_store_read(
    auth: Authenticator, counted_store: TokenStore, passwords: CountingPasswords
) -> None:
    for _ in range(USER.failures):
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "guess", peer=ATTACKER)
    assert passwords.verifications == USER.failures

    with count_queries(counted_store.engine) as queries, pytest.raises(Throttled) as refused:
        auth.verify("alice", PASSWORD, peer=ATTACKER)  # even the right password, from there
    assert passwords.verifications == USER.failures
    assert queries.count == 0
    assert refused.value.retry_after_seconds == 1


def test_the_attacked_user_still_logs_in_with_a_token_from_anywhere(
    auth: Authenticator, token: NewToken
) -> None:
    for _ in range(USER.failures):
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "guess", peer=ATTACKER)
    with pytest.raises(Throttled):
        auth.verify("alice", "guess", peer=ATTACKER)

    assert auth.verify("alice", token.token, peer=ELSEWHERE).username == "alice"
    # From the attacker's address as well, until that address reaches its own limit.
    assert auth.verify("alice", token.token, peer=ATTACKER).username == "alice"
    assert auth.verify_token(token.token, peer=ATTACKER).username == "alice"
    # And bob's password is none of this name's business.
    assert auth.verify("bob", "bobs password", peer=ATTACKER).username == "bob"


def test_the_right_password_from_a_clean_address_gets_in_at_once_whatever_the_guessing(
    auth: Authenticator, passwords: CountingPasswords
) -> None:
    """Guesses at alice's name from one address slow that address down, not alice: from
    addresses with no failures of their own she signs in at once, on both paths."""
    for _ in range(USER.failures * 3):
        with contextlib.suppress(InvalidPassword, Throttled):
            auth.verify("alice", "guess", peer=ATTACKER)
    assert auth.verify("alice", PASSWORD, peer=ELSEWHERE).username == "alice"
    assert auth.verify_password("alice", PASSWORD, peer="192.0.2.1").username == "alice"
    assert auth.verify("alice", PASSWORD, peer="2001:db8:7::1").username == "alice"


def test_a_name_under_attack_is_slowed_down_with_a_growing_delay_never_blocked(
    counted_store: TokenStore, passwords: CountingPasswords, clock: FakeClock
) -> None:
    """From an address that failed, each password attempt at a name with too many failures
    waits: refused with a retry hint (no hash, no read, no thread held) until a delay that
    doubles with each further failure, up to a cap. Refused attempts do not grow it."""
    throttle = LoginThrottle(address=ThrottleLimit(100, 180.0, 600.0), user=USER, clock=clock)
    auth = Authenticator(counted_store, clock=clock, throttle=throttle)
    for _ in range(USER.failures):
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "guess", peer=ATTACKER)
    hashed = passwords.verifications
    waits = []
    for _ in range(6):
        with count_queries(counted_store.engine) as queries, pytest.raises(Throttled) as refused:
            auth.verify("alice", PASSWORD, peer=ATTACKER)
        assert queries.count == 0
        with pytest.raises(Throttled) as again:  # hammering changes nothing
            auth.verify("alice", "guess", peer=ATTACKER)
        assert again.value.retry_after_seconds == refused.value.retry_after_seconds
        waits.append(refused.value.retry_after_seconds)
        clock.advance(refused.value.retry_after_seconds)
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "guess", peer=ATTACKER)
    assert passwords.verifications == hashed + 6
    assert waits == [1, 2, 4, 8, 8, 8]
    # The right password, from the guessing address too, gets in once the delay is over.
    with pytest.raises(Throttled):
        auth.verify("alice", PASSWORD, peer=ATTACKER)
    clock.advance(8)
    try:
        assert auth.verify("alice", PASSWORD, peer=ATTACKER).username == "alice"
    finally:
        auth.close()


def test_rotating_addresses_buys_one_guess_per_address_and_ipv6_48_per_clean_period(
    auth: Authenticator, passwords: CountingPasswords
) -> None:
    """The clean-address exemption is what a guesser rotating addresses would use: each
    address (IPv4, or an IPv6 /48: a /64 is too cheap to come by) gets one guess past the
    slowdown, then is slowed down like any other that failed."""
    for _ in range(USER.failures):
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "guess", peer=ATTACKER)
    for fresh in ("192.0.2.10", "2001:db8:1:1::1"):
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "guess", peer=fresh)
    hashed = passwords.verifications
    for used in ("192.0.2.10", "2001:db8:1:1::1", "2001:db8:1:ffff::2"):
        with pytest.raises(Throttled):
            auth.verify("alice", "guess", peer=used)
    assert passwords.verifications == hashed


def test_an_address_spraying_many_users_is_blocked_for_passwords_not_for_valid_tokens(
    auth: Authenticator, token: NewToken, clock: FakeClock
) -> None:
    for number in range(ADDRESS.failures):
        with pytest.raises(UnknownUser):
            auth.verify(f"user{number}", "guess", peer=ATTACKER)

    with pytest.raises(Throttled):
        auth.verify("alice", PASSWORD, peer=ATTACKER)
    assert auth.verify("alice", token.token, peer=ATTACKER).username == "alice"
    assert auth.verify("alice", PASSWORD, peer=ELSEWHERE).username == "alice"

    clock.advance(ADDRESS.block_seconds)
    assert auth.verify("alice", PASSWORD, peer=ATTACKER).username == "alice"


def test_a_proven_token_logs_in_from_a_blocked_address_and_misuse_still_counts(
    auth: Authenticator, counted_store: TokenStore, token: NewToken
) -> None:
    """A handshake with a token the cache holds is answered before the throttle, as a bearer hit
    is; presenting it as another user goes the full way, is refused and counts."""
    assert auth.verify("alice", token.token, peer=ELSEWHERE).username == "alice"  # cached now
    counted_store.create_user("mallory")
    for _ in range(ADDRESS.failures):
        with pytest.raises(TokenOwnerMismatch):
            auth.verify("mallory", token.token, peer=ATTACKER)
    with count_queries(counted_store.engine) as queries:
        assert auth.verify("alice", token.token, peer=ATTACKER).username == "alice"
    assert queries.count == 0
    with pytest.raises(Throttled):
        auth.verify("mallory", token.token, peer=ATTACKER)
    with pytest.raises(Throttled):
        auth.verify("alice", PASSWORD, peer=ATTACKER)


def test_failed_bearer_tokens_block_the_address_and_cost_at_most_one_read_each(
    auth: Authenticator, counted_store: TokenStore, token: NewToken
) -> None:
    assert auth.verify_token(token.token, peer=ATTACKER).username == "alice"  # cached now
    for _ in range(ADDRESS.failures // 2):
        with pytest.raises(InvalidTokenSecret):
            auth.verify_token(_same_id(token.id), peer=lambda: ATTACKER)
        with pytest.raises(MalformedCredential):
            auth.verify_token("e6pat_garbage", peer=ATTACKER)

    with count_queries(counted_store.engine) as queries:
        with pytest.raises(Throttled):
            auth.verify_token("junk", peer=ATTACKER)
        # An already proven token is a cache hit: the throttle is not consulted on that path.
        assert auth.verify_token(token.token, peer=ATTACKER).username == "alice"
    assert queries.count == 0
    # A guess with a valid checksum is looked up (one read and an HMAC, what it costs from any
    # address) so that a valid token is never refused for its address's sake; it is refused.
    with count_queries(counted_store.engine) as queries, pytest.raises(Throttled):
        auth.verify_token(_same_id(token.id), peer=ATTACKER)
    assert queries.count == 1
    # Not proven yet, from the blocked address (before this change: refused as throttled).
    second = counted_store.create_token("alice")
    assert auth.verify_token(second.token, peer=ATTACKER).username == "alice"


def test_forged_session_ids_block_the_address(auth: Authenticator, token: NewToken) -> None:
    session = auth.create_session(auth.verify("alice", token.token, peer=ELSEWHERE))
    for number in range(ADDRESS.failures):
        with pytest.raises(SessionError):
            auth.verify_session(f"forged.session.{number}", peer=ATTACKER)
    with pytest.raises(Throttled):
        auth.verify_session("forged.session.again", peer=ATTACKER)
    assert auth.verify_session(session, peer=ELSEWHERE).username == "alice"


def test_a_valid_token_or_session_gets_through_a_blocked_address(
    counted_store: TokenStore, clock: FakeClock, throttle: LoginThrottle, token: NewToken
) -> None:
    """Nothing is cached here: each valid credential is checked in full (its HMAC, one store
    read) from an address that guessing has blocked, and gets in. Passwords and guesses from
    that address stay refused, the passwords before any hash."""
    auth = Authenticator(
        counted_store,
        clock=clock,
        sessions=SessionParameters(secrets.token_bytes(32)),
        throttle=throttle,
        cache=CacheParameters(ttl_seconds=0, password_ttl_seconds=0),
    )
    try:
        session = auth.create_session(auth.verify("alice", token.token, peer=ELSEWHERE))
        for number in range(ADDRESS.failures):
            with pytest.raises(UnknownUser):
                auth.verify(f"user{number}", "guess", peer=ATTACKER)
        with pytest.raises(Throttled):
            auth.verify("alice", "guess", peer=ATTACKER)

        assert auth.verify("alice", token.token, peer=ATTACKER).username == "alice"  # handshake
        assert auth.verify_token(token.token, peer=lambda: ATTACKER).username == "alice"  # bearer
        assert auth.verify_session(session, peer=ATTACKER).username == "alice"

        # What fails from there is still answered as throttled, and counts for nothing more.
        with pytest.raises(Throttled):
            auth.verify_token(_same_id(token.id), peer=ATTACKER)
        with pytest.raises(Throttled):
            auth.verify("alice", _same_id(token.id), peer=ATTACKER)
        with pytest.raises(Throttled):
            auth.verify_session("forged.session.id", peer=ATTACKER)
        # Malformed tokens are refused before any store read, as before.
        with count_queries(counted_store.engine) as queries, pytest.raises(Throttled):
            auth.verify_token("e6pat_garbage", peer=ATTACKER)
        assert queries.count == 0
    finally:
        auth.close()


def test_refusals_after_the_secret_was_proven_do_not_count(
    auth: Authenticator, counted_store: TokenStore, clock: FakeClock
) -> None:
    expiring = counted_store.create_token("alice", expires_days=1)
    clock.advance(2 * 86_400)
    for _ in range(ADDRESS.failures * 2):
        with pytest.raises(TokenExpired):
            auth.verify_token(expiring.token, peer=ATTACKER)


def test_an_unreachable_store_does_not_count_as_failures(
    auth: Authenticator, counted_store: TokenStore
) -> None:
    driver_error = counted_store.engine.dialect.loaded_dbapi.OperationalError

    def refuse_connections(*_args: object) -> None:
        raise driver_error("connection refused")

    # The database goes away: every new connection fails, as when the server is down.
    event.listen(counted_store.engine, "do_connect", refuse_connections)
    counted_store.engine.dispose()
    try:
        for _ in range(ADDRESS.failures * 2):
            with pytest.raises(StoreUnavailable):
                auth.verify("alice", "guess", peer=ATTACKER)
            with pytest.raises(StoreUnavailable):
                auth.verify_token(_same_id("A" * 12), peer=ATTACKER)
    finally:
        event.remove(counted_store.engine, "do_connect", refuse_connections)


def test_without_a_throttle_nothing_is_counted(counted_store: TokenStore, clock: FakeClock) -> None:
    auth = Authenticator(counted_store, clock=clock)
    try:
        for _ in range(ADDRESS.failures * 2):
            with pytest.raises(InvalidPassword):
                auth.verify("alice", "guess", peer=ATTACKER)
        assert auth.throttle is None
    finally:
        auth.close()


def _same_id(token_id: str) -> str:
    """A guess at a token: its id, another secret, and a valid checksum."""
    body = f"{PREFIX}{token_id}_" + "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    number, digits = zlib.crc32(body.encode("ascii")), []
    for _ in range(CHECKSUM_LENGTH):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return body + "".join(reversed(digits))


# -- over real gRPC ------------------------------------------------------------------------------


def _start_gateway(
    home: Path, clock: FakeClock, throttle: LoginThrottle
) -> tuple[Gateway, TokenStore]:
    """A gateway on IPv4 and IPv6 loopback, so that a test has two peer addresses."""
    settings = Settings(home=home, host="[::]", port=0, **FAST_ARGON2_SETTINGS)
    store = TokenStore.from_settings(settings, clock=clock)
    store.create_user("alice", PASSWORD)
    auth = Authenticator(
        store, clock=clock, sessions=SessionParameters(secrets.token_bytes(32)), throttle=throttle
    )
    return build_gateway(settings, authenticator=auth), store


@pytest.fixture
def gateway(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[Gateway, TokenStore]]:
    """A gateway with the tests' small limits."""
    throttle = LoginThrottle(address=ADDRESS, user=USER, clock=clock)
    started, store = _start_gateway(tmp_path / "home", clock, throttle)
    try:
        yield started, store
    finally:
        started.stop()


@pytest.fixture
def default_gateway(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[Gateway, TokenStore]]:
    """A gateway with the default limits: 30 failures per address, 10 per name."""
    started, store = _start_gateway(tmp_path / "home", clock, LoginThrottle(clock=clock))
    try:
        yield started, store
    finally:
        started.stop()


def _stub(port: int, host: str) -> tuple[grpc.Channel, QueryEngineServiceStub]:
    channel = grpc.insecure_channel(f"{host}:{port}")
    return channel, QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]


def _refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def test_the_gateway_answers_resource_exhausted_with_a_retry_hint(
    gateway: tuple[Gateway, TokenStore], clock: FakeClock
) -> None:
    server, store = gateway
    token = store.create_token("alice").token
    attacker_channel, attacker = _stub(server.port, "127.0.0.1")
    user_channel, user = _stub(server.port, "[::1]")
    try:

        def guess() -> Any:
            return attacker.authenticate(pb.AuthenticateRequest(user="alice", password="guess"))

        for _ in range(USER.failures):
            assert _refusal(guess).code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        refused: Any = _refusal(guess)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == "too many failed attempts; retry in 1 s"
        assert (RETRY_AFTER, "1") in tuple(refused.trailing_metadata())

        # The real user's token logins go on, from elsewhere and from the same address.
        for stub in (user, attacker):
            answer = stub.authenticate(pb.AuthenticateRequest(user="alice", password=token))
            assert answer.sessionId
        # Her password: at once from a clean address, from the guessing one after the delay.
        assert user.authenticate(pb.AuthenticateRequest(user="alice", password=PASSWORD)).sessionId
        clock.advance(USER.max_delay_seconds)
        answer = attacker.authenticate(pb.AuthenticateRequest(user="alice", password=PASSWORD))
        assert answer.sessionId
    finally:
        attacker_channel.close()
        user_channel.close()


def test_after_30_failures_from_an_address_a_valid_token_still_logs_in_from_there(
    default_gateway: tuple[Gateway, TokenStore],
) -> None:
    """The issue's case over a real gateway: a guesser behind a NAT blocks the NAT's address;
    a colleague behind the same NAT logs in with a token no one has used yet."""
    server, store = default_gateway
    nat_channel, nat = _stub(server.port, "127.0.0.1")
    try:
        for number in range(30):
            guess = pb.AuthenticateRequest(user=f"user{number}", password="guess")
            refused: Any = _refusal(lambda: nat.authenticate(guess))  # noqa: B023
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        refused = _refusal(lambda: nat.authenticate(pb.AuthenticateRequest(user="alice")))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        forged = (("authorization", f"Bearer {_same_id('A' * 12)}"),)
        schemas = pb.GetSchemaNamesV2Request(catalog="default")
        refused = _refusal(lambda: nat.getSchemaNamesV2(schemas, metadata=forged))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        token = store.create_token("alice").token
        session = nat.authenticate(pb.AuthenticateRequest(user="alice", password=token)).sessionId
        assert session
        with_session = pb.GetSchemaNamesV2Request(catalog="default", sessionId=session)
        assert list(nat.getSchemaNamesV2(with_session).schemas)
        bearer = store.create_token("alice").token  # a bearer call, uncached too
        answer = nat.getSchemaNamesV2(schemas, metadata=(("authorization", f"Bearer {bearer}"),))
        assert list(answer.schemas)
    finally:
        nat_channel.close()


def test_after_10_wrong_passwords_from_one_address_alice_gets_in_at_once_from_another(
    default_gateway: tuple[Gateway, TokenStore],
) -> None:
    server, _store = default_gateway
    a_channel, a = _stub(server.port, "127.0.0.1")
    b_channel, b = _stub(server.port, "[::1]")
    try:
        wrong = pb.AuthenticateRequest(user="alice", password="guess")
        for _ in range(10):
            refused: Any = _refusal(lambda: a.authenticate(wrong))
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        refused = _refusal(lambda: a.authenticate(wrong))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (RETRY_AFTER, "1") in tuple(refused.trailing_metadata())

        right = pb.AuthenticateRequest(user="alice", password=PASSWORD)
        session = b.authenticate(right).sessionId  # no waiting: B has no failures
        assert session
        with_session = pb.GetSchemaNamesV2Request(catalog="default", sessionId=session)
        assert list(b.getSchemaNamesV2(with_session).schemas)
    finally:
        a_channel.close()
        b_channel.close()


def test_failed_bearer_calls_through_the_interceptor_block_the_address(
    gateway: tuple[Gateway, TokenStore],
) -> None:
    server, store = gateway
    token = store.create_token("alice")
    attacker_channel, attacker = _stub(server.port, "127.0.0.1")
    user_channel, user = _stub(server.port, "[::1]")
    request = pb.GetSchemaNamesV2Request(catalog="default")
    try:
        for _ in range(ADDRESS.failures):
            refused: Any = _refusal(
                lambda: attacker.getSchemaNamesV2(
                    request, metadata=(("authorization", f"Bearer {_same_id(token.id)}"),)
                )
            )
            assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        refused = _refusal(
            lambda: attacker.getSchemaNamesV2(
                request, metadata=(("authorization", f"Bearer {_same_id(token.id)}"),)
            )
        )
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused.details() == "too many failed attempts; retry in 600 s"
        assert (RETRY_AFTER, "600") in tuple(refused.trailing_metadata())

        # The valid token works from both addresses, the blocked one included.
        for stub in (user, attacker):
            answer = stub.getSchemaNamesV2(
                request, metadata=(("authorization", f"Bearer {token.token}"),)
            )
            assert list(answer.schemas)
    finally:
        attacker_channel.close()
        user_channel.close()


@pytest.fixture(params=[False, True], ids=["sync", "aio"])
def own_service(
    request: pytest.FixtureRequest, clock: FakeClock
) -> Iterator[tuple[grpc.Channel, TokenStore]]:
    """The interceptor in front of a small service of the interceptor tests, sync and grpc.aio."""
    store = memory_store(clock=clock)
    store.create_user("alice", PASSWORD)
    auth = Authenticator(
        store,
        clock=clock,
        sessions=SessionParameters(secrets.token_bytes(32)),
        throttle=LoginThrottle(address=ADDRESS, user=USER, clock=clock),
    )
    server = _AioServer(auth) if request.param else _SyncServer(auth)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield channel, store
    finally:
        channel.close()
        server.stop()
        auth.close()


def test_both_interceptors_answer_a_blocked_address_with_a_retry_hint(
    own_service: tuple[grpc.Channel, TokenStore], clock: FakeClock
) -> None:
    channel, store = own_service
    token = store.create_token("alice")
    whoami = channel.unary_unary(
        WHOAMI, request_serializer=pb.GetSchemaNamesV2Request.SerializeToString
    )

    def call(bearer: str) -> Any:
        return whoami(
            pb.GetSchemaNamesV2Request(), metadata=(("authorization", f"Bearer {bearer}"),)
        )

    for _ in range(ADDRESS.failures):
        refused: Any = _refusal(lambda: call(_same_id(token.id)))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    refused = _refusal(lambda: call(_same_id(token.id)))
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.details() == "too many failed attempts; retry in 600 s"
    assert (RETRY_AFTER, "600") in tuple(refused.trailing_metadata())
    assert call(token.token).startswith(b"alice|token|")  # a valid token is let through

    clock.advance(ADDRESS.block_seconds)
    refused = _refusal(lambda: call(_same_id(token.id)))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


# -- the real connector --------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_the_connector_surfaces_the_throttled_error_and_token_logins_go_on(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    settings = Settings(
        home=home,
        **FAST_ARGON2_SETTINGS,
    )
    store = TokenStore.from_settings(settings)
    try:
        store.create_user("alice", PASSWORD)
        token = store.create_token("alice").token
    finally:
        store.close()
    served = ServeProcess(home, ("--demo",), {"E6AUTH_THROTTLE_USER_FAILURES": "3"})
    connector = Connector()
    try:
        guessing = demo_connection(connector, served, username="alice", password="guess")
        # The connector may authenticate more than once per failed statement (closing a cursor
        # that never ran logs in too): refusals until the limit, then the throttled answer.
        # The slowdown's first delay is 1 s of real time: a slow machine may let a guess or
        # two through after it, so the guessing goes on until one is refused as throttled.
        answers = []
        for _ in range(12):
            answers.append(connector.execute(guessing, "SELECT 1"))
            if not answers[-1]["ok"] and answers[-1]["error"]["code"] == "RESOURCE_EXHAUSTED":
                break
        codes = [answer["error"]["code"] for answer in answers if not answer["ok"]]
        assert len(codes) == len(answers) >= 2, answers
        assert codes[0] == "UNAUTHENTICATED"
        assert codes[-1] == "RESOURCE_EXHAUSTED"
        assert codes == sorted(codes, key=lambda code: code == "RESOURCE_EXHAUSTED")
        throttled = answers[-1]["error"]["details"]
        assert throttled.startswith("too many failed attempts; retry in "), throttled
        assert_error(answers[0], "UNAUTHENTICATED", "invalid credentials")

        with_token = demo_connection(connector, served, username="alice", password=token)
        assert connector.rows(with_token, "SELECT 1") == [[1]]
        assert served.log.has("slowing down password logins of alice")
        assert "guess" not in served.log.text
    finally:
        connector.close()
        served.stop()
