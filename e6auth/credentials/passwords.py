"""Password hashing with argon2id.

Hashes are argon2's self-describing encoded strings, so a change of parameters is noticed on the
next good login (:meth:`Passwords.needs_rehash`) and the store rewrites the hash then. Every hash
and verify goes through a :class:`~e6auth.credentials.hashgate.HashGate`, which bounds how many run
at once: each holds the memory cost while it runs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from e6auth.credentials.hashgate import HashGate
from e6auth.defaults import DEFAULT_MEMORY_KIB, DEFAULT_PARALLELISM, DEFAULT_TIME_COST
from e6auth.errors import CredentialTooLong, MalformedCredential, PolicyError

__all__ = [
    "DEFAULT_MEMORY_KIB",
    "DEFAULT_PARALLELISM",
    "DEFAULT_TIME_COST",
    "MAX_PASSWORD_BYTES",
    "Argon2Parameters",
    "Passwords",
]

MAX_PASSWORD_BYTES = 1024
"""Longer inputs are refused before hashing: hashing megabytes is a denial-of-service lever."""


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    memory_kib: int = DEFAULT_MEMORY_KIB
    time_cost: int = DEFAULT_TIME_COST
    parallelism: int = DEFAULT_PARALLELISM


def _encode(password: str) -> bytes:
    encoded: bytes | None
    try:
        encoded = password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        encoded = None
    if encoded is None:
        # Raised outside the handler: a chained UnicodeEncodeError would carry the password.
        raise MalformedCredential("password is not valid UTF-8")
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise CredentialTooLong(f"password longer than {MAX_PASSWORD_BYTES} bytes")
    return encoded


class Passwords:
    """Hash, check and re-hash passwords with fixed argon2id parameters.

    ``gate`` bounds the hashes running at once (default: a gate of its own with the default
    bounds); :meth:`hash` and :meth:`verify` raise :class:`~e6auth.errors.HashingBusy` when it
    refuses to wait longer."""

    def __init__(
        self, parameters: Argon2Parameters | None = None, *, gate: HashGate | None = None
    ) -> None:
        self.parameters = parameters or Argon2Parameters()
        self.gate = gate if gate is not None else HashGate()
        self._hasher = argon2.PasswordHasher(
            time_cost=self.parameters.time_cost,
            memory_cost=self.parameters.memory_kib,
            parallelism=self.parameters.parallelism,
            type=argon2.Type.ID,
        )
        # Checked against when the user is unknown, so that case costs what a real check costs.
        self._dummy_hash = self.gate.run(lambda: self._hasher.hash(secrets.token_urlsafe(16)))

    def hash(self, password: str) -> str:
        if not password:
            raise PolicyError("password must not be empty")
        encoded = _encode(password)
        return self.gate.run(lambda: self._hasher.hash(encoded))

    def verify(self, encoded_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches. ``None`` (no user, no password) costs a full check too."""
        candidate = _encode(password)
        return self.gate.run(lambda: self._check(encoded_hash, candidate))

    def _check(self, encoded_hash: str | None, candidate: bytes) -> bool:
        try:
            return self._hasher.verify(encoded_hash or self._dummy_hash, candidate) and (
                encoded_hash is not None
            )
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded_hash: str) -> bool:
        return self._hasher.check_needs_rehash(encoded_hash)
