"""The ``e6auth`` command: a thin layer over :class:`~e6auth.store.TokenStore`.

A module per command group (``users``, ``tokens``, ``audit``, ``policy``, ``peppers``,
``migrations``, ``serve``), each adding its commands to the parser built here; what they share
is in ``common``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from e6auth.cli import audit, migrations, peppers, policy, serve, tokens, users
from e6auth.cli.common import EXIT_FAILED, EXIT_USAGE, Handler, Parser, add_log_flags, usage
from e6auth.errors import E6AuthError, SettingsError
from e6auth.logs import configure_logging

# Each command imports what it runs, in its handler: `e6auth --help` loads neither the settings
# nor SQLAlchemy, `token list` no Alembic, and only `serve` loads gRPC and the web page.
if TYPE_CHECKING:
    from e6auth.settings import Settings

__all__ = ["main"]

SETTING_FLAGS = (
    "home",
    "database_url",
    "host",
    "port",
    "query_url",
    "query_role",
    "catalog",
    "statement_timeout_seconds",
    "tls_cert",
    "tls_key",
    "metrics_port",
    "http_port",
    "http_host",
    "log_format",
    "log_level",
)
"""The flags that set a setting of the same name (and take precedence over every other source)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "long_running", False):
        return _run(args)
    with _collector_paused():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    _configure_logging(args.verbose)
    from e6auth.settings import Settings

    try:
        settings = Settings(**_setting_overrides(args))
    except SettingsError as exc:
        # Its text names each refused setting and never quotes the value (it may be a secret).
        print(f"e6auth: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose, settings)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except E6AuthError as exc:
        print(f"e6auth: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a short command runs. Loading its libraries
    (SQLAlchemy) makes a few hundred thousand objects that live as long as the process,
    and each collection walks them again, for nothing: about a tenth of `token list`. What the
    command itself leaves is freed by reference counting, or at exit."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="e6auth", description="Users, tokens and the token store of e6auth.")
    parser.add_argument("--home", help="state folder (default: $E6AUTH_HOME or ~/.e6auth)")
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the token store (default: SQLite in the state folder)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    add_log_flags(parser, default=None)
    parser.set_defaults(handler=lambda _args, _settings: usage(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for command_group in (migrations, users, tokens, audit, policy, peppers, serve):
        command_group.add_commands(commands)
    return parser


def _configure_logging(verbosity: int, settings: Settings | None = None) -> None:
    """Before the settings are read: -v alone; then the settings' level and format, made more
    verbose (never less) by -v."""
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if settings is None:
        configure_logging(level=level)
        return
    configured = logging.getLevelNamesMapping()[settings.log_level]
    level = configured if verbosity == 0 else min(level, configured)
    configure_logging(level=level, log_format=settings.log_format)


def _setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {name: getattr(args, name, None) for name in SETTING_FLAGS}
    return {name: value for name, value in flags.items() if value is not None}
