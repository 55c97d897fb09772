"""token_principal builds its Principal positionally (for speed): each field must still get the
record's value meant for it."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest

from e6auth.store.records import TokenRecord
from e6auth.verify.principal import Principal, token_principal

UTC = dt.UTC
# Every datetime different, so that two of them swapped shows.
EXPIRES = dt.datetime(2031, 1, 1, tzinfo=UTC)
ROTATED = dt.datetime(2030, 2, 2, tzinfo=UTC)
GRACE = dt.datetime(2030, 3, 3, tzinfo=UTC)
SESSION_END = dt.datetime(2030, 4, 4, tzinfo=UTC)


def _record(*, scope: str = "read_only", allow_from: str | None = '["10.0.0.0/8"]') -> TokenRecord:
    return TokenRecord(
        id="tokenid1234",
        user_id=42,
        user="alice",
        user_disabled=False,
        digest=b"d" * 32,
        pepper_id=1,
        expires_at=EXPIRES,
        revoked_at=None,
        allow_from=allow_from,
        scope=scope,
        rotated_at=ROTATED,
    )


def test_every_field_gets_its_value() -> None:
    principal = token_principal(_record(), grace_until=GRACE, session_id="session-1")
    assert principal == Principal(
        username="alice",
        user_id=42,
        method="token",
        token_id="tokenid1234",
        expires_at=EXPIRES,
        session_id="session-1",
        allow_from=(ipaddress.ip_network("10.0.0.0/8"),),
        read_only=True,
        grace_until=GRACE,
        rotated_at=ROTATED,
    )
    assert principal.password_generation is None
    assert principal.admin is False


@pytest.mark.parametrize(
    ("scope", "read_only"), [("all", False), ("read_only", True), ("unknown", True)]
)
def test_only_the_full_scope_writes(scope: str, read_only: bool) -> None:
    assert token_principal(_record(scope=scope), grace_until=None).read_only is read_only


def test_a_session_end_before_the_token_s_expiry_wins() -> None:
    record = _record(allow_from=None)
    assert token_principal(record, grace_until=None).expires_at == EXPIRES
    principal = token_principal(record, grace_until=None, expires_at=SESSION_END)
    assert principal.expires_at == SESSION_END
    assert principal.allow_from is None
    assert principal.session_id is None
    assert principal.grace_until is None
