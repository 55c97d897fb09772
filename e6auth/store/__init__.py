"""The token store: SQLAlchemy tables, the TokenStore and its Alembic migrations."""

from e6auth.store.records import (
    DeleteResult,
    NewToken,
    TokenInfo,
    TokenRecord,
    TokenStatus,
    UserInfo,
    UserRecord,
)
from e6auth.store.token_store import TokenStore

__all__ = [
    "DeleteResult",
    "NewToken",
    "TokenInfo",
    "TokenRecord",
    "TokenStatus",
    "TokenStore",
    "UserInfo",
    "UserRecord",
]
