"""The policy, rotation, leak and pepper commands, through ``e6auth.cli.main``, on SQLite and
PostgreSQL (each test runs on the ``store_url`` database of each backend)."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, update

from e6auth import Authenticator, Settings, TokenRotatedOut
from e6auth.cli import main
from e6auth.cli.tokens import CHECK_EXIT
from e6auth.credentials.tokens import (
    CHECKSUM_LENGTH,
    generate_token,
    looks_like_token,
    parse_token,
    split_token,
)
from e6auth.store.schema import tokens
from e6auth.testing import FAST_ARGON2

PEPPER = "a-configured-pepper-long-enough-0123456789"


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


class Cli:
    """Runs ``main(["--database-url", url, *argv])`` with a given stdin."""

    def __init__(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str
    ) -> None:
        self._capsys = capsys
        self._monkeypatch = monkeypatch
        self.url = url

    def __call__(self, *argv: str, stdin: str = "") -> Outcome:
        self._capsys.readouterr()
        self._monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--database-url", self.url, *argv])
        captured = self._capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    def ok(self, *argv: str, stdin: str = "") -> Outcome:
        result = self(*argv, stdin=stdin)
        assert result.code == 0, result.err
        return result

    def json(self, *argv: str, stdin: str = "") -> Any:
        return json.loads(self.ok(*argv, "--json", stdin=stdin).out)

    def settings(self) -> Settings:
        return Settings(database_url=self.url)

    def set_token(self, token_id: str, **values: object) -> None:
        """Set columns no command sets (a last use long ago) straight in the database."""
        engine = create_engine(self.url)
        try:
            with engine.begin() as connection:
                connection.execute(update(tokens).where(tokens.c.id == token_id).values(**values))
        finally:
            engine.dispose()


@pytest.fixture(autouse=True)
def _cheap_hashing_and_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("E6AUTH_ARGON2_MEMORY_KIB", str(FAST_ARGON2.memory_kib))
    monkeypatch.setenv("E6AUTH_ARGON2_TIME_COST", str(FAST_ARGON2.time_cost))
    monkeypatch.setenv("E6AUTH_ARGON2_PARALLELISM", str(FAST_ARGON2.parallelism))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, store_url: str) -> Cli:
    runner = Cli(capsys, monkeypatch, store_url)
    runner.ok("db", "upgrade")
    runner.ok("user", "add", "alice", "--no-password")
    return runner


@pytest.fixture
def home() -> Path:
    return Path(os.environ["E6AUTH_HOME"])


def create(cli: Cli, *options: str) -> dict[str, Any]:
    created: dict[str, Any] = cli.json("token", "create", "--user", "alice", *options)
    return created


def parse_iso(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text)


# -- policy ------------------------------------------------------------------------------------


def test_policy_show_gives_each_value_and_where_it_came_from(
    cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (home / "config.toml").write_text("max_tokens_per_user = 5\n")
    monkeypatch.setenv("E6AUTH_PASSWORD_LOGINS", "false")

    shown = cli.json("policy", "show")
    table = cli.ok("policy", "show").out

    assert shown == {
        "password_logins": {"value": False, "source": "environment (E6AUTH_PASSWORD_LOGINS)"},
        "max_token_lifetime_days": {"value": None, "source": "default"},
        "max_tokens_per_user": {"value": 5, "source": "config file"},
        "revoke_unused_after_days": {"value": None, "source": "default"},
    }
    lines = table.splitlines()
    assert lines[0].split() == ["SETTING", "VALUE", "FROM"]
    assert "refused (tokens only)" in lines[1]
    assert lines[2].split() == ["max_token_lifetime_days", "off", "default"]


def test_token_create_obeys_the_lifetime_and_count_limits(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E6AUTH_MAX_TOKEN_LIFETIME_DAYS", "90")
    monkeypatch.setenv("E6AUTH_MAX_TOKENS_PER_USER", "1")

    without = cli("token", "create", "--user", "alice")
    too_long = cli("token", "create", "--user", "alice", "--expires-days", "91")
    assert (without.code, too_long.code) == (1, 1)
    assert "--expires-days" in without.err
    assert "maximum token lifetime of 90 days" in too_long.err

    create(cli, "--expires-days", "90")
    second = cli("token", "create", "--user", "alice", "--expires-days", "1")
    assert second.code == 1
    assert "alice already has 1 active tokens" in second.err


# -- expiry ------------------------------------------------------------------------------------


def test_token_list_expiring_within_shows_active_tokens_expiring_soon(cli: Cli) -> None:
    soon = create(cli, "--expires-days", "3")
    later = create(cli, "--expires-days", "30")
    create(cli)  # never expires
    revoked = create(cli, "--expires-days", "2")
    cli.ok("token", "delete", "--yes", revoked["id"])

    assert [token["id"] for token in cli.json("token", "list", "--expiring-within", "7d")] == [
        soon["id"]
    ]
    listed = cli.json("token", "list", "--expiring-within", "5w")
    assert [token["id"] for token in listed] == [soon["id"], later["id"]]
    assert cli.json("token", "list", "--expiring-within", "36h") == []
    assert soon["id"] in cli.ok("token", "list", "--expiring-within", "7d").out


@pytest.mark.parametrize("span", ["7", "7x", "0d", "-1d", "d"])
def test_a_bad_span_is_a_usage_error(cli: Cli, span: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("token", "list", "--expiring-within", span)
    assert exited.value.code == 2


# -- rotation ----------------------------------------------------------------------------------


def test_token_rotate_prints_a_new_secret_and_the_old_one_works_for_the_grace(
    cli: Cli,
) -> None:
    old = create(cli, "--expires-days", "10")

    rotated = cli.json("token", "rotate", old["id"], "--grace-hours", "2")
    text = cli.ok("token", "rotate", old["id"], "--grace-hours", "0").out

    assert rotated["id"] == old["id"]
    assert rotated["expires_at"] == old["expires_at"]
    grace_end = parse_iso(rotated["previous_valid_until"])
    now = dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=1, minutes=59) < grace_end - now <= dt.timedelta(hours=2)
    [newest] = [line.strip() for line in text.splitlines() if line.startswith("    e6pat_")]
    assert "the old secret no longer works" in text
    with Authenticator.from_settings(cli.settings()) as auth:
        assert auth.verify_token(newest).token_id == old["id"]
        with pytest.raises(TokenRotatedOut):
            auth.verify_token(rotated["token"])  # rotated again with no grace


def test_token_rotate_refuses_revoked_and_unknown_tokens(cli: Cli) -> None:
    token = create(cli)
    cli.ok("token", "delete", "--yes", token["id"])

    revoked = cli("token", "rotate", token["id"])
    unknown = cli("token", "rotate", "AAAAAAAAAAAA")
    negative = cli("token", "rotate", token["id"], "--grace-hours", "-1")

    assert (revoked.code, unknown.code, negative.code) == (1, 1, 1)
    assert "revoked" in revoked.err
    assert "no token AAAAAAAAAAAA" in unknown.err
    assert "--grace-hours" in negative.err


# -- revoking unused tokens --------------------------------------------------------------------


def test_token_revoke_unused_lists_on_a_dry_run_then_revokes(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = create(cli)
    fresh = create(cli)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=100)
    cli.set_token(stale["id"], created_at=long_ago, last_used_at=long_ago)

    off = cli("token", "revoke-unused")
    assert off.code == 1
    assert "revoke_unused_after_days" in off.err

    monkeypatch.setenv("E6AUTH_REVOKE_UNUSED_AFTER_DAYS", "90")
    dry = cli.ok("token", "revoke-unused", "--dry-run").out
    assert dry.splitlines() == [
        f"would revoke {stale['id']} of alice (last used {long_ago:%Y-%m-%d %H:%M:%S})"
    ]
    assert [token["status"] for token in cli.json("token", "list")] == ["active", "active"]

    revoked = cli.json("token", "revoke-unused")
    assert [token["id"] for token in revoked] == [stale["id"]]
    statuses = {token["id"]: token["status"] for token in cli.json("token", "list")}
    assert statuses == {stale["id"]: "revoked", fresh["id"]: "active"}
    assert cli.ok("token", "revoke-unused", "--days", "1").out.strip() == "no unused tokens"


# -- token check -------------------------------------------------------------------------------


def check(cli: Cli, token: str, *options: str) -> tuple[int, dict[str, Any]]:
    result = cli("token", "check", "--json", *options, stdin=token + "\n")
    printed = result.out + result.err
    assert token not in printed
    if looks_like_token(token):
        assert split_token(token).secret not in printed
    return result.code, json.loads(result.out)


def test_token_check_offline_says_shape_checksum_and_id_only(cli: Cli) -> None:
    token = create(cli)["token"]
    typo = (
        token[:-CHECKSUM_LENGTH]
        + ("A" if token[-1] != "A" else "B")
        + token[-CHECKSUM_LENGTH + 1 :]
    )

    assert check(cli, token, "--offline") == (0, {"shape": "valid", "id": parse_token(token).id})
    code, report = check(cli, typo, "--offline")
    assert code == CHECK_EXIT["malformed"]
    assert "checksum" in report["shape"]
    code, report = check(cli, "hunter2-not-a-token", "--offline")
    assert (code, report["id"]) == (CHECK_EXIT["malformed"], None)
    assert "hunter2" not in json.dumps(report)


def test_token_check_online_names_the_token_and_its_status(cli: Cli) -> None:
    token = create(cli, "--expires-days", "5", "--comment", "ci")
    code, report = check(cli, token["token"])
    assert code == 0
    assert report["id"] == token["id"]
    assert (report["user"], report["status"]) == ("alice", "active")
    assert report["expires_at"] == token["expires_at"]
    assert report["created_at"]

    rotated = cli.json("token", "rotate", token["id"], "--grace-hours", "1")
    code, report = check(cli, token["token"])  # the old secret, in its grace window
    assert (code, report["status"]) == (0, "active")
    assert report["previous_secret_valid_until"] == rotated["previous_valid_until"]
    cli.ok("token", "rotate", token["id"], "--grace-hours", "0")
    assert check(cli, rotated["token"])[1]["status"] == "rotated-out"
    assert check(cli, token["token"])[1]["status"] == "wrong secret"

    other = create(cli)
    cli.ok("token", "delete", "--yes", other["id"])
    assert check(cli, other["token"])[0] == CHECK_EXIT["revoked"]
    expired = create(cli, "--expires-days", "1")
    cli.set_token(expired["id"], expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert check(cli, expired["token"])[0] == CHECK_EXIT["expired"]


def test_token_check_of_an_unknown_id_and_table_output(cli: Cli) -> None:
    token = create(cli)["token"]
    cli.ok("db", "current")  # the same store, nothing else
    _, unknown = generate_token(token_id="ZZZZZZZZZZZZ")  # well-formed, not in the store
    code, report = check(cli, unknown)
    assert (code, report["status"], report.get("user")) == (
        CHECK_EXIT["unknown id"],
        "unknown id",
        None,
    )

    text = cli("token", "check", stdin=token)
    assert text.code == 0
    assert "status: active" in text.out
    assert parse_token(token).secret not in text.out
    # Checking marks nothing as used.
    assert cli.json("token", "list")[0]["last_used_at"] is None


# -- peppers -----------------------------------------------------------------------------------


def test_pepper_add_then_new_tokens_use_it_and_old_ones_still_verify(cli: Cli) -> None:
    old = create(cli)
    added = cli.ok("pepper", "add").out
    assert "added pepper 2" in added
    new = create(cli)

    assert cli.json("pepper", "list") == [
        {"id": 1, "tokens": 1, "state": "known"},
        {"id": 2, "tokens": 1, "state": "current"},
    ]
    with Authenticator.from_settings(cli.settings()) as auth:
        auth.verify_token(old["token"])
        auth.verify_token(new["token"])
    cli.ok("token", "rotate", old["id"], "--grace-hours", "0")
    assert [row["tokens"] for row in cli.json("pepper", "list")] == [0, 2]
    table = cli.ok("pepper", "list").out
    assert table.splitlines()[0].split() == ["ID", "TOKENS", "STATE"]


def test_pepper_add_is_refused_when_peppers_come_from_the_settings(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.setenv("E6AUTH_PEPPER", PEPPER)

    refused = cli("pepper", "add")

    assert refused.code == 1
    assert "configured in the settings" in refused.err
    assert PEPPER not in refused.err
    assert not (home / "pepper.2").exists()
