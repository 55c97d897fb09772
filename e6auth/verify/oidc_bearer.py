"""OIDC bearer JWTs as credentials: a JWT of the configured issuer, sent where a token would be.

:class:`~e6auth.verify.oidc.OidcVerifier` checks the JWT itself (signature, issuer, audience,
expiry); this module makes a principal of it (with ``oidc_require_user``, of the store's user of
that name, who must be enabled) and caches it like a token, until the cache TTL or the JWT's
expiry, whichever comes first: a disabled user's entries are evicted by the invalidation log.
"""

from __future__ import annotations

from e6auth.errors import AuthenticationError, UnknownUser, UserDisabled
from e6auth.verify.cache import credential_key
from e6auth.verify.oidc import NO_USER_ID, OidcVerifier
from e6auth.verify.pipeline import Pipeline
from e6auth.verify.principal import Principal
from e6auth.verify.restrictions import Peer

__all__ = ["OidcBearerVerifier"]


class OidcBearerVerifier:
    """Turns bearer JWTs into principals, through the verification cache."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def verify(self, oidc: OidcVerifier, token: str, peer: Peer | None) -> Principal:
        """The principal of a bearer JWT, or a refusal counted against the caller's address."""
        pipeline = self._pipeline
        cache = pipeline.cache
        try:
            if cache is None or pipeline.ttl_seconds <= 0:
                principal = self._load(oidc, token)
            else:
                now = pipeline.clock()
                key = credential_key(token)
                hit = cache.hit(key, now)
                if hit is not None:
                    return hit
                principal = cache.get_or_load(
                    key, lambda: self._load(oidc, token), ttl_seconds=pipeline.ttl_seconds
                )
        except AuthenticationError as error:
            pipeline.refused(error, peer)
            raise
        return principal

    def _load(self, oidc: OidcVerifier, token: str) -> Principal:
        identity = oidc.verify(token)
        if not oidc.require_user:
            return Principal(
                username=identity.username,
                user_id=NO_USER_ID,
                method="oidc",
                expires_at=identity.expires_at,
            )
        user = self._pipeline.store.find_user(identity.username)
        if user is None:
            raise UnknownUser(f"OIDC user {identity.username} is not in the store")
        if user.disabled:
            raise UserDisabled(f"user {user.name} is disabled (OIDC)")
        return Principal(
            username=user.name, user_id=user.id, method="oidc", expires_at=identity.expires_at
        )
