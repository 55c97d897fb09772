"""Schema migrations with Alembic, run from the installed package (no alembic.ini needed)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from e6auth.errors import SchemaOutOfDate
from e6auth.store.engine import unreachable_as_unavailable

__all__ = ["current_revision", "downgrade", "ensure_schema", "head_revision", "upgrade"]

VERSION_TABLE = "e6auth_alembic_version"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "e6auth.store:migrations")
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError("e6auth ships no migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    with unreachable_as_unavailable(), engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = _config()
    with unreachable_as_unavailable(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo migrations down to ``revision`` (``"base"``: all of them, dropping every table)."""
    config = _config()
    with unreachable_as_unavailable(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def ensure_schema(engine: Engine, *, migrate: bool) -> None:
    """Upgrade (when allowed) or check that the schema is the one this code expects."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if migrate:
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"database schema is at revision {current or 'none'}, this e6auth needs {head}:"
        " run `e6auth db upgrade`"
    )
