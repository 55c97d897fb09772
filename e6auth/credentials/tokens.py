"""The personal access token format.

A token reads ``e6pat_<id>_<secret><checksum>``:

- ``e6pat_`` lets secret scanners find leaked tokens;
- ``id``, 12 base62 characters, is public: it names the token in listings and logs and is the
  database lookup key;
- ``secret``, 32 base62 characters (190 random bits), is never stored; the store keeps
  HMAC-SHA256(pepper, secret) only;
- ``checksum``, CRC32 of everything before it in 6 base62 characters, lets a typo or a random
  string be refused without touching the database.

Everything here is pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass, field

from e6auth.errors import MalformedCredential

__all__ = [
    "PREFIX",
    "TOKEN_LENGTH",
    "ParsedToken",
    "check_checksum",
    "check_token",
    "generate_token",
    "is_token_id",
    "looks_like_token",
    "parse_token",
    "split_token",
    "token_digest",
]

PREFIX = "e6pat_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH

_B62 = f"[{ALPHABET}]"
_SHAPE = re.compile(
    rf"{PREFIX}({_B62}{{{ID_LENGTH}}})_({_B62}{{{SECRET_LENGTH}}})({_B62}{{{CHECKSUM_LENGTH}}})",
    re.ASCII,
)
_DIGIT = {character: value for value, character in enumerate(ALPHABET)}
_TOKEN_ID = re.compile(rf"{_B62}{{{ID_LENGTH}}}", re.ASCII)


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token that passed the shape and checksum checks."""

    id: str
    secret: str = field(repr=False)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate_token(*, token_id: str | None = None) -> tuple[ParsedToken, str]:
    """A fresh token: its parts, and the full string to hand to the user once. ``token_id`` keeps
    an existing id (a rotation gives the same token a new secret)."""
    if token_id is not None and not is_token_id(token_id):
        raise ValueError("not a token id")
    parsed = ParsedToken(token_id or _random_base62(ID_LENGTH), _random_base62(SECRET_LENGTH))
    body = f"{PREFIX}{parsed.id}_{parsed.secret}"
    return parsed, body + _checksum(body)


def looks_like_token(text: str) -> bool:
    """Whether ``text`` has the shape of a token, checksum aside.

    The handshake uses this to tell a token from a password, so a token with a typo is refused as
    a malformed token instead of being tried as a password.
    """
    return len(text) == TOKEN_LENGTH and _SHAPE.fullmatch(text) is not None


def check_token(text: str) -> None:
    """Raise :class:`MalformedCredential` unless ``text`` has a token's shape and checksum.

    The hot path's check: it builds nothing, so a cache hit pays only for the regex and a CRC.
    """
    if not looks_like_token(text):
        raise MalformedCredential("not a token: wrong shape")
    check_checksum(text)


def check_checksum(text: str) -> None:
    """The checksum half of :func:`check_token`, for text already known to have a token's shape."""
    digit, c = _DIGIT, text[-CHECKSUM_LENGTH:]
    expected = (
        (((digit[c[0]] * 62 + digit[c[1]]) * 62 + digit[c[2]]) * 62 + digit[c[3]]) * 62
        + digit[c[4]]
    ) * 62 + digit[c[5]]
    # The checksum guards against typos, not forgery: it is not secret, so == is fine.
    if zlib.crc32(text[:-CHECKSUM_LENGTH].encode("ascii")) != expected:
        token_id = text[len(PREFIX) : len(PREFIX) + ID_LENGTH]
        raise MalformedCredential(f"token {token_id}: checksum mismatch")


def parse_token(text: str) -> ParsedToken:
    """Split a token into id and secret, or raise :class:`MalformedCredential`."""
    check_token(text)
    return split_token(text)


def split_token(text: str) -> ParsedToken:
    """The parts of a string that passed :func:`check_token`."""
    start = len(PREFIX)
    return ParsedToken(
        text[start : start + ID_LENGTH], text[start + ID_LENGTH + 1 : -CHECKSUM_LENGTH]
    )


def is_token_id(text: str) -> bool:
    return _TOKEN_ID.fullmatch(text) is not None


def token_digest(pepper: bytes, secret: str) -> bytes:
    """What the store keeps of a secret: HMAC-SHA256 keyed by the pepper."""
    return hmac.new(pepper, secret.encode("ascii"), hashlib.sha256).digest()
