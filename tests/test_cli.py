"""The ``e6auth`` command, driven through ``e6auth.cli.main`` and once as the installed script."""

from __future__ import annotations

import datetime as dt
import gc
import getpass
import io
import json
import logging
import os
import re
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, update

from e6auth import (
    Authenticator,
    InvalidPassword,
    InvalidTokenSecret,
    Settings,
    TokenRevoked,
    UserDisabled,
)
from e6auth.cli import main, policy, serve
from e6auth.credentials.tokens import generate_token, looks_like_token, parse_token
from e6auth.store import TokenStore
from e6auth.store.migrate import head_revision
from e6auth.store.schema import tokens, users
from e6auth.testing import FAST_ARGON2, count_queries

PASSWORD = "correct horse battery staple"
TOKEN_PATTERN = re.compile(r"e6pat_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}")
TIMESTAMP = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


class Cli:
    """Runs ``main(argv)`` with a given stdin and returns what it printed."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self._capsys = capsys
        self._monkeypatch = monkeypatch

    def __call__(self, *argv: str, stdin: str = "") -> Outcome:
        self._capsys.readouterr()
        # Always a fresh stdin: a command that reads unexpectedly sees EOF instead of hanging.
        self._monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        captured = self._capsys.readouterr()
        return Outcome(code, captured.out, captured.err)


@pytest.fixture(autouse=True)
def _cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every command builds its own Passwords from the settings; production argon2 costs would
    # make this module slow without testing anything the settings path does not already test.
    monkeypatch.setenv("E6AUTH_ARGON2_MEMORY_KIB", str(FAST_ARGON2.memory_kib))
    monkeypatch.setenv("E6AUTH_ARGON2_TIME_COST", str(FAST_ARGON2.time_cost))
    monkeypatch.setenv("E6AUTH_ARGON2_PARALLELISM", str(FAST_ARGON2.parallelism))


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    # main() points the root logger at the sys.stderr of the moment (capsys's, closed after the
    # test); later tests must not log into a closed stream.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(capsys, monkeypatch)


@pytest.fixture
def home() -> Path:
    return Path(os.environ["E6AUTH_HOME"])


def add_user(cli: Cli, name: str = "alice", password: str = PASSWORD) -> None:
    result = cli("user", "add", name, "--password-stdin", stdin=password + "\n")
    assert result.code == 0, result.err


def create_token(cli: Cli, *options: str, user: str = "alice") -> dict[str, Any]:
    result = cli("token", "create", "--user", user, "--json", *options)
    assert result.code == 0, result.err
    created: dict[str, Any] = json.loads(result.out)
    return created


def list_tokens(cli: Cli, *options: str) -> list[dict[str, Any]]:
    result = cli("token", "list", "--json", *options)
    assert result.code == 0, result.err
    listed: list[dict[str, Any]] = json.loads(result.out)
    return listed


def update_token(home: Path, token_id: str, **values: object) -> None:
    """Set columns no command sets (last use, a past expiry) straight in the embedded database."""
    engine = create_engine(f"sqlite:///{home / 'e6auth.db'}")
    try:
        with engine.begin() as connection:
            connection.execute(update(tokens).where(tokens.c.id == token_id).values(**values))
    finally:
        engine.dispose()


def last_line(text: str) -> str:
    # The first command to open a store may announce a new pepper before its own message.
    return text.splitlines()[-1] if text else ""


def parse_iso(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text)


# -- db ----------------------------------------------------------------------------------------


def test_db_current_on_a_new_home_says_empty_and_asks_for_an_upgrade(cli: Cli) -> None:
    result = cli("db", "current")
    assert result.code == 0
    assert result.out.strip() == f"empty (needs `e6auth db upgrade` to {head_revision()})"


def test_db_upgrade_then_current_reports_head(cli: Cli) -> None:
    upgraded = cli("db", "upgrade")
    assert upgraded.code == 0, upgraded.err
    assert upgraded.out.strip() == f"schema upgraded from empty to {head_revision()}"

    current = cli("db", "current")
    assert current.code == 0
    assert current.out.strip() == f"{head_revision()} (up to date)"

    again = cli("db", "upgrade")
    assert again.code == 0
    assert again.out.strip() == f"schema already at revision {head_revision()}"


@pytest.mark.parametrize("action", ["current", "upgrade"])
def test_db_commands_on_an_unreachable_database_fail_cleanly(cli: Cli, action: str) -> None:
    # Like the user and token commands: a one-line message and exit 1, not a driver traceback.
    url = "postgresql+psycopg://admin:db-password-XYZ@127.0.0.1:1/nowhere"
    result = cli("--database-url", url, "db", action)
    assert result.code == 1
    assert "unreachable" in result.err
    assert "db-password-XYZ" not in result.err + result.out


def test_an_unreachable_database_fails_cleanly_without_showing_its_password(cli: Cli) -> None:
    url = "postgresql+psycopg://admin:db-password-XYZ@127.0.0.1:1/nowhere"
    result = cli("--database-url", url, "user", "list")
    assert result.code == 1
    assert result.err.startswith("e6auth: token store unreachable")
    assert "db-password-XYZ" not in result.err + result.out


# -- users -------------------------------------------------------------------------------------


def test_user_add_reads_the_password_from_stdin(cli: Cli, home: Path) -> None:
    result = cli("user", "add", "Alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.code == 0, result.err
    assert result.out.strip() == "added user alice (password and tokens)"
    assert PASSWORD not in result.out + result.err

    with Authenticator.from_settings() as auth:
        principal = auth.verify("ALICE", PASSWORD)
    assert (principal.username, principal.method) == ("alice", "password")


def test_stdin_password_loses_only_its_line_ending(cli: Cli) -> None:
    # Spaces belong to the password; only the newline (and a CR before it) are stripped.
    cli("user", "add", "alice", "--password-stdin", stdin="  spaced out  \r\n")
    with Authenticator.from_settings() as auth:
        assert auth.verify("alice", "  spaced out  ").username == "alice"
        with pytest.raises(InvalidPassword):
            auth.verify("alice", "spaced out")


def test_user_add_with_an_empty_password_on_stdin_is_refused(cli: Cli) -> None:
    result = cli("user", "add", "alice", "--password-stdin", stdin="")
    assert result.code == 1
    assert "must not be empty" in result.err
    assert json.loads(cli("user", "list", "--json").out) == []


def test_user_add_prompts_twice_and_accepts_matching_entries(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    result = cli("user", "add", "alice")
    assert result.code == 0, result.err
    assert len(prompts) == 2
    assert "alice" in prompts[0]
    with Authenticator.from_settings() as auth:
        assert auth.verify("alice", PASSWORD).method == "password"


def test_user_add_refuses_two_different_prompt_entries(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter([PASSWORD, PASSWORD + "!"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="", stream=None: next(answers))
    result = cli("user", "add", "alice")
    assert result.code == 1
    assert "the two passwords differ" in result.err
    assert PASSWORD not in result.out + result.err
    assert json.loads(cli("user", "list", "--json").out) == []


def test_user_add_without_password_makes_a_tokens_only_user(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_prompt(*_args: object, **_kwargs: object) -> str:
        raise AssertionError("--no-password must not ask for a password")

    monkeypatch.setattr(getpass, "getpass", no_prompt)
    result = cli("user", "add", "robot", "--no-password")
    assert result.code == 0, result.err
    assert result.out.strip() == "added user robot (tokens only)"
    with Authenticator.from_settings() as auth, pytest.raises(InvalidPassword):
        auth.verify("robot", "anything")


@pytest.mark.parametrize(
    "argv",
    [
        ["user", "add", "alice", "--password", "hunter2hunter2"],
        ["user", "add", "alice", "--password=hunter2hunter2"],
        ["user", "passwd", "alice", "--password", "hunter2hunter2"],
    ],
)
def test_a_password_is_never_taken_from_the_command_line(cli: Cli, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli(*argv)
    assert exited.value.code == 2
    assert json.loads(cli("user", "list", "--json").out) == []


@pytest.mark.parametrize(
    "name",
    ["bad name", "../etc/passwd", "alice..smith", "zoë", ".alice", "alice@", "a" * 255],
    ids=["space", "path", "double-dot", "non-ascii", "leading-dot", "empty-domain", "too-long"],
)
def test_junk_user_names_are_refused_with_a_clear_message(cli: Cli, name: str) -> None:
    result = cli("user", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
    assert result.code == 1
    assert last_line(result.err).startswith("e6auth: user name ")
    assert "Traceback" not in result.err
    assert json.loads(cli("user", "list", "--json").out) == []


def test_adding_an_existing_user_fails(cli: Cli) -> None:
    add_user(cli)
    result = cli("user", "add", "ALICE", "--password-stdin", stdin="other password\n")
    assert result.code == 1
    assert result.err.strip() == "e6auth: user alice already exists"


def test_user_passwd_replaces_the_password(cli: Cli) -> None:
    add_user(cli)
    result = cli("user", "passwd", "Alice", "--password-stdin", stdin="a brand new one\n")
    assert result.code == 0, result.err
    assert result.out.strip() == "changed the password of alice"

    with Authenticator.from_settings() as auth:
        with pytest.raises(InvalidPassword):
            auth.verify("alice", PASSWORD)
        principal = auth.verify("alice", "a brand new one")
    # The generation moves on, which is what ends sessions made with the old password.
    assert principal.password_generation == 1


def test_user_passwd_of_an_unknown_user_fails(cli: Cli) -> None:
    cli("db", "upgrade")
    result = cli("user", "passwd", "bob", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.code == 1
    assert last_line(result.err) == "e6auth: no user bob"


def test_disable_and_enable_decide_whether_the_authenticator_accepts(cli: Cli) -> None:
    add_user(cli)
    token = create_token(cli)["token"]

    disabled = cli("user", "disable", "alice")
    assert disabled.code == 0, disabled.err
    assert disabled.out.strip() == "disabled user alice"
    with Authenticator.from_settings() as auth:
        with pytest.raises(UserDisabled):
            auth.verify("alice", PASSWORD)
        with pytest.raises(UserDisabled):
            auth.verify("alice", token)

    enabled = cli("user", "enable", "alice")
    assert enabled.code == 0, enabled.err
    assert enabled.out.strip() == "enabled user alice"
    with Authenticator.from_settings() as auth:
        assert auth.verify("alice", PASSWORD).method == "password"
        assert auth.verify("alice", token).method == "token"


@pytest.mark.parametrize("action", ["disable", "enable"])
def test_toggling_an_unknown_user_fails(cli: Cli, action: str) -> None:
    cli("db", "upgrade")
    result = cli("user", action, "nobody")
    assert result.code == 1
    assert last_line(result.err) == "e6auth: no user nobody"


def test_user_list_shows_a_table(cli: Cli) -> None:
    add_user(cli, "bob")
    add_user(cli, "alice")
    cli("user", "add", "robot", "--no-password")
    cli("user", "disable", "bob")

    result = cli("user", "list")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "PASSWORD", "ADMIN", "CREATED", "(UTC)"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert [row[:4] for row in rows] == [
        ["alice", "enabled", "yes", "no"],
        ["bob", "disabled", "yes", "no"],
        ["robot", "enabled", "no", "no"],
    ]
    assert all(re.fullmatch(TIMESTAMP, row[4]) for row in rows)


def test_user_list_json(cli: Cli) -> None:
    add_user(cli)
    cli("user", "add", "robot", "--no-password")
    cli("user", "disable", "robot")

    result = cli("user", "list", "--json")
    assert result.code == 0, result.err
    listed = json.loads(result.out)
    assert [{k: v for k, v in user.items() if k != "created_at"} for user in listed] == [
        {"name": "alice", "disabled": False, "password": True, "admin": False},
        {"name": "robot", "disabled": True, "password": False, "admin": False},
    ]
    created = parse_iso(listed[0]["created_at"])
    assert abs(dt.datetime.now(dt.UTC) - created) < dt.timedelta(minutes=5)


def test_user_list_on_an_empty_store_prints_only_the_header(cli: Cli) -> None:
    result = cli("user", "list")
    assert result.code == 0
    assert result.out.splitlines() == ["NAME  STATUS  PASSWORD  ADMIN  CREATED (UTC)"]


def test_an_administrator_is_made_at_creation_or_later_and_shown_in_the_list(cli: Cli) -> None:
    result = cli("user", "add", "root@example.com", "--admin", "--password-stdin", stdin="pw\n")
    assert result.code == 0, result.err
    assert result.out == "added user root@example.com (password and tokens, administrator)\n"
    add_user(cli, "alice")

    granted = cli("user", "admin", "Alice", "--on")
    assert (granted.code, granted.out) == (0, "alice is now an administrator\n")
    revoked = cli("user", "admin", "root@example.com", "--off")
    assert (revoked.code, revoked.out) == (0, "root@example.com is no longer an administrator\n")

    listed = json.loads(cli("user", "list", "--json").out)
    assert {user["name"]: user["admin"] for user in listed} == {
        "alice": True,
        "root@example.com": False,
    }


def test_user_admin_needs_on_or_off_and_an_existing_user(cli: Cli) -> None:
    cli("db", "upgrade")
    with pytest.raises(SystemExit) as usage:
        cli("user", "admin", "alice")
    assert usage.value.code == 2
    missing = cli("user", "admin", "nobody", "--on")
    assert missing.code == 1
    assert last_line(missing.err) == "e6auth: no user nobody"


# -- tokens ------------------------------------------------------------------------------------


def test_token_create_prints_the_token_once_with_a_warning(cli: Cli) -> None:
    add_user(cli)
    result = cli(
        "token", "create", "--user", "alice", "--comment", "laptop", "--expires-days", "30"
    )
    assert result.code == 0, result.err
    found = TOKEN_PATTERN.findall(result.out)
    assert len(found) == 1
    token = found[0]
    assert looks_like_token(token)
    assert result.out.count(token) == 1
    assert token not in result.err
    assert "will not be shown again" in result.out
    token_id = parse_token(token).id
    assert f"Created token {token_id} for alice (expires " in result.out

    with Authenticator.from_settings() as auth:
        principal = auth.verify("alice", token)
    assert (principal.method, principal.token_id) == ("token", token_id)


def test_token_create_json_gives_id_token_and_expiry(cli: Cli) -> None:
    add_user(cli)
    created = create_token(cli, "--expires-days", "7")
    assert set(created) == {"id", "token", "expires_at", "allow_from", "scope"}
    assert parse_token(created["token"]).id == created["id"]

    with Authenticator.from_settings() as auth:
        principal = auth.verify_token(created["token"])
    assert principal.username == "alice"
    assert principal.token_id == created["id"]
    assert principal.expires_at == parse_iso(created["expires_at"])
    listed = list_tokens(cli)[0]
    assert parse_iso(listed["expires_at"]) - parse_iso(listed["created_at"]) == dt.timedelta(days=7)


def test_token_create_without_expiry_never_expires(cli: Cli) -> None:
    add_user(cli)
    assert create_token(cli)["expires_at"] is None
    text = cli("token", "create", "--user", "alice")
    assert "never expires" in text.out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--user", "bob"], "e6auth: no user bob"),
        (["--user", "alice", "--expires-days", "0"], "e6auth: expiry must be from 1 to"),
        (["--user", "alice", "--comment", "x" * 257], "e6auth: comment is longer than 256"),
        (["--user", "alice", "--comment", "two\nlines"], "e6auth: comment must be printable"),
    ],
)
def test_token_create_refusals(cli: Cli, options: list[str], message: str) -> None:
    add_user(cli)
    result = cli("token", "create", *options)
    assert result.code == 1
    assert result.err.startswith(message)
    assert not TOKEN_PATTERN.search(result.out + result.err)
    assert list_tokens(cli) == []


def test_token_list_shows_everything_but_the_secret(cli: Cli, home: Path) -> None:
    add_user(cli)
    add_user(cli, "bob")
    laptop = create_token(cli, "--comment", "laptop", "--expires-days", "30")
    ci = create_token(cli, user="bob")
    used_at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    update_token(home, ci["id"], last_used_at=used_at)

    result = cli("token", "list")
    assert result.code == 0, result.err
    for created in (laptop, ci):
        assert created["token"] not in result.out + result.err
        assert parse_token(created["token"]).secret not in result.out + result.err
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "ID", "USER", "COMMENT", "CREATED", "(UTC)", "EXPIRES", "LAST", "USED", "STATUS", "LIMITS",
    ]  # fmt: skip
    rows = {row[0]: row for row in (re.split(r"\s{2,}", line) for line in lines[1:])}
    assert set(rows) == {laptop["id"], ci["id"]}

    row = rows[laptop["id"]]
    assert row[1:3] == ["alice", "laptop"]
    assert re.fullmatch(TIMESTAMP, row[3])
    assert row[4] == parse_iso(laptop["expires_at"]).strftime("%Y-%m-%d %H:%M:%S")
    assert row[5:] == ["never", "active"]

    # No comment leaves an empty column, so the columns after it are matched by position.
    ci_line = next(line for line in lines if line.startswith(ci["id"]))
    assert re.fullmatch(
        rf"{ci['id']}\s+bob\s+{TIMESTAMP}\s+never\s+2030-01-02 03:04:05\s+active", ci_line
    )


def test_token_list_json_shows_everything_but_the_secret(cli: Cli, home: Path) -> None:
    add_user(cli)
    laptop = create_token(cli, "--comment", "laptop", "--expires-days", "30")
    old = create_token(cli)
    update_token(
        home,
        old["id"],
        expires_at=dt.datetime(2001, 1, 1, tzinfo=dt.UTC),
        last_used_at=dt.datetime(2000, 12, 31, 23, 0, tzinfo=dt.UTC),
    )

    result = cli("token", "list", "--json")
    assert result.code == 0, result.err
    for created in (laptop, old):
        assert parse_token(created["token"]).secret not in result.out + result.err
    listed = {entry["id"]: entry for entry in json.loads(result.out)}
    assert set(listed) == {laptop["id"], old["id"]}
    for entry in listed.values():
        assert set(entry) >= {
            "id", "user", "comment", "created_at", "expires_at", "last_used_at",
            "revoked_at", "status",
        }  # fmt: skip
        assert not set(entry) & {"token", "secret", "digest"}
        assert entry["user"] == "alice"
    assert listed[laptop["id"]]["comment"] == "laptop"
    assert listed[laptop["id"]]["expires_at"] == laptop["expires_at"]
    assert listed[laptop["id"]]["last_used_at"] is None
    assert listed[laptop["id"]]["status"] == "active"
    assert listed[old["id"]]["comment"] is None
    assert listed[old["id"]]["expires_at"] == "2001-01-01T00:00:00Z"
    assert listed[old["id"]]["last_used_at"] == "2000-12-31T23:00:00Z"
    assert listed[old["id"]]["status"] == "expired"


def test_token_create_with_restrictions_and_list_them(cli: Cli) -> None:
    add_user(cli)
    limited = create_token(cli, "--allow-from", "10.0.0.0/8", "--allow-from", "2001:db8::/32")
    reader = create_token(cli, "--read-only", "--allow-from", "192.0.2.7")
    plain = create_token(cli)
    assert (limited["allow_from"], limited["scope"]) == (["10.0.0.0/8", "2001:db8::/32"], "all")
    assert (reader["allow_from"], reader["scope"]) == (["192.0.2.7/32"], "read_only")
    assert (plain["allow_from"], plain["scope"]) == (None, "all")

    listed = {entry["id"]: entry for entry in list_tokens(cli)}
    assert listed[limited["id"]]["allow_from"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert listed[reader["id"]]["scope"] == "read_only"
    assert listed[plain["id"]]["allow_from"] is None

    lines = cli("token", "list").out.splitlines()
    row = {line.split()[0]: line for line in lines[1:]}
    assert row[limited["id"]].endswith("active  from 10.0.0.0/8 2001:db8::/32")
    assert row[reader["id"]].endswith("active  read-only, from 192.0.2.7/32")
    assert row[plain["id"]].endswith("active")

    text = cli("token", "create", "--user", "alice", "--read-only", "--allow-from", "10.0.0.0/8")
    assert "never expires; read-only; from 10.0.0.0/8)." in text.out

    with Authenticator.from_settings() as auth:
        principal = auth.verify_token(reader["token"], peer="192.0.2.7")
        assert principal.read_only
        assert principal.allow_from is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--allow-from", "10.0.0.1/8"], "e6auth: '10.0.0.1/8' has host bits set: did you mean"),
        (["--allow-from", "10.0.0.0/8", "--allow-from", "nowhere"], "e6auth: 'nowhere' is not"),
        ([arg for i in range(33) for arg in ("--allow-from", f"10.{i}.0.0/16")], "e6auth: at most"),
    ],
)
def test_token_create_refuses_bad_ranges(cli: Cli, options: list[str], message: str) -> None:
    add_user(cli)
    result = cli("token", "create", "--user", "alice", *options)
    assert result.code == 1
    assert result.err.startswith(message)
    assert not TOKEN_PATTERN.search(result.out + result.err)
    assert list_tokens(cli) == []


def test_token_list_for_one_user(cli: Cli) -> None:
    add_user(cli)
    add_user(cli, "bob")
    mine = create_token(cli)
    create_token(cli, user="bob")
    assert [entry["id"] for entry in list_tokens(cli, "--user", "ALICE")] == [mine["id"]]

    unknown = cli("token", "list", "--user", "carol")
    assert unknown.code == 1
    assert unknown.err.strip() == "e6auth: no user carol"


def test_token_list_shows_when_and_where_a_token_was_last_used(cli: Cli) -> None:
    add_user(cli)
    created = create_token(cli)
    with Authenticator.from_settings() as auth:
        auth.verify("alice", created["token"], peer="10.0.0.7")
    # close() wrote the use that the authenticator had only collected in memory.

    [entry] = list_tokens(cli)
    used = parse_iso(entry["last_used_at"])
    assert abs(dt.datetime.now(dt.UTC) - used) < dt.timedelta(minutes=5)
    assert entry["last_used_peers"] == ["10.0.0.7"]
    table = cli("token", "list").out
    row = next(line for line in table.splitlines() if line.startswith(created["id"]))
    assert re.fullmatch(
        rf"{created['id']}\s+alice\s+{TIMESTAMP}\s+never\s+{TIMESTAMP}\s+active", row
    )
    assert "10.0.0.7" not in table


def test_cli_changes_reach_an_authenticator_that_is_already_running(cli: Cli) -> None:
    add_user(cli)
    deleted, kept = create_token(cli), create_token(cli)
    with Authenticator(TokenStore.from_settings()) as auth:
        for created in (deleted, kept):
            auth.verify_token(created["token"])
        # Served from memory now, so what follows proves the invalidation log, not a re-read.
        with count_queries(auth.store.engine) as counter:
            auth.verify_token(deleted["token"])
        assert counter.count == 0

        assert cli("token", "delete", "--yes", deleted["id"]).code == 0
        auth.poll_invalidations()
        with pytest.raises(TokenRevoked):
            auth.verify_token(deleted["token"])

        assert cli("user", "disable", "alice").code == 0
        auth.poll_invalidations()
        with pytest.raises(UserDisabled):
            auth.verify_token(kept["token"])


def test_token_delete_reports_unknown_ids_and_deletes_the_others(cli: Cli) -> None:
    add_user(cli)
    first, second, kept = create_token(cli), create_token(cli), create_token(cli)

    result = cli("token", "delete", first["id"], second["id"], "unknown", "--yes")
    assert result.code == 1
    assert result.out.splitlines() == [f"deleted {first['id']}", f"deleted {second['id']}"]
    assert result.err.strip() == "e6auth: no token unknown"

    statuses = {entry["id"]: entry["status"] for entry in list_tokens(cli)}
    assert statuses == {first["id"]: "revoked", second["id"]: "revoked", kept["id"]: "active"}
    with Authenticator.from_settings() as auth:
        with pytest.raises(TokenRevoked):
            auth.verify_token(first["token"])
        assert auth.verify_token(kept["token"]).token_id == kept["id"]


def test_token_delete_of_found_ids_exits_zero_and_says_so_again(cli: Cli) -> None:
    add_user(cli)
    token = create_token(cli)

    result = cli("token", "delete", "-y", token["id"])
    assert result.code == 0, result.err
    assert result.out.strip() == f"deleted {token['id']}"

    again = cli("token", "delete", "-y", token["id"])
    assert again.code == 0
    assert again.out.strip() == f"{token['id']} was already deleted"


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "yes please\n"])
def test_token_delete_without_yes_deletes_nothing_unless_confirmed(cli: Cli, answer: str) -> None:
    add_user(cli)
    token = create_token(cli)

    result = cli("token", "delete", token["id"], stdin=answer)
    assert result.code == 1
    assert f"Delete 1 token(s) ({token['id']})? [y/N]" in result.err
    assert "nothing deleted" in result.err
    assert list_tokens(cli)[0]["status"] == "active"
    with Authenticator.from_settings() as auth:
        assert auth.verify_token(token["token"]).token_id == token["id"]


@pytest.mark.parametrize("answer", ["y\n", "Y\n", "yes\n"])
def test_token_delete_answered_yes_deletes(cli: Cli, answer: str) -> None:
    add_user(cli)
    token = create_token(cli)

    result = cli("token", "delete", token["id"], stdin=answer)
    assert result.code == 0, result.err
    assert result.out.strip() == f"deleted {token['id']}"
    assert list_tokens(cli)[0]["status"] == "revoked"


# -- state folder, pepper, settings ------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_files_are_private_and_the_pepper_is_announced_once(cli: Cli, home: Path) -> None:
    first = cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert first.code == 0, first.err
    assert _mode(home / "e6auth.db") == 0o600
    assert _mode(home / "pepper") == 0o600
    assert first.err.count("generated a new pepper") == 1
    assert str(home / "pepper") in first.err
    pepper = (home / "pepper").read_bytes()

    later = [
        cli("token", "create", "--user", "alice"),
        cli("user", "list"),
        cli("token", "list"),
    ]
    assert all(result.code == 0 for result in later)
    assert all("pepper" not in result.err for result in later)
    assert (home / "pepper").read_bytes() == pepper


def test_home_flag_creates_a_private_state_folder(cli: Cli, home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "nested" / "state"
    add = cli("--home", str(elsewhere), "user", "add", "alice", "--password-stdin", stdin="pw\n")
    assert add.code == 0, add.err
    assert _mode(elsewhere) == 0o700
    assert _mode(elsewhere / "e6auth.db") == 0o600
    assert _mode(elsewhere / "pepper") == 0o600
    assert not (home / "e6auth.db").exists()
    assert json.loads(cli("user", "list", "--json").out) == []
    assert len(json.loads(cli("--home", str(elsewhere), "user", "list", "--json").out)) == 1


def test_pepper_from_the_environment_is_used_and_no_file_is_made(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E6AUTH_PEPPER", "p" * 40)
    add_user(cli)
    created = cli("token", "create", "--user", "alice", "--json")
    assert created.code == 0, created.err
    assert "pepper" not in created.err
    assert not (home / "pepper").exists()
    token = json.loads(created.out)["token"]
    with Authenticator.from_settings() as auth:
        assert auth.verify_token(token).username == "alice"

    # Proof the digest was keyed by that pepper: another one no longer matches.
    monkeypatch.setenv("E6AUTH_PEPPER", "q" * 40)
    with Authenticator.from_settings() as auth, pytest.raises(InvalidTokenSecret):
        auth.verify_token(token)


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("E6AUTH_PEPPER", "short-pepper-SECRET", "pepper"),
        ("E6AUTH_ARGON2_TIME_COST", "0", "argon2_time_cost"),
        ("E6AUTH_AUTO_MIGRATE", "perhaps-SECRET", "auto_migrate"),
    ],
)
def test_a_bad_setting_exits_2_without_echoing_its_value(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, home: Path, variable: str, value: str, field: str
) -> None:
    monkeypatch.setenv(variable, value)
    result = cli("user", "list")
    assert result.code == 2
    assert result.err.startswith("e6auth: invalid settings:")
    assert field in result.err
    assert value not in result.err + result.out
    assert not (home / "e6auth.db").exists()


def test_a_typo_in_the_config_file_exits_2(cli: Cli, home: Path) -> None:
    (home / "config.toml").write_text('databse_url = "sqlite:///elsewhere.db"\n')
    result = cli("user", "list")
    assert result.code == 2
    assert "databse_url" in result.err


def _spy(seen: list[bool]) -> Any:
    def handler(_args: object, _settings: object) -> int:
        seen.append(gc.isenabled())
        return 0

    return handler


def test_a_short_command_runs_with_the_garbage_collector_paused_and_turns_it_back_on(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(policy, "_show", _spy(seen))
    assert cli("policy", "show").code == 0
    assert seen == [False]
    assert gc.isenabled()


def test_serve_runs_with_the_garbage_collector_on(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(serve, "_serve", _spy(seen))
    assert cli("serve", "--port", "0").code == 0
    assert seen == [True]


# -- PostgreSQL ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_store_needs_an_explicit_upgrade(cli: Cli, postgres_url: str) -> None:
    result = cli("--database-url", postgres_url, "user", "add", "alice", "--no-password")
    assert result.code == 1
    assert "e6auth db upgrade" in result.err

    assert cli("--database-url", postgres_url, "db", "upgrade").code == 0
    current = cli("--database-url", postgres_url, "db", "current")
    assert current.out.strip() == f"{head_revision()} (up to date)"


@pytest.mark.postgres
def test_users_and_tokens_on_postgres(cli: Cli, postgres_url: str, home: Path) -> None:
    def run(*argv: str, stdin: str = "") -> Outcome:
        return cli("--database-url", postgres_url, *argv, stdin=stdin)

    assert run("db", "upgrade").code == 0
    added = run("user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.code == 0, added.err
    created = run("token", "create", "--user", "alice", "--comment", "pg", "--json")
    assert created.code == 0, created.err
    token = json.loads(created.out)

    users_listed = run("user", "list", "--json")
    assert [user["name"] for user in json.loads(users_listed.out)] == ["alice"]
    tokens_listed = run("token", "list", "--json")
    assert tokens_listed.code == 0, tokens_listed.err
    [entry] = json.loads(tokens_listed.out)
    assert (entry["id"], entry["user"], entry["comment"]) == (token["id"], "alice", "pg")
    assert parse_token(token["token"]).secret not in tokens_listed.out
    table = run("token", "list")
    assert token["id"] in table.out
    assert parse_token(token["token"]).secret not in table.out

    # The rows are in PostgreSQL, not in the embedded default.
    assert not (home / "e6auth.db").exists()
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(users)).scalar_one() == 1
            assert connection.execute(select(func.count()).select_from(tokens)).scalar_one() == 1
    finally:
        engine.dispose()
    with Authenticator.from_settings(Settings(database_url=postgres_url)) as auth:
        assert auth.verify("alice", token["token"]).token_id == token["id"]
        assert auth.verify("alice", PASSWORD).method == "password"

    deleted = run("token", "delete", "--yes", token["id"])
    assert deleted.code == 0, deleted.err


# -- the installed console script ---------------------------------------------------------------


def test_the_installed_console_script_runs(cli: Cli, home: Path) -> None:
    script = Path(sysconfig.get_path("scripts")) / "e6auth"
    assert script.is_file(), f"no console script at {script}: is e6auth installed?"
    # The environment as the fixtures left it: E6AUTH_HOME set, the developer's E6AUTH_* gone.
    env = dict(os.environ)

    helped = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: e6auth")

    add_user(cli)
    listed = subprocess.run(
        [str(script), "user", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split()[:3] == ["NAME", "STATUS", "PASSWORD"]
    assert listed.stdout.splitlines()[1].split()[:3] == ["alice", "enabled", "yes"]


def test_token_pattern_matches_the_token_format() -> None:
    # TOKEN_PATTERN hard-codes the format to find tokens in output; fail here if it drifts.
    _, token = generate_token()
    assert TOKEN_PATTERN.fullmatch(token)
