"""Administrators: users who see and delete every user's tokens on the web page.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The server default fills the rows of existing users: nobody becomes an administrator by
    # upgrading.
    with op.batch_alter_table("e6auth_users") as batch:
        batch.add_column(sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("e6auth_users") as batch:
        batch.drop_column("admin")
