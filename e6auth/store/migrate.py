"""Schema migrations with Alembic, run from the installed package (no alembic.ini needed).

Alembic is imported only to migrate or to read the migration scripts: opening a store whose
schema is current (every ``e6auth`` command, every gateway start) reads the version table with
one query and compares it with :data:`SCHEMA_REVISION`, without loading Alembic (0.15 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from e6auth.errors import SchemaOutOfDate
from e6auth.store.database import unreachable_as_unavailable

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "SCHEMA_REVISION",
    "current_revision",
    "downgrade",
    "ensure_schema",
    "head_revision",
    "upgrade",
]

VERSION_TABLE = "e6auth_alembic_version"
SCHEMA_REVISION = "0006"
"""The newest migration's revision: the schema this code expects. A test checks that it is
Alembic's head, so that a new migration cannot be forgotten here."""


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "e6auth.store:migrations")
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError("e6auth ships no migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with unreachable_as_unavailable(), engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    config = _config()
    with unreachable_as_unavailable(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo migrations down to ``revision`` (``"base"``: all of them, dropping every table)."""
    from alembic import command

    config = _config()
    with unreachable_as_unavailable(), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def ensure_schema(engine: Engine, *, migrate: bool) -> None:
    """Upgrade (when allowed) or check that the schema is the one this code expects."""
    if _is_current(engine):
        return
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


_STORED_REVISIONS = text("SELECT version_num FROM e6auth_alembic_version")  # VERSION_TABLE


def _is_current(engine: Engine) -> bool:
    """Whether the version table names exactly this code's revision. Any failure (no table yet,
    no database) says no: Alembic's path then decides, and reports it."""
    try:
        with engine.connect() as connection:
            stored = connection.execute(_STORED_REVISIONS).scalars().all()
    except DBAPIError:
        return False
    return stored == [SCHEMA_REVISION]
