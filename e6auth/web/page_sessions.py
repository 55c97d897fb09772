"""Web page sessions: e6auth's session JWTs, for another audience, in a cookie.

A sign-in is a password verified by the one :class:`~e6auth.verify.authenticator.Authenticator`
(throttled with the handshakes' counters); the session is a JWT signed with the session key for the
``e6auth-web`` audience, so that it is never accepted as a connector's session id, nor the reverse.
Every request decodes it, checks its idle and absolute expiry and re-reads its user from the store
(one read): a disabled user, a changed password or password logins turned off end it on the next
request, and the administrator flag is always the stored one.

Signing out is stored, so that it holds on every replica and after a restart: the session's id (a
hash of it) is recorded as ended until the session would have expired anyway, and each request
looks it up (one indexed read). Signing out everywhere bumps the user's session generation, which
every session carries and every request compares with the stored user it reads anyway. Both are
read from the store on each request rather than cached, so they apply at once everywhere.

A sign-in through the identity provider (``sso.py``) opens the same kind of session with method
``sso``: no password behind it, so each request checks instead that the user still exists, is
enabled and is no service account, and that single sign-on is still configured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from e6auth.clock import Clock, to_datetime
from e6auth.errors import SessionError, SessionRevoked
from e6auth.store.records import UserRecord
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.principal import Principal
from e6auth.verify.restrictions import Peer
from e6auth.verify.sessions import SessionClaims, SessionSigner

__all__ = ["WEB_AUDIENCE", "WebSessions", "WebUser"]

WEB_AUDIENCE = "e6auth-web"
DEFAULT_IDLE_SECONDS = 1800.0
DEFAULT_MAX_AGE_SECONDS = 8 * 3600.0


@dataclass(frozen=True, slots=True)
class WebUser:
    """Who a request comes from: a signed-in user, read from the store on this request."""

    name: str
    admin: bool
    session: SessionClaims = field(repr=False)


class WebSessions:
    def __init__(
        self,
        authenticator: Authenticator,
        session_key: bytes,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        clock: Clock = time.time,
        sso: bool = False,
        password: bool = True,
    ) -> None:
        """``sso``: sessions opened through the identity provider are accepted (single sign-on
        is configured). ``password``: so are sessions opened with a password (password sign-in
        is on)."""
        self._authenticator = authenticator
        self._sso = sso
        self._password = password
        self._signer = SessionSigner(
            session_key,
            idle_seconds=idle_seconds,
            max_age_seconds=max_age_seconds,
            clock=clock,
            audience=WEB_AUDIENCE,
        )

    def __repr__(self) -> str:
        return f"WebSessions({self._signer!r})"

    @property
    def max_age_seconds(self) -> float:
        return self._signer.max_age_seconds

    def sign_in(self, username: str, password: str, *, peer: Peer | None) -> tuple[str, Principal]:
        """A new session (the cookie's value) for a good password, or the refusal the
        authenticator raises (:class:`~e6auth.errors.Throttled` included)."""
        principal = self._authenticator.verify_password(username, password, peer=peer)
        # Read now, not taken from the verification (which a cache may have answered): the
        # session must carry the generation current when it is made.
        stored = self._authenticator.store.find_user(principal.username)
        if stored is None or stored.id != principal.user_id:
            raise SessionRevoked(f"user {principal.username} changed while signing in")
        cookie, _claims = self._signer.issue(
            username=principal.username,
            user_id=principal.user_id,
            method="password",
            password_generation=principal.password_generation,
            session_generation=stored.session_generation,
        )
        return cookie, principal

    def sign_in_sso(self, user: UserRecord) -> str:
        """A new session (the cookie's value) for a user the identity provider vouched for."""
        cookie, _claims = self._signer.issue(
            username=user.name,
            user_id=user.id,
            method="sso",
            session_generation=user.session_generation,
        )
        return cookie

    def user(self, cookie: str) -> WebUser:
        """The user of a live session, or a :class:`~e6auth.errors.SessionError` (or
        :class:`~e6auth.errors.StoreUnavailable`)."""
        claims = self._signer.decode(cookie)
        if claims.session_generation is None:
            # Made before sign-outs were stored: signing out everywhere could not end it.
            raise SessionError(f"session {claims.id} carries no session generation")
        self._signer.touch(claims.id, issued_at=claims.issued_at)
        if self._authenticator.store.session_ended(claims.id):
            raise SessionRevoked(f"session {claims.id} of {claims.username} was signed out")
        if claims.method == "sso":
            return self._sso_user(claims)
        if not self._password:
            raise SessionRevoked(f"session {claims.id}: password sign-in is turned off")
        principal = self._authenticator.password_session(claims)
        return WebUser(principal.username, principal.admin, claims)

    def end(self, user: WebUser) -> None:
        """Sign one session out, in the store: every process refuses it from now on."""
        self._signer.end(user.session)
        self._authenticator.store.end_session(
            user.session.id, expires_at=to_datetime(user.session.expires_at)
        )

    def end_everywhere(self, user: WebUser) -> None:
        """Sign out every session of the user, this one included, in every process."""
        self._signer.end(user.session)
        self._authenticator.store.sign_out_everywhere(user.name)

    def _sso_user(self, claims: SessionClaims) -> WebUser:
        # No password behind it: the same user must still exist (not deleted and made again),
        # be enabled, be no service account, not have signed out everywhere since, and single
        # sign-on still be configured.
        if not self._sso:
            raise SessionRevoked(f"session {claims.id}: single sign-on is turned off")
        user = self._authenticator.store.find_user(claims.username)
        if user is None or user.id != claims.user_id:
            raise SessionRevoked(f"session {claims.id}: user {claims.username} is gone")
        if user.disabled or user.service:
            raise SessionRevoked(f"session {claims.id}: user {user.name} may not sign in")
        if claims.session_generation != user.session_generation:
            raise SessionRevoked(f"session {claims.id}: {user.name} signed out everywhere")
        return WebUser(user.name, user.admin, claims)
