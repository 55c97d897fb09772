"""Brute-force throttling: failed attempts counted per peer address and per user name.

Per **address** (an IPv4 address, an IPv6 /64), every failed handshake and every failed bearer,
session or JWT verification counts; an address whose failures reach the limit within the window
is blocked for the block period. A block refuses *password* attempts before any store read or
hash, and answers further failures as throttled; a valid token or session still gets in (the
authenticator checks those before it asks here), so a guesser behind a shared NAT or proxy does
not lock its neighbours' tokens out.

Per **user name**, failed *password* attempts only. A name is never blocked: past its free
failures, password attempts at it are *slowed down*. After failure number ``failures`` the next
attempt may start after ``first_delay_seconds``, and each further failure doubles that, up to
``max_delay_seconds``; an attempt that comes sooner is refused with the time left (Throttled,
Retry-After), before any store read or hash, and costs nothing: no thread waits, and refused
attempts do not grow the delay. The slot is taken when an attempt starts, so that parallel
attempts cannot all slip through one opening. The slowdown does not apply to an address with no
failures of its own for ``clean_after_seconds``: the user signs in at once from there whatever
is tried against their name elsewhere, and nobody can hold them out without failing from their
own address. A guesser could use that exemption by rotating addresses: each address gets one
guess past the slowdown per clean period (one at a time: the exemption is held while its attempt
runs), and for it IPv6 is counted per /48, since a single host can easily have a /48 of /64s.

Memory is bounded by ``max_tracked`` keys per table. When a table is full, expired entries go
first, then the least recently touched: an attacker who sprays more distinct keys than that can
make the oldest counters forget.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from cachetools import TTLCache

from e6auth.clock import Clock
from e6auth.credentials.usernames import normalize_username
from e6auth.defaults import (
    DEFAULT_ADDRESS_BLOCK_SECONDS,
    DEFAULT_ADDRESS_FAILURES,
    DEFAULT_ADDRESS_WINDOW_SECONDS,
    DEFAULT_CLEAN_AFTER_SECONDS,
    DEFAULT_FIRST_DELAY_SECONDS,
    DEFAULT_MAX_TRACKED,
    DEFAULT_USER_FAILURES,
    DEFAULT_USER_MAX_DELAY_SECONDS,
    DEFAULT_USER_WINDOW_SECONDS,
)
from e6auth.errors import (
    AuthenticationError,
    E6AuthError,
    MissingCredentials,
    SessionExpired,
    SessionRevoked,
    Throttled,
    TokenExpired,
    TokenRevoked,
    UserDisabled,
)

__all__ = [
    "DEFAULT_ADDRESS_BLOCK_SECONDS",
    "DEFAULT_ADDRESS_FAILURES",
    "DEFAULT_ADDRESS_WINDOW_SECONDS",
    "DEFAULT_CLEAN_AFTER_SECONDS",
    "DEFAULT_FIRST_DELAY_SECONDS",
    "DEFAULT_MAX_TRACKED",
    "DEFAULT_USER_FAILURES",
    "DEFAULT_USER_MAX_DELAY_SECONDS",
    "DEFAULT_USER_WINDOW_SECONDS",
    "LoginThrottle",
    "PasswordAttempt",
    "SlowdownLimit",
    "ThrottleLimit",
    "counts_as_failure",
]

log = logging.getLogger("e6auth.throttle")

IPV6_PREFIX = 64
CLEAN_IPV6_PREFIX = 48
INVALID_NAME = "invalid:"
MAX_KEY_LENGTH = 100
_MAX_DOUBLINGS = 64

# Refusals that come after the secret was proven, or with no credential at all: not guesses.
_NOT_GUESSES: tuple[type[E6AuthError], ...] = (
    TokenExpired,
    TokenRevoked,
    UserDisabled,
    SessionExpired,
    SessionRevoked,
    MissingCredentials,
)


def counts_as_failure(error: BaseException) -> bool:
    """Whether a refusal is a failed guess: a credential refused before its secret was proven.
    An unreachable store, an expired token or a missing credential is not."""
    return isinstance(error, AuthenticationError) and not isinstance(error, _NOT_GUESSES)


@dataclass(frozen=True, slots=True)
class ThrottleLimit:
    """``failures`` within ``window_seconds`` block an address for ``block_seconds``; 0
    failures turns the limit off."""

    failures: int
    window_seconds: float
    block_seconds: float

    def __post_init__(self) -> None:
        if self.failures < 0 or self.window_seconds <= 0 or self.block_seconds <= 0:
            raise ValueError("a throttle limit needs failures >= 0 and positive periods")

    @property
    def enabled(self) -> bool:
        return self.failures > 0


@dataclass(frozen=True, slots=True)
class SlowdownLimit:
    """After ``failures`` failed password attempts at a name, each further attempt from an
    address that is not clean waits ``first_delay_seconds``, doubled per further failure, at
    most ``max_delay_seconds``. A name's failures are forgotten after ``window_seconds`` without
    one; 0 failures turns the slowdown off."""

    failures: int
    window_seconds: float
    max_delay_seconds: float
    first_delay_seconds: float = DEFAULT_FIRST_DELAY_SECONDS

    def __post_init__(self) -> None:
        if (
            self.failures < 0
            or self.window_seconds <= 0
            or self.first_delay_seconds <= 0
            or self.max_delay_seconds < self.first_delay_seconds
        ):
            raise ValueError(
                "a slowdown needs failures >= 0, positive periods and a maximum delay no "
                "shorter than the first"
            )

    @property
    def enabled(self) -> bool:
        return self.failures > 0

    def delay(self, failures: int) -> float:
        """The wait before the attempt after ``failures`` failures (0 below the limit)."""
        if failures < self.failures:
            return 0.0
        doublings = min(failures - self.failures, _MAX_DOUBLINGS)
        return min(self.first_delay_seconds * 2.0**doublings, self.max_delay_seconds)


@dataclass(slots=True)
class _Counter:
    window_start: float
    failures: int = 0
    blocked_until: float = 0.0


class _Table:
    """Failure counters of addresses, bounded, under the throttle's lock."""

    def __init__(self, limit: ThrottleLimit, max_tracked: int, clock: Clock) -> None:
        self.limit = limit
        self._counters: TTLCache[str, _Counter] = TTLCache(
            max_tracked, max(limit.window_seconds, limit.block_seconds), timer=clock
        )

    def __len__(self) -> int:
        return len(self._counters)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it is not blocked."""
        counter = self._counters.get(key)
        return 0.0 if counter is None else max(0.0, counter.blocked_until - now)

    def fail(self, key: str, now: float) -> bool:
        """Count a failure; whether it blocked the key."""
        counter = self._counters.get(key)
        if counter is None or now - counter.window_start >= self.limit.window_seconds:
            counter = _Counter(now)
        counter.failures += 1
        blocked = counter.failures >= self.limit.failures and counter.blocked_until <= now
        if blocked:
            counter.blocked_until = now + self.limit.block_seconds
            counter.failures = 0
            counter.window_start = now
        # Stored again on every failure: the entry's lifetime counts from the last one.
        self._counters[key] = counter
        return blocked


@dataclass(slots=True)
class _Name:
    failures: int = 0
    last_failure: float = 0.0
    next_attempt: float = 0.0
    """When the next attempt from an address that is not clean may start."""


class _Names:
    """Failed password attempts per user name, bounded, under the throttle's lock."""

    def __init__(self, limit: SlowdownLimit, max_tracked: int, clock: Clock) -> None:
        self.limit = limit
        # An entry outlives its window by the longest delay: its next_attempt must hold.
        self._names: TTLCache[str, _Name] = TTLCache(
            max_tracked, limit.window_seconds + limit.max_delay_seconds, timer=clock
        )

    def __len__(self) -> int:
        return len(self._names)

    def slowed(self, key: str, now: float) -> _Name | None:
        """The name's counter while it is being slowed down, else None."""
        name = self._names.get(key)
        if name is None or now - name.last_failure >= self.limit.window_seconds:
            return None
        return name if name.failures >= self.limit.failures else None

    def fail(self, key: str, now: float) -> bool:
        """Count a failure; whether it is the one that starts the slowdown."""
        name = self._names.get(key)
        if name is None or now - name.last_failure >= self.limit.window_seconds:
            name = _Name()
        name.failures += 1
        name.last_failure = now
        delay = self.limit.delay(name.failures)
        if delay:
            name.next_attempt = max(name.next_attempt, now + delay)
        self._names[key] = name
        return name.failures == self.limit.failures


@dataclass(slots=True)
class _Recent:
    """An address (IPv6: a /48) that failed lately, or whose exempt attempt is running."""

    failed_at: float | None = None
    exempt_running: int = 0


@dataclass(frozen=True, slots=True)
class PasswordAttempt:
    """A password attempt let through by :meth:`LoginThrottle.begin`; hand it to
    :meth:`LoginThrottle.end` when it is decided."""

    address: str | None
    # As sent: it may be a password typed into the name field, so it is kept out of reprs.
    username: str | None = field(repr=False)
    exempt_key: str | None = None
    """The clean address whose exemption this attempt holds, if it holds one."""


class LoginThrottle:
    """Counts failed attempts; refuses, with a retry hint, password attempts from blocked
    addresses and password attempts at slowed-down names from addresses that failed.

    Password attempts: :meth:`begin` before verifying, :meth:`end` after, whatever happened.
    Tokens, bearer calls and sessions: :meth:`check` (is the address blocked) and
    :meth:`failed` after a refusal that :func:`counts_as_failure`. Thread-safe.
    """

    def __init__(
        self,
        *,
        address: ThrottleLimit | None = None,
        user: SlowdownLimit | None = None,
        clean_after_seconds: float = DEFAULT_CLEAN_AFTER_SECONDS,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        clock: Clock = time.time,
    ) -> None:
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        if clean_after_seconds <= 0:
            raise ValueError("clean_after_seconds must be positive")
        address = address or ThrottleLimit(
            DEFAULT_ADDRESS_FAILURES, DEFAULT_ADDRESS_WINDOW_SECONDS, DEFAULT_ADDRESS_BLOCK_SECONDS
        )
        user = user or SlowdownLimit(
            DEFAULT_USER_FAILURES, DEFAULT_USER_WINDOW_SECONDS, DEFAULT_USER_MAX_DELAY_SECONDS
        )
        self._clock = clock
        self._name_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._addresses = _Table(address, max_tracked, clock) if address.enabled else None
        self._users = _Names(user, max_tracked, clock) if user.enabled else None
        # Only the slowdown asks whether an address is clean.
        self._recent: TTLCache[str, _Recent] | None = (
            TTLCache(max_tracked, clean_after_seconds, timer=clock) if user.enabled else None
        )
        self._clean_after = clean_after_seconds

    @property
    def tracked(self) -> tuple[int, int]:
        """How many addresses and user names are being counted now."""
        with self._lock:
            return (
                len(self._addresses) if self._addresses is not None else 0,
                len(self._users) if self._users is not None else 0,
            )

    def check(self, address: str | None) -> None:
        """Raise :class:`Throttled` if ``address`` is blocked."""
        if self._addresses is None:
            return
        key = _address_key(address)
        if key is None:
            return
        with self._lock:
            wait = self._addresses.retry_after(key, self._clock())
        if wait > 0:
            raise Throttled.after(wait)

    def begin(self, address: str | None, username: str | None) -> PasswordAttempt:
        """Let a password attempt at ``username`` from ``address`` start, or raise
        :class:`Throttled`: the address is blocked, or the name is being slowed down, the
        address is not clean and the name's next slot has not come (else it is taken)."""
        self.check(address)
        if self._users is None or self._recent is None:
            return PasswordAttempt(address, username)
        user_key = _user_key(username, self._name_key)
        if user_key is None:
            return PasswordAttempt(address, username)
        clean_key = _clean_key(address)
        with self._lock:
            now = self._clock()
            name = self._users.slowed(user_key, now)
            if name is None:
                return PasswordAttempt(address, username)
            recent = self._recent.get(clean_key) if clean_key is not None else None
            if clean_key is not None and self._is_clean(recent, now):
                recent = recent or _Recent()
                recent.exempt_running += 1
                self._recent[clean_key] = recent
                return PasswordAttempt(address, username, clean_key)
            wait = name.next_attempt - now
            if wait <= 0:
                # Taken now, as if this attempt failed: parallel ones wait for the next slot.
                name.next_attempt = now + self._users.limit.delay(name.failures + 1)
        if wait > 0:
            raise Throttled.after(wait)
        return PasswordAttempt(address, username)

    def end(self, attempt: PasswordAttempt, *, failed: bool) -> None:
        """A password attempt :meth:`begin` let through is decided: ``failed`` when its refusal
        :func:`counts_as_failure`."""
        if attempt.exempt_key is not None and self._recent is not None:
            with self._lock:
                recent = self._recent.get(attempt.exempt_key)
                if recent is not None and recent.exempt_running > 0:
                    recent.exempt_running -= 1
        if failed:
            self.failed(attempt.address, attempt.username)

    def failed(self, address: str | None, username: str | None = None) -> None:
        """Count one failed attempt from ``address``, and against ``username`` for a failed
        password attempt."""
        address_key = _address_key(address) if self._addresses is not None else None
        clean_key = _clean_key(address) if self._recent is not None else None
        user_key = _user_key(username, self._name_key) if self._users is not None else None
        with self._lock:
            now = self._clock()
            blocked_address = (
                self._addresses.fail(address_key, now)
                if self._addresses is not None and address_key is not None
                else False
            )
            if self._recent is not None and clean_key is not None:
                recent = self._recent.get(clean_key) or _Recent()
                recent.failed_at = now
                # Stored again: the entry lives for the clean period after the last failure.
                self._recent[clean_key] = recent
            slowed_user = (
                self._users.fail(user_key, now)
                if self._users is not None and user_key is not None
                else False
            )
        if blocked_address and self._addresses is not None:
            log.warning(
                "throttling address %s for %.0f s after %d failed attempts",
                address_key,
                self._addresses.limit.block_seconds,
                self._addresses.limit.failures,
            )
        if slowed_user and self._users is not None and user_key is not None:
            log.warning(
                "slowing down password logins of %s from addresses that failed, after %d "
                "failed attempts",
                _shown(user_key),
                self._users.limit.failures,
            )

    def _is_clean(self, recent: _Recent | None, now: float) -> bool:
        if recent is None:
            return True
        if recent.exempt_running:
            return False
        return recent.failed_at is None or now - recent.failed_at >= self._clean_after


def _address_key(address: str | None) -> str | None:
    """The key of a peer address: an IPv4 address, an IPv6 /64, or (not an IP) the text cut
    short."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:MAX_KEY_LENGTH]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


def _clean_key(address: str | None) -> str | None:
    """The key an address is judged clean by: an IPv4 address, an IPv6 /48; None (never
    clean) for no address or one that is not an IP."""
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, CLEAN_IPV6_PREFIX), strict=False))
    return str(ip)


def _user_key(username: str | None, key: bytes) -> str | None:
    """The canonical user name, or for a name that cannot be one a keyed hash of it: unknown
    and invalid names are throttled alike, and a password typed into the name field is kept
    neither as text nor as a hash anyone could test guesses against (the key dies with the
    process)."""
    if username is None:
        return None
    try:
        return normalize_username(username)
    except E6AuthError:
        text = username.encode("utf-8", "surrogatepass")
        return INVALID_NAME + hmac.new(key, text, hashlib.sha256).hexdigest()[:32]


def _shown(user_key: str) -> str:
    return "an invalid user name" if user_key.startswith(INVALID_NAME) else user_key
