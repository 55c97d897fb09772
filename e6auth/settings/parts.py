"""The process's parts that several settings describe together: the SSO client, the OIDC
verifier, the hash gate, the throttle, the authenticator's parameter groups, the audit log, the
peppers and the session key.

Their API is the ``build_*`` and ``load_*`` methods of :class:`~e6auth.settings.Settings`, which
call these; they are apart so that the model reads as its declarations. Each imports its part's
module when it builds one, so that a command imports only the parts it builds (``token list``:
the peppers, no argon2 gate, no throttle, no OIDC verifier, nothing of the web page).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from e6auth.errors import UnsafeConfiguration
from e6auth.settings.conversions import SecretStr

if TYPE_CHECKING:
    from e6auth.background.audit import AuditLog
    from e6auth.clock import Clock
    from e6auth.credentials.hashgate import HashGate
    from e6auth.credentials.peppers import PepperRing
    from e6auth.settings.model import Settings
    from e6auth.store import TokenStore
    from e6auth.verify.oidc import OidcVerifier
    from e6auth.verify.parameters import CacheParameters, SessionParameters, TaskParameters
    from e6auth.verify.throttle import LoginThrottle
    from e6auth.web.oidc_client import SsoClient

__all__ = [
    "SESSION_KEY_FILE",
    "audit_log",
    "cache_parameters",
    "hash_gate",
    "oidc_verifier",
    "peppers",
    "session_key",
    "session_parameters",
    "sso_client",
    "task_parameters",
    "throttle",
]

SESSION_KEY_FILE = "session_key"


def sso_client(settings: Settings, *, clock: Clock) -> SsoClient | None:
    if settings.web_oidc_issuer is None or settings.web_oidc_client_id is None:
        return None
    # Imported here: the page's relying party is not needed by anything else.
    from e6auth.web.oidc_client import SsoClient

    return SsoClient(
        settings.web_oidc_issuer,
        settings.web_oidc_client_id,
        _sso_client_secret(settings),
        username_claim=settings.web_oidc_username_claim,
        allowed_domains=settings.web_oidc_allowed_domains,
        token_auth_method=settings.web_oidc_token_auth_method,
        algorithms=settings.oidc_algorithms,
        leeway_seconds=settings.oidc_leeway_seconds,
        timeout_seconds=settings.oidc_fetch_timeout_seconds,
        clock=clock,
    )


def _sso_client_secret(settings: Settings) -> SecretStr:
    """``web_oidc_client_secret``, or the first line of ``web_oidc_client_secret_file``."""
    secret = settings.web_oidc_client_secret
    if settings.web_oidc_client_secret_file is not None:
        try:
            lines = settings.web_oidc_client_secret_file.read_text().splitlines()
        except OSError as exc:
            raise UnsafeConfiguration(
                f"cannot read web_oidc_client_secret_file ({exc.strerror})"
            ) from None
        secret = SecretStr(lines[0].strip() if lines else "")
    if secret is None or not secret.get_secret_value():
        raise UnsafeConfiguration("the web page's OIDC client secret is empty")
    return secret


def oidc_verifier(settings: Settings) -> OidcVerifier | None:
    if settings.oidc_issuer is None or settings.oidc_audience is None:
        return None
    from e6auth.verify.oidc import OidcVerifier

    return OidcVerifier(
        settings.oidc_issuer,
        settings.oidc_audience,
        jwks_url=settings.oidc_jwks_url,
        username_claim=settings.oidc_username_claim,
        algorithms=settings.oidc_algorithms,
        leeway_seconds=settings.oidc_leeway_seconds,
        jwks_cache_seconds=settings.oidc_jwks_cache_seconds,
        refetch_cooldown_seconds=settings.oidc_refetch_cooldown_seconds,
        fetch_timeout_seconds=settings.oidc_fetch_timeout_seconds,
        require_user=settings.oidc_require_user,
    )


def hash_gate(settings: Settings) -> HashGate:
    from e6auth.credentials.hashgate import HashGate

    return HashGate(
        settings.argon2_max_concurrent,
        max_waiting=settings.argon2_max_waiting,
        max_wait_seconds=settings.argon2_max_wait_seconds,
    )


def throttle(settings: Settings) -> LoginThrottle | None:
    if settings.throttle_address_failures == 0 and settings.throttle_user_failures == 0:
        return None
    from e6auth.verify.throttle import LoginThrottle, SlowdownLimit, ThrottleLimit

    return LoginThrottle(
        address=ThrottleLimit(
            settings.throttle_address_failures,
            settings.throttle_address_window_seconds,
            settings.throttle_address_block_seconds,
        ),
        user=SlowdownLimit(
            settings.throttle_user_failures,
            settings.throttle_user_window_seconds,
            settings.throttle_user_max_delay_seconds,
        ),
        clean_after_seconds=settings.throttle_clean_after_seconds,
        max_tracked=settings.throttle_max_tracked,
    )


def cache_parameters(settings: Settings) -> CacheParameters:
    from e6auth.verify.parameters import CacheParameters

    return CacheParameters(
        max_entries=settings.cache_max_entries,
        ttl_seconds=settings.cache_ttl_seconds,
        negative_ttl_seconds=settings.negative_cache_ttl_seconds,
        password_ttl_seconds=settings.password_cache_ttl_seconds,
        stale_if_error_seconds=settings.stale_if_error_seconds,
    )


def session_parameters(settings: Settings) -> SessionParameters:
    from e6auth.verify.parameters import SessionParameters

    return SessionParameters(
        session_key(settings),
        idle_seconds=settings.session_idle_seconds,
        max_age_seconds=settings.session_max_age_seconds,
    )


def task_parameters(settings: Settings) -> TaskParameters:
    from e6auth.verify.parameters import TaskParameters

    return TaskParameters(
        last_used_flush_seconds=settings.last_used_flush_seconds,
        last_used_max_pending=settings.last_used_max_pending,
        invalidation_poll_seconds=settings.invalidation_poll_seconds,
        invalidation_retention_seconds=settings.invalidation_retention_seconds,
        listen_url=settings.resolved_listen_url,
    )


def audit_log(settings: Settings, store: TokenStore, *, key: bytes) -> AuditLog | None:
    if not settings.audit:
        return None
    from e6auth.background.audit import AuditLog
    from e6auth.store import AuditStore

    return AuditLog(
        AuditStore(store.engine),
        flush_seconds=settings.audit_flush_seconds,
        max_pending=settings.audit_max_pending,
        retention_days=settings.audit_retention_days,
        key=key,
    )


def peppers(settings: Settings) -> PepperRing:
    from e6auth.credentials.keys import Pepper
    from e6auth.credentials.peppers import PepperRing, load_pepper_files, parse_peppers

    configured = parse_peppers(settings.peppers.get_secret_value()) if settings.peppers else []
    if settings.pepper is not None:
        configured.append(Pepper(settings.pepper.get_secret_value().encode()))
    if configured:
        return PepperRing(configured)
    return load_pepper_files(settings.home)


def session_key(settings: Settings) -> bytes:
    if settings.session_key is not None:
        return settings.session_key.get_secret_value().encode()
    from e6auth.credentials.keys import load_or_create_key

    return load_or_create_key(settings.home / SESSION_KEY_FILE, purpose="session key")
