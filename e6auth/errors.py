"""The exceptions e6auth raises.

One root, :class:`E6AuthError`. Every class carries a stable ``reason`` code (for logs, audit and
metrics), the gRPC status it maps to, and a fixed ``public_message`` that is safe to show a client.
The constructor's detail text is for operators: it may name a user or a token *id*, never a secret.

Before a caller has proven possession of a valid secret, every refusal shows the same public
message, so that a client cannot learn whether a user or a token exists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "AddressNotAllowed",
    "AuthenticationError",
    "CredentialTooLong",
    "E6AuthError",
    "HashingBusy",
    "IdentityProviderUnavailable",
    "InvalidBearerJwt",
    "InvalidPassword",
    "InvalidTokenSecret",
    "InvalidUsername",
    "MalformedCredential",
    "MalformedRequest",
    "MissingCredentials",
    "OidcTokenExpired",
    "PasswordLoginsDisabled",
    "PolicyError",
    "QueryCancelled",
    "QueryError",
    "QueryLimit",
    "QueryNotFound",
    "ReadOnlyViolation",
    "SchemaOutOfDate",
    "SessionError",
    "SessionExpired",
    "SessionRevoked",
    "SettingsError",
    "ShuttingDown",
    "SingleSignOnRefused",
    "SsoAccountRefused",
    "SsoIdTokenRefused",
    "SsoProviderRefused",
    "SsoStateRefused",
    "StoreUnavailable",
    "Throttled",
    "TokenExpired",
    "TokenNotFound",
    "TokenOwnerMismatch",
    "TokenRevoked",
    "TokenRotatedOut",
    "TooManyQueries",
    "UnknownToken",
    "UnknownUser",
    "UnsafeConfiguration",
    "UserDisabled",
    "UserExists",
    "UserNotFound",
]

UNIFORM_REFUSAL = "invalid credentials"
BAD_CREDENTIALS = "bad_credentials"
"""The one public reason of every refusal shown as :data:`UNIFORM_REFUSAL`."""


class E6AuthError(Exception):
    """Root of every error e6auth raises on purpose."""

    reason: ClassVar[str] = "error"
    grpc_status: ClassVar[str] = "INTERNAL"
    public_message: ClassVar[str] = "internal error"
    shows_detail: ClassVar[bool] = False
    """Whether clients see the (sanitized) detail instead of the fixed public message."""

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.public_message
        super().__init__(self.detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"

    @classmethod
    def public_reason(cls) -> str:
        """The reason code anyone who cannot see the audit may learn (metrics labels).

        Refusals that show the client the uniform message (no such user, wrong password, unknown
        token id, wrong secret, wrong owner, malformed input) share one code: telling them apart
        where anyone can scrape them would say which user names and token ids exist, which the
        uniform message hides. Only the audit keeps ``reason``."""
        return BAD_CREDENTIALS if cls.public_message == UNIFORM_REFUSAL else cls.reason

    def client_message(self) -> str:
        """What a client may be told: the fixed public message, or for errors that show their
        detail (a query's own database error) that detail, bounded and sanitized."""
        return sanitize_query_message(self.detail) if self.shows_detail else self.public_message


class AuthenticationError(E6AuthError):
    """A credential was refused. Subclasses say why; clients see ``public_message`` only."""

    reason = "refused"
    grpc_status = "UNAUTHENTICATED"
    public_message = UNIFORM_REFUSAL


class MalformedCredential(AuthenticationError):
    """The input cannot be a credential: wrong shape, bad checksum, bad encoding."""

    reason = "malformed"


class CredentialTooLong(MalformedCredential):
    """The secret is longer than any real one; refused before any hashing."""

    reason = "too_long"


class UnknownToken(AuthenticationError):
    """A well-formed token whose id is not in the store."""

    reason = "unknown_token"


class InvalidTokenSecret(AuthenticationError):
    """The token id exists but the secret does not match."""

    reason = "bad_token_secret"


class TokenOwnerMismatch(AuthenticationError):
    """A valid token presented under another user's name."""

    reason = "wrong_owner"


class UnknownUser(AuthenticationError):
    """No such user (or a name that cannot be one)."""

    reason = "unknown_user"


class InvalidPassword(AuthenticationError):
    """The user exists but the password is wrong, or the user has no password."""

    reason = "bad_password"


# The next three are raised only after the secret was proven, so they may say what happened.


class TokenExpired(AuthenticationError):
    reason = "expired"
    public_message = "token expired"


class TokenRevoked(AuthenticationError):
    reason = "revoked"
    public_message = "token revoked"


class UserDisabled(AuthenticationError):
    reason = "user_disabled"
    public_message = "user disabled"


# Sessions: what `authenticate` hands a connector. The public message says "Access denied" on
# purpose: on prepare, execute and getResultMetadata the e6data connector answers INTERNAL
# "Access denied" by logging in again and replaying the statement.


class AddressNotAllowed(AuthenticationError):
    """A valid token (or a session made with one) used from outside the address ranges it is
    restricted to. Not "Access denied": logging in again from the same address cannot help."""

    reason = "address_not_allowed"
    grpc_status = "PERMISSION_DENIED"
    public_message = "this token may not be used from this address"


class SessionError(AuthenticationError):
    reason = "session_invalid"
    grpc_status = "INTERNAL"
    public_message = "Access denied: session not valid, log in again"


class SessionExpired(SessionError):
    reason = "session_expired"
    public_message = "Access denied: session expired, log in again"


class SessionRevoked(SessionError):
    """The credential the session was made with is gone: deleted, disabled or changed."""

    reason = "session_revoked"
    public_message = "Access denied: session ended, log in again"


class MissingCredentials(AuthenticationError):
    reason = "missing_credentials"
    public_message = "authentication required"


class StoreUnavailable(E6AuthError):
    """The token store could not be reached; says nothing about the credential."""

    reason = "store_unavailable"
    grpc_status = "UNAVAILABLE"
    public_message = "authentication store unavailable"


class SchemaOutOfDate(StoreUnavailable):
    """The database schema is older than this version of e6auth expects."""

    reason = "schema_out_of_date"


class Throttled(E6AuthError):
    """Too many failed attempts from this address, or at this user's password: refused before
    any store read or password hash. Not an :class:`AuthenticationError`: it says nothing about
    the credential, and is not itself counted as a failure."""

    reason = "throttled"
    grpc_status = "RESOURCE_EXHAUSTED"
    public_message = "too many failed attempts"

    def __init__(self, detail: str | None = None, *, retry_after_seconds: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds

    @classmethod
    def after(cls, wait_seconds: float) -> Throttled:
        """Refused for ``wait_seconds`` more, told to the client in whole seconds, rounded up."""
        seconds = max(1, math.ceil(wait_seconds))
        return cls(f"throttled for {seconds} s", retry_after_seconds=seconds)

    def client_message(self) -> str:
        # The wait is no secret: it tells a real user when to try again.
        return f"{self.public_message}; retry in {self.retry_after_seconds} s"


class HashingBusy(Throttled):
    """Too many password checks at once: more than the gate lets wait, or a wait too long for a
    turn at argon2. Says nothing about the credential, nor about this caller."""

    reason = "hashing_busy"
    public_message = "too many logins at once"


class MalformedRequest(E6AuthError):
    """A request body that is no valid message (broken protobuf, strings that are not UTF-8)."""

    reason = "malformed_request"
    grpc_status = "INVALID_ARGUMENT"
    public_message = "malformed request"


# Management errors: raised by TokenStore's administrative calls and shown by the command.


class InvalidUsername(E6AuthError):
    reason = "invalid_username"
    grpc_status = "INVALID_ARGUMENT"
    public_message = "invalid user name"


class UserExists(E6AuthError):
    reason = "user_exists"
    grpc_status = "ALREADY_EXISTS"
    public_message = "user already exists"


class UserNotFound(E6AuthError):
    reason = "user_not_found"
    grpc_status = "NOT_FOUND"
    public_message = "no such user"


class QueryError(E6AuthError):
    """A query could not run. Its message is the database's own, which is the user's business,
    with the strings that would make the connector log in again or switch stacks taken out."""

    reason = "query_failed"
    grpc_status = "INVALID_ARGUMENT"
    public_message = "query failed"
    shows_detail = True


class QueryNotFound(QueryError):
    reason = "query_not_found"
    grpc_status = "NOT_FOUND"
    public_message = "no such query"
    shows_detail = False


class QueryCancelled(QueryError):
    reason = "query_cancelled"
    grpc_status = "CANCELLED"
    public_message = "query cancelled"
    shows_detail = False


class TooManyQueries(QueryError):
    reason = "too_many_queries"
    grpc_status = "RESOURCE_EXHAUSTED"
    public_message = "too many open queries"
    shows_detail = False


class ShuttingDown(E6AuthError):
    """The gateway is draining before it stops: it finishes the queries it has, and takes no new
    logins or statements (a balancer sends those elsewhere once health says NOT_SERVING)."""

    reason = "shutting_down"
    grpc_status = "UNAVAILABLE"
    public_message = "the gateway is shutting down; connect again"


class QueryLimit(QueryError):
    """A limit that keeps the gateway fair to every user: queries running per user, calls
    waiting for results, the size of one row. The detail is e6auth's own text and names the
    limit, so the user learns what to do."""

    reason = "query_limit"
    grpc_status = "RESOURCE_EXHAUSTED"
    public_message = "query limit reached"


class ReadOnlyViolation(QueryError):
    """A read-only token's statement that the database refused because it would write (or that
    could not be run read-only at all). Shows the database's own message."""

    reason = "read_only"
    grpc_status = "PERMISSION_DENIED"
    public_message = "read-only token: statement refused"


# Phrases the e6data connector reacts to: it would log in again (and replay the statement) or
# switch stacks if a query error contained them.
_CONNECTOR_TRIGGERS = re.compile(r"access\s+denied|status:\s*45[6]|status:\s*503", re.IGNORECASE)
MAX_CLIENT_MESSAGE = 4096


def sanitize_query_message(message: str) -> str:
    """A database message made safe to show: bounded, and without the connector's trigger
    phrases ("Access denied" becomes "[Access_denied]")."""
    return _CONNECTOR_TRIGGERS.sub(
        lambda match: "[" + re.sub(r"\s+", "_", match.group(0)) + "]",
        message[:MAX_CLIENT_MESSAGE],
    )


class UnsafeConfiguration(E6AuthError):
    """Settings the gateway refuses to start with, because they would hand users what it
    guards (such as the token store as the query database)."""

    reason = "unsafe_configuration"


class SettingsError(E6AuthError, ValueError):
    """Settings refused when read: every refusal of one construction, each a (setting name,
    message) pair in ``errors`` (the name is empty for a refusal of no single setting, such as a
    config file that is not TOML). A ValueError too, as a refused value is. The messages never
    quote the value refused: it may be a secret (a short pepper)."""

    reason = "invalid_settings"
    public_message = "invalid settings"

    def __init__(self, errors: Iterable[tuple[str, str]]) -> None:
        self.errors = tuple(errors)
        lines = [f"  {name}: {text}" if name else f"  {text}" for name, text in self.errors]
        super().__init__("\n".join(["invalid settings:", *lines]))


class PolicyError(E6AuthError):
    """A request that the configured policy or a fixed limit does not allow."""

    reason = "policy"
    grpc_status = "INVALID_ARGUMENT"
    public_message = "not allowed by policy"


class PasswordLoginsDisabled(AuthenticationError):
    """A password handshake while the policy allows tokens only. Refused before the user is
    looked up, so it reveals nothing about the user and may say what to do instead."""

    reason = "password_logins_disabled"
    grpc_status = "PERMISSION_DENIED"
    public_message = "password logins are disabled; use an access token"


class TokenRotatedOut(TokenRevoked):
    """The previous secret of a rotated token, presented after its grace window ended. Raised
    only once that secret is proven, so it may say so."""

    reason = "rotated_out"
    public_message = "token rotated: use its new secret"


class TokenNotFound(E6AuthError):
    """An administrative call named a token id that is not in the store."""

    reason = "token_not_found"
    grpc_status = "NOT_FOUND"
    public_message = "no such token"


# OIDC bearer tokens (e6auth.verify.oidc).


class InvalidBearerJwt(AuthenticationError):
    """A bearer JWT that is not one of the configured issuer's for this audience: bad shape,
    refused algorithm, unknown key, bad signature, wrong issuer or audience, not yet valid; or
    any JWT while OIDC is not configured."""

    reason = "oidc_invalid"


class OidcTokenExpired(TokenExpired):
    """A JWT the issuer did sign, past its ``exp`` (and the leeway)."""

    reason = "oidc_expired"


class IdentityProviderUnavailable(StoreUnavailable):
    """The issuer's keys (JWKS) could not be fetched and none cached fits: says nothing about the
    credential. Keys fetched before keep working."""

    reason = "oidc_unavailable"
    public_message = "identity provider unavailable"


# Single sign-on on the web page (e6auth.web.oidc_client): the page shows a message per class.


class SingleSignOnRefused(AuthenticationError):
    """A sign-in through the identity provider that did not complete. The detail is for the
    operator's log and audit; it never holds a code, a token or a secret."""

    reason = "sso_refused"
    public_message = "single sign-on refused"


class SsoStateRefused(SingleSignOnRefused):
    """The callback is not the answer to a sign-in this browser started here: no or a wrong
    ``state``, one already used, or one too old."""

    reason = "sso_state"


class SsoProviderRefused(SingleSignOnRefused):
    """The identity provider answered with an error: the user cancelled, or the token endpoint
    refused the code (used before, expired, or the PKCE verifier does not match)."""

    reason = "sso_provider"


class SsoIdTokenRefused(SingleSignOnRefused):
    """The ID token is not one this sign-in may accept: signature, issuer, audience, authorized
    party, times or nonce."""

    reason = "sso_id_token"


class SsoAccountRefused(SingleSignOnRefused):
    """A valid ID token for someone who may not sign in here: no or an unverified e-mail address,
    a domain not allowed, no such user (and users are not created), a service account."""

    reason = "sso_account"
