"""The token store's tables. Changes here need a migration in ``migrations/versions``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
)

__all__ = ["invalidations", "metadata", "tokens", "users"]


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (no zones) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the token store")
        utc = value.astimezone(dt.UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "e6auth_users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(254), nullable=False, unique=True),
    Column("password_hash", String(512), nullable=True),
    # Bumped on every password change: sessions are bound to it, so a change ends them.
    Column("password_generation", Integer, nullable=False, default=0),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

tokens = Table(
    "e6auth_tokens",
    metadata,
    Column("id", String(12), primary_key=True),
    Column(
        "user_id",
        Integer,
        ForeignKey(users.c.id, ondelete="CASCADE"),
        nullable=False,
    ),
    # HMAC-SHA256(pepper, secret); which pepper is named by pepper_id.
    Column("digest", LargeBinary(32), nullable=False),
    Column("pepper_id", SmallInteger, nullable=False, default=1),
    Column("comment", String(256), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    # JSON list of the last few distinct addresses the token was used from, newest first.
    Column("last_used_peers", Text, nullable=True),
    # Deleting a token revokes it: the row stays so that its owner is told "revoked" rather than
    # "invalid credentials", and so that listings and audits can still name it.
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_e6auth_tokens_user_id", "user_id"),
)

# Append-only log of changes that must evict cached verifications in every process: written in the
# transaction that makes the change, read by each long-running process from its last seen id.
invalidations = Table(
    "e6auth_invalidations",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("created_at", UTCDateTime, nullable=False),
    Column("token_id", String(12), nullable=True),
    Column("user_id", Integer, nullable=True),
    Index("ix_e6auth_invalidations_created_at", "created_at"),
    # Ids must never be reused after pruning, or a reader could skip new entries.
    sqlite_autoincrement=True,
)
