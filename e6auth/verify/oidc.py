"""OIDC bearer tokens: JWTs from one configured issuer, checked against the keys it publishes.

This is the e6data connector's OAuth mode (``access_token=``, or client credentials): every call
carries ``authorization: Bearer <JWT>``. :class:`OidcVerifier` proves that a JWT was signed by the
issuer for this audience and is within its lifetime, and names the user it is for; the
authenticator then looks the user up (unless ``require_user`` is off) and caches the result like
a token, so that a JWT is verified once, not on every call.

Keys come from the issuer's JWKS document, fetched and parsed by PyJWT's ``PyJWKClient`` (bounded
timeout, no redirects, http(s) only). :class:`JwksKeys` keeps them and decides when to fetch again
on the injected clock, because ``PyJWKClient``'s own cache and cooldown read ``time.monotonic``
and give up cached keys when a refresh fails; here they keep working through an outage.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from e6auth.clock import Clock
from e6auth.credentials.usernames import normalize_username
from e6auth.defaults import (
    DEFAULT_ALGORITHMS,
    DEFAULT_FETCH_TIMEOUT_SECONDS,
    DEFAULT_JWKS_CACHE_SECONDS,
    DEFAULT_LEEWAY_SECONDS,
    DEFAULT_REFETCH_COOLDOWN_SECONDS,
    DEFAULT_USERNAME_CLAIM,
)
from e6auth.errors import (
    IdentityProviderUnavailable,
    InvalidBearerJwt,
    InvalidUsername,
    OidcTokenExpired,
    UnknownUser,
)

if TYPE_CHECKING:
    from jwt import PyJWK

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEFAULT_FETCH_TIMEOUT_SECONDS",
    "DEFAULT_JWKS_CACHE_SECONDS",
    "DEFAULT_LEEWAY_SECONDS",
    "DEFAULT_REFETCH_COOLDOWN_SECONDS",
    "DEFAULT_USERNAME_CLAIM",
    "NO_USER_ID",
    "JwksKeys",
    "OidcIdentity",
    "OidcVerifier",
    "check_algorithms",
    "looks_like_jwt",
]

log = logging.getLogger("e6auth.oidc")

MAX_JWT_LENGTH = 8192
NO_USER_ID = 0
"""The ``user_id`` of an OIDC principal when users need not exist in the store (ids start at 1)."""
DISCOVERY_PATH = "/.well-known/openid-configuration"

# Asymmetric algorithms only: an HMAC "key" taken from a JWKS or a public key would let anyone who
# can read it sign tokens (the classic RS256/HS256 confusion); "none" signs nothing.
ALLOWED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

# A compact JWS: three base64url parts. The signature may be empty, so that an "alg": "none"
# token reaches the verifier and is refused there for what it is.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", re.ASCII)
_MAX_DETAIL = 64


def looks_like_jwt(text: str) -> bool:
    """Whether ``text`` has a compact JWT's shape (no decoding, no I/O)."""
    return len(text) <= MAX_JWT_LENGTH and _JWT_SHAPE.fullmatch(text) is not None


def check_algorithms(algorithms: Iterable[str]) -> tuple[str, ...]:
    """``algorithms`` if every one is an asymmetric JWS algorithm, else ValueError."""
    chosen = tuple(algorithms)
    if not chosen:
        raise ValueError("at least one algorithm is needed")
    refused = [name for name in chosen if name not in ALLOWED_ALGORITHMS]
    if refused:
        raise ValueError(
            f"not allowed: {', '.join(refused)} (only asymmetric algorithms: never 'none' nor"
            f" HS*; choose from {', '.join(sorted(ALLOWED_ALGORITHMS))})"
        )
    return chosen


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    """What a verified JWT says: whose it is and until when e6auth accepts it."""

    username: str
    """The username claim, normalised with
    :func:`e6auth.credentials.usernames.normalize_username`."""
    expires_at: dt.datetime
    """The token's ``exp`` plus the leeway: the moment it stops being accepted."""


class JwksKeys:
    """The issuer's signing keys by key id, refreshed at most once per cooldown.

    - A fresh set (younger than ``cache_seconds``) answers without I/O.
    - An older set is refreshed by the first caller that notices; the others go on with the old
      keys meanwhile, and so does everyone if the refresh fails (cached keys keep working).
    - An unknown key id (the issuer rotated) makes one refetch, unless a fetch was tried less than
      ``cooldown_seconds`` ago: random key ids cannot make e6auth hammer the issuer.
    - When there are no keys to go on (the first fetch, or an unknown key id while the last fetch
      failed), an unreachable endpoint is :class:`IdentityProviderUnavailable`, not a refusal.
    """

    def __init__(
        self,
        jwks_url: str | None,
        *,
        issuer: str,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        cache_seconds: float = DEFAULT_JWKS_CACHE_SECONDS,
        cooldown_seconds: float = DEFAULT_REFETCH_COOLDOWN_SECONDS,
        timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        clock: Clock = time.time,
    ) -> None:
        if cache_seconds <= 0 or cooldown_seconds < 0 or timeout_seconds <= 0:
            raise ValueError("JWKS cache and timeout must be positive, the cooldown not negative")
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._algorithms = frozenset(algorithms)
        self._cache_seconds = cache_seconds
        self._cooldown_seconds = cooldown_seconds
        self._timeout_seconds = timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: Mapping[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._last_failed = False
        self.fetches = 0
        """Fetch attempts so far: one JWKS request each (the first also reads the discovery
        document when no ``jwks_url`` is configured)."""

    def __repr__(self) -> str:
        return f"JwksKeys({self._jwks_url or 'discovered from ' + self._issuer!r})"

    def key(self, kid: str) -> PyJWK:
        """The signing key with id ``kid``; :class:`InvalidBearerJwt` if the issuer has none."""
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self._cache_seconds:
            # Only the first caller to notice waits for the fetch; with keys in hand, the others
            # use them meanwhile.
            self._refresh(blocking=not self._keys)
        found = self._keys.get(kid)
        if found is not None:
            return found
        self._refresh(blocking=True)
        found = self._keys.get(kid)
        if found is not None:
            return found
        if self._last_failed:
            raise IdentityProviderUnavailable(f"no key {_cut(kid)} and the JWKS is unreachable")
        raise InvalidBearerJwt(f"the issuer has no signing key {_cut(kid)}")

    def _refresh(self, *, blocking: bool) -> None:
        if not self._lock.acquire(blocking=blocking):
            return
        try:
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._cooldown_seconds:
                if not self._keys and self._last_failed:
                    raise IdentityProviderUnavailable("the JWKS is unreachable (cooling down)")
                return
            self._attempted_at = now
            self.fetches += 1
            try:
                keys = self._fetch()
            except IdentityProviderUnavailable as exc:
                self._last_failed = True
                if not self._keys:
                    raise
                log.warning("OIDC: %s; the keys fetched before keep working", exc.detail)
                return
            self._keys, self._fetched_at, self._last_failed = keys, now, False
        finally:
            self._lock.release()

    def _fetch(self) -> dict[str, PyJWK]:
        # PyJWT (with cryptography: 0.12 s) is loaded when OIDC is used, not by the settings.
        from jwt import PyJWKClient
        from jwt.exceptions import PyJWKClientError, PyJWKSetError

        url = self._jwks_url or self._discover()
        try:
            key_set = PyJWKClient(url, cache_jwk_set=False, timeout=self._timeout_seconds)
            keys = key_set.get_jwk_set().keys
        except (PyJWKClientError, PyJWKSetError, ValueError, OSError) as exc:
            raise IdentityProviderUnavailable(f"JWKS {url} unusable: {type(exc).__name__}") from exc
        usable = {
            key.key_id: key
            for key in keys
            if key.key_id
            and key.public_key_use in ("sig", None)
            and key.algorithm_name in self._algorithms
        }
        log.info("OIDC: %d signing keys from %s", len(usable), url)
        return usable

    def _discover(self) -> str:
        """The issuer's ``jwks_uri`` from its discovery document, remembered once found."""
        from jwt import PyJWKClient
        from jwt.exceptions import PyJWKClientError

        url = self._issuer.rstrip("/") + DISCOVERY_PATH
        try:
            document = PyJWKClient(url, cache_jwk_set=False, timeout=self._timeout_seconds)
            metadata: Any = document.fetch_data()
        except (PyJWKClientError, ValueError, OSError) as exc:
            raise IdentityProviderUnavailable(
                f"OIDC discovery {url} unusable: {type(exc).__name__}"
            ) from exc
        jwks_uri = metadata.get("jwks_uri")
        # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was fetched for.
        if metadata.get("issuer") != self._issuer or not isinstance(jwks_uri, str):
            raise IdentityProviderUnavailable(f"OIDC discovery {url}: wrong issuer or no jwks_uri")
        self._jwks_url = jwks_uri
        return jwks_uri


class OidcVerifier:
    """Verifies JWTs of one issuer for one audience: ``verify(token) -> OidcIdentity`` or a
    specific :class:`~e6auth.errors.AuthenticationError`.

    Expiry (``exp``, required), ``nbf`` and ``iat`` are compared with the injected clock, with
    ``leeway_seconds`` either way for clock skew. ``require_user`` is for the authenticator: with
    it (the default), the named user must exist in the store and be enabled.
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        jwks_url: str | None = None,
        username_claim: str = DEFAULT_USERNAME_CLAIM,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        jwks_cache_seconds: float = DEFAULT_JWKS_CACHE_SECONDS,
        refetch_cooldown_seconds: float = DEFAULT_REFETCH_COOLDOWN_SECONDS,
        fetch_timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        require_user: bool = True,
        clock: Clock = time.time,
    ) -> None:
        if not issuer or not audience:
            raise ValueError("OIDC needs an issuer and an audience")
        if leeway_seconds < 0:
            raise ValueError("the leeway cannot be negative")
        self.issuer = issuer
        self.audience = audience
        self.username_claim = username_claim
        self.algorithms = check_algorithms(algorithms)
        self.leeway_seconds = leeway_seconds
        self.require_user = require_user
        self._clock = clock
        self.keys = JwksKeys(
            jwks_url,
            issuer=issuer,
            algorithms=self.algorithms,
            cache_seconds=jwks_cache_seconds,
            cooldown_seconds=refetch_cooldown_seconds,
            timeout_seconds=fetch_timeout_seconds,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"OidcVerifier(issuer={self.issuer!r}, audience={self.audience!r})"

    def verify(self, token: str) -> OidcIdentity:
        claims = self.verified_claims(token)
        expires = dt.datetime.fromtimestamp(float(claims["exp"]) + self.leeway_seconds, dt.UTC)
        return OidcIdentity(username=self._username(claims), expires_at=expires)

    def verified_claims(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` once its signature, issuer, audience and times are proven
        (the web page's sign-in checks its ID tokens' other claims on top), or a specific
        :class:`~e6auth.errors.AuthenticationError`."""
        import jwt
        from jwt.exceptions import PyJWTError

        if not looks_like_jwt(token):
            raise InvalidBearerJwt("not a JWT")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as exc:
            raise InvalidBearerJwt("undecodable JWT header") from exc
        algorithm, kid = header.get("alg"), header.get("kid")
        # Before any key is looked up: a refused algorithm never costs a JWKS fetch.
        if algorithm not in self.algorithms:
            raise InvalidBearerJwt(f"JWT algorithm {_cut(algorithm)} not allowed")
        if not isinstance(kid, str) or not kid:
            raise InvalidBearerJwt("JWT without a key id")
        key = self.keys.key(kid)
        if key.algorithm_name != algorithm:
            raise InvalidBearerJwt(f"JWT algorithm {algorithm} is not that of key {_cut(kid)}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                # Times are checked below against the injected clock, not PyJWT's.
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except PyJWTError as exc:
            raise InvalidBearerJwt(f"JWT refused: {type(exc).__name__}") from exc
        # The signature is proven: from here on the refusal may say what is wrong.
        self._check_times(claims)
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> dt.datetime:
        now = self._clock()
        expires = _number(claims, "exp")
        if expires is None:
            raise InvalidBearerJwt("JWT exp is not a number")
        for name in ("nbf", "iat"):
            if name in claims:
                moment = _number(claims, name)
                if moment is None or moment > now + self.leeway_seconds:
                    raise InvalidBearerJwt(f"JWT not valid yet ({name})")
        until = expires + self.leeway_seconds
        if now >= until:
            raise OidcTokenExpired(f"JWT of {self.issuer} expired")
        return dt.datetime.fromtimestamp(until, dt.UTC)

    def _username(self, claims: Mapping[str, Any]) -> str:
        value = claims.get(self.username_claim)
        if not isinstance(value, str):
            raise UnknownUser(f"JWT without a string {self.username_claim} claim")
        if self.username_claim == "email" and claims.get("email_verified") is False:
            raise UnknownUser("JWT e-mail address not verified by the issuer")
        try:
            return normalize_username(value)
        except InvalidUsername as exc:
            raise UnknownUser(f"JWT {self.username_claim} is no valid user name") from exc


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _cut(value: object) -> str:
    """An untrusted header value, bounded, for an operator's message."""
    return repr(value)[:_MAX_DETAIL]
