"""The one verify pipeline: every decision about a credential is made here.

The :class:`Authenticator` is the entry point, and decides about tokens itself (the hot path:
a cache hit, or one read and an HMAC). It composes the rest, each in a module of its own:
logins with a user name (:mod:`~e6auth.verify.logins`), the handshake's sessions
(:mod:`~e6auth.verify.session_verifier`), OIDC bearer JWTs (:mod:`~e6auth.verify.oidc_bearer`),
the noting of cached credentials' uses (:mod:`~e6auth.verify.use_sampling`) and the background
tasks (:mod:`~e6auth.verify.tasks`); it is tuned with the groups of
:mod:`~e6auth.verify.parameters`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from e6auth.background.audit import AuditLog
from e6auth.background.invalidation import NotifyListener
from e6auth.background.lastused import LastUsedRecorder
from e6auth.clock import Clock
from e6auth.credentials.tokens import (
    TOKEN_LENGTH,
    ParsedToken,
    looks_like_token,
    parse_token,
)
from e6auth.errors import (
    AuthenticationError,
    InvalidTokenSecret,
    TokenExpired,
    TokenRevoked,
    TokenRotatedOut,
    UnknownToken,
    UserDisabled,
)
from e6auth.store import Invalidation, TokenRecord, TokenStore
from e6auth.verify.cache import Presented, VerificationCache, credential_key
from e6auth.verify.logins import LoginVerifier, presented_by_owner
from e6auth.verify.oidc import OidcVerifier, looks_like_jwt
from e6auth.verify.oidc_bearer import OidcBearerVerifier
from e6auth.verify.parameters import (
    CacheParameters,
    SessionParameters,
    TaskParameters,
    from_flat_keywords,
)
from e6auth.verify.pipeline import Pipeline
from e6auth.verify.principal import Principal, token_principal
from e6auth.verify.proxies import TrustedProxies
from e6auth.verify.restrictions import Peer, peer_address
from e6auth.verify.session_verifier import SessionVerifier
from e6auth.verify.sessions import SessionClaims, SessionSigner
from e6auth.verify.tasks import BackgroundTasks
from e6auth.verify.throttle import LoginThrottle, counts_as_failure
from e6auth.verify.use_sampling import NOTE_EVERY, SAMPLE_EVERY, UseSampler

if TYPE_CHECKING:
    from e6auth.metrics import Method, Metrics
    from e6auth.settings import Settings

__all__ = ["Authenticator"]

BEARER_PREFIX = "Bearer "
"""How ``authorization`` metadata carries a token (the e6data connector's form)."""

_DEFAULT_CACHE = CacheParameters()
_DEFAULT_TASKS = TaskParameters()


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
        cache: CacheParameters = _DEFAULT_CACHE,
        sessions: SessionParameters | None = None,
        tasks: TaskParameters = _DEFAULT_TASKS,
        background: bool = False,
        audit: AuditLog | None = None,
        throttle: LoginThrottle | None = None,
        metrics: Metrics | None = None,
        oidc: OidcVerifier | None = None,
        trusted_proxies: TrustedProxies | None = None,
        **deprecated: Any,
    ) -> None:
        """``cache``, ``sessions`` and ``tasks`` tune the cache, the handshake's sessions (none
        without) and the background tasks (e6auth.verify.parameters); the former flat keywords
        (``cache_ttl_seconds=``, ``session_key=``, …) still work, with a DeprecationWarning.

        ``background=True`` (``from_settings``'s) starts the background tasks: the last-used
        flusher, the invalidation poller (and listener), the revoke-unused thread when the
        store's policy revokes unused tokens, and ``audit``; without it, call
        :meth:`flush_last_used`, :meth:`poll_invalidations` and :meth:`revoke_unused` yourself,
        as tests do. ``throttle`` counts failed attempts, blocks addresses and slows user names
        down. ``oidc`` accepts bearer JWTs of one issuer in :meth:`verify_token`.
        ``trusted_proxies``: whose ``X-Forwarded-For`` the front ends built on this instance
        believe. The policy (password logins allowed or not) is the store's. ``metrics`` (also
        settable as the attribute before serving) counts and times what passes the cache."""
        if deprecated:
            cache, sessions, tasks = from_flat_keywords(deprecated, cache, sessions, tasks)
        self._store = store
        self.metrics = metrics
        self.audit = audit
        self._throttle = throttle
        # Kept here, with the throttle it feeds, for every front end built on this instance.
        self.trusted_proxies = trusted_proxies or TrustedProxies()
        self._oidc = oidc
        self._clock = clock
        self._policy = store.policy
        self._cache = cache.build_cache(clock)
        # The cache's lookups by text, read by the request path (see cached_call). Tokens are linked
        # in the form authorization metadata carries them (BEARER_PREFIX + token): the request
        # path looks the value up as it comes.
        self._tokens_presented = self._cache.tokens if self._cache is not None else Presented()
        self._sessions_presented = self._cache.sessions if self._cache is not None else Presented()
        self._token_ttl = cache.ttl_seconds
        self._sessions = sessions.build_signer(clock) if sessions is not None else None
        self._tasks = BackgroundTasks(
            store, tasks, policy=self._policy, invalidate=self._invalidate, audit=audit, clock=clock
        )
        uses = UseSampler(self._tasks.recorder, self._sessions)
        # The token path and the cache-hit path (here) call these as their own: bound once, so a
        # call costs what a method call did. _noted: when each cached credential's use was last
        # noted, by cache key (see _hit).
        self._noted = uses.noted
        self._note_use = uses.note_use
        self._used = uses.used
        pipeline = Pipeline(
            store, self._policy, self._cache, self._token_ttl, clock, self._hit, self._refused
        )
        self._verify_jwt = OidcBearerVerifier(pipeline).verify
        self._logins = LoginVerifier(
            pipeline,
            password_ttl_seconds=cache.password_ttl_seconds,
            throttle=throttle,
            verify_parsed_token=self._verify_parsed_token,
        )
        self._session_verifier = SessionVerifier(
            pipeline, self._sessions, uses=uses, check_alive=self._check_alive, timed=self._timed
        )
        store.add_invalidation_listener(self._invalidate)
        if background:
            self._tasks.start(audit)

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, metrics: Metrics | None = None
    ) -> Authenticator:
        """An authenticator on the store the settings (by default, the environment) name, with
        its background flusher and poller running. ``close()`` it when done."""
        from e6auth.settings import Settings

        settings = settings or Settings()
        store = TokenStore.from_settings(settings)
        sessions = settings.build_session_parameters()
        return cls(
            store,
            cache=settings.build_cache_parameters(),
            sessions=sessions,
            tasks=settings.build_task_parameters(),
            background=True,
            # Replicas share the session key: the audit derives its key for unknown user names
            # from it too.
            audit=settings.build_audit_log(store, key=sessions.key),
            throttle=settings.build_throttle(),
            metrics=metrics,
            oidc=settings.build_oidc_verifier(),
            trusted_proxies=settings.build_trusted_proxies(),
        )

    @property
    def store(self) -> TokenStore:
        return self._store

    @property
    def cache(self) -> VerificationCache | None:
        return self._cache

    @property
    def last_used(self) -> LastUsedRecorder:
        return self._tasks.recorder

    @property
    def listener(self) -> NotifyListener | None:
        return self._tasks.listener

    @property
    def throttle(self) -> LoginThrottle | None:
        return self._throttle

    @property
    def sessions(self) -> SessionSigner | None:
        return self._sessions

    def flush_last_used(self) -> int:
        return self._tasks.recorder.flush()

    def poll_invalidations(self) -> int:
        return self._tasks.poller.poll()

    def revoke_unused(self) -> int:
        """Apply the policy's revoke-unused rule now (the background thread does so hourly):
        pending last-used times are written first, so that a token in use is never revoked."""
        return self._tasks.revoke_unused()

    def close(self) -> None:
        """Stop the background threads, write pending last-used times, release the store."""
        self._store.remove_invalidation_listener(self._invalidate)
        try:
            self._tasks.close(self.audit)
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
        return self._timed(
            "password",
            lambda: self._logins.attempt(username, password, peer, password_only=True),
        )

    def _verify_attempt(self, username: str, secret: str, peer: Peer | None) -> Principal:
        # A token login's cache hit is the token path's, here: the login path (and its throttle)
        # only sees what the cache could not answer.
        cached = self._cached_token_login(username, secret, peer)
        if cached is not None:
            return cached
        return self._logins.attempt(username, secret, peer)

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
        if entry is None or not presented_by_owner(username, entry.principal):
            return None
        return self._hit(entry.key, entry.principal, peer, now)

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
        """``missed``: the token's cache key, when the caller has just missed the cache with it
        (the cache is on, and the key is not made and looked up again)."""
        try:
            # Malformed input never reaches the cache or the store; nor does a JWT while OIDC
            # is off: it is refused as any other string that is no token.
            parsed = parse_token(token)
            if missed is None or self._cache is None:
                return self._verify_parsed_token(token, parsed, peer)
            # _verify_parsed_token's work for a key just missed, without its call: a cache miss.
            principal = self._cache.load_missed(
                missed,
                self._load_token,
                parsed,
                ttl_seconds=self._token_ttl,
                link=(self._cache.tokens, BEARER_PREFIX + token),
            )
            return self._note_use(missed, principal, peer, self._clock())
        except AuthenticationError as error:
            self._refused(error, peer)
            raise

    def _verify_parsed_token(self, token: str, parsed: ParsedToken, peer: Peer | None) -> Principal:
        """``token``, parsed by the caller, refused or not without the refusal recorded: the
        caller (this class's verify_token, or a login) records it."""
        cache = self._cache
        if cache is None or self._token_ttl <= 0:
            return self._used(self._load_token(parsed), peer, self._clock())
        key = credential_key(token)
        principal = cache.get_or_load(
            key,
            functools.partial(self._load_token, parsed),
            ttl_seconds=self._token_ttl,
            link=(cache.tokens, BEARER_PREFIX + token),
        )
        return self._note_use(key, principal, peer, self._clock())

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
        return token_principal(record, grace_until=grace_until)

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
        return self._load_token(parse_token(token))

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
        return self._session_verifier.create(principal)

    def verify_session(self, session_id: str, *, peer: Peer | None = None) -> Principal:
        """The principal of a live session, or :class:`~e6auth.errors.SessionError`.

        The session's JWT is decoded once and cached like a token; its credential is re-checked
        on every load, and invalidations of the credential evict it at once.
        """
        return self._session_verifier.verify(session_id, peer)

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
        address = peer_address(peer)
        self._throttle.check(address)
        self._throttle.failed(address)

    def password_session(self, claims: SessionClaims) -> Principal:
        """The principal of a session made with a password, its credential re-checked in the
        store (one read): the same user still exists and is enabled, its password has not changed
        since, the user has not signed out everywhere since (for sessions that carry a session
        generation: the web page's), and password logins are allowed. Else
        :class:`~e6auth.errors.SessionRevoked`.

        The handshake's sessions come here through :meth:`verify_session`; the web page's, whose
        claims it decodes with a signer of their own, call it directly on every request."""
        return self._session_verifier.password_session(claims)
