"""The token store: SQLAlchemy tables, the TokenStore and its Alembic migrations.

Exported lazily (PEP 562): the records (``e6auth.store.records``) are plain dataclasses, and
importing one of them, or this package, does not load SQLAlchemy; the stores do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from e6auth._exports import lazy_exports

if TYPE_CHECKING:
    from e6auth.store.audit import AuditStore, AuthEvent, QueryEvent
    from e6auth.store.records import (
        DeleteResult,
        Invalidation,
        NewToken,
        TokenInfo,
        TokenRecord,
        TokenStatus,
        TokenUse,
        UserInfo,
        UserRecord,
    )
    from e6auth.store.token_store import TokenStore

__all__ = [
    "AuditStore",
    "AuthEvent",
    "DeleteResult",
    "Invalidation",
    "NewToken",
    "QueryEvent",
    "TokenInfo",
    "TokenRecord",
    "TokenStatus",
    "TokenStore",
    "TokenUse",
    "UserInfo",
    "UserRecord",
]

_RECORDS = "e6auth.store.records"
_EXPORTS: dict[str, str] = {
    "AuditStore": "e6auth.store.audit",
    "AuthEvent": "e6auth.store.audit",
    "QueryEvent": "e6auth.store.audit",
    "TokenStore": "e6auth.store.token_store",
    **dict.fromkeys(
        (
            "DeleteResult",
            "Invalidation",
            "NewToken",
            "TokenInfo",
            "TokenRecord",
            "TokenStatus",
            "TokenUse",
            "UserInfo",
            "UserRecord",
        ),
        _RECORDS,
    ),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
