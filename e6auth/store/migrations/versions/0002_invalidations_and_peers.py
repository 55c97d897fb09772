"""Invalidation log for cross-process cache eviction; last-used peer addresses.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from e6auth.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "e6auth_invalidations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("token_id", sa.String(12), nullable=True),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_e6auth_invalidations"),
        # Ids must never be reused after pruning, or a reader could skip new entries.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_e6auth_invalidations_created_at", "e6auth_invalidations", ["created_at"])
    with op.batch_alter_table("e6auth_tokens") as batch:
        batch.add_column(sa.Column("last_used_peers", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("e6auth_tokens") as batch:
        batch.drop_column("last_used_peers")
    op.drop_index("ix_e6auth_invalidations_created_at", table_name="e6auth_invalidations")
    op.drop_table("e6auth_invalidations")
