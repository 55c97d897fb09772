"""The exceptions e6auth raises.

One root, :class:`E6AuthError`. Every class carries a stable ``reason`` code (for logs, audit and
metrics), the gRPC status it maps to, and a fixed ``public_message`` that is safe to show a client.
The constructor's detail text is for operators: it may name a user or a token *id*, never a secret.

Before a caller has proven possession of a valid secret, every refusal shows the same public
message, so that a client cannot learn whether a user or a token exists.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "CredentialTooLong",
    "E6AuthError",
    "InvalidPassword",
    "InvalidTokenSecret",
    "InvalidUsername",
    "MalformedCredential",
    "PolicyError",
    "SchemaOutOfDate",
    "StoreUnavailable",
    "TokenExpired",
    "TokenOwnerMismatch",
    "TokenRevoked",
    "UnknownToken",
    "UnknownUser",
    "UserDisabled",
    "UserExists",
    "UserNotFound",
]

UNIFORM_REFUSAL = "invalid credentials"


class E6AuthError(Exception):
    """Root of every error e6auth raises on purpose."""

    reason: ClassVar[str] = "error"
    grpc_status: ClassVar[str] = "INTERNAL"
    public_message: ClassVar[str] = "internal error"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.public_message
        super().__init__(self.detail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"


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


class StoreUnavailable(E6AuthError):
    """The token store could not be reached; says nothing about the credential."""

    reason = "store_unavailable"
    grpc_status = "UNAVAILABLE"
    public_message = "authentication store unavailable"


class SchemaOutOfDate(StoreUnavailable):
    """The database schema is older than this version of e6auth expects."""

    reason = "schema_out_of_date"


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


class PolicyError(E6AuthError):
    """A request that the configured policy or a fixed limit does not allow."""

    reason = "policy"
    grpc_status = "INVALID_ARGUMENT"
    public_message = "not allowed by policy"
