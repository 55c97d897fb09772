"""e6auth: the authentication layer in front of a SQL query endpoint.

Every public name is exported lazily (PEP 562): ``import e6auth`` loads none of the store, gRPC,
the web page or the metrics, so a library user or an ``e6auth`` command pays only for the
modules it touches. ``from e6auth import X`` loads the module that defines X, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from e6auth._exports import lazy_exports

if TYPE_CHECKING:
    from e6auth.background.audit import AuditLog
    from e6auth.credentials.hashgate import HashGate
    from e6auth.errors import (
        AddressNotAllowed,
        AuthenticationError,
        CredentialTooLong,
        E6AuthError,
        HashingBusy,
        IdentityProviderUnavailable,
        InvalidBearerJwt,
        InvalidPassword,
        InvalidTokenSecret,
        InvalidUsername,
        MalformedCredential,
        MissingCredentials,
        OidcTokenExpired,
        PasswordLoginsDisabled,
        PolicyError,
        QueryCancelled,
        QueryError,
        QueryNotFound,
        ReadOnlyViolation,
        SchemaOutOfDate,
        SessionError,
        SessionExpired,
        SessionRevoked,
        SettingsError,
        StoreUnavailable,
        Throttled,
        TokenExpired,
        TokenNotFound,
        TokenOwnerMismatch,
        TokenRevoked,
        TokenRotatedOut,
        TooManyQueries,
        UnknownToken,
        UnknownUser,
        UserDisabled,
        UserExists,
        UserNotFound,
    )
    from e6auth.metrics import Metrics
    from e6auth.settings import Settings
    from e6auth.store.records import (
        DeleteResult,
        NewToken,
        TokenInfo,
        UserInfo,
    )
    from e6auth.store.token_store import TokenStore
    from e6auth.verify.authenticator import Authenticator
    from e6auth.verify.oidc import OidcVerifier
    from e6auth.verify.parameters import CacheParameters, SessionParameters, TaskParameters
    from e6auth.verify.policy import Policy
    from e6auth.verify.principal import Principal
    from e6auth.verify.throttle import (
        LoginThrottle,
        SlowdownLimit,
        ThrottleLimit,
    )

__all__ = [
    "AddressNotAllowed",
    "AuditLog",
    "AuthenticationError",
    "Authenticator",
    "CacheParameters",
    "CredentialTooLong",
    "DeleteResult",
    "E6AuthError",
    "HashGate",
    "HashingBusy",
    "IdentityProviderUnavailable",
    "InvalidBearerJwt",
    "InvalidPassword",
    "InvalidTokenSecret",
    "InvalidUsername",
    "LoginThrottle",
    "MalformedCredential",
    "Metrics",
    "MissingCredentials",
    "NewToken",
    "OidcTokenExpired",
    "OidcVerifier",
    "PasswordLoginsDisabled",
    "Policy",
    "PolicyError",
    "Principal",
    "QueryCancelled",
    "QueryError",
    "QueryNotFound",
    "ReadOnlyViolation",
    "SchemaOutOfDate",
    "SessionError",
    "SessionExpired",
    "SessionParameters",
    "SessionRevoked",
    "Settings",
    "SettingsError",
    "SlowdownLimit",
    "StoreUnavailable",
    "TaskParameters",
    "ThrottleLimit",
    "Throttled",
    "TokenExpired",
    "TokenInfo",
    "TokenNotFound",
    "TokenOwnerMismatch",
    "TokenRevoked",
    "TokenRotatedOut",
    "TokenStore",
    "TooManyQueries",
    "UnknownToken",
    "UnknownUser",
    "UserDisabled",
    "UserExists",
    "UserInfo",
    "UserNotFound",
]

_EXPORTS: dict[str, str] = {
    "AddressNotAllowed": "e6auth.errors",
    "AuditLog": "e6auth.background.audit",
    "AuthenticationError": "e6auth.errors",
    "Authenticator": "e6auth.verify.authenticator",
    "CacheParameters": "e6auth.verify.parameters",
    "CredentialTooLong": "e6auth.errors",
    "DeleteResult": "e6auth.store.records",
    "E6AuthError": "e6auth.errors",
    "HashGate": "e6auth.credentials.hashgate",
    "HashingBusy": "e6auth.errors",
    "IdentityProviderUnavailable": "e6auth.errors",
    "InvalidBearerJwt": "e6auth.errors",
    "InvalidPassword": "e6auth.errors",
    "InvalidTokenSecret": "e6auth.errors",
    "InvalidUsername": "e6auth.errors",
    "LoginThrottle": "e6auth.verify.throttle",
    "SlowdownLimit": "e6auth.verify.throttle",
    "MalformedCredential": "e6auth.errors",
    "Metrics": "e6auth.metrics",
    "MissingCredentials": "e6auth.errors",
    "NewToken": "e6auth.store.records",
    "OidcTokenExpired": "e6auth.errors",
    "OidcVerifier": "e6auth.verify.oidc",
    "PasswordLoginsDisabled": "e6auth.errors",
    "Policy": "e6auth.verify.policy",
    "PolicyError": "e6auth.errors",
    "Principal": "e6auth.verify.principal",
    "QueryCancelled": "e6auth.errors",
    "QueryError": "e6auth.errors",
    "QueryNotFound": "e6auth.errors",
    "ReadOnlyViolation": "e6auth.errors",
    "SchemaOutOfDate": "e6auth.errors",
    "SessionError": "e6auth.errors",
    "SessionExpired": "e6auth.errors",
    "SessionParameters": "e6auth.verify.parameters",
    "SessionRevoked": "e6auth.errors",
    "Settings": "e6auth.settings",
    "SettingsError": "e6auth.errors",
    "StoreUnavailable": "e6auth.errors",
    "TaskParameters": "e6auth.verify.parameters",
    "ThrottleLimit": "e6auth.verify.throttle",
    "Throttled": "e6auth.errors",
    "TokenExpired": "e6auth.errors",
    "TokenInfo": "e6auth.store.records",
    "TokenNotFound": "e6auth.errors",
    "TokenOwnerMismatch": "e6auth.errors",
    "TokenRevoked": "e6auth.errors",
    "TokenRotatedOut": "e6auth.errors",
    "TokenStore": "e6auth.store.token_store",
    "TooManyQueries": "e6auth.errors",
    "UnknownToken": "e6auth.errors",
    "UnknownUser": "e6auth.errors",
    "UserDisabled": "e6auth.errors",
    "UserExists": "e6auth.errors",
    "UserInfo": "e6auth.store.records",
    "UserNotFound": "e6auth.errors",
}
"""Public name -> the module that defines it."""


def _version() -> str:
    # From the installed metadata: the version is set in one place, pyproject.toml.
    from importlib.metadata import version

    return version("e6auth")


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__, computed={"__version__": _version})
