"""What the command groups share: exit codes, the parser class, option types, the store, output."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from e6auth.errors import E6AuthError
from e6auth.logs import LOG_FORMATS, LOG_LEVELS

if TYPE_CHECKING:
    from typing import TypeAlias

    from e6auth.settings import Settings
    from e6auth.store.token_store import TokenStore

    Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
    """Where a group adds its commands (what ``add_subparsers`` returns)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, "Settings"], int]
"""A command: its parsed arguments and the settings in, its exit code out."""


class Parser(argparse.ArgumentParser):
    """No abbreviated options: `--password` must not quietly mean `--password-stdin`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


class Refused(E6AuthError):
    """The command will not do what was asked; its message says why."""

    reason = "cli_refused"


def usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def group(commands: Commands, name: str, help_text: str) -> Commands:
    """A command group (``token``, ``user``, …): its parser prints its usage when no action is
    given; returns the subparsers its actions are added to."""
    parser = commands.add_parser(name, help=help_text)
    parser.set_defaults(handler=lambda _args, _settings: usage(parser))
    return parser.add_subparsers(metavar="ACTION", parser_class=Parser)


def add_log_flags(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        type=str.lower,
        default=default,
        help="log lines as text or JSON objects (default text)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        default=default,
        help="least severe records logged (default WARNING; -v, -vv: INFO, DEBUG)",
    )


# -- option types ------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An option's whole number, at least 1 (digits only: no sign, no spaces)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a whole number, at least 1")
    return int(text)


_DURATION = re.compile(r"(\d{1,6})([smhdw])", re.ASCII)
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def duration(text: str) -> dt.timedelta | None:
    """``90m``, ``36h``, ``7d``, ``2w`` as a timedelta; None for any other text."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    return dt.timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def span(text: str) -> dt.timedelta:
    """An option's non-zero duration."""
    found = duration(text)
    if found is None or not found:
        raise argparse.ArgumentTypeError("a span is a number and a unit: 90m, 36h, 7d, 2w")
    return found


# -- the store ---------------------------------------------------------------------------------


def open_store(settings: Settings) -> TokenStore:
    """The token store the settings name, to use as a context manager (it closes on exit)."""
    # Imported here: `e6auth --help` and `policy show` load no SQLAlchemy.
    from e6auth.store.token_store import TokenStore

    return TokenStore.from_settings(settings)


def confirm(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


# -- output ------------------------------------------------------------------------------------


def iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def human(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_json(value: object, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2), file=out or sys.stdout)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
