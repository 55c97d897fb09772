"""Tokens as the page lists them: times in UTC to the minute, a status that tells a rotated token
in its grace window apart, and the token's limits."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from e6auth.store import TokenInfo

__all__ = ["TokenRow", "shown_time", "token_row"]


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A token as the list shows it."""

    id: str
    user: str
    comment: str
    created: str
    expires: str
    last_used: str
    status: str
    status_note: str
    limits: tuple[str, ...]


def token_row(token: TokenInfo, now: dt.datetime) -> TokenRow:
    status: str = token.status(now)
    note = ""
    previous = token.previous_valid_until
    if status == "active" and previous is not None and previous > now:
        status, note = "rotated", f"its old secret works until {shown_time(previous)} UTC"
    limits = []
    if token.scope != "all":
        limits.append(token.scope.replace("_", "-"))
    if token.allow_from is not None:
        limits.append("from " + ", ".join(token.allow_from))
    return TokenRow(
        id=token.id,
        user=token.user,
        comment=token.comment or "",
        created=shown_time(token.created_at),
        expires=shown_time(token.expires_at) if token.expires_at else "never",
        last_used=shown_time(token.last_used_at) if token.last_used_at else "never",
        status=status,
        status_note=note,
        limits=tuple(limits),
    )


def shown_time(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
