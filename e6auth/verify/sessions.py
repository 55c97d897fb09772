"""Sessions: what the connector handshake hands out, as signed JWTs (HS256, PyJWT).

A session names its user and the credential it was made with (a token id, or the user's password
generation), carries an absolute expiry, and is refused once idle for too long. It is only as alive
as its credential: the authenticator checks that on every load, and evicts cached sessions when the
credential is deleted, disabled or changed.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from e6auth.clock import Clock
from e6auth.errors import SessionError, SessionExpired, SessionRevoked

__all__ = ["SessionClaims", "SessionSigner"]

ISSUER = "e6auth"
ALGORITHM = "HS256"
MAX_SESSION_ID_LENGTH = 4096
DEFAULT_IDLE_SECONDS = 3600.0
DEFAULT_MAX_AGE_SECONDS = 12 * 3600.0
DEFAULT_MAX_SESSIONS = 100_000
TOUCH_GRANULARITY_SECONDS = 1.0
"""Activity is noted at most once a second per session: idle limits are minutes or hours."""


_METHODS: dict[object, Literal["token", "sso"]] = {"token": "token", "sso": "sso"}
"""How the ``m`` claim is read; anything else is ``password``, whose session must then match a
password generation (which a forged or unknown method lacks)."""


@dataclass(frozen=True, slots=True)
class SessionClaims:
    id: str
    username: str
    user_id: int
    method: Literal["password", "token", "sso"]
    """How the session was opened: ``sso`` only for the web page's, through the identity
    provider (the connector's are never)."""
    token_id: str | None
    password_generation: int | None
    issued_at: float
    expires_at: float
    secret_rotated_at: int | None = None
    """For token sessions: the token's last rotation (POSIX microseconds) when the session was
    made, so that a later rotation can tell which secret the session came from."""
    previous_secret: bool = False
    """For token sessions: made with the previous secret of a rotated token, in its grace window."""
    session_generation: int | None = None
    """For web page sessions: the user's session generation when the session was made; signing
    out everywhere bumps it, which ends the session."""

    @property
    def expires(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.expires_at, dt.UTC)


class SessionSigner:
    """Issues and checks session JWTs, and tracks idleness per session in memory.

    Idle time is tracked per process. A session this process has not seen (issued by another
    replica, or before a restart) is taken as last active when it was issued: once that is longer
    ago than the idle limit the connector simply logs in again.

    ``audience`` tells sessions of different purposes apart: a signer with one issues sessions
    naming it (``aud``) and accepts no other; a signer without one (the connector's) refuses every
    session that names an audience. So a web page's cookie is never taken for a connector's
    session id, nor the reverse, though both are signed with the one session key.
    """

    def __init__(
        self,
        key: bytes,
        *,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        clock: Clock = time.time,
        audience: str | None = None,
    ) -> None:
        if len(key) < 32:
            raise ValueError("a session key needs at least 32 bytes")
        self._key = key
        self.audience = audience
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._max_sessions = max_sessions
        self._last_seen: OrderedDict[str, float] = OrderedDict()
        # Sessions ended before their time (signed out), until their maximum age: in this
        # process only, as idle times are.
        self._ended: OrderedDict[str, float] = OrderedDict()

    def __repr__(self) -> str:
        audience = f", audience={self.audience!r}" if self.audience is not None else ""
        return (
            f"SessionSigner(idle={self.idle_seconds}s, max_age={self.max_age_seconds}s{audience})"
        )

    def issue(
        self,
        *,
        username: str,
        user_id: int,
        method: Literal["password", "token", "sso"],
        token_id: str | None = None,
        password_generation: int | None = None,
        secret_rotated_at: int | None = None,
        previous_secret: bool = False,
        session_generation: int | None = None,
    ) -> tuple[str, SessionClaims]:
        now = int(self._clock())
        claims = SessionClaims(
            id=base64.urlsafe_b64encode(secrets.token_bytes(12)).decode(),
            username=username,
            user_id=user_id,
            method=method,
            token_id=token_id,
            password_generation=password_generation,
            issued_at=now,
            expires_at=now + int(self.max_age_seconds),
            secret_rotated_at=secret_rotated_at,
            previous_secret=previous_secret,
            session_generation=session_generation,
        )
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "sub": username,
            "uid": user_id,
            "m": method,
            "iat": now,
            "exp": int(claims.expires_at),
            "jti": claims.id,
        }
        if self.audience is not None:
            payload["aud"] = self.audience
        if token_id is not None:
            payload["tid"] = token_id
        if password_generation is not None:
            payload["pg"] = password_generation
        if secret_rotated_at is not None:
            payload["rot"] = secret_rotated_at
        if previous_secret:
            payload["prev"] = True
        if session_generation is not None:
            payload["sg"] = session_generation
        with self._lock:
            self._mark(claims.id, now)
        # Imported at first use: PyJWT loads cryptography (0.12 s), which an authenticator
        # without sessions (a library user's bearer tokens) never needs.
        import jwt

        return jwt.encode(payload, self._key, algorithm=ALGORITHM), claims

    def decode(self, session_id: str) -> SessionClaims:
        """The claims of a session id, checking signature and absolute expiry (not idleness)."""
        import jwt

        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
            raise SessionError("session id missing or oversized")
        required = ["exp", "iat", "jti", "sub", "iss"]
        if self.audience is not None:
            required.append("aud")
        try:
            # Without an audience, PyJWT refuses a token that names one (InvalidAudienceError).
            payload = jwt.decode(
                session_id,
                self._key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                audience=self.audience,
                # Times are checked against the injected clock below, not the wall clock.
                options={"require": required, "verify_exp": False, "verify_iat": False},
            )
        except jwt.PyJWTError as exc:
            raise SessionError(f"session id refused ({type(exc).__name__})") from None
        try:
            claims = SessionClaims(
                id=str(payload["jti"]),
                username=str(payload["sub"]),
                user_id=int(payload["uid"]),
                method=_METHODS.get(payload["m"], "password"),
                token_id=payload.get("tid"),
                password_generation=payload.get("pg"),
                issued_at=float(payload["iat"]),
                expires_at=float(payload["exp"]),
                secret_rotated_at=None if payload.get("rot") is None else int(payload["rot"]),
                previous_secret=payload.get("prev") is True,
                session_generation=None if payload.get("sg") is None else int(payload["sg"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionError("session id with malformed claims") from exc
        if self._clock() >= claims.expires_at:
            raise SessionExpired(
                f"session {claims.id} of {claims.username} is past its maximum age"
            )
        if claims.id in self._ended:
            raise SessionRevoked(f"session {claims.id} of {claims.username} was ended")
        return claims

    def end(self, claims: SessionClaims) -> None:
        """End a session before its time (a sign-out): this process refuses it from now on, until
        its maximum age would have ended it anyway."""
        now = self._clock()
        with self._lock:
            self._last_seen.pop(claims.id, None)
            ended = self._ended
            ended[claims.id] = claims.expires_at
            ended.move_to_end(claims.id)
            # Bounded like the idle map: past their maximum age they are refused anyway.
            while ended and (len(ended) > self._max_sessions or next(iter(ended.values())) <= now):
                ended.popitem(last=False)

    def touch(
        self, session: str, *, issued_at: float | None = None, now: float | None = None
    ) -> None:
        """Note activity on a session, or raise :class:`SessionExpired` if it was idle too long.

        ``issued_at`` is given when the session's claims were just read: a session this process
        has not seen is then taken as last active when it was issued. Without it, a session this
        process does not remember has been idle past the limit. ``now`` spares a clock read to a
        caller that has just made one.
        """
        if now is None:
            now = self._clock()
        last = self._last_seen.get(session)  # lock-free: the common case is a busy session
        if last is not None and now - last < TOUCH_GRANULARITY_SECONDS:
            return
        with self._lock:
            last = self._last_seen.get(session, issued_at)
            if last is None or now - last >= self.idle_seconds:
                self._last_seen.pop(session, None)
                raise SessionExpired(f"session {session} was idle too long")
            if now - last >= TOUCH_GRANULARITY_SECONDS:  # most calls of a busy session skip this
                self._mark(session, now)

    def keep_alive(self, session: str, *, started: float | None = None) -> None:
        """Note that a call of a session just ended: idle time counts from the end of the last
        call, so a statement that runs for longer than the idle limit does not end its session.
        A call that began (``started``) less than a second ago was noted when it began."""
        now = self._clock()
        if started is not None and now - started < TOUCH_GRANULARITY_SECONDS:
            return
        with self._lock:
            last = self._last_seen.get(session)
            if last is None or now - last >= TOUCH_GRANULARITY_SECONDS:
                self._mark(session, now)

    def active(self, now: float | None = None) -> int:
        """How many sessions were active within the idle limit (a metric, read at scrape time)."""
        now = self._clock() if now is None else now
        with self._lock:
            self._drop_idle(now)
            return len(self._last_seen)

    def _drop_idle(self, now: float) -> None:
        seen = self._last_seen
        horizon = now - self.idle_seconds
        while seen and next(iter(seen.values())) <= horizon:
            seen.popitem(last=False)

    def _mark(self, session: str, now: float) -> None:
        # Oldest activity first: sessions idle past the limit are dropped from the front, and the
        # map never holds more than max_sessions (the oldest go first).
        seen = self._last_seen
        seen[session] = now
        seen.move_to_end(session)
        horizon = now - self.idle_seconds
        while seen and (len(seen) > self._max_sessions or next(iter(seen.values())) <= horizon):
            seen.popitem(last=False)
