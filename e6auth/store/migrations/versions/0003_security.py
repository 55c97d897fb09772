"""Per-token scope, address ranges and rotation grace; the audit trail.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from e6auth.store.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _event_id() -> sa.Column[int]:
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def upgrade() -> None:
    with op.batch_alter_table("e6auth_tokens") as batch:
        batch.add_column(sa.Column("scope", sa.String(16), nullable=False, server_default="all"))
        batch.add_column(sa.Column("allow_from", sa.Text, nullable=True))
        batch.add_column(sa.Column("rotated_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("previous_digest", sa.LargeBinary(32), nullable=True))
        batch.add_column(sa.Column("previous_pepper_id", sa.SmallInteger, nullable=True))
        batch.add_column(sa.Column("previous_valid_until", UTCDateTime, nullable=True))
    op.create_table(
        "e6auth_auth_events",
        _event_id(),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("username", sa.String(254), nullable=True),
        sa.Column("token_id", sa.String(12), nullable=True),
        sa.Column("peer", sa.String(100), nullable=True),
        sa.Column("method", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_e6auth_auth_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_e6auth_auth_events_at", "e6auth_auth_events", ["at"])
    op.create_index("ix_e6auth_auth_events_username", "e6auth_auth_events", ["username"])
    op.create_table(
        "e6auth_query_events",
        _event_id(),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("username", sa.String(254), nullable=False),
        sa.Column("token_id", sa.String(12), nullable=True),
        sa.Column("peer", sa.String(100), nullable=True),
        sa.Column("query_id", sa.String(64), nullable=False),
        sa.Column("statement", sa.Text, nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_e6auth_query_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_e6auth_query_events_at", "e6auth_query_events", ["at"])
    op.create_index("ix_e6auth_query_events_token_id", "e6auth_query_events", ["token_id"])


def downgrade() -> None:
    op.drop_index("ix_e6auth_query_events_token_id", table_name="e6auth_query_events")
    op.drop_index("ix_e6auth_query_events_at", table_name="e6auth_query_events")
    op.drop_table("e6auth_query_events")
    op.drop_index("ix_e6auth_auth_events_username", table_name="e6auth_auth_events")
    op.drop_index("ix_e6auth_auth_events_at", table_name="e6auth_auth_events")
    op.drop_table("e6auth_auth_events")
    with op.batch_alter_table("e6auth_tokens") as batch:
        for column in (
            "previous_valid_until",
            "previous_pepper_id",
            "previous_digest",
            "rotated_at",
            "allow_from",
            "scope",
        ):
            batch.drop_column(column)
