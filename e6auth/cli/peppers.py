"""``e6auth pepper``: the keys token digests are made with."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from e6auth.cli.common import EXIT_OK, Refused, group, open_store, print_json, print_table
from e6auth.credentials.peppers import add_pepper_file, pepper_file

if TYPE_CHECKING:
    from e6auth.cli.common import Commands
    from e6auth.settings import Settings


def add_commands(commands: Commands) -> None:
    pepper_commands = group(commands, "pepper", "the keys token digests are made with")
    pepper_commands.add_parser(
        "add", help="generate a new pepper for new tokens and rotations"
    ).set_defaults(handler=_add)
    peppers = pepper_commands.add_parser("list", help="pepper ids and the tokens using each")
    peppers.add_argument("--json", action="store_true")
    peppers.set_defaults(handler=_list)


def _add(_args: argparse.Namespace, settings: Settings) -> int:
    if settings.pepper is not None or settings.peppers is not None:
        raise Refused(
            "the peppers are configured in the settings (pepper, peppers): add the new one there "
            "as <id>:<key> with a higher id"
        )
    pepper_id = add_pepper_file(settings.home)
    print(
        f"added pepper {pepper_id} ({pepper_file(settings.home, pepper_id)}, mode 0600): new "
        "tokens and rotations use it once the gateways restart; back it up"
    )
    return EXIT_OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        usage = store.pepper_usage()
        known = store.pepper_ids
    rows: list[dict[str, Any]] = [
        {"id": pepper_id, "tokens": count, "state": _state(pepper_id, known)}
        for pepper_id, count in usage.items()
    ]
    if args.json:
        print_json(rows)
        return EXIT_OK
    print_table(
        ["ID", "TOKENS", "STATE"],
        [[str(row["id"]), str(row["tokens"]), row["state"]] for row in rows],
    )
    return EXIT_OK


def _state(pepper_id: int, known: tuple[int, ...]) -> str:
    if pepper_id == known[-1]:
        return "current"
    return "known" if pepper_id in known else "MISSING: its tokens cannot verify"
