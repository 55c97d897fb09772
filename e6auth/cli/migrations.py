"""``e6auth db``: the token store's schema, its revision and its upgrade."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from e6auth.cli.common import EXIT_FAILED, EXIT_OK, group

if TYPE_CHECKING:
    from e6auth.cli.common import Commands
    from e6auth.settings import Settings


def add_commands(commands: Commands) -> None:
    db_commands = group(commands, "db", "schema migrations")
    db_commands.add_parser("upgrade", help="upgrade the schema to this version").set_defaults(
        handler=_upgrade
    )
    db_commands.add_parser("current", help="show the schema revision").set_defaults(
        handler=_current
    )


def _upgrade(_args: argparse.Namespace, settings: Settings) -> int:
    from e6auth.store.database import engine_from_settings
    from e6auth.store.migrate import current_revision, head_revision, upgrade

    engine = engine_from_settings(settings)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if after != head_revision():
        print(f"e6auth: schema at {after or 'empty'}, expected {head_revision()}", file=sys.stderr)
        return EXIT_FAILED
    if before == after:
        print(f"schema already at revision {after}")
    else:
        print(f"schema upgraded from {before or 'empty'} to {after}")
    return EXIT_OK


def _current(_args: argparse.Namespace, settings: Settings) -> int:
    from e6auth.store.database import engine_from_settings
    from e6auth.store.migrate import current_revision, head_revision

    engine = engine_from_settings(settings)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else f"needs `e6auth db upgrade` to {head}"
    print(f"{current or 'empty'} ({state})")
    return EXIT_OK
