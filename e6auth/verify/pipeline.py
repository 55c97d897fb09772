"""What the parts of the verify pipeline share, handed to each by the
:class:`~e6auth.verify.authenticator.Authenticator` that composes them.

Logins, sessions and OIDC bearer JWTs each read the same store and its policy, put what they
verify in the same cache with the same TTL, read the same clock, answer a cache hit through the
authenticator's one hit path (which samples uses: e6auth.verify.use_sampling) and count a refusal
through its one throttle path. One object carries those, so that each is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from e6auth.clock import Clock
from e6auth.errors import AuthenticationError
from e6auth.verify.cache import VerificationCache
from e6auth.verify.policy import Policy
from e6auth.verify.principal import Principal
from e6auth.verify.restrictions import Peer

if TYPE_CHECKING:
    from e6auth.store import TokenStore

__all__ = ["Hit", "Pipeline", "Refused"]

Hit = Callable[[bytes, Principal, Peer | None, float], Principal]
"""A cache hit of a credential, under its cache key, at a moment: its use noted when due."""
Refused = Callable[[AuthenticationError, Peer | None], None]
"""A refusal counted against the caller's address (from a blocked one: Throttled instead)."""


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The store, its policy, the cache and its TTL for tokens, sessions and bearer JWTs, the
    clock, and the authenticator's cache-hit and refusal paths."""

    store: TokenStore
    policy: Policy
    cache: VerificationCache | None
    ttl_seconds: float
    clock: Clock
    hit: Hit
    refused: Refused
