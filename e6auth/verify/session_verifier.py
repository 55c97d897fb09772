"""Session verification: the handshake's sessions made, and checked on every call that uses one.

A session (signed and decoded by :class:`~e6auth.verify.sessions.SessionSigner`) is only as alive
as the credential it was made with: every load re-checks that credential in the store (the token
unrevoked, unexpired, of an enabled user, its secret not rotated out; the password unchanged and
password logins allowed). A loaded session is cached like a token, and evicted at once when its
credential is invalidated; a load that finds its credential ended evicts that credential's cached
logins too, without waiting for the invalidation log. The web page's sessions, decoded with a
signer of their own, are checked by :meth:`SessionVerifier.password_session` on every request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from e6auth.errors import (
    AuthenticationError,
    SessionError,
    SessionRevoked,
    TokenRevoked,
    UserDisabled,
)
from e6auth.store.records import Invalidation
from e6auth.verify.cache import session_cache_key
from e6auth.verify.pipeline import Pipeline
from e6auth.verify.principal import Principal, token_principal
from e6auth.verify.restrictions import Peer
from e6auth.verify.sessions import MAX_SESSION_ID_LENGTH, SessionClaims, SessionSigner

if TYPE_CHECKING:
    from e6auth.metrics import Method
    from e6auth.store import TokenRecord
    from e6auth.verify.use_sampling import UseSampler

__all__ = ["SessionVerifier", "require_signer"]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class SessionVerifier:
    """Issues session ids for verified principals and turns session ids back into principals.

    The token checks it shares with token logins (``check_alive``) and the metrics timer
    (``timed``) are the authenticator's, passed in: one implementation of each."""

    def __init__(
        self,
        pipeline: Pipeline,
        signer: SessionSigner | None,
        *,
        uses: UseSampler,
        check_alive: Callable[[TokenRecord], None],
        timed: Callable[[Method, Callable[[], Principal]], Principal],
    ) -> None:
        self._pipeline = pipeline
        self._signer = signer
        self._uses = uses
        self._check_alive = check_alive
        self._timed = timed

    def create(self, principal: Principal) -> str:
        """A session id for a principal just verified by the handshake."""
        if principal.method == "oidc":
            # OIDC callers send their JWT on every call; the handshake never sees one.
            raise SessionError("OIDC principals have no sessions")
        session_id, claims = require_signer(self._signer).issue(
            username=principal.username,
            user_id=principal.user_id,
            method=principal.method,
            token_id=principal.token_id,
            password_generation=principal.password_generation,
            secret_rotated_at=_micros(principal.rotated_at),
            previous_secret=principal.grace_until is not None,
        )
        cache = self._pipeline.cache
        if cache is not None and self._pipeline.ttl_seconds > 0:
            # What loading the session would give, on the terms of the credential just verified
            # (which may have come from the cache): its first call needs no store read, so a
            # handshake that succeeds during a store outage opens a connection that works.
            expires_at = claims.expires
            if principal.expires_at is not None:
                expires_at = min(expires_at, principal.expires_at)
            session = dataclasses.replace(principal, session_id=claims.id, expires_at=expires_at)
            key = session_cache_key(session_id)
            if cache.seed_session(key, session, ttl_seconds=self._pipeline.ttl_seconds):
                cache.link(cache.sessions, session_id, key)
                # Its idle clock starts now, as a load of the session would start it.
                require_signer(self._signer).touch(claims.id, issued_at=claims.issued_at)
        return session_id

    def verify(self, session_id: str, peer: Peer | None) -> Principal:
        """The principal of a live session, or :class:`~e6auth.errors.SessionError`."""
        pipeline = self._pipeline
        cache = pipeline.cache
        if (
            cache is not None
            and pipeline.ttl_seconds > 0
            and len(session_id) <= MAX_SESSION_ID_LENGTH
        ):
            now = pipeline.clock()
            key = session_cache_key(session_id)
            principal = cache.hit(key, now)
            if principal is not None:
                cache.link(cache.sessions, session_id, key)
                return pipeline.hit(key, principal, peer, now)
        return self._timed("session", lambda: self._verify_uncached(session_id, peer))

    def _verify_uncached(self, session_id: str, peer: Peer | None) -> Principal:
        pipeline = self._pipeline
        cache = pipeline.cache
        key = None
        try:
            if cache is None or pipeline.ttl_seconds <= 0:
                principal = self._load(session_id)
            else:
                key = session_cache_key(session_id)
                principal = cache.get_or_load(
                    key, lambda: self._load(session_id), ttl_seconds=pipeline.ttl_seconds
                )
                cache.link(cache.sessions, session_id, key)
        except AuthenticationError as error:
            pipeline.refused(error, peer)
            raise
        if key is None:
            return self._uses.used(principal, peer, pipeline.clock())
        return self._uses.note_use(key, principal, peer, pipeline.clock())

    def _load(self, session_id: str) -> Principal:
        signer = require_signer(self._signer)
        # No throttle check first: a session id is proven by its signature, in memory, and a
        # valid one is let in from a blocked address (its refusal counts, in refused).
        claims = signer.decode(session_id)
        signer.touch(claims.id, issued_at=claims.issued_at)
        if claims.method == "token":
            return self._token_session(claims)
        return self.password_session(claims)

    def password_session(self, claims: SessionClaims) -> Principal:
        """The principal of a session made with a password, its credential re-checked in the
        store (one read), else :class:`~e6auth.errors.SessionRevoked` (what is checked: see
        ``Authenticator.password_session``)."""
        if not self._pipeline.policy.password_logins:
            raise SessionRevoked(f"session {claims.id}: password logins are disabled")
        user = self._pipeline.store.find_user(claims.username)
        if user is None or user.id != claims.user_id:
            raise self._ended(claims, f"user {claims.username} is gone", user_id=claims.user_id)
        if user.password_generation != claims.password_generation:
            raise self._ended(claims, f"the password of {user.name} changed", user_id=user.id)
        if user.disabled:
            raise self._ended(claims, f"user {user.name} is disabled", user_id=user.id)
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
        store = self._pipeline.store
        record = store.find_token(claims.token_id) if claims.token_id else None
        if record is None or record.user_id != claims.user_id:
            raise self._ended(claims, f"token {claims.token_id} is gone", token_id=claims.token_id)
        try:
            self._check_alive(record)
        except UserDisabled as exc:
            raise self._ended(claims, exc.detail, user_id=record.user_id) from exc
        except TokenRevoked as exc:
            raise self._ended(claims, exc.detail, token_id=record.id) from exc
        except AuthenticationError as exc:  # expired: every cache hit checks expiry itself
            raise SessionRevoked(f"session {claims.id}: {exc.detail}") from exc
        grace_until = _session_grace(claims, record)
        if grace_until is not None and self._pipeline.clock() >= grace_until.timestamp():
            raise SessionRevoked(f"session {claims.id}: its secret of {record.id} was rotated out")
        expires_at = claims.expires
        if record.expires_at is not None:
            expires_at = min(expires_at, record.expires_at)
        return token_principal(
            record, grace_until=grace_until, expires_at=expires_at, session_id=claims.id
        )

    def _ended(
        self,
        claims: SessionClaims,
        why: str,
        *,
        user_id: int | None = None,
        token_id: str | None = None,
    ) -> SessionRevoked:
        """The refusal of a session whose credential the store shows ended (a disabled or
        deleted user, a new password, a revoked or deleted token), evicting at once what that
        change's invalidation log entry names.

        The store may show a change before this process has read it from the log (the poll, a
        second away): until then the credential's own cache entry still answers, and the
        connector's re-login after "Access denied" would be let in to a new session that the
        store ends again, five times over, instead of being told why it cannot log in. Evicting
        here sends that re-login to the store; the poll evicts again later, which is harmless."""
        cache = self._pipeline.cache
        if cache is not None and (user_id is not None or token_id is not None):
            cache.invalidate((Invalidation(token_id=token_id, user_id=user_id),))
        return SessionRevoked(f"session {claims.id}: {why}")


def require_signer(signer: SessionSigner | None) -> SessionSigner:
    """The signer, or :class:`~e6auth.errors.SessionError` for an authenticator without one."""
    if signer is None:
        raise SessionError("this authenticator has no session key")
    return signer


def _micros(moment: dt.datetime | None) -> int | None:
    """A stored moment as whole POSIX microseconds: exact, for comparing with a session claim."""
    if moment is None:
        return None
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


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
