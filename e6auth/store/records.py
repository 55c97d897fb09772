"""What the token store hands out: immutable records, none holding a secret in its repr."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

__all__ = [
    "DeleteResult",
    "Invalidation",
    "NewToken",
    "TokenInfo",
    "TokenRecord",
    "TokenStatus",
    "TokenUse",
    "UserInfo",
    "UserRecord",
]

TokenStatus = Literal["active", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    name: str
    disabled: bool
    has_password: bool
    created_at: dt.datetime
    admin: bool = False
    """Sees and deletes every user's tokens on the web page."""
    service: bool = False
    """A service account: no person, no password, no web sign-in."""
    owners: tuple[str, ...] = ()
    """For a service account: the administrators who manage its tokens."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user as the authenticator sees it."""

    id: int
    name: str
    password_hash: str | None = field(repr=False)
    password_generation: int
    disabled: bool
    admin: bool = False
    session_generation: int = 0
    """Bumped when the user signs out everywhere: web page sessions made under an older value
    are refused."""
    service: bool = False


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listings show it: never its secret nor its digest."""

    id: str
    user: str
    comment: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_peers: tuple[str, ...] = ()
    allow_from: tuple[str, ...] | None = None
    """CIDR ranges the token may be used from; None: anywhere."""
    scope: str = "all"
    """Either "all" or "read_only"."""
    previous_valid_until: dt.datetime | None = None
    """After a rotation: when the secret it replaced stops working."""

    def status(self, now: dt.datetime) -> TokenStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


class TokenRecord(NamedTuple):
    """A token as the authenticator sees it: one row joined with its owner.

    A named tuple, not a dataclass as the other records are: it is made on every cache miss, from
    the row as it comes (:func:`make_token_record`, the read's columns in this order), at a
    tenth of a frozen dataclass's cost (measured: 0.4 against 3 us). Its repr leaves the digests
    out."""

    id: str
    user_id: int
    user: str
    user_disabled: bool
    digest: bytes
    pepper_id: int
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    allow_from: str | None = None
    """The stored JSON list of CIDR ranges (None: anywhere); parsed by
    e6auth.verify.restrictions."""
    scope: str = "all"
    rotated_at: dt.datetime | None = None
    previous_digest: bytes | None = None
    """The digest of the secret the last rotation replaced; it verifies until
    ``previous_valid_until``."""
    previous_pepper_id: int | None = None
    previous_valid_until: dt.datetime | None = None

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={value!r}"
            for name, value in zip(self._fields, self, strict=True)
            if name not in ("digest", "previous_digest")
        )
        return f"TokenRecord({shown})"


make_token_record: Callable[[Sequence[Any]], TokenRecord] = functools.partial(
    tuple.__new__, TokenRecord
)
"""A :class:`TokenRecord` of a whole row: ``TokenRecord._make`` without its Python call (the
row's length is the read's, which tests/test_store_reads.py checks against the fields)."""


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just created. ``token`` is the only copy of the secret there will ever be."""

    id: str
    user: str
    token: str = field(repr=False)
    comment: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    allow_from: tuple[str, ...] | None = None
    scope: str = "all"
    previous_valid_until: dt.datetime | None = None
    """After a rotation: when the secret it replaced stops working."""


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: tuple[str, ...]
    already_deleted: tuple[str, ...]
    unknown: tuple[str, ...]

    @property
    def all_found(self) -> bool:
        return not self.unknown


@dataclass(frozen=True, slots=True)
class Invalidation:
    """A change after which cached verifications of a token, or of all a user's credentials,
    must not be trusted. ``id`` is the log position (None before it is written)."""

    token_id: str | None = None
    user_id: int | None = None
    id: int | None = None
    created_at: dt.datetime | None = None
    """When the entry was written (set on entries read from the log): for the lag metric."""


@dataclass(frozen=True, slots=True)
class TokenUse:
    """The newest use of a token seen by one process since its last flush."""

    at: dt.datetime
    peers: tuple[str, ...] = ()
    """Distinct addresses, newest first."""
