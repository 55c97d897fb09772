"""The one verify pipeline: every decision about a credential is made here."""

from __future__ import annotations

import hmac
import logging
import time

from e6auth.clock import Clock
from e6auth.errors import (
    InvalidPassword,
    InvalidTokenSecret,
    InvalidUsername,
    TokenExpired,
    TokenOwnerMismatch,
    TokenRevoked,
    UnknownToken,
    UnknownUser,
    UserDisabled,
)
from e6auth.principal import Principal
from e6auth.settings import Settings
from e6auth.store import TokenStore, UserRecord
from e6auth.tokens import looks_like_token, parse_token
from e6auth.usernames import normalize_username

__all__ = ["Authenticator"]

log = logging.getLogger("e6auth.auth")


class Authenticator:
    """Verifies usernames with passwords or personal access tokens, and bare tokens.

    ``verify`` and ``verify_token`` return a :class:`Principal` or raise a specific
    :class:`~e6auth.errors.AuthenticationError`; there is no boolean variant to forget to check.
    """

    def __init__(self, store: TokenStore, *, clock: Clock = time.time) -> None:
        self._store = store
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Authenticator:
        """An authenticator on the store the settings (by default, the environment) name."""
        return cls(TokenStore.from_settings(settings))

    @property
    def store(self) -> TokenStore:
        return self._store

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Authenticator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def verify(self, username: str, secret: str, *, peer: str | None = None) -> Principal:
        """The connector handshake: ``secret`` is a token if it has a token's shape, else a
        password. A token must belong to ``username``."""
        if looks_like_token(secret):
            principal = self.verify_token(secret, peer=peer)
            if _canonical_or_none(username) != principal.username:
                raise TokenOwnerMismatch(
                    f"token {principal.token_id} of {principal.username} presented by another user"
                )
            return principal
        return self._verify_password(username, secret)

    def verify_token(self, token: str, *, peer: str | None = None) -> Principal:
        """A bare token, as sent in an ``authorization: Bearer`` header."""
        parsed = parse_token(token)
        record = self._store.find_token(parsed.id)
        # Hashed for unknown ids too, so that they cost what known ones cost.
        presented = self._store.token_digest(parsed.secret, record.pepper_id if record else None)
        if record is None:
            raise UnknownToken(f"token {parsed.id}: no such token")
        if not hmac.compare_digest(record.digest, presented):
            raise InvalidTokenSecret(f"token {parsed.id}: wrong secret")
        # The secret is proven: from here on the caller may learn what is wrong.
        if record.revoked_at is not None:
            raise TokenRevoked(f"token {record.id} of {record.user} was revoked")
        if record.expires_at is not None and self._clock() >= record.expires_at.timestamp():
            raise TokenExpired(f"token {record.id} of {record.user} expired")
        if record.user_disabled:
            raise UserDisabled(f"user {record.user} is disabled (token {record.id})")
        return Principal(
            username=record.user,
            user_id=record.user_id,
            method="token",
            token_id=record.id,
            expires_at=record.expires_at,
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
        )

    def _upgrade_hash(self, user: UserRecord, password: str) -> None:
        if user.password_hash is None or not self._store.passwords.needs_rehash(user.password_hash):
            return
        new_hash = self._store.passwords.hash(password)
        if self._store.replace_password_hash(user.id, user.password_hash, new_hash):
            log.info("re-hashed the password of %s with the current parameters", user.name)


def _canonical_or_none(username: str) -> str | None:
    try:
        return normalize_username(username)
    except InvalidUsername:
        return None
