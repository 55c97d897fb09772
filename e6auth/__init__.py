"""e6auth: the authentication layer in front of a SQL query endpoint."""

from e6auth.authenticator import Authenticator
from e6auth.errors import (
    AuthenticationError,
    CredentialTooLong,
    E6AuthError,
    InvalidPassword,
    InvalidTokenSecret,
    InvalidUsername,
    MalformedCredential,
    PolicyError,
    SchemaOutOfDate,
    StoreUnavailable,
    TokenExpired,
    TokenOwnerMismatch,
    TokenRevoked,
    UnknownToken,
    UnknownUser,
    UserDisabled,
    UserExists,
    UserNotFound,
)
from e6auth.principal import Principal
from e6auth.settings import Settings
from e6auth.store import DeleteResult, NewToken, TokenInfo, TokenStore, UserInfo

__all__ = [
    "AuthenticationError",
    "Authenticator",
    "CredentialTooLong",
    "DeleteResult",
    "E6AuthError",
    "InvalidPassword",
    "InvalidTokenSecret",
    "InvalidUsername",
    "MalformedCredential",
    "NewToken",
    "PolicyError",
    "Principal",
    "SchemaOutOfDate",
    "Settings",
    "StoreUnavailable",
    "TokenExpired",
    "TokenInfo",
    "TokenOwnerMismatch",
    "TokenRevoked",
    "TokenStore",
    "UnknownToken",
    "UnknownUser",
    "UserDisabled",
    "UserExists",
    "UserInfo",
    "UserNotFound",
]
