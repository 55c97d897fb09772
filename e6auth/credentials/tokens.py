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

import functools
import re
import secrets
import zlib
from collections.abc import Callable
from typing import NamedTuple

from e6auth.errors import MalformedCredential

__all__ = [
    "PREFIX",
    "TOKEN_LENGTH",
    "ParsedToken",
    "check_token",
    "generate_token",
    "is_token_id",
    "looks_like_token",
    "parse_token",
    "split_token",
]

PREFIX = "e6pat_"
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH

_B62 = f"[{ALPHABET}]"
_ID_START = len(PREFIX)
_SEPARATOR = _ID_START + ID_LENGTH
_SECRET_START = _SEPARATOR + 1
_DIGIT = {character: value for value, character in enumerate(ALPHABET)}
_TOKEN_ID = re.compile(rf"{_B62}{{{ID_LENGTH}}}", re.ASCII)


class ParsedToken(NamedTuple):
    """A token that passed the shape and checksum checks (made on every cache miss: a named
    tuple costs a fraction of a frozen dataclass). Its repr leaves the secret out."""

    id: str
    secret: str

    def __repr__(self) -> str:
        return f"ParsedToken(id={self.id!r})"


_parsed: Callable[[tuple[str, str]], ParsedToken] = functools.partial(tuple.__new__, ParsedToken)
"""``ParsedToken(id, secret)`` of a pair, without the named tuple's ``__new__`` (a Python call)."""


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
    # String methods, not a regex: ASCII letters and digits are exactly the base62 alphabet,
    # and the methods cost a third of the regex on the verify path's miss (measured).
    return (
        len(text) == TOKEN_LENGTH
        and text.startswith(PREFIX)
        and text[_SEPARATOR] == "_"
        and text.isascii()
        and text[_ID_START:_SEPARATOR].isalnum()
        and text[_SECRET_START:].isalnum()
    )


def check_token(text: str) -> None:
    """Raise :class:`MalformedCredential` unless ``text`` has a token's shape and checksum."""
    parse_token(text)


def parse_token(text: str) -> ParsedToken:
    """Split a token into id and secret, or raise :class:`MalformedCredential`: its shape and
    its checksum checked.

    Every cache miss runs this, so it is one function: :func:`looks_like_token`'s test is
    written out here again (tests/test_tokens.py holds the two to the same reference), and so is
    the checksum's; as calls of their own they cost a miss a third of this (measured)."""
    if not (
        len(text) == TOKEN_LENGTH
        and text.startswith(PREFIX)
        and text[_SEPARATOR] == "_"
        and text.isascii()
        and text[_ID_START:_SEPARATOR].isalnum()
        and text[_SECRET_START:].isalnum()
    ):
        raise MalformedCredential("not a token: wrong shape")
    digit, c = _DIGIT, text[-CHECKSUM_LENGTH:]
    expected = (
        (((digit[c[0]] * 62 + digit[c[1]]) * 62 + digit[c[2]]) * 62 + digit[c[3]]) * 62
        + digit[c[4]]
    ) * 62 + digit[c[5]]
    # The checksum guards against typos, not forgery: it is not secret, so == is fine.
    if zlib.crc32(text[:-CHECKSUM_LENGTH].encode("ascii")) != expected:
        raise MalformedCredential(f"token {text[_ID_START:_SEPARATOR]}: checksum mismatch")
    return _parsed((text[_ID_START:_SEPARATOR], text[_SECRET_START:-CHECKSUM_LENGTH]))


def split_token(text: str) -> ParsedToken:
    """The parts of a string that passed :func:`check_token`."""
    return _parsed((text[_ID_START:_SEPARATOR], text[_SECRET_START:-CHECKSUM_LENGTH]))


def is_token_id(text: str) -> bool:
    return _TOKEN_ID.fullmatch(text) is not None
