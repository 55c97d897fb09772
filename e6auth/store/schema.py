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
    false,
)

__all__ = [
    "auth_events",
    "ended_sessions",
    "invalidations",
    "metadata",
    "query_events",
    "service_owners",
    "tokens",
    "users",
]


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
    # Administrators see and delete every user's tokens on the web page (`e6auth serve
    # --http-port`); everyone else only their own. Nothing else depends on it.
    Column("admin", Boolean, nullable=False, default=False, server_default=false()),
    # Bumped when the user signs out everywhere: web page sessions carry the value they were
    # made under, so one bump ends them all, on every replica, with no per-session rows.
    Column("session_generation", Integer, nullable=False, default=0, server_default="0"),
    # Service accounts are no people: no password, no web sign-in; administrators who own them
    # (service_owners) manage their tokens.
    Column("service", Boolean, nullable=False, default=False, server_default=false()),
)

# Who manages a service account's tokens: administrators, one row per (account, owner).
service_owners = Table(
    "e6auth_service_owners",
    metadata,
    Column(
        "service_user_id",
        Integer,
        ForeignKey(users.c.id, ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "owner_user_id",
        Integer,
        ForeignKey(users.c.id, ondelete="CASCADE"),
        primary_key=True,
    ),
    Index("ix_e6auth_service_owners_owner_user_id", "owner_user_id"),
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
    # "all", or "read_only": the gateway then runs the token's statements read-only.
    Column("scope", String(16), nullable=False, default="all", server_default="all"),
    # JSON list of CIDR ranges the token may be used from; NULL: from anywhere.
    Column("allow_from", Text, nullable=True),
    # Rotation: the secret that was replaced keeps working until previous_valid_until.
    Column("rotated_at", UTCDateTime, nullable=True),
    Column("previous_digest", LargeBinary(32), nullable=True),
    Column("previous_pepper_id", SmallInteger, nullable=True),
    Column("previous_valid_until", UTCDateTime, nullable=True),
    Index("ix_e6auth_tokens_user_id", "user_id"),
)

# Web page sessions signed out before their time, until the time they would have ended anyway
# (then pruned). Only a SHA-256 of the session's id is kept: a row names no usable session.
ended_sessions = Table(
    "e6auth_ended_sessions",
    metadata,
    Column("session_hash", LargeBinary(32), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_e6auth_ended_sessions_expires_at", "expires_at"),
)


def _log_table(name: str, *columns: Column[Any] | Index) -> Table:
    """An append-only log, pruned from its oldest entries. Its ids grow and are never reused after
    pruning, or a reader that remembers the last id it saw could skip new entries: 64-bit on
    PostgreSQL; on SQLite AUTOINCREMENT."""
    return Table(
        name,
        metadata,
        Column(
            "id",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        *columns,
        sqlite_autoincrement=True,
    )


# Append-only log of changes that must evict cached verifications in every process: written in the
# transaction that makes the change, read by each long-running process from its last seen id.
invalidations = _log_table(
    "e6auth_invalidations",
    Column("created_at", UTCDateTime, nullable=False),
    Column("token_id", String(12), nullable=True),
    Column("user_id", Integer, nullable=True),
    Index("ix_e6auth_invalidations_created_at", "created_at"),
)

# The audit trail: one row per handshake, refused call or notable event (a token used from a new
# address, a token created, rotated or deleted). Written in batches off the request path; pruned
# after the retention period. Never holds a secret: user names, token ids, addresses, codes.
auth_events = _log_table(
    "e6auth_auth_events",
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("result", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("username", String(254), nullable=True),
    Column("token_id", String(12), nullable=True),
    Column("peer", String(100), nullable=True),
    Column("method", String(100), nullable=True),
    Index("ix_e6auth_auth_events_at", "at"),
    Index("ix_e6auth_auth_events_username", "username"),
)

# Every statement run through the gateway, with who ran it and with which token.
query_events = _log_table(
    "e6auth_query_events",
    Column("at", UTCDateTime, nullable=False),
    Column("username", String(254), nullable=False),
    Column("token_id", String(12), nullable=True),
    Column("peer", String(100), nullable=True),
    Column("query_id", String(64), nullable=False),
    # The statement, cut to a bounded length.
    Column("statement", Text, nullable=False),
    Column("result", String(16), nullable=False),
    Index("ix_e6auth_query_events_at", "at"),
    Index("ix_e6auth_query_events_token_id", "token_id"),
)
