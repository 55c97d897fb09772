"""The token policy: which logins are allowed and what tokens may be, read once from Settings.

Each rule is off by default except password logins, which stay allowed so that upgrading e6auth
changes nothing until an operator opts in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from e6auth.errors import PasswordLoginsDisabled, PolicyError

if TYPE_CHECKING:
    from e6auth.settings import Settings

__all__ = ["DEFAULT_ROTATION_GRACE", "MAX_ROTATION_GRACE", "POLICY_SETTINGS", "Policy"]

DEFAULT_ROTATION_GRACE = dt.timedelta(hours=24)  # Snowflake's default
"""How long a rotated token's old secret keeps working, unless the rotation says otherwise."""
MAX_ROTATION_GRACE = dt.timedelta(days=30)

POLICY_SETTINGS = (
    "password_logins",
    "max_token_lifetime_days",
    "max_tokens_per_user",
    "revoke_unused_after_days",
)
"""The Settings fields the policy is made of, in the order `e6auth policy show` lists them."""


@dataclass(frozen=True, slots=True)
class Policy:
    password_logins: bool = True
    """Whether users may log in with a password; False: tokens only (e6data recommends it)."""
    max_token_lifetime_days: int | None = None
    """New tokens must expire within this many days; None: no limit, and no expiry required."""
    max_tokens_per_user: int | None = None
    """How many active (unrevoked, unexpired) tokens a user may hold; None: no limit."""
    revoke_unused_after_days: int | None = None
    """Tokens not used (or, never used, created) for this many days are revoked; None: never."""

    def __post_init__(self) -> None:
        for name in POLICY_SETTINGS[1:]:
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive whole number or None")

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(**{name: getattr(settings, name) for name in POLICY_SETTINGS})

    def as_dict(self) -> dict[str, bool | int | None]:
        return asdict(self)

    def check_password_login(self) -> None:
        if not self.password_logins:
            raise PasswordLoginsDisabled("password login refused: the policy allows tokens only")

    def check_lifetime(self, expires_days: int | None) -> None:
        """Refuse a token lifetime (None: never expires) longer than the policy allows."""
        limit = self.max_token_lifetime_days
        if limit is None:
            return
        if expires_days is None:
            raise PolicyError(
                f"tokens must expire within {limit} days by policy: give an expiry "
                f"(--expires-days N, N at most {limit})"
            )
        if expires_days > limit:
            raise PolicyError(
                f"an expiry of {expires_days} days is longer than the policy's maximum token "
                f"lifetime of {limit} days"
            )

    def check_token_count(self, user: str, active: int) -> None:
        """Refuse one more token for ``user``, holding ``active`` active tokens, over the limit."""
        limit = self.max_tokens_per_user
        if limit is not None and active >= limit:
            raise PolicyError(
                f"{user} already has {active} active tokens, the policy's maximum of {limit}: "
                "delete one first"
            )

    def unused_cutoff(self, now: dt.datetime) -> dt.datetime | None:
        """Tokens last used (or, never used, created) before this moment are to be revoked."""
        if self.revoke_unused_after_days is None:
            return None
        return now - dt.timedelta(days=self.revoke_unused_after_days)
