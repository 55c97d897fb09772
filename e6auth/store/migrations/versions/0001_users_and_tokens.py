"""Users and personal access tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from e6auth.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "e6auth_users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=True),
        sa.Column("password_generation", sa.Integer, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_e6auth_users"),
        sa.UniqueConstraint("name", name="uq_e6auth_users_name"),
    )
    op.create_table(
        "e6auth_tokens",
        sa.Column("id", sa.String(12), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("digest", sa.LargeBinary(32), nullable=False),
        sa.Column("pepper_id", sa.SmallInteger, nullable=False),
        sa.Column("comment", sa.String(256), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("last_used_at", UTCDateTime, nullable=True),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_e6auth_tokens"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["e6auth_users.id"],
            name="fk_e6auth_tokens_user_id_e6auth_users",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_e6auth_tokens_user_id", "e6auth_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_e6auth_tokens_user_id", table_name="e6auth_tokens")
    op.drop_table("e6auth_tokens")
    op.drop_table("e6auth_users")
