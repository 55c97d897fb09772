"""Brute-force throttling: failed attempts counted per peer address and per user name.

Two tables of failure counters, each a bounded :class:`cachetools.TTLCache` on the injected clock:

- per **address**, every failed handshake and every failed bearer or session verification;
- per **user name**, failed *password* attempts only, so that a user whose name is under attack
  still logs in with a token, and nobody is locked out of token logins by someone else's guesses.

A key whose failures reach the limit within the window is blocked for the block period: its
attempts are refused with :class:`~e6auth.errors.Throttled` before any store read or password
hash. The window is fixed, opened by the first failure; a key's entry lives for the window or the
block, whichever is longer, after its last failure.

Memory is bounded by ``max_tracked`` keys per table. When a table is full, expired entries go
first, then the least recently touched: an attacker who sprays more distinct keys than that can
make the oldest counters forget, but to spray user names it needs many addresses (each address
stops after its own limit), and addresses are counted per IPv6 /64, the block a single host is
commonly handed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from cachetools import TTLCache

from e6auth.clock import Clock
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
from e6auth.usernames import normalize_username

__all__ = [
    "DEFAULT_ADDRESS_BLOCK_SECONDS",
    "DEFAULT_ADDRESS_FAILURES",
    "DEFAULT_ADDRESS_WINDOW_SECONDS",
    "DEFAULT_MAX_TRACKED",
    "DEFAULT_USER_BLOCK_SECONDS",
    "DEFAULT_USER_FAILURES",
    "DEFAULT_USER_WINDOW_SECONDS",
    "LoginThrottle",
    "ThrottleLimit",
    "counts_as_failure",
]

log = logging.getLogger("e6auth.throttle")

# GitLab bans an address after 30 failed logins in 3 minutes.
DEFAULT_ADDRESS_FAILURES = 30
DEFAULT_ADDRESS_WINDOW_SECONDS = 180.0
DEFAULT_ADDRESS_BLOCK_SECONDS = 600.0
# Tighter per user name, as GitLab's account lock (10 attempts, unlocked after 10 minutes): at most
# about 10 guesses at one password per quarter of an hour, from all addresses together.
DEFAULT_USER_FAILURES = 10
DEFAULT_USER_WINDOW_SECONDS = 300.0
DEFAULT_USER_BLOCK_SECONDS = 600.0
DEFAULT_MAX_TRACKED = 100_000

IPV6_PREFIX = 64
INVALID_NAME = "invalid:"
MAX_KEY_LENGTH = 100

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
    """``failures`` within ``window_seconds`` block a key for ``block_seconds``; 0 failures
    turns the limit off."""

    failures: int
    window_seconds: float
    block_seconds: float

    def __post_init__(self) -> None:
        if self.failures < 0 or self.window_seconds <= 0 or self.block_seconds <= 0:
            raise ValueError("a throttle limit needs failures >= 0 and positive periods")

    @property
    def enabled(self) -> bool:
        return self.failures > 0


@dataclass(slots=True)
class _Counter:
    window_start: float
    failures: int = 0
    blocked_until: float = 0.0


class _Table:
    """Failure counters for one kind of key, bounded, under the throttle's lock."""

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


class LoginThrottle:
    """Counts failed attempts and refuses, with a retry hint, those from blocked keys.

    :meth:`check` before verifying (it costs a lock and two dictionary reads), :meth:`failed`
    after a refusal that :func:`counts_as_failure`. Thread-safe.
    """

    def __init__(
        self,
        *,
        address: ThrottleLimit | None = None,
        user: ThrottleLimit | None = None,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        clock: Clock = time.time,
    ) -> None:
        if max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")
        address = address or ThrottleLimit(
            DEFAULT_ADDRESS_FAILURES, DEFAULT_ADDRESS_WINDOW_SECONDS, DEFAULT_ADDRESS_BLOCK_SECONDS
        )
        user = user or ThrottleLimit(
            DEFAULT_USER_FAILURES, DEFAULT_USER_WINDOW_SECONDS, DEFAULT_USER_BLOCK_SECONDS
        )
        self._clock = clock
        self._name_key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._addresses = _Table(address, max_tracked, clock) if address.enabled else None
        self._users = _Table(user, max_tracked, clock) if user.enabled else None

    @property
    def tracked(self) -> tuple[int, int]:
        """How many addresses and user names are being counted now."""
        with self._lock:
            return (
                len(self._addresses) if self._addresses is not None else 0,
                len(self._users) if self._users is not None else 0,
            )

    def check(self, address: str | None, username: str | None = None) -> None:
        """Raise :class:`Throttled` if ``address``, or for a password attempt ``username``, is
        blocked. Pass ``username`` for password attempts only."""
        address_key = _address_key(address) if self._addresses is not None else None
        user_key = _user_key(username, self._name_key) if self._users is not None else None
        with self._lock:
            now = self._clock()
            wait = max(
                self._addresses.retry_after(address_key, now)
                if self._addresses is not None and address_key is not None
                else 0.0,
                self._users.retry_after(user_key, now)
                if self._users is not None and user_key is not None
                else 0.0,
            )
        if wait > 0:
            raise Throttled.after(wait)

    def failed(self, address: str | None, username: str | None = None) -> None:
        """Count one failed attempt from ``address``, and against ``username`` for a failed
        password attempt."""
        address_key = _address_key(address) if self._addresses is not None else None
        user_key = _user_key(username, self._name_key) if self._users is not None else None
        with self._lock:
            now = self._clock()
            blocked_address = (
                self._addresses.fail(address_key, now)
                if self._addresses is not None and address_key is not None
                else False
            )
            blocked_user = (
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
        if blocked_user and self._users is not None and user_key is not None:
            log.warning(
                "throttling password logins of %s for %.0f s after %d failed attempts",
                _shown(user_key),
                self._users.limit.block_seconds,
                self._users.limit.failures,
            )


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
