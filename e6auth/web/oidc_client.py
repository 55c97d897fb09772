"""The web page as an OpenID Connect relying party: the authorization code flow with PKCE.

:meth:`SsoClient.begin` makes what one sign-in needs (``state``, ``nonce`` and a PKCE verifier)
and the URL of the issuer's authorization endpoint; the browser keeps the first three, sealed
(``SignInSeal``), until the issuer sends it back. :meth:`SsoClient.finish` then checks the callback
against them, exchanges the code at the token endpoint (with the verifier, the client authenticated
with its secret) and proves the ID token: the signature with the issuer's published keys
(:class:`~e6auth.verify.oidc.OidcVerifier`, as bearer JWTs are), ``iss``, ``aud`` (and ``azp``),
``exp`` and ``iat``, and the ``nonce``. What it hands back is the user the configured claim names.

Refusals are :class:`~e6auth.errors.SingleSignOnRefused` subclasses whose detail is for the log and
the audit: it names what was wrong, never a code, a token, a verifier or the client secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from e6auth.clock import Clock
from e6auth.credentials.usernames import normalize_username
from e6auth.errors import (
    AuthenticationError,
    IdentityProviderUnavailable,
    InvalidUsername,
    SsoAccountRefused,
    SsoIdTokenRefused,
    SsoProviderRefused,
    SsoStateRefused,
)
from e6auth.settings.conversions import SecretStr
from e6auth.verify.oidc import (
    DEFAULT_ALGORITHMS,
    DEFAULT_FETCH_TIMEOUT_SECONDS,
    DEFAULT_LEEWAY_SECONDS,
    DISCOVERY_PATH,
    OidcVerifier,
)

__all__ = [
    "DEFAULT_SIGN_IN_SECONDS",
    "PendingSignIn",
    "SignInSeal",
    "SsoClient",
    "SsoIdentity",
]

log = logging.getLogger("e6auth.web.sso")

DEFAULT_SIGN_IN_SECONDS = 600.0
"""How long a started sign-in may take at the identity provider (typing a password, a second
factor) before its callback is refused."""
SCOPES = "openid email profile"
CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 (a method's name)
CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 (a method's name)
TOKEN_AUTH_METHODS = (CLIENT_SECRET_BASIC, CLIENT_SECRET_POST)
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_CALLBACK_VALUE = 2048
_USED_STATES = 10_000


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """A sign-in sent to the issuer and not back yet: what its callback is checked against."""

    state: str = field(repr=False)
    nonce: str = field(repr=False)
    verifier: str = field(repr=False)
    redirect_uri: str
    started_at: float


@dataclass(frozen=True, slots=True)
class SsoIdentity:
    """Who the issuer vouches for: the user name (from the configured claim) and its subject."""

    username: str
    subject: str


@dataclass(frozen=True, slots=True)
class _Metadata:
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class SignInSeal:
    """Seals a :class:`PendingSignIn` into a cookie value and opens it again: AES-GCM under a key
    derived from the session key, so the browser holds it but can neither read the verifier
    nor change anything (and no replica needs a shared table of pending sign-ins)."""

    def __init__(self, session_key: bytes) -> None:
        key = hmac.new(session_key, b"e6auth web sso sign-in", hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SignInSeal()"

    def seal(self, pending: PendingSignIn) -> str:
        plain = json.dumps(
            [
                pending.state,
                pending.nonce,
                pending.verifier,
                pending.redirect_uri,
                pending.started_at,
            ],
            separators=(",", ":"),
        ).encode()
        iv = secrets.token_bytes(12)
        return _b64(iv + self._aead.encrypt(iv, plain, b"sso"))

    def open(self, sealed: str) -> PendingSignIn:
        """The pending sign-in, or :class:`~e6auth.errors.SsoStateRefused`."""
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
            plain = self._aead.decrypt(raw[:12], raw[12:], b"sso")
            state, nonce, verifier, redirect_uri, started_at = json.loads(plain)
            return PendingSignIn(state, nonce, verifier, redirect_uri, float(started_at))
        except (InvalidTag, ValueError, TypeError) as exc:
            raise SsoStateRefused("the sign-in cookie does not open") from exc


class SsoClient:
    """One client of one issuer (``issuer`` exactly as its ``iss``), authenticated at the token
    endpoint with ``client_secret`` (``token_auth_method``: ``client_secret_basic`` or
    ``client_secret_post``, as registered there). ``username_claim`` names the user; when it is
    ``email``, the issuer must also say ``email_verified: true``. ``allowed_domains``: if any, the
    e-mail address (or, for another claim, the user name) must be in one of them."""

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        username_claim: str = "email",
        allowed_domains: Iterable[str] = (),
        token_auth_method: str = CLIENT_SECRET_BASIC,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
        sign_in_seconds: float = DEFAULT_SIGN_IN_SECONDS,
        timeout_seconds: float = DEFAULT_FETCH_TIMEOUT_SECONDS,
        clock: Clock = time.time,
    ) -> None:
        if not issuer or not client_id or not client_secret.get_secret_value():
            raise ValueError("single sign-on needs an issuer, a client id and a client secret")
        if token_auth_method not in TOKEN_AUTH_METHODS:
            raise ValueError(f"token_auth_method must be one of {', '.join(TOKEN_AUTH_METHODS)}")
        self.token_auth_method = token_auth_method
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.username_claim = username_claim
        self.allowed_domains = tuple(domain.lower().lstrip("@") for domain in allowed_domains)
        self._algorithms = tuple(algorithms)
        self._leeway_seconds = leeway_seconds
        self.sign_in_seconds = sign_in_seconds
        self._timeout_seconds = timeout_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # The issuer's endpoints, and the verifier of its ID tokens on its keys: read at first
        # use (not at start: the gateway starts while the issuer is down), then kept.
        self._discovery: tuple[_Metadata, OidcVerifier] | None = None
        # States whose callback came here: refused if they come again (single use in this
        # process; the code is single use at the issuer too). Oldest first, bounded.
        self._used: OrderedDict[str, float] = OrderedDict()

    def __repr__(self) -> str:
        return f"SsoClient(issuer={self.issuer!r}, client_id={self.client_id!r})"

    # -- the way out -------------------------------------------------------------------------

    def begin(self, redirect_uri: str) -> tuple[str, PendingSignIn]:
        """The authorization request's URL, and what its callback must match."""
        metadata, _ = self._discovered()
        pending = PendingSignIn(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            redirect_uri=redirect_uri,
            started_at=self._clock(),
        )
        challenge = _b64(hashlib.sha256(pending.verifier.encode()).digest())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": SCOPES,
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = metadata.authorization_endpoint
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}", pending

    # -- the way back ------------------------------------------------------------------------

    def finish(self, pending: PendingSignIn, params: Mapping[str, str]) -> SsoIdentity:
        """The user of a callback (its query ``params``) for ``pending``, or a
        :class:`~e6auth.errors.SingleSignOnRefused` (or
        :class:`~e6auth.errors.IdentityProviderUnavailable`)."""
        self._check_state(pending, params.get("state", ""))
        issuer = params.get("iss")
        if issuer is not None and issuer != self.issuer:
            # RFC 9207: the answer names the issuer it comes from; another one is a mix-up.
            raise SsoProviderRefused(f"the callback names another issuer {_cut(issuer)}")
        error = params.get("error")
        if error is not None:
            # The issuer's error code is from a short registry (RFC 6749 4.1.2.1); cut anyway.
            raise SsoProviderRefused(f"the issuer answered {_cut(error)}")
        code = params.get("code", "")
        if not code or len(code) > MAX_CALLBACK_VALUE:
            raise SsoProviderRefused("the callback has no code")
        id_token = self._exchange(code, pending)
        claims = self._id_token_claims(id_token, pending)
        return self._identity(claims)

    def _check_state(self, pending: PendingSignIn, given: str) -> None:
        if len(given) > MAX_CALLBACK_VALUE or not hmac.compare_digest(
            pending.state.encode(), given.encode("utf-8", "surrogatepass")
        ):
            raise SsoStateRefused("the callback's state is not this browser's sign-in")
        now = self._clock()
        if (
            not pending.started_at - self._leeway_seconds
            <= now
            < (pending.started_at + self.sign_in_seconds)
        ):
            raise SsoStateRefused("the sign-in was started too long ago")
        with self._lock:
            if pending.state in self._used:
                raise SsoStateRefused("the sign-in's callback came before (a replay)")
            self._used[pending.state] = pending.started_at + self.sign_in_seconds
            horizon = now
            while self._used and (
                len(self._used) > _USED_STATES or next(iter(self._used.values())) <= horizon
            ):
                self._used.popitem(last=False)

    def _exchange(self, code: str, pending: PendingSignIn) -> str:
        metadata, _ = self._discovered()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri,
            "code_verifier": pending.verifier,
        }
        headers = {"Accept": "application/json"}
        secret = self._client_secret.get_secret_value()
        if self.token_auth_method == CLIENT_SECRET_BASIC:
            # RFC 6749 2.3.1: each part form-encoded before the Basic encoding.
            pair = f"{_form(self.client_id)}:{_form(secret)}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form |= {"client_id": self.client_id, "client_secret": secret}
        status, answer = _post_form(
            metadata.token_endpoint, form, headers, timeout=self._timeout_seconds
        )
        if status != 200:
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SsoProviderRefused(
                f"the token endpoint refused the code: HTTP {status} {_cut(error)}"
            )
        id_token = answer.get("id_token") if isinstance(answer, dict) else None
        if not isinstance(id_token, str):
            raise SsoProviderRefused("the token endpoint answered without an ID token")
        return id_token

    def _id_token_claims(self, id_token: str, pending: PendingSignIn) -> dict[str, Any]:
        try:
            # Signature (the issuer's keys), iss, aud contains the client id, exp, nbf, iat.
            claims = self._discovered()[1].verified_claims(id_token)
        except IdentityProviderUnavailable:
            raise
        except AuthenticationError as exc:
            raise SsoIdTokenRefused(f"ID token refused: {exc.detail}") from exc
        audience = claims.get("aud")
        azp = claims.get("azp")
        # OpenID Connect Core 3.1.3.7: with several audiences the authorized party must be there,
        # and when there it must be this client.
        if isinstance(audience, list) and len(audience) > 1 and azp is None:
            raise SsoIdTokenRefused("ID token for several audiences without azp")
        if azp is not None and azp != self.client_id:
            raise SsoIdTokenRefused(f"ID token authorized for another party {_cut(azp)}")
        if "iat" not in claims:
            raise SsoIdTokenRefused("ID token without iat")
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode("utf-8", "surrogatepass"), pending.nonce.encode()
        ):
            raise SsoIdTokenRefused("ID token nonce is not this sign-in's")
        if not isinstance(claims.get("sub"), str):
            raise SsoIdTokenRefused("ID token without a subject")
        return claims

    def _identity(self, claims: Mapping[str, Any]) -> SsoIdentity:
        subject = str(claims["sub"])
        value = claims.get(self.username_claim)
        if not isinstance(value, str) or not value:
            raise SsoAccountRefused(f"subject {_cut(subject)}: no {self.username_claim} claim")
        if self.username_claim == "email" and claims.get("email_verified") is not True:
            raise SsoAccountRefused(f"{_cut(value)}: e-mail address not verified by the issuer")
        try:
            username = normalize_username(value)
        except InvalidUsername as exc:
            raise SsoAccountRefused(f"{self.username_claim} {_cut(value)} is no user name") from exc
        if self.allowed_domains:
            email = claims.get("email") if self.username_claim != "email" else username
            domain = email.rpartition("@")[2].lower() if isinstance(email, str) else ""
            if domain not in self.allowed_domains:
                raise SsoAccountRefused(f"{username}: domain {_cut(domain)} is not allowed")
        return SsoIdentity(username=username, subject=subject)

    # -- the issuer's metadata and keys ------------------------------------------------------

    def _discovered(self) -> tuple[_Metadata, OidcVerifier]:
        found = self._discovery
        if found is not None:
            return found
        url = self.issuer.rstrip("/") + DISCOVERY_PATH
        document = _get_json(url, timeout=self._timeout_seconds)
        # Discovery 1.0, 4.3: the document must be the issuer's own.
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise IdentityProviderUnavailable(f"OIDC discovery {url}: wrong issuer")
        endpoints = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise IdentityProviderUnavailable(f"OIDC discovery {url}: no usable {name}")
            endpoints[name] = value
        # Discovery 1.0, 3: absent, the default is client_secret_basic.
        methods = document.get("token_endpoint_auth_methods_supported") or [CLIENT_SECRET_BASIC]
        if self.token_auth_method not in methods:
            raise IdentityProviderUnavailable(
                f"OIDC discovery {url}: the token endpoint does not take {self.token_auth_method}"
            )
        challenges = document.get("code_challenge_methods_supported")
        if isinstance(challenges, list) and "S256" not in challenges:
            raise IdentityProviderUnavailable(f"OIDC discovery {url}: no PKCE with S256")
        metadata = _Metadata(
            authorization_endpoint=endpoints["authorization_endpoint"],
            token_endpoint=endpoints["token_endpoint"],
            jwks_uri=endpoints["jwks_uri"],
        )
        verifier = OidcVerifier(
            self.issuer,
            self.client_id,
            jwks_url=metadata.jwks_uri,
            algorithms=self._algorithms,
            leeway_seconds=self._leeway_seconds,
            fetch_timeout_seconds=self._timeout_seconds,
            require_user=False,
            clock=self._clock,
        )
        with self._lock:
            if self._discovery is None:
                self._discovery = (metadata, verifier)
                log.info("single sign-on: discovered %s", self.issuer)
            return self._discovery


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect from the token endpoint would carry the code (and a POST would become a GET
    # elsewhere): an answer of its own, never followed.
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects())


def _get_json(url: str, *, timeout: float) -> Any:
    status, body = _send(_request(url, headers={"Accept": "application/json"}), timeout)
    if status != 200:
        raise IdentityProviderUnavailable(f"{url} answered HTTP {status}")
    return body


def _post_form(
    url: str, form: Mapping[str, str], headers: Mapping[str, str], *, timeout: float
) -> tuple[int, Any]:
    request = _request(
        url,
        data=urllib.parse.urlencode(form).encode(),
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    return _send(request, timeout)


def _request(url: str, **options: Any) -> urllib.request.Request:
    # The URLs come from configuration and the issuer's discovery document: http(s) only, never
    # file: or another scheme urllib would open.
    if not url.startswith(("https://", "http://")):
        raise IdentityProviderUnavailable(f"{url}: not an http(s) URL")
    return urllib.request.Request(url, **options)  # noqa: S310 (scheme checked above)


def _send(request: urllib.request.Request, timeout: float) -> tuple[int, Any]:
    """The status and JSON body of an answer; an unreachable server, or a successful answer that
    is not JSON, is :class:`IdentityProviderUnavailable` (named by URL, which holds no secret)."""
    url = request.full_url
    try:
        with _opener.open(request, timeout=timeout) as answer:
            status, raw = answer.status, answer.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as answer:
        status, raw = answer.code, answer.read(MAX_RESPONSE_BYTES + 1)
        answer.close()
    except (OSError, ValueError) as exc:
        raise IdentityProviderUnavailable(f"{url} unreachable: {type(exc).__name__}") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise IdentityProviderUnavailable(f"{url}: answer too large")
    try:
        return status, json.loads(raw)
    except ValueError:
        if status == 200:
            raise IdentityProviderUnavailable(f"{url}: answer is not JSON") from None
        return status, None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _form(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _cut(value: object) -> str:
    """An untrusted value, bounded and quoted, for an operator's message."""
    return repr(value)[:64]
