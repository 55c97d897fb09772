"""Logins: a user name with a password or a personal access token (the connector handshake), or
with a password only (the web page's sign-in).

A token is told from a password by its shape, and checked before the throttle: a proven token is
not an attempt to guess, and a blocked address (a NAT shared with a guesser) must not lock out
valid tokens. A password attempt passes the throttle first, then argon2 (unknown users against a
dummy hash, so that they cost what known users cost); a good one is cached under a keyed hash of
name and password, and its hash upgraded to the current parameters through the store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from e6auth.credentials.tokens import ParsedToken, looks_like_token, parse_token
from e6auth.credentials.usernames import normalize_username
from e6auth.errors import (
    AuthenticationError,
    InvalidPassword,
    InvalidUsername,
    TokenOwnerMismatch,
    UnknownUser,
    UserDisabled,
)
from e6auth.verify.pipeline import Pipeline
from e6auth.verify.principal import Principal
from e6auth.verify.restrictions import Peer, peer_address
from e6auth.verify.throttle import LoginThrottle, counts_as_failure

if TYPE_CHECKING:
    from e6auth.store import TokenStore, UserRecord

__all__ = ["LoginVerifier", "presented_by_owner"]

log = logging.getLogger("e6auth.auth")


class LoginVerifier:
    """Verifies a user name with a secret: a token of that user, or the user's password.

    The token check itself (``verify_parsed_token``) is the authenticator's, passed in."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        password_ttl_seconds: float,
        throttle: LoginThrottle | None,
        verify_parsed_token: Callable[[str, ParsedToken, Peer | None], Principal],
    ) -> None:
        self._pipeline = pipeline
        self._password_ttl = password_ttl_seconds
        self._throttle = throttle
        self._verify_parsed_token = verify_parsed_token
        # Password cache keys are keyed hashes under a key that lives and dies with this process:
        # a memory dump then holds no offline oracle for guessing passwords.
        self._password_key = secrets.token_bytes(32)

    def attempt(
        self, username: str, secret: str, peer: Peer | None, *, password_only: bool = False
    ) -> Principal:
        """A login attempt the cache could not answer (the authenticator asks it first: a token
        login's hit is the token path's), throttled as its kind of secret is."""
        if self._throttle is None:
            return self._verify(username, secret, peer, password_only=password_only)
        if looks_like_token(secret) and not password_only:
            # Checked before the throttle, as bearer tokens are: a blocked address (a NAT
            # shared with a guesser) must not lock out valid tokens, and refusing a wrong one
            # costs an HMAC and a read, not an argon2 hash. Only its failure counts, and only
            # against the address: the owner's name is not slowed down by token guesses.
            try:
                return self._verify(username, secret, peer)
            except AuthenticationError as error:
                self._pipeline.refused(error, peer)
                raise
        attempt = self._throttle.begin(peer_address(peer), username)
        failed = False
        try:
            return self._verify(username, secret, peer, password_only=password_only)
        except AuthenticationError as error:
            failed = counts_as_failure(error)
            raise
        finally:
            # Whatever happened: an attempt may hold its clean address's exemption till here.
            self._throttle.end(attempt, failed=failed)

    def _verify(
        self, username: str, secret: str, peer: Peer | None, *, password_only: bool = False
    ) -> Principal:
        if password_only:
            self._pipeline.policy.check_password_login()
            if looks_like_token(secret):
                # No password can have a token's shape (the store refuses such passwords), so
                # this says nothing about the user.
                raise InvalidPassword("a token given where only a password is taken")
            return self._verify_password_cached(username, secret)
        if looks_like_token(secret):
            principal = self._verify_parsed_token(secret, parse_token(secret), peer)
            if not presented_by_owner(username, principal):
                raise TokenOwnerMismatch(
                    f"token {principal.token_id} of {principal.username} presented by another user"
                )
            return principal
        # Before any lookup: the refusal says nothing about the user, so it can say why.
        self._pipeline.policy.check_password_login()
        return self._verify_password_cached(username, secret)

    def _verify_password_cached(self, username: str, password: str) -> Principal:
        cache = self._pipeline.cache
        if cache is None or self._password_ttl <= 0:
            return self._verify_password(username, password)
        try:
            canonical = normalize_username(username)
        except InvalidUsername:
            return self._verify_password(username, password)
        key = hmac.new(
            self._password_key,
            f"{canonical}\0{password}".encode("utf-8", "surrogatepass"),
            hashlib.sha256,
        ).digest()
        return cache.get_or_load(
            key,
            lambda: self._verify_password(canonical, password),
            ttl_seconds=self._password_ttl,
        )

    def _verify_password(self, username: str, password: str) -> Principal:
        store = self._pipeline.store
        passwords = store.passwords
        user = store.find_user(username)
        # Unknown users are checked against a dummy hash: they cost what known users cost.
        matches = passwords.verify(user.password_hash if user else None, password)
        if user is None:
            raise UnknownUser("password login for an unknown user")
        if not matches:
            raise InvalidPassword(f"wrong password for {user.name}")
        if user.disabled:
            raise UserDisabled(f"user {user.name} is disabled")
        self._upgrade_hash(store, user, password)
        return Principal(
            username=user.name,
            user_id=user.id,
            method="password",
            password_generation=user.password_generation,
            admin=user.admin,
        )

    def _upgrade_hash(self, store: TokenStore, user: UserRecord, password: str) -> None:
        if user.password_hash is None or not store.passwords.needs_rehash(user.password_hash):
            return
        new_hash = store.passwords.hash(password)
        if store.replace_password_hash(user.id, user.password_hash, new_hash):
            log.info("re-hashed the password of %s with the current parameters", user.name)


def presented_by_owner(username: str, principal: Principal) -> bool:
    """Whether the user name given with a token names its owner (as typed, or canonical)."""
    return username == principal.username or _canonical_or_none(username) == principal.username


def _canonical_or_none(username: str) -> str | None:
    try:
        return normalize_username(username)
    except InvalidUsername:
        return None
