"""What an :class:`~e6auth.verify.authenticator.Authenticator` is tuned with, in three groups.

Frozen dataclasses, as argon2-cffi's ``Parameters``: each group names what it tunes (the cache,
the handshake's sessions, the background tasks), so a constructor call reads as its intent and a
group can be built once (``Settings.build_cache_parameters``, …) and passed around whole. The
constructor's former flat keywords (``cache_ttl_seconds=``, ``session_key=``, …) still work, with
a :class:`DeprecationWarning` that names the replacement: :func:`from_flat_keywords`.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

from e6auth.background.invalidation import DEFAULT_POLL_SECONDS, DEFAULT_RETENTION_SECONDS
from e6auth.background.lastused import DEFAULT_FLUSH_SECONDS, DEFAULT_MAX_PENDING
from e6auth.clock import Clock
from e6auth.verify.cache import (
    DEFAULT_MAX_ENTRIES,
    DEFAULT_NEGATIVE_TTL_SECONDS,
    DEFAULT_TTL_SECONDS,
    VerificationCache,
)
from e6auth.verify.sessions import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_AGE_SECONDS, SessionSigner

__all__ = ["CacheParameters", "SessionParameters", "TaskParameters"]

DEFAULT_PASSWORD_TTL_SECONDS = 300.0
REVOKE_UNUSED_SECONDS = 3600.0
"""How often a long-running process applies the policy's revoke-unused rule (it counts in days)."""


@dataclass(frozen=True, slots=True)
class CacheParameters:
    """The verification cache: how many credentials it keeps, and for how long.

    A TTL of 0 turns caching off for its kind of credential; with both ``ttl_seconds`` and
    ``password_ttl_seconds`` at 0 there is no cache at all."""

    max_entries: int = DEFAULT_MAX_ENTRIES
    ttl_seconds: float = DEFAULT_TTL_SECONDS
    """Tokens, sessions and OIDC bearer JWTs."""
    negative_ttl_seconds: float = DEFAULT_NEGATIVE_TTL_SECONDS
    """Token ids found unknown, remembered so that guesses cost no read."""
    password_ttl_seconds: float = DEFAULT_PASSWORD_TTL_SECONDS
    """Password logins, under a keyed hash of name and password (no argon2 on a hit)."""
    stale_if_error_seconds: float = 0.0
    """How long past its TTL an entry still answers while the store is unavailable."""

    def build_cache(self, clock: Clock) -> VerificationCache | None:
        """The cache these parameters describe, or None when every TTL is 0."""
        if self.ttl_seconds <= 0 and self.password_ttl_seconds <= 0:
            return None
        return VerificationCache(
            max_entries=self.max_entries,
            # Each kind of entry is put with its own TTL; this is only the default.
            ttl_seconds=max(self.ttl_seconds, self.password_ttl_seconds),
            negative_ttl_seconds=self.negative_ttl_seconds,
            stale_if_error_seconds=self.stale_if_error_seconds,
            clock=clock,
        )


@dataclass(frozen=True, slots=True)
class SessionParameters:
    """The handshake's sessions: the key that signs them (shared by replicas), their limits."""

    key: bytes = dataclasses.field(repr=False)
    idle_seconds: float = DEFAULT_IDLE_SECONDS
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS

    def build_signer(self, clock: Clock) -> SessionSigner:
        """The signer that issues and decodes sessions on these terms."""
        return SessionSigner(
            self.key,
            idle_seconds=self.idle_seconds,
            max_age_seconds=self.max_age_seconds,
            clock=clock,
        )


@dataclass(frozen=True, slots=True)
class TaskParameters:
    """The background tasks' rhythms: last-used writes, the invalidation log, revoke-unused."""

    last_used_flush_seconds: float = DEFAULT_FLUSH_SECONDS
    last_used_max_pending: int = DEFAULT_MAX_PENDING
    invalidation_poll_seconds: float = DEFAULT_POLL_SECONDS
    invalidation_retention_seconds: float = DEFAULT_RETENTION_SECONDS
    revoke_unused_seconds: float = REVOKE_UNUSED_SECONDS
    listen_url: str | None = dataclasses.field(default=None, repr=False)
    """Where to LISTEN for invalidations (PostgreSQL), or None to rely on polling. Not in the
    repr: a database URL may hold a password."""


_FLAT_KEYWORDS: dict[str, tuple[str, str]] = {
    "cache_max_entries": ("cache", "max_entries"),
    "cache_ttl_seconds": ("cache", "ttl_seconds"),
    "negative_cache_ttl_seconds": ("cache", "negative_ttl_seconds"),
    "password_cache_ttl_seconds": ("cache", "password_ttl_seconds"),
    "stale_if_error_seconds": ("cache", "stale_if_error_seconds"),
    "session_key": ("sessions", "key"),
    "session_idle_seconds": ("sessions", "idle_seconds"),
    "session_max_age_seconds": ("sessions", "max_age_seconds"),
    **{field.name: ("tasks", field.name) for field in dataclasses.fields(TaskParameters)},
}
"""The constructor's former keywords: which group each went to, under which name."""

_CLASSES = {"cache": CacheParameters, "sessions": SessionParameters, "tasks": TaskParameters}


def from_flat_keywords(
    keywords: dict[str, Any],
    cache: CacheParameters,
    sessions: SessionParameters | None,
    tasks: TaskParameters,
) -> tuple[CacheParameters, SessionParameters | None, TaskParameters]:
    """The three groups with the former flat ``keywords`` applied over them, warning once per
    keyword (at the caller of the constructor) of what replaces it. An unknown keyword is a
    :class:`TypeError`, as it was."""
    groups: dict[str, dict[str, Any]] = {"cache": {}, "sessions": {}, "tasks": {}}
    for keyword, value in keywords.items():
        if keyword not in _FLAT_KEYWORDS:
            raise TypeError(f"Authenticator() got an unexpected keyword argument {keyword!r}")
        group, name = _FLAT_KEYWORDS[keyword]
        groups[group][name] = value
        warnings.warn(
            f"Authenticator({keyword}=...) is deprecated: pass "
            f"{group}={_CLASSES[group].__name__}({name}=...)",
            DeprecationWarning,
            stacklevel=3,
        )
    cache = dataclasses.replace(cache, **groups["cache"])
    tasks = dataclasses.replace(tasks, **groups["tasks"])
    changes = groups["sessions"]
    if "key" in changes and changes["key"] is None:
        sessions = None  # as before: without a key, no sessions
    elif sessions is not None:
        sessions = dataclasses.replace(sessions, **changes)
    elif "key" in changes:
        sessions = SessionParameters(**changes)
    return cache, sessions, tasks
