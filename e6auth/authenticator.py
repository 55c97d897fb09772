"""The one verify pipeline: every decision about a credential is made here."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from e6auth.audit import AuditLog
from e6auth.background import PeriodicTask
from e6auth.cache import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_NEGATIVE_TTL_SECONDS,
    DEFAULT_TTL_SECONDS,
    Presented,
    VerificationCache,
    credential_key,
    session_cache_key,
)
from e6auth.clock import Clock
from e6auth.errors import (
    AuthenticationError,
    InvalidPassword,
    InvalidTokenSecret,
    InvalidUsername,
    SessionError,
    SessionRevoked,
    TokenExpired,
    TokenOwnerMismatch,
    TokenRevoked,
    TokenRotatedOut,
    UnknownToken,
    UnknownUser,
    UserDisabled,
)
from e6auth.invalidation import (
    DEFAULT_POLL_SECONDS,
    DEFAULT_RETENTION_SECONDS,
    InvalidationPoller,
    NotifyListener,
    listen_conninfo,
)
from e6auth.lastused import DEFAULT_FLUSH_SECONDS, DEFAULT_MAX_PENDING, LastUsedRecorder
from e6auth.oidc import NO_USER_ID, OidcVerifier, looks_like_jwt
from e6auth.principal import Principal
from e6auth.proxies import TrustedProxies
from e6auth.restrictions import SCOPE_ALL, Peer, check_peer, load_allow_from
from e6auth.sessions import (
    DEFAULT_IDLE_SECONDS,
    DEFAULT_MAX_AGE_SECONDS,
    MAX_SESSION_ID_LENGTH,
    TOUCH_GRANULARITY_SECONDS,
    SessionClaims,
    SessionSigner,
)
from e6auth.settings import Settings
from e6auth.store import AuditStore, Invalidation, TokenRecord, TokenStore, UserRecord
from e6auth.throttle import LoginThrottle, counts_as_failure
from e6auth.tokens import (
    TOKEN_LENGTH,
    ParsedToken,
    check_checksum,
    check_token,
    looks_like_token,
    split_token,
)
from e6auth.usernames import normalize_username

if TYPE_CHECKING:
    from e6auth.metrics import Method, Metrics

__all__ = ["Authenticator"]

log = logging.getLogger("e6auth.auth")

DEFAULT_PASSWORD_TTL_SECONDS = 300.0
REVOKE_UNUSED_SECONDS = 3600.0
NOTE_EVERY = TOUCH_GRANULARITY_SECONDS
"""A cached credential's uses are noted (session touch, last-used record) about this often..."""
SAMPLE_EVERY = 256
"""...and on every this many uses, each time with the caller's address."""
MAX_NOTED = 100_000
BEARER_PREFIX = "Bearer "
"""How ``authorization`` metadata carries a token (the e6data connector's form)."""


@dataclass(slots=True)
class _Noted:
    """When a cached credential's use was last noted, and its uses since it was first noted."""

    at: float
    uses: int = 0


"""How often a long-running process applies the policy's revoke-unused rule (it counts in days)."""


class Authenticator:
    """Verifies usernames with passwords or personal access tokens, and bare tokens.

    ``verify`` and ``verify_token`` return a :class:`Principal` or raise a specific
    :class:`~e6auth.errors.AuthenticationError`; there is no boolean variant to forget to check.
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        clock: Clock = time.time,
        cache_max_entries: int = DEFAULT_MAX_ENTRIES,
        cache_ttl_seconds: float = DEFAULT_TTL_SECONDS,
        negative_cache_ttl_seconds: float = DEFAULT_NEGATIVE_TTL_SECONDS,
        password_cache_ttl_seconds: float = DEFAULT_PASSWORD_TTL_SECONDS,
        stale_if_error_seconds: float = 0.0,
        last_used_flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        last_used_max_pending: int = DEFAULT_MAX_PENDING,
        invalidation_poll_seconds: float = DEFAULT_POLL_SECONDS,
        invalidation_retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        session_key: bytes | None = None,
        session_idle_seconds: float = DEFAULT_IDLE_SECONDS,
        session_max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        listen_url: str | None = None,
        background: bool = False,
        audit: AuditLog | None = None,
        revoke_unused_seconds: float = REVOKE_UNUSED_SECONDS,
        throttle: LoginThrottle | None = None,
        metrics: Metrics | None = None,
        oidc: OidcVerifier | None = None,
        trusted_proxies: TrustedProxies | None = None,
    ) -> None:
        """``background=True`` starts the last-used flusher and the invalidation poller threads
        (``from_settings`` does), and with the store's policy revoking unused tokens, a thread
        that does so every ``revoke_unused_seconds`` (hourly); without it, call
        :meth:`flush_last_used`, :meth:`poll_invalidations` and :meth:`revoke_unused` yourself,
        as tests do. ``audit`` (which ``from_settings`` makes unless the ``audit`` setting is
        off) is started and closed with them. ``throttle`` counts failed attempts, blocks addresses
        and slows user names down (``from_settings`` makes one). ``oidc`` accepts bearer
        JWTs of one issuer in :meth:`verify_token` (``from_settings`` makes one when
        ``oidc_issuer`` is set). ``trusted_proxies``: whose ``X-Forwarded-For`` the gRPC
        interceptor, the service and the web page believe when they find a caller's address.

        The policy (password logins allowed or not) is the store's. ``metrics`` (also settable
        as the ``metrics`` attribute before serving) counts and times what passes the cache."""
        self._store = store
        self.metrics = metrics
        self.audit = audit
        self._throttle = throttle
        # Kept here, with the throttle it feeds, for every front end built on this instance.
        self.trusted_proxies = trusted_proxies or TrustedProxies()
        self._oidc = oidc
        self._clock = clock
        self._policy = store.policy
        self._cache = (
            VerificationCache(
                max_entries=cache_max_entries,
                # Each kind of entry is put with its own TTL; this is only the default.
                ttl_seconds=max(cache_ttl_seconds, password_cache_ttl_seconds),
                negative_ttl_seconds=negative_cache_ttl_seconds,
                stale_if_error_seconds=stale_if_error_seconds,
                clock=clock,
            )
            if cache_ttl_seconds > 0 or password_cache_ttl_seconds > 0
            else None
        )
        # The cache's lookups by text, read by the request path (see cached_call). Tokens are linked
        # in the form authorization metadata carries them (BEARER_PREFIX + token): the request
        # path looks the value up as it comes.
        self._tokens_presented = self._cache.tokens if self._cache is not None else Presented()
        self._sessions_presented = self._cache.sessions if self._cache is not None else Presented()
        self._token_ttl = cache_ttl_seconds
        self._password_ttl = password_cache_ttl_seconds
        # Password cache keys are keyed hashes under a key that lives and dies with this process:
        # a memory dump then holds no offline oracle for guessing passwords.
        self._password_key = secrets.token_bytes(32)
        # When each cached credential's use was last noted, by cache key: see _hit.
        self._noted: dict[bytes, _Noted] = {}
        self._recorder = LastUsedRecorder(
            store,
            flush_seconds=last_used_flush_seconds,
            max_pending=last_used_max_pending,
            clock=clock,
            on_new_peers=audit.new_addresses if audit is not None else None,
        )
        self._poller = InvalidationPoller(
            store,
            self._invalidate,
            poll_seconds=invalidation_poll_seconds,
            retention_seconds=invalidation_retention_seconds,
            clock=clock,
        )
        self._sessions = (
            SessionSigner(
                session_key,
                idle_seconds=session_idle_seconds,
                max_age_seconds=session_max_age_seconds,
                clock=clock,
            )
            if session_key is not None
            else None
        )
        # On PostgreSQL: read the log the moment a change is announced, not at the next poll.
        self._listener = (
            NotifyListener(listen_conninfo(listen_url), self._poller.poll)
            if listen_url is not None
            else None
        )
        self._unused_revoker = (
            PeriodicTask("e6auth-revoke-unused", revoke_unused_seconds, self.revoke_unused)
            if self._policy.revoke_unused_after_days is not None
            else None
        )
        store.add_invalidation_listener(self._invalidate)
        if background:
            if self.audit is not None:
                self.audit.start()
            self._recorder.start()
            self._poller.start()
            if self._listener is not None:
                self._listener.start()
            if self._unused_revoker is not None:
                self._unused_revoker.start()

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, metrics: Metrics | None = None
    ) -> Authenticator:
        """An authenticator on the store the settings (by default, the environment) name, with
        its background flusher and poller running. ``close()`` it when done."""
        settings = settings or Settings()
        store = TokenStore.from_settings(settings)
        # Replicas share it: the audit derives its key for unknown user names from it too.
        session_key = settings.load_session_key()
        return cls(
            store,
            cache_max_entries=settings.cache_max_entries,
            cache_ttl_seconds=settings.cache_ttl_seconds,
            negative_cache_ttl_seconds=settings.negative_cache_ttl_seconds,
            password_cache_ttl_seconds=settings.password_cache_ttl_seconds,
            stale_if_error_seconds=settings.stale_if_error_seconds,
            last_used_flush_seconds=settings.last_used_flush_seconds,
            last_used_max_pending=settings.last_used_max_pending,
            invalidation_poll_seconds=settings.invalidation_poll_seconds,
            invalidation_retention_seconds=settings.invalidation_retention_seconds,
            session_key=session_key,
            session_idle_seconds=settings.session_idle_seconds,
            session_max_age_seconds=settings.session_max_age_seconds,
            listen_url=settings.resolved_listen_url,
            background=True,
            audit=AuditLog(
                AuditStore(store.engine),
                flush_seconds=settings.audit_flush_seconds,
                max_pending=settings.audit_max_pending,
                retention_days=settings.audit_retention_days,
                key=session_key,
            )
            if settings.audit
            else None,
            throttle=settings.build_throttle(),
            metrics=metrics,
            oidc=settings.build_oidc_verifier(),
            trusted_proxies=TrustedProxies(settings.trusted_proxies),
        )

    @property
    def store(self) -> TokenStore:
        return self._store

    @property
    def cache(self) -> VerificationCache | None:
        return self._cache

    @property
    def last_used(self) -> LastUsedRecorder:
        return self._recorder

    @property
    def listener(self) -> NotifyListener | None:
        return self._listener

    @property
    def throttle(self) -> LoginThrottle | None:
        return self._throttle

    @property
    def sessions(self) -> SessionSigner | None:
        return self._sessions

    def flush_last_used(self) -> int:
        return self._recorder.flush()

    def poll_invalidations(self) -> int:
        return self._poller.poll()

    def revoke_unused(self) -> int:
        """Apply the policy's revoke-unused rule now (the background thread does so hourly):
        pending last-used times are written first, so that a token in use is never revoked."""
        if self._policy.revoke_unused_after_days is None:
            return 0
        self._recorder.flush()
        return len(self._store.revoke_unused())

    def close(self) -> None:
        """Stop the background threads, write pending last-used times, release the store."""
        if self._unused_revoker is not None:
            self._unused_revoker.stop()
        if self._listener is not None:
            self._listener.close()
        self._poller.close()
        self._store.remove_invalidation_listener(self._invalidate)
        try:
            self._recorder.close()
            # After the last-used flush: it may report new addresses to the audit.
            if self.audit is not None:
                self.audit.close()
        finally:
            self._store.close()

    def __enter__(self) -> Authenticator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _invalidate(self, events: Sequence[Invalidation]) -> None:
        if self._cache is not None:
            self._cache.invalidate(events)
        if self.metrics is not None:
            self.metrics.invalidations_applied(events, self._clock())

    def verify(self, username: str, secret: str, *, peer: Peer | None = None) -> Principal:
        """The connector handshake: ``secret`` is a token if it has a token's shape, else a
        password. A token must belong to ``username``.

        With a throttle, a password attempt from a blocked address, or at a user name being
        slowed down, is refused with :class:`~e6auth.errors.Throttled` before anything is read or
        hashed. A token is checked even from a blocked address: a valid one gets in."""
        metrics = self.metrics
        if metrics is None:
            return self._verify_attempt(username, secret, peer)
        method: Method = "token" if looks_like_token(secret) else "password"
        return metrics.timed(method, lambda: self._verify_attempt(username, secret, peer))

    def verify_password(
        self, username: str, password: str, *, peer: Peer | None = None
    ) -> Principal:
        """A sign-in that takes a password and nothing else (the web page's): throttled with the
        same counters as handshakes, refused when the policy turns password logins off.

        A token given as the password is refused as a wrong password: a token, which may be
        limited to reads or to some addresses, must never open a session that makes new tokens.
        """
        metrics = self.metrics
        if metrics is None:
            return self._verify_attempt(username, password, peer, password_only=True)
        return metrics.timed(
            "password",
            lambda: self._verify_attempt(username, password, peer, password_only=True),
        )

    def _verify_attempt(
        self, username: str, secret: str, peer: Peer | None, *, password_only: bool = False
    ) -> Principal:
        if not password_only:
            cached = self._cached_token_login(username, secret, peer)
            if cached is not None:
                return cached
        if self._throttle is None:
            return self._verify(username, secret, peer, password_only=password_only)
        if looks_like_token(secret) and not password_only:
            # Checked before the throttle, as bearer tokens are: a blocked address (a NAT
            # shared with a guesser) must not lock out valid tokens, and refusing a wrong one
            # costs an HMAC and a read, not an argon2 hash. Only its failure counts, and only
            # against the address: the owner's name is not slowed down by token guesses.
            try:
                return self._verify(username, secret, peer)
            except AuthenticationError as error:
                self._refused(error, peer)
                raise
        attempt = self._throttle.begin(_address(peer), username)
        failed = False
        try:
            return self._verify(username, secret, peer, password_only=password_only)
        except AuthenticationError as error:
            failed = counts_as_failure(error)
            raise
        finally:
            # Whatever happened: an attempt may hold its clean address's exemption till here.
            self._throttle.end(attempt, failed=failed)

    def _cached_token_login(
        self, username: str, secret: str, peer: Peer | None
    ) -> Principal | None:
        """A token login the cache can answer, or None. Checked before the throttle, as bearer
        hits are: a proven token is not an attempt to guess, and parsing the peer's address and
        taking the throttle's lock cost more than the hit itself (measured). An owner mismatch
        is left to the full path, which refuses it and counts the failure."""
        cache = self._cache
        if cache is None or self._token_ttl <= 0 or len(secret) != TOKEN_LENGTH:
            return None
        now = self._clock()
        entry = cache.hit_presented(cache.tokens, BEARER_PREFIX + secret, now)
        if entry is None or not _presented_by_owner(username, entry.principal):
            return None
        return self._hit(entry.key, entry.principal, peer, now)

    def _verify(
        self, username: str, secret: str, peer: Peer | None, *, password_only: bool = False
    ) -> Principal:
        if password_only:
            self._policy.check_password_login()
            if looks_like_token(secret):
                # No password can have a token's shape (the store refuses such passwords), so
                # this says nothing about the user.
                raise InvalidPassword("a token given where only a password is taken")
            return self._verify_password_cached(username, secret)
        if looks_like_token(secret):
            check_checksum(secret)
            principal = self._verify_checked_token(secret, peer)
            if not _presented_by_owner(username, principal):
                raise TokenOwnerMismatch(
                    f"token {principal.token_id} of {principal.username} presented by another user"
                )
            return principal
        # Before any lookup: the refusal says nothing about the user, so it can say why.
        self._policy.check_password_login()
        return self._verify_password_cached(username, secret)

    def verify_token(self, token: str, *, peer: Peer | None = None) -> Principal:
        """A bare token, as sent in an ``authorization: Bearer`` header.

        With a throttle, a refusal counts against the address, and from a blocked address it
        is answered :class:`~e6auth.errors.Throttled`; a valid token gets in from anywhere."""
        cache = self._cache
        if cache is not None and self._token_ttl > 0 and len(token) == TOKEN_LENGTH:
            # Only a token that passed every check is cached, under its exact text: a hit needs
            # neither its shape nor its checksum checked again.
            now = self._clock()
            key = credential_key(token)
            principal = cache.hit(key, now)
            if principal is not None:
                cache.link(cache.tokens, BEARER_PREFIX + token, key)
                return self._hit(key, principal, peer, now)
            # Only what passes the cache is counted and timed: a hit stays as cheap as it was.
            if self.metrics is None:
                return self._verify_uncached_token(token, peer, key)
            return self._timed("bearer", lambda: self._verify_uncached_token(token, peer, key))
        if self._oidc is not None and len(token) != TOKEN_LENGTH and looks_like_jwt(token):
            oidc = self._oidc
            return self._timed("bearer", lambda: self._verify_jwt(oidc, token, peer))
        return self._timed("bearer", lambda: self._verify_uncached_token(token, peer))

    def _timed(self, method: Method, verify: Callable[[], Principal]) -> Principal:
        metrics = self.metrics
        return verify() if metrics is None else metrics.timed(method, verify)

    def _verify_uncached_token(
        self, token: str, peer: Peer | None, missed: bytes | None = None
    ) -> Principal:
        try:
            # Malformed input never reaches the cache or the store; nor does a JWT while OIDC
            # is off: it is refused as any other string that is no token.
            check_token(token)
            return self._verify_checked_token(token, peer, missed)
        except AuthenticationError as error:
            self._refused(error, peer)
            raise

    def _verify_checked_token(
        self, token: str, peer: Peer | None, missed: bytes | None = None
    ) -> Principal:
        """``missed``: the token's cache key, when the caller has just missed the cache with it
        (it is not hashed and looked up again)."""
        cache = self._cache
        if cache is None or self._token_ttl <= 0:
            return self._used(self._load_token(split_token(token)), peer, self._clock())
        link = (cache.tokens, BEARER_PREFIX + token)
        if missed is None:
            key = credential_key(token)
            principal = cache.get_or_load(
                key,
                lambda: self._load_token(split_token(token)),
                ttl_seconds=self._token_ttl,
                link=link,
            )
        else:
            key = missed
            principal = cache.load_missed(
                key,
                lambda: self._load_token(split_token(token)),
                ttl_seconds=self._token_ttl,
                link=link,
            )
        return self._note_use(key, principal, peer, self._clock())

    def _verify_jwt(self, oidc: OidcVerifier, token: str, peer: Peer | None) -> Principal:
        """An OIDC bearer JWT: verified once, then cached like a token until the cache TTL or
        the JWT's expiry, whichever comes first (a disabled user's entries are evicted)."""
        cache = self._cache
        try:
            if cache is None or self._token_ttl <= 0:
                principal = self._load_jwt(oidc, token)
            else:
                now = self._clock()
                key = credential_key(token)
                hit = cache.hit(key, now)
                if hit is not None:
                    return hit
                principal = cache.get_or_load(
                    key, lambda: self._load_jwt(oidc, token), ttl_seconds=self._token_ttl
                )
        except AuthenticationError as error:
            self._refused(error, peer)
            raise
        return principal

    def _load_jwt(self, oidc: OidcVerifier, token: str) -> Principal:
        identity = oidc.verify(token)
        if not oidc.require_user:
            return Principal(
                username=identity.username,
                user_id=NO_USER_ID,
                method="oidc",
                expires_at=identity.expires_at,
            )
        user = self._store.find_user(identity.username)
        if user is None:
            raise UnknownUser(f"OIDC user {identity.username} is not in the store")
        if user.disabled:
            raise UserDisabled(f"user {user.name} is disabled (OIDC)")
        return Principal(
            username=user.name, user_id=user.id, method="oidc", expires_at=identity.expires_at
        )

    def cached_call(
        self, authorization: str | bytes | None, session_id: str | None, now: float
    ) -> Principal | None:
        """The principal of a call with this ``authorization`` metadata (None if it has none) or
        else this session id, when the cache alone can tell: a live cached credential whose use
        needs no noting at ``now``. Otherwise None: then :meth:`verify_token` or
        :meth:`verify_session` decides, and refuses what it must.

        For the request path of a server (the gRPC interceptor asks it first, on every call).
        Only the exact form ``Bearer <token>`` is found, and the value is not taken apart. It
        skips what the verify methods do on top of a cache hit (arguments, peer resolution,
        metrics) and is one function: every function and object a call touches costs a busy
        server more than its instructions (they are out of the CPU caches by the next call on
        the thread; measured in the gateway).
        """
        # A bytes value or a missing session id (None) finds nothing.
        if authorization is not None:
            entry = self._tokens_presented.get(authorization)  # type: ignore[arg-type]
        else:
            entry = self._sessions_presented.get(session_id)  # type: ignore[arg-type]
        if entry is None or now >= entry.deadline:
            return None
        principal = entry.principal
        if principal.allow_from is not None:
            return None  # restricted tokens have the caller's address checked on every call
        # _hit's rule, without noting: a use due to be noted is left to the full path.
        noted = self._noted.get(entry.key)
        if noted is None or now - noted.at >= NOTE_EVERY:
            return None
        uses = noted.uses + 1
        if not uses % SAMPLE_EVERY:
            return None  # the full path counts this use again, and notes it
        noted.uses = uses
        cache = self._cache
        if cache is not None:
            cache.hits_by_text += 1  # a statistic: an increment lost to a race does not matter
        return principal

    def _hit(self, key: bytes, principal: Principal, peer: Peer | None, now: float) -> Principal:
        """A cache hit of a token or session id: its use is noted at most once a second.

        Noting a use (:meth:`_used`: the session's idle clock, the token's last use and its
        caller's address) on every call of a busy connection was most of what authentication
        cost the gateway (measured). Within ``NOTE_EVERY`` of the last noted use it would move
        the idle clock and the last-used time by less than their granularity, so only every
        ``SAMPLE_EVERY``-th use is noted then, to keep sampling the caller's address (a stolen
        bearer token used beside its owner is seen from its new address). Address-restricted
        tokens are checked on every call.
        """
        noted = self._noted.get(key)
        if noted is not None and principal.allow_from is None and now - noted.at < NOTE_EVERY:
            noted.uses += 1  # a count lost to a race between threads only moves the next sample
            if noted.uses % SAMPLE_EVERY:
                return principal
        return self._note_use(key, principal, peer, now)

    def _note_use(
        self, key: bytes, principal: Principal, peer: Peer | None, now: float
    ) -> Principal:
        """:meth:`_used`, remembering when for :meth:`_hit`; the caller's address is asked for
        (not left to the last-used recorder's own sampling): noted uses are the sample."""
        noted = self._noted
        entry = noted.get(key)
        if entry is None:
            if len(noted) >= MAX_NOTED:
                noted.clear()  # each credential's next hit notes its use again: harmless
            entry = noted[key] = _Noted(now)
        entry.at = now
        return self._used(principal, peer() if callable(peer) else peer, now)

    def _used(self, principal: Principal, peer: Peer | None, now: float) -> Principal:
        """What every accepted token or session call does after verification: the address
        check of a restricted token, the session's idle clock, the token's last use."""
        if principal.allow_from is not None:
            # Only restricted tokens pay for resolving the peer on every call: a session id
            # taken elsewhere must not work from outside the token's ranges either.
            check_peer(principal.allow_from, peer, token_id=principal.token_id)
        if principal.session_id is not None:
            self._require_sessions().touch(principal.session_id, now=now)
        if principal.token_id is not None:
            self._recorder.record(principal.token_id, at=now, peer=peer)
        return principal

    def _load_token(self, parsed: ParsedToken) -> Principal:
        # No throttle check before the read: see _verify_attempt. A blocked address's guesses
        # cost a read and an HMAC each (as every address's first ones do); malformed ones and
        # ids remembered unknown cost nothing.
        if self._cache is not None and self._cache.is_known_unknown(parsed.id):
            raise UnknownToken(f"token {parsed.id}: no such token (remembered)")
        record = self._store.find_token(parsed.id)
        # Hashed for unknown ids too, so that they cost what known ones cost.
        presented = self._store.token_digest(parsed.secret, record.pepper_id if record else None)
        if record is None:
            if self._cache is not None:
                self._cache.remember_unknown(parsed.id)
            raise UnknownToken(f"token {parsed.id}: no such token")
        grace_until = None
        if not hmac.compare_digest(record.digest, presented):
            grace_until = self._previous_secret_grace(record, parsed)
        # The secret is proven: from here on the caller may learn what is wrong.
        self._check_alive(record)
        if grace_until is not None and self._clock() >= grace_until.timestamp():
            raise TokenRotatedOut(f"token {record.id} of {record.user}: its old secret was used")
        return Principal(
            username=record.user,
            user_id=record.user_id,
            method="token",
            token_id=record.id,
            expires_at=record.expires_at,
            allow_from=load_allow_from(record.allow_from),
            read_only=record.scope != SCOPE_ALL,
            grace_until=grace_until,
            rotated_at=record.rotated_at,
        )

    def _previous_secret_grace(self, record: TokenRecord, parsed: ParsedToken) -> dt.datetime:
        """The grace end if ``parsed`` is the secret the token's last rotation replaced, else
        :class:`InvalidTokenSecret`. Only rotated tokens pay for a second digest."""
        if record.previous_digest is None or record.previous_valid_until is None:
            raise InvalidTokenSecret(f"token {parsed.id}: wrong secret")
        previous = self._store.token_digest(parsed.secret, record.previous_pepper_id)
        if not hmac.compare_digest(record.previous_digest, previous):
            raise InvalidTokenSecret(f"token {parsed.id}: wrong secret")
        return record.previous_valid_until

    def inspect_token(self, token: str) -> Principal:
        """What :meth:`verify_token` decides about ``token``, read from the store every time and
        with no side effect: no cache entry, no last-used time (``e6auth token check``)."""
        check_token(token)
        return self._load_token(split_token(token))

    def _check_alive(self, record: TokenRecord) -> None:
        """Raise unless the token is unrevoked, unexpired and its user enabled: the one place
        that decides it, for token logins and for sessions made with a token."""
        if record.revoked_at is not None:
            raise TokenRevoked(f"token {record.id} of {record.user} was revoked")
        if record.expires_at is not None and self._clock() >= record.expires_at.timestamp():
            raise TokenExpired(f"token {record.id} of {record.user} expired")
        if record.user_disabled:
            raise UserDisabled(f"user {record.user} is disabled (token {record.id})")

    # -- sessions ------------------------------------------------------------------------------

    def create_session(self, principal: Principal) -> str:
        """A session id for a principal just verified by :meth:`verify`: the handshake's answer."""
        if principal.method == "oidc":
            # OIDC callers send their JWT on every call; the handshake never sees one.
            raise SessionError("OIDC principals have no sessions")
        session_id, claims = self._require_sessions().issue(
            username=principal.username,
            user_id=principal.user_id,
            method=principal.method,
            token_id=principal.token_id,
            password_generation=principal.password_generation,
            secret_rotated_at=_micros(principal.rotated_at),
            previous_secret=principal.grace_until is not None,
        )
        cache = self._cache
        if cache is not None and self._token_ttl > 0:
            # What loading the session would give, on the terms of the credential just verified
            # (which may have come from the cache): its first call needs no store read, so a
            # handshake that succeeds during a store outage opens a connection that works.
            expires_at = claims.expires
            if principal.expires_at is not None:
                expires_at = min(expires_at, principal.expires_at)
            session = dataclasses.replace(principal, session_id=claims.id, expires_at=expires_at)
            key = session_cache_key(session_id)
            if cache.seed_session(key, session, ttl_seconds=self._token_ttl):
                cache.link(cache.sessions, session_id, key)
                # Its idle clock starts now, as a load of the session would start it.
                self._require_sessions().touch(claims.id, issued_at=claims.issued_at)
        return session_id

    def verify_session(self, session_id: str, *, peer: Peer | None = None) -> Principal:
        """The principal of a live session, or :class:`~e6auth.errors.SessionError`.

        The session's JWT is decoded once and cached like a token; its credential is re-checked
        on every load, and invalidations of the credential evict it at once.
        """
        cache = self._cache
        if cache is not None and self._token_ttl > 0 and len(session_id) <= MAX_SESSION_ID_LENGTH:
            now = self._clock()
            key = session_cache_key(session_id)
            principal = cache.hit(key, now)
            if principal is not None:
                cache.link(cache.sessions, session_id, key)
                return self._hit(key, principal, peer, now)
        metrics = self.metrics
        if metrics is None:
            return self._verify_uncached_session(session_id, peer)
        return metrics.timed("session", lambda: self._verify_uncached_session(session_id, peer))

    def _verify_uncached_session(self, session_id: str, peer: Peer | None) -> Principal:
        key = None
        try:
            if self._cache is None or self._token_ttl <= 0:
                principal = self._load_session(session_id)
            else:
                key = session_cache_key(session_id)
                principal = self._cache.get_or_load(
                    key, lambda: self._load_session(session_id), ttl_seconds=self._token_ttl
                )
                self._cache.link(self._cache.sessions, session_id, key)
        except AuthenticationError as error:
            self._refused(error, peer)
            raise
        if key is None:
            return self._used(principal, peer, self._clock())
        return self._note_use(key, principal, peer, self._clock())

    @property
    def call_clock(self) -> Clock:
        """The clock :meth:`call_started` reads, for callers that time calls themselves."""
        return self._clock

    def call_started(self) -> float:
        """The moment a call begins, on this authenticator's clock; pass it to call_finished."""
        return self._clock()

    def call_finished(self, principal: Principal, started: float | None = None) -> None:
        """Tell the authenticator a call made as ``principal`` ended (the interceptor does), so
        that a session is idle from the end of its last call, not from the start."""
        if principal.session_id is not None and self._sessions is not None:
            self._sessions.keep_alive(principal.session_id, started=started)

    def _refused(self, error: AuthenticationError, peer: Peer | None) -> None:
        """A token, bearer or session refusal: counted against the address; from an address
        already blocked, answered as throttled instead."""
        if self._throttle is None or not counts_as_failure(error):
            return
        address = _address(peer)
        self._throttle.check(address)
        self._throttle.failed(address)

    def _require_sessions(self) -> SessionSigner:
        if self._sessions is None:
            raise SessionError("this authenticator has no session key")
        return self._sessions

    def _load_session(self, session_id: str) -> Principal:
        signer = self._require_sessions()
        # No throttle check first: a session id is proven by its signature, in memory, and a
        # valid one is let in from a blocked address (its refusal counts, in _refused).
        claims = signer.decode(session_id)
        signer.touch(claims.id, issued_at=claims.issued_at)
        if claims.method == "token":
            return self._token_session(claims)
        return self.password_session(claims)

    def password_session(self, claims: SessionClaims) -> Principal:
        """The principal of a session made with a password, its credential re-checked in the
        store (one read): the same user still exists and is enabled, its password has not changed
        since, the user has not signed out everywhere since (for sessions that carry a session
        generation: the web page's), and password logins are allowed. Else
        :class:`~e6auth.errors.SessionRevoked`.

        The handshake's sessions come here through :meth:`verify_session`; the web page's, whose
        claims it decodes with a signer of its own, call it directly on every request."""
        if not self._policy.password_logins:
            raise SessionRevoked(f"session {claims.id}: password logins are disabled")
        user = self._store.find_user(claims.username)
        if user is None or user.id != claims.user_id:
            raise SessionRevoked(f"session {claims.id}: user {claims.username} is gone")
        if user.password_generation != claims.password_generation:
            raise SessionRevoked(f"session {claims.id}: the password of {user.name} changed")
        if user.disabled:
            raise SessionRevoked(f"session {claims.id}: user {user.name} is disabled")
        if (
            claims.session_generation is not None
            and claims.session_generation != user.session_generation
        ):
            raise SessionRevoked(f"session {claims.id}: {user.name} signed out everywhere")
        return Principal(
            username=user.name,
            user_id=user.id,
            method="password",
            expires_at=claims.expires,
            password_generation=user.password_generation,
            session_id=claims.id,
            admin=user.admin,
        )

    def _token_session(self, claims: SessionClaims) -> Principal:
        record = self._store.find_token(claims.token_id) if claims.token_id else None
        if record is None or record.user_id != claims.user_id:
            raise SessionRevoked(f"session {claims.id}: token {claims.token_id} is gone")
        try:
            self._check_alive(record)
        except AuthenticationError as exc:
            raise SessionRevoked(f"session {claims.id}: {exc.detail}") from exc
        grace_until = _session_grace(claims, record)
        if grace_until is not None and self._clock() >= grace_until.timestamp():
            raise SessionRevoked(f"session {claims.id}: its secret of {record.id} was rotated out")
        expires_at = claims.expires
        if record.expires_at is not None:
            expires_at = min(expires_at, record.expires_at)
        return Principal(
            username=record.user,
            user_id=record.user_id,
            method="token",
            token_id=record.id,
            expires_at=expires_at,
            session_id=claims.id,
            allow_from=load_allow_from(record.allow_from),
            read_only=record.scope != SCOPE_ALL,
            grace_until=grace_until,
            rotated_at=record.rotated_at,
        )

    # -- passwords -----------------------------------------------------------------------------

    def _verify_password_cached(self, username: str, password: str) -> Principal:
        if self._cache is None or self._password_ttl <= 0:
            return self._verify_password(username, password)
        try:
            canonical = normalize_username(username)
        except InvalidUsername:
            return self._verify_password(username, password)
        key = hmac.new(
            self._password_key,
            f"{canonical}\0{password}".encode("utf-8", "surrogatepass"),
            hashlib.sha256,
        ).digest()
        return self._cache.get_or_load(
            key,
            lambda: self._verify_password(canonical, password),
            ttl_seconds=self._password_ttl,
        )

    def _verify_password(self, username: str, password: str) -> Principal:
        passwords = self._store.passwords
        user = self._store.find_user(username)
        # Unknown users are checked against a dummy hash: they cost what known users cost.
        matches = passwords.verify(user.password_hash if user else None, password)
        if user is None:
            raise UnknownUser("password login for an unknown user")
        if not matches:
            raise InvalidPassword(f"wrong password for {user.name}")
        if user.disabled:
            raise UserDisabled(f"user {user.name} is disabled")
        self._upgrade_hash(user, password)
        return Principal(
            username=user.name,
            user_id=user.id,
            method="password",
            password_generation=user.password_generation,
            admin=user.admin,
        )

    def _upgrade_hash(self, user: UserRecord, password: str) -> None:
        if user.password_hash is None or not self._store.passwords.needs_rehash(user.password_hash):
            return
        new_hash = self._store.passwords.hash(password)
        if self._store.replace_password_hash(user.id, user.password_hash, new_hash):
            log.info("re-hashed the password of %s with the current parameters", user.name)


def _micros(moment: dt.datetime | None) -> int | None:
    """A stored moment as whole POSIX microseconds: exact, for comparing with a session claim."""
    if moment is None:
        return None
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _session_grace(claims: SessionClaims, record: TokenRecord) -> dt.datetime | None:
    """When the secret a token session was made with stops working because of a rotation, or
    None while it is the token's current secret.

    Only one previous secret is kept: a session made with the previous secret is over once the
    token is rotated again. A session made with the then current secret becomes a previous-secret
    session at the next rotation (after two rotations it still ends at the second one's grace
    end, at the latest with its maximum age: the claims do not say how many rotations passed).
    """
    rotated = _micros(record.rotated_at)
    if rotated == claims.secret_rotated_at:
        return record.previous_valid_until if claims.previous_secret else None
    if claims.previous_secret or record.previous_valid_until is None:
        raise SessionRevoked(f"session {claims.id}: its secret of {record.id} was rotated out")
    return record.previous_valid_until


def _address(peer: Peer | None) -> str | None:
    return peer() if callable(peer) else peer


def _presented_by_owner(username: str, principal: Principal) -> bool:
    """Whether the user name given with a token names its owner (as typed, or canonical)."""
    return username == principal.username or _canonical_or_none(username) == principal.username


def _canonical_or_none(username: str) -> str | None:
    try:
        return normalize_username(username)
    except InvalidUsername:
        return None
