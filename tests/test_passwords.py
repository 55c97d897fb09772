"""argon2id password hashing: parameters, length limits, and equal cost for unknown users."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import argon2
import pytest

from e6auth.credentials.passwords import MAX_PASSWORD_BYTES, Argon2Parameters, Passwords
from e6auth.errors import CredentialTooLong, MalformedCredential, PolicyError
from e6auth.testing import FAST_ARGON2

FAST_PREFIX = "$argon2id$v=19$m=64,t=1,p=1$"


@dataclass
class HasherCalls:
    """Hashes passed to argon2's ``verify`` and passwords passed to its ``hash``."""

    verified: list[str] = field(default_factory=list)
    hashed: int = 0


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(FAST_ARGON2)


@pytest.fixture
def hasher_calls(monkeypatch: pytest.MonkeyPatch, passwords: Passwords) -> HasherCalls:
    """Spy on argon2 itself (patched on the class: PasswordHasher has slots), after the
    ``passwords`` fixture has made its dummy hash, so only the calls under test count."""
    calls = HasherCalls()
    real_verify = argon2.PasswordHasher.verify
    real_hash = argon2.PasswordHasher.hash

    def verify(self: argon2.PasswordHasher, hash: str | bytes, password: Any) -> bool:
        calls.verified.append(hash if isinstance(hash, str) else hash.decode())
        return real_verify(self, hash, password)

    def hash_(self: argon2.PasswordHasher, password: Any, **kwargs: Any) -> str:
        calls.hashed += 1
        return real_hash(self, password, **kwargs)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", verify)
    monkeypatch.setattr(argon2.PasswordHasher, "hash", hash_)
    return calls


def test_hash_then_verify(passwords: Passwords) -> None:
    encoded = passwords.hash("correct horse battery staple")

    assert passwords.verify(encoded, "correct horse battery staple") is True
    assert passwords.verify(encoded, "correct horse battery stapler") is False
    assert passwords.verify(encoded, "") is False


def test_hash_is_salted_and_never_contains_the_password(passwords: Passwords) -> None:
    first = passwords.hash("hunter2hunter2")
    second = passwords.hash("hunter2hunter2")

    assert first != second
    assert "hunter2" not in first


def test_default_parameters_are_argon2id_owasp_minimum() -> None:
    passwords = Passwords()
    encoded = passwords.hash("s3cret-password")

    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify(encoded, "s3cret-password") is True
    assert passwords.needs_rehash(encoded) is False


def test_non_ascii_password_round_trips(passwords: Passwords) -> None:
    encoded = passwords.hash("pässwörd-🔑")
    assert passwords.verify(encoded, "pässwörd-🔑") is True
    assert passwords.verify(encoded, "passwörd-🔑") is False


def test_unknown_user_costs_a_real_argon2_verify(
    passwords: Passwords, hasher_calls: HasherCalls
) -> None:
    assert passwords.verify(None, "whatever-they-typed") is False

    # One real check, against a hash with the configured parameters: same cost as a known user.
    assert len(hasher_calls.verified) == 1
    assert hasher_calls.verified[0].startswith(FAST_PREFIX)


def test_known_and_unknown_users_make_the_same_argon2_calls(
    passwords: Passwords, hasher_calls: HasherCalls
) -> None:
    encoded = passwords.hash("the-real-password")
    hasher_calls.verified.clear()

    passwords.verify(encoded, "a-wrong-password")
    passwords.verify(None, "a-wrong-password")

    known, unknown = hasher_calls.verified
    assert known == encoded
    assert unknown != encoded
    # Same algorithm and cost parameters: only the salt and digest differ.
    assert known.rsplit("$", 2)[0] == unknown.rsplit("$", 2)[0]


def test_unparsable_stored_hash_is_a_mismatch_not_a_crash(passwords: Passwords) -> None:
    assert passwords.verify("not-an-argon2-hash", "password") is False


def test_longest_allowed_password_is_accepted(passwords: Passwords) -> None:
    longest = "p" * MAX_PASSWORD_BYTES
    assert MAX_PASSWORD_BYTES == 1024
    assert passwords.verify(passwords.hash(longest), longest) is True


@pytest.mark.parametrize(
    "password",
    [
        "p" * (MAX_PASSWORD_BYTES + 1),
        # 342 characters but 1026 bytes: the limit is on what argon2 would hash.
        "€" * 342,
        "x" * 10_000_000,
    ],
    ids=["1025-ascii", "1026-bytes-in-342-chars", "10-megabytes"],
)
def test_too_long_password_is_refused_before_hashing(
    passwords: Passwords, hasher_calls: HasherCalls, password: str
) -> None:
    encoded = Passwords(FAST_ARGON2).hash("short-password")
    hasher_calls.hashed = 0
    hasher_calls.verified.clear()

    with pytest.raises(CredentialTooLong) as on_hash:
        passwords.hash(password)
    with pytest.raises(CredentialTooLong):
        passwords.verify(encoded, password)
    with pytest.raises(CredentialTooLong):
        passwords.verify(None, password)

    assert hasher_calls.hashed == 0
    assert hasher_calls.verified == []
    assert password[:50] not in str(on_hash.value)


@pytest.mark.parametrize("password", ["abc\ud800def", "\udfff", "ok-then-\udc80"])
def test_lone_surrogates_are_refused(
    passwords: Passwords, hasher_calls: HasherCalls, password: str
) -> None:
    encoded = Passwords(FAST_ARGON2).hash("short-password")
    hasher_calls.verified.clear()
    hasher_calls.hashed = 0

    with pytest.raises(MalformedCredential):
        passwords.hash(password)
    with pytest.raises(MalformedCredential) as caught:
        passwords.verify(encoded, password)

    assert hasher_calls.verified == []
    assert hasher_calls.hashed == 0
    # Nothing reachable from the error may hold the password: a chained UnicodeEncodeError
    # would, in its repr and in its ``object`` attribute.
    error: BaseException | None = caught.value
    while error is not None:
        assert password not in str(error)
        assert password not in error.args
        assert getattr(error, "object", None) != password
        error = error.__cause__ or error.__context__


def test_empty_password_is_refused(passwords: Passwords) -> None:
    with pytest.raises(PolicyError):
        passwords.hash("")


def test_needs_rehash_when_parameters_change(passwords: Passwords) -> None:
    encoded = passwords.hash("some-password")
    stronger = Passwords(Argon2Parameters(memory_kib=128, time_cost=2, parallelism=1))

    assert passwords.needs_rehash(encoded) is False
    assert stronger.needs_rehash(encoded) is True
    # The old hash still verifies under new parameters: it describes its own.
    assert stronger.verify(encoded, "some-password") is True
    rehashed = stronger.hash("some-password")
    assert rehashed.startswith("$argon2id$v=19$m=128,t=2,p=1$")
    assert stronger.needs_rehash(rehashed) is False


@pytest.mark.parametrize(
    "parameters",
    [
        Argon2Parameters(memory_kib=128, time_cost=1, parallelism=1),
        Argon2Parameters(memory_kib=64, time_cost=2, parallelism=1),
        Argon2Parameters(memory_kib=64, time_cost=1, parallelism=2),
    ],
)
def test_any_parameter_change_needs_rehash(
    passwords: Passwords, parameters: Argon2Parameters
) -> None:
    encoded = passwords.hash("some-password")
    assert Passwords(parameters).needs_rehash(encoded) is True
