"""``e6auth policy``: the token and login policy in effect, and where each value comes from."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from e6auth.cli.common import EXIT_OK, group, print_json, print_table
from e6auth.verify.policy import POLICY_SETTINGS, Policy

if TYPE_CHECKING:
    from e6auth.cli.common import Commands
    from e6auth.settings import Settings


def add_commands(commands: Commands) -> None:
    policy_commands = group(commands, "policy", "the token and login policy")
    show = policy_commands.add_parser("show", help="the effective policy and where it comes from")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_show)


def _show(args: argparse.Namespace, settings: Settings) -> int:
    policy = Policy.from_settings(settings)
    values = policy.as_dict()
    sources = {name: _setting_source(settings, name) for name in POLICY_SETTINGS}
    if args.json:
        print_json(
            {name: {"value": values[name], "source": sources[name]} for name in POLICY_SETTINGS}
        )
        return EXIT_OK
    print_table(
        ["SETTING", "VALUE", "FROM"],
        [[name, _shown_value(values[name]), sources[name]] for name in POLICY_SETTINGS],
    )
    return EXIT_OK


def _shown_value(value: bool | int | None) -> str:
    if value is None:
        return "off"
    if isinstance(value, bool):
        return "allowed" if value else "refused (tokens only)"
    return str(value)


def _setting_source(settings: Settings, name: str) -> str:
    """Where a setting's value came from: flags, environment and config file all set it on the
    model; the environment is told apart by its variable (names are not case-sensitive)."""
    if name not in settings.given:
        return "default"
    variable = f"E6AUTH_{name}".upper()
    if any(key.upper() == variable for key in os.environ):
        return f"environment ({variable})"
    return "config file"
