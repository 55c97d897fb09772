"""Web page sign-outs that last: ended sessions, and a per-user session generation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from e6auth.store.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "e6auth_ended_sessions",
        sa.Column("session_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name="pk_e6auth_ended_sessions"),
    )
    op.create_index("ix_e6auth_ended_sessions_expires_at", "e6auth_ended_sessions", ["expires_at"])
    # Existing users start at generation 0, as every new user does.
    with op.batch_alter_table("e6auth_users") as batch:
        batch.add_column(
            sa.Column("session_generation", sa.Integer, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("e6auth_users") as batch:
        batch.drop_column("session_generation")
    op.drop_index("ix_e6auth_ended_sessions_expires_at", table_name="e6auth_ended_sessions")
    op.drop_table("e6auth_ended_sessions")
