"""User names: case-insensitive, e-mail-like (``alice`` or ``alice@example.com``)."""

from __future__ import annotations

import re

from e6auth.errors import InvalidUsername

__all__ = ["MAX_USERNAME_LENGTH", "normalize_username"]

MAX_USERNAME_LENGTH = 254  # the longest e-mail address SMTP carries

_LOCAL = r"[a-z0-9](?:[a-z0-9._%+-]{0,62}[a-z0-9_%+-])?"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_USERNAME = re.compile(rf"{_LOCAL}(?:@{_LABEL}(?:\.{_LABEL})+)?", re.ASCII)


def normalize_username(name: str) -> str:
    """The canonical (lower-case) form of ``name``, or :class:`InvalidUsername` saying why not.

    Only ASCII is accepted: case folding of other scripts is locale-dependent, and two spellings
    of one name must never become two users.
    """
    if not isinstance(name, str) or not name:
        raise InvalidUsername("user name is empty")
    if len(name) > MAX_USERNAME_LENGTH:
        raise InvalidUsername(f"user name is longer than {MAX_USERNAME_LENGTH} characters")
    lowered = name.lower()
    # ASCII is checked before lowering: some non-ASCII letters lower to ASCII (KELVIN SIGN to k).
    if not name.isascii() or _USERNAME.fullmatch(lowered) is None or ".." in lowered:
        raise InvalidUsername(
            "user name must look like 'alice' or 'alice@example.com': ASCII letters, digits and"
            " . _ % + - before an optional @domain"
        )
    return lowered
