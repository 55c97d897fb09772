"""Who a verified credential belongs to."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from e6auth.restrictions import AllowedNetworks

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The result of a successful verification. Holds no secret."""

    username: str
    user_id: int
    method: Literal["password", "token"]
    token_id: str | None = None
    """The token that was presented, for token logins."""
    expires_at: dt.datetime | None = None
    """When the credential stops working, if it ever does."""
    password_generation: int | None = None
    """For password logins: which password it was, so a change can end sessions made with it."""
    session_id: str | None = None
    """The public id of the session the call came with, if it came with one."""
    allow_from: AllowedNetworks | None = None
    """For token logins: the address ranges the token may be used from (None: anywhere)."""
    read_only: bool = False
    """For token logins: the token's statements run read-only."""
