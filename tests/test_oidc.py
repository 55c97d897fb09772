"""OIDC bearer JWTs through the authenticator, on SQLite and PostgreSQL, against an issuer whose
JWKS a test HTTP server publishes: what is accepted, what is refused, and when keys are fetched."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from oidc_issuer import AUDIENCE, Issuer
from test_interceptor import WHOAMI, _AioServer, _SyncServer

from e6auth import Settings
from e6auth.errors import (
    UNIFORM_REFUSAL,
    AuthenticationError,
    IdentityProviderUnavailable,
    InvalidBearerJwt,
    MalformedCredential,
    OidcTokenExpired,
    Throttled,
    UnknownUser,
    UserDisabled,
)
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.store import TokenStore
from e6auth.testing import FakeClock
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.oidc import NO_USER_ID, OidcVerifier, looks_like_jwt
from e6auth.verify.parameters import CacheParameters
from e6auth.verify.throttle import LoginThrottle, SlowdownLimit, ThrottleLimit

COOLDOWN = 30.0
JWKS_CACHE = 300.0
LEEWAY = 30.0
PEER = "192.0.2.7"


@pytest.fixture
def issuer(clock: FakeClock) -> Iterator[Issuer]:
    test_issuer = Issuer(clock=clock)
    try:
        yield test_issuer
    finally:
        test_issuer.close()


MakeAuth = Callable[..., Authenticator]


@pytest.fixture
def make_auth(store: TokenStore, clock: FakeClock, issuer: Issuer) -> Iterator[MakeAuth]:
    """Authenticators on the store with an OIDC verifier for ``issuer``: keywords starting with
    ``oidc_`` go to the verifier, the others to the authenticator."""
    made: list[Authenticator] = []

    def make(**options: Any) -> Authenticator:
        oidc_options: dict[str, Any] = {
            "jwks_url": issuer.jwks_url,
            "leeway_seconds": LEEWAY,
            "jwks_cache_seconds": JWKS_CACHE,
            "refetch_cooldown_seconds": COOLDOWN,
            "fetch_timeout_seconds": 2.0,
        }
        for name in [name for name in options if name.startswith("oidc_")]:
            oidc_options[name.removeprefix("oidc_")] = options.pop(name)
        verifier = OidcVerifier(issuer.url, AUDIENCE, clock=clock, **oidc_options)
        options.setdefault("cache", CacheParameters(ttl_seconds=60.0))
        authenticator = Authenticator(store, clock=clock, oidc=verifier, **options)
        made.append(authenticator)
        return authenticator

    yield make
    for authenticator in made:
        authenticator.close()


@pytest.fixture
def auth(make_auth: MakeAuth, store: TokenStore) -> Authenticator:
    store.create_user("alice")
    return make_auth()


def refused(auth: Authenticator, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as caught:
        auth.verify_token(token, peer=PEER)
    return caught.value


# -- accepted -----------------------------------------------------------------------------------


def test_a_jwt_of_the_issuer_names_a_user_of_the_store(
    auth: Authenticator, issuer: Issuer, store: TokenStore, clock: FakeClock
) -> None:
    token = issuer.token(sub="Alice")

    principal = auth.verify_token(token, peer=PEER)

    alice = store.find_user("alice")
    assert alice is not None
    assert (principal.username, principal.user_id, principal.method) == ("alice", alice.id, "oidc")
    assert principal.token_id is None
    assert principal.session_id is None
    assert principal.expires_at is not None
    assert principal.expires_at.timestamp() == int(clock()) + 300 + LEEWAY


def test_a_jwt_is_verified_once_then_served_from_the_cache(
    auth: Authenticator, issuer: Issuer
) -> None:
    token = issuer.token()
    for _ in range(5):
        auth.verify_token(token, peer=PEER)

    assert auth.cache is not None
    assert auth.cache.stats().loads == 1
    assert issuer.jwks_requests == 1


def test_the_cache_trusts_a_jwt_no_longer_than_its_expiry(
    auth: Authenticator, issuer: Issuer, clock: FakeClock
) -> None:
    token = issuer.token(exp=int(clock()) + 10)
    auth.verify_token(token, peer=PEER)

    clock.advance(10 + LEEWAY)  # within the cache TTL (60 s), past exp + leeway

    assert isinstance(refused(auth, token), OidcTokenExpired)


def test_ec_keys_work_too(auth: Authenticator, issuer: Issuer) -> None:
    issuer.rotate("ec1", kind="EC")

    assert auth.verify_token(issuer.token(), peer=PEER).username == "alice"


# -- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        pytest.param({"iss": "https://elsewhere.example"}, InvalidBearerJwt, id="wrong-issuer"),
        pytest.param({"aud": "another-app"}, InvalidBearerJwt, id="wrong-audience"),
        pytest.param({"aud": None}, InvalidBearerJwt, id="no-audience"),
        pytest.param({"exp": None}, InvalidBearerJwt, id="no-expiry"),
        pytest.param({"exp": "tomorrow"}, InvalidBearerJwt, id="expiry-not-a-number"),
        pytest.param({"exp": -1}, OidcTokenExpired, id="expired"),
        pytest.param({"nbf": +1}, InvalidBearerJwt, id="not-yet-valid"),
        pytest.param({"iat": +1}, InvalidBearerJwt, id="issued-in-the-future"),
        pytest.param({"sub": "bob"}, UnknownUser, id="unknown-user"),
        pytest.param({"sub": "not a name"}, UnknownUser, id="claim-no-user-name"),
        pytest.param({"sub": None}, UnknownUser, id="no-username-claim"),
    ],
)
def test_jwts_are_refused_for_what_is_wrong_with_them(
    auth: Authenticator,
    issuer: Issuer,
    clock: FakeClock,
    claims: dict[str, Any],
    error: type[AuthenticationError],
) -> None:
    # Times are relative to now, beyond the leeway either way.
    claims, now = dict(claims), int(clock())
    for name in ("exp", "nbf", "iat"):
        if isinstance(claims.get(name), int):
            claims[name] = now + claims[name] * int(LEEWAY + 5)

    caught = refused(auth, issuer.token(**claims))

    assert type(caught) is error
    assert caught.grpc_status == "UNAUTHENTICATED"
    expected = "token expired" if error is OidcTokenExpired else UNIFORM_REFUSAL
    assert caught.client_message() == expected


def test_the_leeway_allows_a_little_clock_skew(
    auth: Authenticator, issuer: Issuer, clock: FakeClock
) -> None:
    now = int(clock())
    token = issuer.token(nbf=now + 10, iat=now + 10, exp=now - 10)

    assert auth.verify_token(token, peer=PEER).username == "alice"


def test_a_signature_by_another_key_with_a_known_key_id_is_refused(
    auth: Authenticator, issuer: Issuer
) -> None:
    impostor = Issuer(clock=issuer.clock)
    try:
        token = impostor.token(iss=issuer.url)  # same kid "k1", another private key
    finally:
        impostor.close()

    assert type(refused(auth, token)) is InvalidBearerJwt


def test_alg_none_is_refused_without_fetching_keys(auth: Authenticator, issuer: Issuer) -> None:
    token = issuer.forged({"alg": "none", "typ": "JWT", "kid": "k1"})
    assert looks_like_jwt(token)

    assert type(refused(auth, token)) is InvalidBearerJwt
    assert issuer.jwks_requests == 0


def test_hs256_signed_with_the_public_key_is_refused(auth: Authenticator, issuer: Issuer) -> None:
    # The RS256/HS256 confusion: the public key (which anyone may read) used as an HMAC secret.
    token = issuer.forged({"alg": "HS256", "typ": "JWT", "kid": "k1"}, issuer.public_pem())

    assert type(refused(auth, token)) is InvalidBearerJwt


def test_an_rs256_header_on_an_ec_key_is_refused(auth: Authenticator, issuer: Issuer) -> None:
    issuer.rotate("ec1", kind="EC")
    token = issuer.forged({"alg": "RS256", "kid": "ec1"}, b"x" * 32)

    assert type(refused(auth, token)) is InvalidBearerJwt


def test_garbage_shaped_like_a_jwt_is_refused_uniformly(auth: Authenticator) -> None:
    for junk in ("a.b.c", "e30.e30.", "!!!.???.***"):
        caught = refused(auth, junk)
        assert caught.client_message() == UNIFORM_REFUSAL


def test_without_oidc_a_jwt_is_refused_like_any_string_that_is_no_token(
    store: TokenStore, clock: FakeClock, issuer: Issuer
) -> None:
    store.create_user("alice")
    auth = Authenticator(store, clock=clock)

    caught = refused(auth, issuer.token())

    assert isinstance(caught, MalformedCredential)
    assert caught.client_message() == UNIFORM_REFUSAL
    assert issuer.jwks_requests == 0


# -- users --------------------------------------------------------------------------------------


def test_a_disabled_user_is_refused_and_a_cached_jwt_stops_working(
    auth: Authenticator, issuer: Issuer, store: TokenStore
) -> None:
    token = issuer.token()
    auth.verify_token(token, peer=PEER)

    store.disable_user("alice")

    caught = refused(auth, token)
    assert type(caught) is UserDisabled
    assert caught.client_message() == "user disabled"


def test_the_username_claim_is_configurable(
    make_auth: MakeAuth, issuer: Issuer, store: TokenStore
) -> None:
    store.create_user("alice@example.com")
    auth = make_auth(oidc_username_claim="email")

    principal = auth.verify_token(
        issuer.token(sub="00u1a2b3c4", email="Alice@Example.COM", email_verified=True), peer=PEER
    )
    assert principal.username == "alice@example.com"

    unverified = issuer.token(email="alice@example.com", email_verified=False)
    assert type(refused(auth, unverified)) is UnknownUser
    assert type(refused(auth, issuer.token(email=None))) is UnknownUser


def test_without_require_user_any_name_the_issuer_vouches_for_is_accepted(
    make_auth: MakeAuth, issuer: Issuer
) -> None:
    auth = make_auth(oidc_require_user=False)

    principal = auth.verify_token(issuer.token(sub="carol"), peer=PEER)

    assert (principal.username, principal.user_id, principal.method) == (
        "carol",
        NO_USER_ID,
        "oidc",
    )


# -- keys: rotation, cooldown, outages ----------------------------------------------------------


def test_an_unknown_key_id_refetches_once_then_is_refused(
    auth: Authenticator, issuer: Issuer, clock: FakeClock
) -> None:
    auth.verify_token(issuer.token(), peer=PEER)
    assert issuer.jwks_requests == 1
    clock.advance(COOLDOWN)
    issuer.add_key("unpublished")

    assert type(refused(auth, issuer.token(kid="unpublished"))) is InvalidBearerJwt
    assert issuer.jwks_requests == 2
    # Within the cooldown, unknown key ids (of any JWT) are refused without a fetch.
    for _ in range(5):
        refused(auth, issuer.token(kid="unpublished", sub="alice", jti=str(_)))
        refused(auth, issuer.forged({"alg": "RS256", "kid": f"random{_}"}, b"k" * 32))
    assert issuer.jwks_requests == 2


def test_a_rotated_key_is_accepted_after_a_refetch_and_the_cooldown_is_honoured(
    auth: Authenticator, issuer: Issuer, clock: FakeClock
) -> None:
    old = issuer.token()
    auth.verify_token(old, peer=PEER)
    issuer.rotate("k2")
    new = issuer.token()

    clock.advance(COOLDOWN / 2)  # the last fetch is too recent
    assert type(refused(auth, new)) is InvalidBearerJwt
    assert issuer.jwks_requests == 1

    clock.advance(COOLDOWN / 2)
    assert auth.verify_token(new, peer=PEER).username == "alice"
    assert issuer.jwks_requests == 2
    # Both keys are published: JWTs signed with the old one go on working.
    assert auth.verify_token(issuer.token(kid="k1", jti="fresh"), peer=PEER).username == "alice"
    assert issuer.jwks_requests == 2


def test_keys_are_fetched_again_after_their_cache_time(
    auth: Authenticator, issuer: Issuer, clock: FakeClock
) -> None:
    auth.verify_token(issuer.token(), peer=PEER)
    clock.advance(JWKS_CACHE)

    auth.verify_token(issuer.token(jti="another"), peer=PEER)

    assert issuer.jwks_requests == 2


def test_an_unreachable_jwks_is_unavailable_not_a_refusal(
    auth: Authenticator, issuer: Issuer, clock: FakeClock
) -> None:
    issuer.status = 503

    with pytest.raises(IdentityProviderUnavailable) as caught:
        auth.verify_token(issuer.token(), peer=PEER)
    assert caught.value.grpc_status == "UNAVAILABLE"
    assert caught.value.client_message() == "identity provider unavailable"
    # Not hammered: within the cooldown, no new attempt.
    with pytest.raises(IdentityProviderUnavailable):
        auth.verify_token(issuer.token(jti="2"), peer=PEER)
    assert issuer.jwks_requests == 1

    issuer.status = 200
    clock.advance(COOLDOWN)
    assert auth.verify_token(issuer.token(jti="3"), peer=PEER).username == "alice"


def test_cached_keys_keep_working_while_the_jwks_is_down(
    auth: Authenticator, issuer: Issuer, clock: FakeClock
) -> None:
    auth.verify_token(issuer.token(), peer=PEER)
    issuer.close()  # connection refused from now on
    clock.advance(JWKS_CACHE + 1)

    # A JWT never seen, signed with a key fetched before: accepted.
    assert auth.verify_token(issuer.token(jti="new"), peer=PEER).username == "alice"
    # A key id never seen: the keys cannot be refetched, so that is no refusal.
    issuer.add_key("k9")
    with pytest.raises(IdentityProviderUnavailable):
        auth.verify_token(issuer.token(kid="k9"), peer=PEER)


def test_a_hanging_jwks_endpoint_times_out(
    make_auth: MakeAuth, issuer: Issuer, store: TokenStore
) -> None:
    store.create_user("alice")
    auth = make_auth(oidc_fetch_timeout_seconds=0.3)
    issuer.hang_seconds = 3.0

    started = time.monotonic()
    with pytest.raises(IdentityProviderUnavailable):
        auth.verify_token(issuer.token(), peer=PEER)

    assert time.monotonic() - started < 2.0


def test_the_jwks_url_is_discovered_from_the_issuer(
    make_auth: MakeAuth, issuer: Issuer, store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice")
    auth = make_auth(oidc_jwks_url=None)

    auth.verify_token(issuer.token(), peer=PEER)
    clock.advance(JWKS_CACHE)
    auth.verify_token(issuer.token(jti="again"), peer=PEER)

    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 2)


def test_a_discovery_document_for_another_issuer_is_not_trusted(
    make_auth: MakeAuth, issuer: Issuer, store: TokenStore
) -> None:
    store.create_user("alice")
    auth = make_auth(oidc_jwks_url=None)
    issuer.discovery_issuer = "https://evil.example"

    with pytest.raises(IdentityProviderUnavailable):
        auth.verify_token(issuer.token(), peer=PEER)
    assert issuer.jwks_requests == 0


# -- throttling ---------------------------------------------------------------------------------


def test_refused_jwts_count_against_the_address(
    make_auth: MakeAuth, issuer: Issuer, store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice")
    throttle = LoginThrottle(
        address=ThrottleLimit(3, 60.0, 60.0), user=SlowdownLimit(0, 60.0, 60.0), clock=clock
    )
    auth = make_auth(throttle=throttle)
    for attempt in range(3):
        refused(auth, issuer.token(aud="another-app", jti=str(attempt)))

    with pytest.raises(Throttled):
        auth.verify_token(issuer.token(aud="another-app", jti="again"), peer=PEER)
    # A valid JWT is let through the blocked address; another address is not blocked.
    assert auth.verify_token(issuer.token(), peer=PEER).username == "alice"
    assert auth.verify_token(issuer.token(), peer="198.51.100.1").username == "alice"


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithms", [["none"], ["HS256"], ["RS256", "HS512"], []])
def test_settings_refuse_symmetric_and_none_algorithms(
    algorithms: list[str], tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="oidc_algorithms"):
        Settings(
            home=tmp_path,
            oidc_issuer="https://id.example",
            oidc_audience="x",
            oidc_algorithms=algorithms,
        )


def test_settings_need_an_audience_with_an_issuer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="oidc_audience"):
        Settings(home=tmp_path, oidc_issuer="https://id.example")


def test_settings_build_the_verifier_only_with_an_issuer(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).build_oidc_verifier() is None
    verifier = Settings(
        home=tmp_path,
        oidc_issuer="https://id.example",
        oidc_audience="gw",
        oidc_username_claim="email",
    ).build_oidc_verifier()
    assert verifier is not None
    assert (verifier.issuer, verifier.audience, verifier.username_claim) == (
        "https://id.example",
        "gw",
        "email",
    )
    assert verifier.algorithms == ("RS256", "ES256")


# -- secrets ------------------------------------------------------------------------------------


def test_no_jwt_reaches_a_log_line_or_an_error(
    auth: Authenticator, issuer: Issuer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    impostor = Issuer(clock=clock)
    impostor.close()
    jwts = [
        issuer.token(),
        issuer.token(exp=int(clock()) - 3600),
        issuer.token(aud="another-app"),
        issuer.token(sub="nobody"),
        impostor.token(iss=issuer.url),
        issuer.forged({"alg": "HS256", "kid": "k1"}, issuer.public_pem()),
        issuer.forged({"alg": "RS256", "kid": "k1"}, b"k" * 32)[:-3] + "%%%",
    ]
    texts: list[str] = []
    principal = auth.verify_token(jwts[0], peer=PEER)
    texts.append(repr(principal))
    for token in jwts[1:]:
        error = refused(auth, token)
        texts += [str(error), repr(error), error.client_message(), repr(error.__cause__)]
    issuer.close()
    issuer.add_key("k9")
    clock.advance(JWKS_CACHE)
    with pytest.raises(IdentityProviderUnavailable) as unavailable:
        auth.verify_token(issuer.token(kid="k9"), peer=PEER)
    texts += [str(unavailable.value), repr(unavailable.value.__cause__)]
    texts += [record.getMessage() for record in caplog.records]

    everything = "\n".join(texts)
    for token in jwts:
        assert token not in everything
        assert token.rsplit(".", 1)[1] not in everything


# -- over gRPC ----------------------------------------------------------------------------------


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
def test_the_interceptor_maps_oidc_outcomes_to_statuses(
    auth: Authenticator, issuer: Issuer, clock: FakeClock, aio: bool
) -> None:
    server = _AioServer(auth) if aio else _SyncServer(auth)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub: grpc.UnaryUnaryMultiCallable[pb.GetSchemaNamesV2Request, bytes] = channel.unary_unary(
        WHOAMI, request_serializer=pb.GetSchemaNamesV2Request.SerializeToString
    )

    def call(token: str) -> bytes:
        metadata = (("authorization", f"Bearer {token}"),)
        response: bytes = stub(pb.GetSchemaNamesV2Request(), metadata=metadata)
        return response

    def status(token: str) -> tuple[grpc.StatusCode, str | None]:
        with pytest.raises(grpc.RpcError) as caught:
            call(token)
        return caught.value.code(), caught.value.details()

    try:
        assert call(issuer.token()) == b"alice|oidc|None"
        assert status(issuer.token(exp=int(clock()) - 3600)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "token expired",
        )
        assert status(issuer.token(aud="another-app")) == (
            grpc.StatusCode.UNAUTHENTICATED,
            UNIFORM_REFUSAL,
        )
        issuer.close()
        issuer.add_key("k9")
        clock.advance(COOLDOWN)  # past the cooldown: the unknown key makes a fetch, which fails
        assert status(issuer.token(kid="k9")) == (
            grpc.StatusCode.UNAVAILABLE,
            "identity provider unavailable",
        )
    finally:
        channel.close()
        server.stop()
