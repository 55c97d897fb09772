"""Expiry warnings in the handshake's response metadata.

A client (or a person reading its debug log) learns when the token it logged in with expires, and
when the old secret of a rotated token stops working, before it does: times are ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as dt

from e6auth.verify.principal import Principal

__all__ = ["ROTATED_UNTIL_HEADER", "TOKEN_EXPIRES_HEADER", "expiry_metadata"]

TOKEN_EXPIRES_HEADER = "x-e6auth-token-expires-at"  # noqa: S105 - a header name
ROTATED_UNTIL_HEADER = "x-e6auth-token-rotated-until"


def expiry_metadata(principal: Principal) -> tuple[tuple[str, str], ...]:
    """The expiry headers for a principal just verified: none for passwords and lasting tokens."""
    if principal.method != "token":
        return ()
    headers = []
    if principal.expires_at is not None:
        headers.append((TOKEN_EXPIRES_HEADER, _iso(principal.expires_at)))
    if principal.grace_until is not None:
        headers.append((ROTATED_UNTIL_HEADER, _iso(principal.grace_until)))
    return tuple(headers)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
