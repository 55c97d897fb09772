"""The token store: SQLAlchemy tables, the TokenStore and its Alembic migrations."""

from e6auth.store.audit_store import AuditStore, AuthEvent, QueryEvent
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
