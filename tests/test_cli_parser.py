"""The ``e6auth`` parser that a command runs with builds only the command group the command line
chooses; what it prints (help, usage, errors) and what it parses are those of the whole parser."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterator

import pytest

from e6auth import cli


def _groups(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_lines() -> Iterator[list[str]]:
    yield []
    yield ["--help"]
    yield ["nosuch"]
    yield ["--home"]
    yield ["-v", "--log-level", "debug", "token", "list", "--json"]
    yield ["--home", "token", "user", "list"]  # "token" is the folder here, not the group
    yield ["token", "create"]  # --user is required
    yield ["token", "create", "--user", "alice", "--expires-days", "x"]
    yield ["user", "add", "alice", "--password-stdin", "--no-password"]
    yield ["serve", "--port", "0", "--log-format", "json"]
    yield ["audit", "--limit", "-1"]
    for name, group in _groups(cli._parser()).items():
        yield [name, "--help"]
        yield [name, "nosuch"]
        for action in _groups(group):
            yield [name, action, "--help"]


def _outcome(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            parsed = parser.parse_args(argv)
        except SystemExit as exited:
            return exited.code, out.getvalue(), err.getvalue()
    # Handlers are functions made per parser (a group's usage); compare what they are.
    shown = {
        key: getattr(value, "__qualname__", value) for key, value in sorted(vars(parsed).items())
    }
    return repr(shown), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", list(_command_lines()), ids=" ".join)
def test_the_parser_a_command_runs_with_prints_and_parses_as_the_whole_one(
    argv: list[str],
) -> None:
    assert _outcome(cli._parser(only_the_chosen_group=True), argv) == _outcome(cli._parser(), argv)


def test_a_command_builds_its_own_group_only() -> None:
    parser = cli._parser(only_the_chosen_group=True)
    parser.parse_args(["token", "list"])

    groups = _groups(parser)
    assert set(_groups(groups["token"])) == set(_groups(_groups(cli._parser())["token"]))
    assert _groups(groups["user"]) == {}
    assert [action.dest for action in groups["serve"]._actions] == ["help"]


def test_the_whole_parser_is_built_for_the_tools_that_walk_it() -> None:
    groups = _groups(cli._parser())
    assert {"db", "user", "token", "audit", "policy", "pepper", "serve"} == set(groups)
    assert all(len(group._actions) > 1 for group in groups.values())
