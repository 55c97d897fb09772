"""Alembic environment: runs on the connection e6auth hands over (see ``e6auth.store.migrate``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from e6auth.store.schema import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        version_table="e6auth_alembic_version",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `e6auth db upgrade`, which supplies the connection")
run_migrations(connection)
