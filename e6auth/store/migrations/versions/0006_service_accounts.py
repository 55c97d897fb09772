"""Service accounts: users that are not people, and the administrators who own them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing users are people: the server default says so for every row.
    with op.batch_alter_table("e6auth_users") as batch:
        batch.add_column(
            sa.Column("service", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.create_table(
        "e6auth_service_owners",
        sa.Column(
            "service_user_id",
            sa.Integer,
            sa.ForeignKey(
                "e6auth_users.id",
                ondelete="CASCADE",
                name="fk_e6auth_service_owners_service_user_id_e6auth_users",
            ),
            nullable=False,
        ),
        sa.Column(
            "owner_user_id",
            sa.Integer,
            sa.ForeignKey(
                "e6auth_users.id",
                ondelete="CASCADE",
                name="fk_e6auth_service_owners_owner_user_id_e6auth_users",
            ),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "service_user_id", "owner_user_id", name="pk_e6auth_service_owners"
        ),
    )
    op.create_index(
        "ix_e6auth_service_owners_owner_user_id", "e6auth_service_owners", ["owner_user_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_e6auth_service_owners_owner_user_id", "e6auth_service_owners")
    op.drop_table("e6auth_service_owners")
    with op.batch_alter_table("e6auth_users") as batch:
        batch.drop_column("service")
