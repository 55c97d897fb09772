"""The Settings model: every setting e6auth reads, declared with its type, bounds, default and
meaning (tools/config_reference.py makes docs/configuration.md from these declarations), its
validation, the values derived from it, and the ``build_*`` methods that make the process's parts.

Where values come from is e6auth.settings.sources; the checks of single values are
e6auth.settings.values; the parts several settings describe together are e6auth.settings.parts;
how a declaration becomes a checked, frozen value is e6auth.settings.fields. Nothing here loads
the parts the settings configure (argon2, the throttle, the OIDC verifier): their defaults come
from e6auth.defaults, and the ``build_*`` methods import them.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from e6auth.clock import Clock
from e6auth.defaults import (
    DEFAULT_ADDRESS_BLOCK_SECONDS,
    DEFAULT_ADDRESS_FAILURES,
    DEFAULT_ADDRESS_WINDOW_SECONDS,
    DEFAULT_ALGORITHMS,
    DEFAULT_CLEAN_AFTER_SECONDS,
    DEFAULT_FETCH_TIMEOUT_SECONDS,
    DEFAULT_JWKS_CACHE_SECONDS,
    DEFAULT_LEEWAY_SECONDS,
    DEFAULT_MAX_TRACKED,
    DEFAULT_MAX_WAIT_SECONDS,
    DEFAULT_MAX_WAITING,
    DEFAULT_MEMORY_KIB,
    DEFAULT_PARALLELISM,
    DEFAULT_REFETCH_COOLDOWN_SECONDS,
    DEFAULT_TIME_COST,
    DEFAULT_USER_FAILURES,
    DEFAULT_USER_MAX_DELAY_SECONDS,
    DEFAULT_USER_WINDOW_SECONDS,
    DEFAULT_USERNAME_CLAIM,
)
from e6auth.settings import parts, values
from e6auth.settings.fields import SecretStr, SettingsBase, setting
from e6auth.settings.sources import (
    DATABASE_FILE,
    QUERY_DATABASE_FILE,
    NoDecode,
    Refusals,
    default_home,
    source_values,
)

if TYPE_CHECKING:
    from e6auth.background.audit import AuditLog
    from e6auth.credentials.hashgate import HashGate
    from e6auth.credentials.passwords import Argon2Parameters
    from e6auth.credentials.peppers import PepperRing
    from e6auth.store import TokenStore
    from e6auth.verify.oidc import OidcVerifier
    from e6auth.verify.parameters import CacheParameters, SessionParameters, TaskParameters
    from e6auth.verify.proxies import TrustedProxies
    from e6auth.verify.throttle import LoginThrottle
    from e6auth.web.oidc_client import SsoClient

__all__ = ["Settings"]


class Settings(SettingsBase):
    """Every setting e6auth reads. Unknown keys are refused, so a typo in a config file shows;
    every refusal of one construction is in one :class:`~e6auth.errors.SettingsError`."""

    @classmethod
    def _sources(cls, keywords: dict[str, Any]) -> tuple[dict[str, Any], Refusals]:
        """Constructor keywords over ``E6AUTH_*`` variables over the config file: every value
        given, whichever source gave it, counts as ``given``. A copy (``replace``) reads no
        source again."""
        return source_values(keywords, cls.setting_fields)

    home: Path = setting(default_factory=default_home)
    """State folder for the embedded database and generated keys."""

    database_url: str | None = setting(default=None, shown=values.safe_url)
    """Any SQLAlchemy URL; default ``sqlite:///<home>/e6auth.db``."""

    pepper: SecretStr | None = setting(default=None, check=values.check_key_length)
    """HMAC key for token digests (at least 32 characters); default: generated into ``<home>``."""

    auto_migrate: bool | None = None
    """Upgrade the schema on first use; default: yes for SQLite, no for server databases."""

    cache_max_entries: int = setting(default=100_000, ge=1)
    """Verified credentials kept in memory per process."""
    cache_ttl_seconds: float = setting(default=60.0, ge=0)
    """How long a verified token or session is trusted without a store read; 0 turns the cache
    off. Deletions and disables evict at once in this process and within
    ``invalidation_poll_seconds`` in others."""
    negative_cache_ttl_seconds: float = setting(default=5.0, ge=0)
    """How long an unknown token id is refused without a store read."""
    stale_if_error_seconds: float = setting(default=0.0, ge=0)
    """While the token store is unreachable, keep accepting credentials verified less than this
    long past their cache TTL (never past their own expiry, never after an invalidation this
    process has seen). 0 fails closed: uncached and expired entries are refused."""
    password_cache_ttl_seconds: float = setting(default=300.0, ge=0)
    """How long a verified (user, password) pair skips argon2; 0 turns it off."""
    invalidation_poll_seconds: float = setting(default=1.0, gt=0)
    """How often a long-running process reads the invalidation log."""
    invalidation_retention_seconds: float = setting(default=86_400.0, gt=0)
    invalidation_notify: bool = True
    """On PostgreSQL, LISTEN for invalidations so that they apply within milliseconds."""
    listen_url: str | None = setting(default=None, shown=values.safe_url)
    """A direct PostgreSQL URL for LISTEN when ``database_url`` goes through a transaction-pooling
    proxy; default: ``database_url``."""
    last_used_flush_seconds: float = setting(default=15.0, gt=0)
    """How often token last-used times are written, in one batch."""
    last_used_max_pending: int = setting(default=100_000, ge=1)
    audit: bool = True
    """Record handshakes, refused calls, token changes and queries in the audit tables."""
    audit_retention_days: float = setting(default=90.0, gt=0)
    """Audit rows older than this are deleted (about once an hour, by a running gateway)."""
    audit_flush_seconds: float = setting(default=5.0, gt=0)
    """How often audit events are written, in one batch."""
    audit_max_pending: int = setting(default=100_000, ge=1)
    """Audit events held in memory while the store is unreachable; beyond, the oldest go."""

    session_key: SecretStr | None = setting(default=None, check=values.check_key_length)
    """HMAC key for session tokens (at least 32 characters), shared by replicas; default:
    generated into ``<home>``."""
    session_idle_seconds: float = setting(default=3600.0, gt=0)
    session_max_age_seconds: float = setting(default=12 * 3600.0, gt=0)

    host: str = "127.0.0.1"
    """Address `e6auth serve` listens on."""
    port: int = setting(default=50051, ge=0, le=65535)
    query_url: str | None = setting(default=None, shown=values.safe_url)
    """SQLAlchemy URL of the database queries run on; default ``sqlite:///<home>/query.db``."""
    query_role: str | None = setting(default=None, check=values.role_template)
    """PostgreSQL: the database role each user's statements (and explains, dry runs) run as, a
    template where ``{username}`` is the e6auth user name, such as ``e6_{username}``. The
    gateway logs in with ``query_url`` and switches with ``SET LOCAL ROLE`` for each
    statement's transaction; its login role must be granted every such role. Default: every
    user's statements run as the login role (and see each other's)."""
    catalog: str = "default"
    """The catalog name the gateway answers to (the connector's `catalog=`)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    grpc_max_workers: int = setting(default=64, ge=4)
    """Threads serving calls; a fetch that waits for rows holds one."""
    query_batch_rows: int = setting(default=10_000, ge=1)
    query_idle_seconds: float = setting(default=600.0, gt=0)
    """Queries not touched for this long are cancelled and closed (connectors abandon many); a
    read waits at most this long for rows."""
    statement_timeout_seconds: float = setting(default=300.0, ge=0)
    """A statement running longer is stopped (in the database on PostgreSQL and SQLite) and
    fails with "statement timeout"; its worker also counts time waiting for the client to read.
    0: no timeout."""
    max_queries_per_user: int = setting(default=8, ge=1)
    """Queries one user may have executing at once, over all sessions and tokens; the next ones
    wait behind them without taking a worker (a connection pool larger than this still works),
    up to four times as many, and are refused with RESOURCE_EXHAUSTED beyond. Calls waiting for
    results: twice this per user."""
    max_batch_bytes: int = setting(default=4 * 1024 * 1024, ge=1024)
    """A result batch holds about this many bytes at most; a row larger than this is refused
    with a clear error. With 16 query workers, results in flight stay under 32 times this."""
    shutdown_grace_seconds: float = setting(default=10.0, ge=0)

    throttle_address_failures: int = setting(default=DEFAULT_ADDRESS_FAILURES, ge=0)
    """Failed attempts from one address (an IPv6 /64) within the window that block it: its
    password attempts and failures are refused as throttled, valid tokens and sessions still get
    in; 0 turns the per-address limit off."""
    throttle_address_window_seconds: float = setting(default=DEFAULT_ADDRESS_WINDOW_SECONDS, gt=0)
    throttle_address_block_seconds: float = setting(default=DEFAULT_ADDRESS_BLOCK_SECONDS, gt=0)
    throttle_user_failures: int = setting(default=DEFAULT_USER_FAILURES, ge=0)
    """Failed password attempts at one user name after which password attempts at it, from
    addresses that are not clean, are slowed down: 1 s apart, doubling with each further
    failure up to ``throttle_user_max_delay_seconds`` (sooner ones are refused with a retry
    hint). Never a block; token logins are not affected; 0 turns the slowdown off."""
    throttle_user_window_seconds: float = setting(default=DEFAULT_USER_WINDOW_SECONDS, gt=0)
    """A user name's failed passwords are forgotten after this long without one."""
    throttle_user_max_delay_seconds: float = setting(default=DEFAULT_USER_MAX_DELAY_SECONDS, ge=1)
    """The longest wait between password attempts at a slowed-down name."""
    throttle_clean_after_seconds: float = setting(default=DEFAULT_CLEAN_AFTER_SECONDS, gt=0)
    """An address (an IPv6 /48) with no failed attempt for this long is clean: its password
    logins skip the per-name slowdown. Longer makes rotating addresses to get past the slowdown
    costlier; shorter lets a user who mistyped get past an attack on their name sooner."""
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = setting(
        default=(), parse=values.words, check=values.proxy_ranges
    )
    """Addresses or CIDR ranges of the reverse proxies in front of the gateway and the web page
    (separated by commas or spaces in the environment). When the gRPC peer or the HTTP client
    is one of them, the client's address is the right-most ``X-Forwarded-For`` address that is
    not: for the throttle, the audit, last-used addresses and ``--allow-from``. From any other
    peer the header is ignored. Default: none, the socket's address is the client's."""
    throttle_max_tracked: int = setting(default=DEFAULT_MAX_TRACKED, ge=1)
    """Addresses, and user names, whose failures are counted at once (the least recently failed
    are forgotten beyond that)."""

    argon2_memory_kib: int = setting(default=DEFAULT_MEMORY_KIB, ge=8, le=4 * 1024 * 1024)
    argon2_time_cost: int = setting(default=DEFAULT_TIME_COST, ge=1, le=100)
    argon2_parallelism: int = setting(default=DEFAULT_PARALLELISM, ge=1, le=64)
    argon2_max_concurrent: int | None = setting(default=None, ge=1, le=1024)
    """Password hashes run at once, each holding ``argon2_memory_kib`` of memory while it runs;
    default: the CPUs the process may use. The others wait their turn, in order of arrival."""
    argon2_max_waiting: int = setting(default=DEFAULT_MAX_WAITING, ge=0)
    """Password checks that may wait for a turn at once; beyond, a login is refused as throttled
    (``RESOURCE_EXHAUSTED`` "too many logins at once")."""
    argon2_max_wait_seconds: float = setting(default=DEFAULT_MAX_WAIT_SECONDS, gt=0)
    """How long a password check waits for its turn before the login is refused as throttled."""

    peppers: SecretStr | None = setting(default=None, check=values.check_peppers)
    """Several peppers as ``id:key,id:key`` (each key at least 32 characters); the highest id makes
    new digests, every one verifies. With ``pepper`` too, that one is id 1. Default: the key files
    ``pepper`` (id 1) and ``pepper.<id>`` in ``<home>``."""

    # The policy (see e6auth.verify.policy): `e6auth policy show` prints it.
    password_logins: bool = True
    """Allow password logins; false: access tokens only (what e6data recommends)."""
    max_token_lifetime_days: int | None = setting(default=None, ge=1)
    """New tokens must expire within this many days; default: no limit."""
    max_tokens_per_user: int | None = setting(default=None, ge=1)
    """Active (unrevoked, unexpired) tokens a user may hold; default: no limit."""
    revoke_unused_after_days: int | None = setting(default=None, ge=1)
    """Revoke tokens unused (or, never used, created) for this many days; default: never."""

    http_port: int | None = setting(default=None, ge=0, le=65535)
    """Serve the Access Tokens web page on this port (0 picks a free one), beside the gateway and
    in the same process; HTTPS with the gateway's ``tls_cert`` and ``tls_key``."""
    http_host: str | None = None
    """Address the web page listens on."""
    # NoDecode: the environment may give a comma-separated list, which is not JSON.
    http_allowed_hosts: Annotated[tuple[str, ...] | None, NoDecode] = setting(
        default=None, parse=values.host_names_from_text, check=values.allowed_hosts
    )
    """Host names the web page answers under (the request's ``Host``, any port); others get HTTP
    400, so a name an attacker points at this address (DNS rebinding) reaches nothing.
    ``*.example.com`` takes every subdomain; IPv6 addresses in brackets. In the environment:
    comma-separated or a JSON list. Default: ``localhost``, ``127.0.0.1``, ``[::1]`` and the
    address it listens on."""
    http_header_timeout_seconds: float = setting(default=10.0, gt=0)
    """A connection to the web page whose request headers are not complete this long after it
    opened (or after its last answer) is closed: slow clients cannot hold connections
    (slowloris)."""
    http_session_idle_seconds: float = setting(default=1800.0, gt=0)
    """A web page session unused for this long is refused: the user signs in again."""
    http_session_max_age_seconds: float = setting(default=8 * 3600.0, gt=0)
    """A web page session is refused this long after sign-in, however busy (the cookie's
    Max-Age)."""

    web_password_signin: bool = True
    """Offer the web page's password sign-in form; false: single sign-on only (``POST /signin``
    is refused)."""

    # Single sign-on on the web page (see e6auth.web.oidc_client): off unless an issuer is set.
    web_oidc_issuer: str | None = setting(default=None, check=values.check_http_url)
    """Offer "Sign in with SSO" through this OpenID Provider (its exact ``iss``; its endpoints
    and keys are discovered from ``<issuer>/.well-known/openid-configuration``)."""
    web_oidc_client_id: str | None = None
    """The client id e6auth is registered with at the issuer; required with
    ``web_oidc_issuer``."""
    web_oidc_client_secret: SecretStr | None = None
    """The client secret (or ``web_oidc_client_secret_file``); never printed."""
    web_oidc_client_secret_file: Path | None = None
    """A file holding the client secret (its first line), e.g. a mounted Kubernetes secret."""
    web_oidc_token_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"  # noqa: S105 (a method's name)
    )
    """How e6auth authenticates to the token endpoint, as registered at the issuer (Okta enforces
    the registered one; Entra ID and Keycloak take either)."""
    web_oidc_redirect_uri: str | None = setting(default=None, check=values.check_http_url)
    """The callback URL registered at the issuer; default: the page's own URL as the browser
    addressed it, with ``/signin/oidc/callback``. Set it behind a proxy that changes the URL."""
    web_oidc_username_claim: str = "email"
    """The ID token claim that is the e6auth user name; with ``email``, the issuer must also
    say ``email_verified: true``. ``preferred_username`` or ``sub`` for issuers that do not vouch
    for e-mail addresses."""
    web_oidc_allowed_domains: tuple[str, ...] = ()
    """If any (a JSON list in the environment), only e-mail addresses in these domains sign in."""
    web_oidc_create_users: bool = False
    """Create an unknown user (tokens only, no password) on first sign-in; default: only users
    added with ``e6auth user add`` sign in."""

    metrics_port: int | None = setting(default=None, ge=0, le=65535)
    """Serve Prometheus metrics on ``http://<host>:<port>/metrics`` (0 picks a free port);
    default: off."""
    log_format: Literal["text", "json"] = setting(default="text", parse=values.lower_case)
    """``json``: one JSON object per log line (time, level, logger, message, request_id)."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = setting(
        default="WARNING", parse=values.upper_case
    )
    """The least severe log records written (names are not case-sensitive)."""

    # OIDC bearer tokens (see e6auth.verify.oidc): off unless an issuer is set.
    oidc_issuer: str | None = setting(default=None, check=values.check_http_url)
    """Accept bearer JWTs from this issuer (its exact ``iss``); default: no OIDC."""
    oidc_audience: str | None = None
    """The ``aud`` a JWT must name; required with ``oidc_issuer``."""
    oidc_jwks_url: str | None = setting(default=None, check=values.check_http_url)
    """Where the issuer's keys are; default: the ``jwks_uri`` of
    ``<oidc_issuer>/.well-known/openid-configuration``, read at first use."""
    oidc_username_claim: str = DEFAULT_USERNAME_CLAIM
    """The claim that names the user (a valid e6auth user name): ``sub`` by default, ``email`` for
    issuers trusted with e-mail addresses (then ``email_verified: false`` is refused)."""
    oidc_algorithms: tuple[str, ...] = setting(
        default=DEFAULT_ALGORITHMS, check=values.oidc_algorithms
    )
    """Signature algorithms accepted; asymmetric only (never ``none`` nor HS*)."""
    oidc_leeway_seconds: float = setting(default=DEFAULT_LEEWAY_SECONDS, ge=0, le=300)
    """Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    oidc_jwks_cache_seconds: float = setting(default=DEFAULT_JWKS_CACHE_SECONDS, gt=0)
    """How long fetched keys are used before they are fetched again (if that fails, they are
    kept)."""
    oidc_refetch_cooldown_seconds: float = setting(default=DEFAULT_REFETCH_COOLDOWN_SECONDS, ge=0)
    """An unknown key id refetches the keys at most once per this many seconds."""
    oidc_fetch_timeout_seconds: float = setting(default=DEFAULT_FETCH_TIMEOUT_SECONDS, gt=0, le=60)
    """Timeout of each read from the JWKS (or discovery) endpoint."""
    oidc_require_user: bool = True
    """The user a JWT names must exist in the store and be enabled; false accepts any name the
    issuer vouches for."""

    def _check_together(self) -> None:
        """The settings that need others: ``query_role`` a PostgreSQL ``query_url``,
        ``oidc_issuer`` an audience, ``web_oidc_issuer`` a client id and one client secret."""
        if self.query_role is not None and not self.resolved_query_url.startswith("postgresql"):
            raise ValueError("query_role needs a PostgreSQL query_url")
        if self.oidc_issuer is not None and not self.oidc_audience:
            raise ValueError("oidc_issuer needs oidc_audience")
        if self.web_oidc_issuer is None:
            return
        if not self.web_oidc_client_id:
            raise ValueError("web_oidc_issuer needs web_oidc_client_id")
        if (self.web_oidc_client_secret is None) == (self.web_oidc_client_secret_file is None):
            raise ValueError(
                "web_oidc_issuer needs one of web_oidc_client_secret and "
                "web_oidc_client_secret_file"
            )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / DATABASE_FILE}"

    @property
    def resolved_http_host(self) -> str:
        return self.host if self.http_host is None else self.http_host

    @property
    def resolved_http_allowed_hosts(self) -> tuple[str, ...]:
        """The host names the web page answers under: ``http_allowed_hosts``, else the local
        names and the address it listens on."""
        if self.http_allowed_hosts is not None:
            return self.http_allowed_hosts
        listening: tuple[str, ...] = ()
        # An address no Host header can name leaves only the local names.
        with contextlib.suppress(ValueError):
            listening = (values.allowed_host(self.resolved_http_host),)
        return tuple(dict.fromkeys((*values.LOCAL_HOST_NAMES, *listening)))

    @property
    def resolved_query_url(self) -> str:
        return self.query_url or f"sqlite:///{self.home / QUERY_DATABASE_FILE}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_listen_url(self) -> str | None:
        """Where to LISTEN for invalidations, or None (not PostgreSQL, or turned off)."""
        url = self.listen_url or self.resolved_database_url
        if not self.invalidation_notify or not url.startswith("postgresql"):
            return None
        return url

    @property
    def migrate_on_first_use(self) -> bool:
        return self.is_sqlite if self.auto_migrate is None else self.auto_migrate

    @property
    def argon2(self) -> Argon2Parameters:
        from e6auth.credentials.passwords import Argon2Parameters

        return Argon2Parameters(
            memory_kib=self.argon2_memory_kib,
            time_cost=self.argon2_time_cost,
            parallelism=self.argon2_parallelism,
        )

    def build_sso_client(self, *, clock: Clock = time.time) -> SsoClient | None:
        """The web page's single sign-on client these settings describe, or None without
        ``web_oidc_issuer``. Reads the client secret file, if one is named: an unreadable or
        empty one is :class:`~e6auth.errors.UnsafeConfiguration`."""
        return parts.sso_client(self, clock=clock)

    def build_oidc_verifier(self) -> OidcVerifier | None:
        """The bearer JWT verifier these settings describe, or None without ``oidc_issuer``."""
        return parts.oidc_verifier(self)

    def build_hash_gate(self) -> HashGate:
        """The gate every password hash of the process passes through
        (see e6auth.credentials.hashgate)."""
        return parts.hash_gate(self)

    def build_throttle(self) -> LoginThrottle | None:
        """The brute-force throttle these settings describe, or None when both limits are off."""
        return parts.throttle(self)

    def build_cache_parameters(self) -> CacheParameters:
        """The verification cache's size and TTLs."""
        return parts.cache_parameters(self)

    def build_session_parameters(self) -> SessionParameters:
        """The handshake's sessions: the session key (see :meth:`load_session_key`), their
        idle and absolute limits."""
        return parts.session_parameters(self)

    def build_task_parameters(self) -> TaskParameters:
        """The background tasks' rhythms, and where to LISTEN for invalidations."""
        return parts.task_parameters(self)

    def build_audit_log(self, store: TokenStore, *, key: bytes) -> AuditLog | None:
        """The audit log in ``store``'s database, or None with the ``audit`` setting off.
        ``key`` derives the keyed hashes that stand for unknown user names: the session key,
        which replicas share, so that their hashes of one name agree."""
        return parts.audit_log(self, store, key=key)

    def build_trusted_proxies(self) -> TrustedProxies:
        """The proxies whose ``X-Forwarded-For`` is believed."""
        from e6auth.verify.proxies import TrustedProxies

        return TrustedProxies(self.trusted_proxies)

    def load_peppers(self) -> PepperRing:
        """Every known pepper: the configured ones (``pepper`` as id 1, ``peppers``) if any, else
        the key files in ``<home>`` (``pepper``, generated on first use, and ``pepper.<id>``)."""
        return parts.peppers(self)

    def load_session_key(self) -> bytes:
        """The configured session key, or the one in ``<home>/session_key``, made on first use."""
        return parts.session_key(self)
