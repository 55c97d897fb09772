"""AuditLog and AuditStore: events taken in memory on the request path, written in one batch per
flush, kept through a store outage up to a bound, pruned after the retention period; the new
address rule; and what may be stored of a user name."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import Engine, Table, func, select, text
from sqlalchemy.exc import DBAPIError

from e6auth import (
    Authenticator,
    E6AuthError,
    InvalidTokenSecret,
    Settings,
    StoreUnavailable,
    TokenStore,
    UnknownUser,
)
from e6auth.background.audit import AuditLog, safe_username, token_id_of
from e6auth.cli import main
from e6auth.credentials.tokens import generate_token
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.server import build_gateway
from e6auth.logs import configure_logging
from e6auth.query import QueryManager, SQLAlchemyBackend
from e6auth.store import AuditStore, AuthEvent, QueryEvent
from e6auth.store import audit as stored_audit
from e6auth.store.schema import auth_events, query_events
from e6auth.testing import FAST_ARGON2, FAST_ARGON2_SETTINGS, FakeClock, count_queries
from e6auth.verify.principal import Principal

DAY = 86_400.0
# A missing table: SQLite reports it as an OperationalError (read as "unreachable"), PostgreSQL
# as a ProgrammingError.
WRITE_FAILED = (StoreUnavailable, DBAPIError)


@pytest.fixture
def audit(store: TokenStore, clock: FakeClock) -> Iterator[AuditLog]:
    log = AuditLog(AuditStore(store.engine), flush_seconds=3600, clock=clock)
    try:
        yield log
    finally:
        log.close()


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def _inserts(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("INSERT")]


ALICE = Principal(username="alice", user_id=1, method="token", token_id="AAAAAAAAAAAA")


def test_events_are_written_in_one_insert_per_table_per_flush_and_never_on_record(
    store: TokenStore, audit: AuditLog
) -> None:
    with count_queries(store.engine) as on_request:
        for n in range(250):
            audit.handshake("alice", method="password", peer=f"10.0.0.{n % 9}")
            audit.query(ALICE, peer="10.0.0.1", query_id=f"q{n}", statement="SELECT 1", result="ok")
    assert on_request.count == 0
    assert audit.pending == 500

    with count_queries(store.engine) as flushing:
        assert audit.flush() == 500

    assert len(_inserts(flushing.statements)) == 2, flushing.statements
    assert _count(store.engine, auth_events) == 250
    assert _count(store.engine, query_events) == 250
    assert audit.pending == 0
    assert audit.flush() == 0


def test_a_flush_with_nothing_recorded_touches_nothing(store: TokenStore, audit: AuditLog) -> None:
    with count_queries(store.engine) as counter:
        assert audit.flush() == 0
    assert counter.count == 0


def test_the_buffer_is_bounded_and_the_oldest_events_are_dropped_and_counted(
    store: TokenStore, clock: FakeClock
) -> None:
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, max_pending=3, clock=clock)
    for n in range(5):
        audit.refused_call(f"/QueryEngineService/m{n}", UnknownUser(), "10.0.0.1")
    assert (audit.pending, audit.dropped) == (3, 2)

    audit.flush()

    written = AuditStore(store.engine).auth_events()
    assert [event.method for event in written] == [f"/QueryEngineService/m{n}" for n in (2, 3, 4)]


def test_events_wait_in_memory_through_an_outage_then_the_oldest_give_way_with_one_warning(
    store: TokenStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, max_pending=4, clock=clock)
    with store.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {auth_events.name} RENAME TO e6auth_away"))
    try:
        for n in range(3):
            audit.token_event("token_created", "alice", f"AAAAAAAAAAA{n}", method="cli")
        with caplog.at_level(logging.WARNING, logger="e6auth.audit"):
            with pytest.raises(WRITE_FAILED):
                audit.flush()
            assert (audit.pending, audit.dropped, audit.failures) == (3, 0, 1)
            for n in range(3, 6):
                audit.token_event("token_created", "alice", f"AAAAAAAAAAA{n}", method="cli")
            for _ in range(2):
                with pytest.raises(WRITE_FAILED):
                    audit.flush()
        # Ours only: psycopg may log the failed pipeline of the executemany too.
        warnings = [
            r for r in caplog.records if r.levelno == logging.WARNING and r.name == "e6auth.audit"
        ]
        assert len(warnings) == 1, warnings
        assert (audit.pending, audit.dropped) == (4, 2)
    finally:
        with store.engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE e6auth_away RENAME TO {auth_events.name}"))

    assert audit.flush() == 4

    kept = [event.token_id for event in AuditStore(store.engine).auth_events()]
    assert kept == [f"AAAAAAAAAAA{n}" for n in (2, 3, 4, 5)]


class _Unreachable:
    """Stands in for AuditStore.write while the store is unreachable; counts the attempts."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, auth: object, queries: object = ()) -> None:
        self.calls += 1
        raise StoreUnavailable("audit store unreachable (OperationalError)")


def _our_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith("e6auth")
    ]


def test_a_buffer_of_no_events_is_refused(store: TokenStore) -> None:
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        AuditLog(AuditStore(store.engine), max_pending=0)


def test_events_dropped_between_flushes_are_warned_about_on_the_next_flush_and_again_later(
    store: TokenStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # No outage: a burst overflows the buffer before the writer comes round. The write succeeds,
    # warns once, and the next burst warns again (the count is the running total).
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, max_pending=3, clock=clock)
    with caplog.at_level(logging.WARNING, logger="e6auth.audit"):
        for n in range(5):
            audit.token_event("token_created", "alice", f"AAAAAAAAAAA{n}", method="cli")
        assert audit.flush() == 3
        assert audit.flush() == 0
        for n in range(3):
            audit.token_event("token_created", "alice", f"BBBBBBBBBBB{n}", method="cli")
        assert audit.flush() == 3  # full, but nothing dropped: no warning
        for n in range(4):
            audit.token_event("token_created", "alice", f"CCCCCCCCCCC{n}", method="cli")
        assert audit.flush() == 3
    assert _our_records(caplog, logging.WARNING) == [
        "audit buffer full (3 events): dropped 2 of the oldest so far",
        "audit buffer full (3 events): dropped 3 of the oldest so far",
    ]
    assert (audit.writes, audit.failures, audit.dropped) == (3, 0, 3)


def test_close_tries_the_last_write_once_and_logs_its_failure_without_raising(
    store: TokenStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    audit_store = AuditStore(store.engine)
    audit = AuditLog(audit_store, flush_seconds=3600, clock=clock)
    unreachable = _Unreachable()
    monkeypatch.setattr(audit_store, "write", unreachable)
    audit.start()
    audit.handshake("alice", method="password", peer=None)
    audit.handshake("bob", method="password", peer=None)

    with caplog.at_level(logging.DEBUG, logger="e6auth"):
        audit.close()

    assert unreachable.calls == 1
    assert (audit.pending, audit.failures, audit.writes) == (2, 1, 0)
    assert _our_records(caplog, logging.ERROR) == [
        "could not write 2 audit events at shutdown (StoreUnavailable)"
    ]


def test_rows_older_than_the_retention_period_are_pruned(
    store: TokenStore, clock: FakeClock
) -> None:
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, retention_days=90, clock=clock)
    audit.handshake("old", method="password", peer="10.0.0.1")
    audit.query(ALICE, peer=None, query_id="old", statement="SELECT 1", result="ok")
    clock.advance(60 * DAY)
    audit.handshake("recent", method="password", peer="10.0.0.1")
    audit.query(ALICE, peer=None, query_id="recent", statement="SELECT 2", result="ok")
    audit.flush()
    assert audit.prune() == 0

    clock.advance(31 * DAY)

    assert audit.prune() == 2
    reader = AuditStore(store.engine)
    assert [event.username for event in reader.auth_events()] == ["recent"]
    assert [event.query_id for event in reader.query_events()] == ["recent"]


def test_the_background_writer_flushes_and_prunes_and_close_writes_the_rest(
    store: TokenStore,
) -> None:
    audit = AuditLog(AuditStore(store.engine), flush_seconds=0.05, retention_days=1)
    old = AuthEvent(dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "handshake", "ok", username="old")
    audit.record(old)
    audit.start()
    try:
        for _ in range(100):  # the writer runs every 0.05 s: a few runs at most
            if audit.writes and audit.pruned:
                break
            threading.Event().wait(0.05)
        assert audit.writes >= 1
        assert audit.pruned == 1
    finally:
        audit.handshake("last", method="password", peer=None)
        audit.close()
    assert [event.username for event in AuditStore(store.engine).auth_events()] == ["last"]


def test_the_audit_store_filters_by_user_and_time_and_keeps_the_newest(
    store: TokenStore, audit: AuditLog, clock: FakeClock
) -> None:
    start = store.now()
    for n in range(5):
        audit.handshake("alice" if n % 2 == 0 else "bob", method="password", peer=None)
        clock.advance(60)
    audit.flush()
    reader = AuditStore(store.engine)

    assert len(reader.auth_events(user="alice")) == 3
    assert len(reader.auth_events(since=start + dt.timedelta(seconds=150))) == 2
    assert len(reader.auth_events(until=start + dt.timedelta(seconds=60))) == 1
    newest = reader.auth_events(limit=2)
    assert [event.username for event in newest] == ["bob", "alice"]
    assert newest[0].at < newest[1].at


def test_a_token_seen_at_a_new_address_is_an_event_its_first_address_is_not(
    store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice")
    new = store.create_token("alice")
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, clock=clock)
    with Authenticator(store, clock=clock, audit=audit) as auth:
        auth.verify_token(new.token, peer="10.0.0.1")
        auth.flush_last_used()
        assert audit.pending == 0, "the first address is not new"

        clock.advance(1)  # a cached token's uses (and addresses) are noted once a second
        auth.verify_token(new.token, peer="10.0.0.1")
        auth.flush_last_used()
        assert audit.pending == 0, "an address already stored is not new"

        clock.advance(1)
        auth.verify_token(new.token, peer="192.0.2.7")
        auth.flush_last_used()
        assert audit.pending == 1
        audit.flush()

    [event] = AuditStore(store.engine).auth_events()
    assert (event.kind, event.token_id, event.peer, event.username) == (
        "new_address",
        new.id,
        "192.0.2.7",
        "alice",
    )


def test_a_statement_is_reported_when_it_ends_with_its_real_result(tmp_path: object) -> None:
    backend = SQLAlchemyBackend(f"sqlite:///{tmp_path}/q.db", catalog="default")
    queries = QueryManager(backend)
    ended: list[tuple[str, str, str]] = []
    done = threading.Event()

    def on_done(query_id: str, statement: str, result: str) -> None:
        ended.append((query_id, statement, result))
        if len(ended) == 2:
            done.set()

    try:
        good = queries.prepare("o", "SELECT 1", catalog=None, schema=None)
        bad = queries.prepare("o", "SELECT * FROM no_such_table", catalog=None, schema=None)
        queries.execute("o", good, on_done=on_done)
        queries.execute("o", bad, on_done=on_done)
        queries.execute("o", good, on_done=on_done)  # again: does nothing, reports nothing
        assert done.wait(10)
    finally:
        queries.close()
        backend.close()

    assert sorted(ended) == sorted(
        [(good, "SELECT 1", "ok"), (bad, "SELECT * FROM no_such_table", "error")]
    )


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("Alice", "alice"),
        ("alice@example.com", "alice@example.com"),
        ("not a name", None),
        ("", None),
        ("x" * 300, None),
        (generate_token()[1], None),  # a token typed into the user field
        ("e6pat_" + "A" * 20, None),  # part of one
    ],
    # Fixed ids: a random token in an id would differ between pytest-xdist's workers.
    ids=["name", "email", "spaces", "empty", "too-long", "a-token", "part-of-a-token"],
)
def test_only_a_valid_user_name_that_is_no_token_is_stored(sent: str, stored: str | None) -> None:
    assert safe_username(sent) == stored


def test_the_token_id_of_a_credential_is_its_public_part_only() -> None:
    parsed, token = generate_token()
    assert token_id_of(token) == parsed.id
    assert token_id_of("correct horse battery staple") is None


def test_a_refused_handshake_keeps_the_reason_and_no_secret(
    store: TokenStore, audit: AuditLog
) -> None:
    parsed, token = generate_token()
    audit.handshake(
        token, method="token", peer="10.0.0.1", error=InvalidTokenSecret(), token_id=parsed.id
    )
    audit.flush()

    [event] = AuditStore(store.engine).auth_events()
    assert (event.kind, event.result, event.reason, event.username, event.token_id) == (
        "handshake",
        "refused",
        "bad_token_secret",
        None,
        parsed.id,
    )
    with store.engine.connect() as connection:
        dump = str(connection.execute(select(auth_events)).all())
    assert parsed.secret not in dump


# -- the command -------------------------------------------------------------------------------


class Cli:
    """Runs ``e6auth.cli.main`` in this process and returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self._capsys = capsys
        monkeypatch.setenv("E6AUTH_ARGON2_MEMORY_KIB", str(FAST_ARGON2.memory_kib))
        monkeypatch.setenv("E6AUTH_ARGON2_TIME_COST", str(FAST_ARGON2.time_cost))
        monkeypatch.setenv("E6AUTH_ARGON2_PARALLELISM", str(FAST_ARGON2.parallelism))
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = main(list(argv))
        captured = self._capsys.readouterr()
        return code, captured.out, captured.err

    def json(self, *argv: str) -> list[dict[str, Any]]:
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        answer: list[dict[str, Any]] = json.loads(out)
        return answer


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    # main() points the root logger at capsys's stderr, which is closed after the test.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield Cli(capsys, monkeypatch)
    root.handlers[:] = handlers
    root.setLevel(level)


def _audit_store() -> tuple[TokenStore, AuditStore]:
    token_store = TokenStore.from_settings(Settings())
    return token_store, AuditStore(token_store.engine)


def test_token_create_and_delete_are_in_the_audit_and_the_secret_is_not(cli: Cli) -> None:
    assert cli("user", "add", "alice", "--no-password")[0] == 0
    code, out, err = cli("token", "create", "--user", "alice", "--json")
    assert code == 0, err
    created = json.loads(out)
    assert cli("token", "delete", created["id"], "--yes")[0] == 0

    events = cli.json("audit")

    assert [(e["kind"], e["result"], e["user"], e["token_id"], e["method"]) for e in events] == [
        ("token_created", "ok", "alice", created["id"], "cli"),
        ("token_deleted", "ok", "alice", created["id"], "cli"),
    ]
    assert created["token"] not in json.dumps(events)


def test_with_audit_off_token_changes_are_not_recorded(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E6AUTH_AUDIT", "false")
    cli("user", "add", "alice", "--no-password")
    cli("token", "create", "--user", "alice")

    assert cli.json("audit") == []


def test_audit_filters_by_user_time_and_limit(cli: Cli) -> None:
    token_store, audit_store = _audit_store()
    try:
        now = token_store.now()
        audit_store.write(
            [
                AuthEvent(now - dt.timedelta(days=3), "handshake", "ok", username="alice"),
                AuthEvent(
                    now - dt.timedelta(hours=2), "handshake", "refused", "bad_password", "bob"
                ),
                AuthEvent(now - dt.timedelta(minutes=10), "handshake", "ok", username="alice"),
            ]
        )
    finally:
        token_store.close()

    assert len(cli.json("audit")) == 3
    assert [e["user"] for e in cli.json("audit", "--since", "1h")] == ["alice"]
    assert [e["user"] for e in cli.json("audit", "--since", "1d")] == ["bob", "alice"]
    assert [e["reason"] for e in cli.json("audit", "--user", "BOB")] == ["bad_password"]
    assert len(cli.json("audit", "--until", "90m")) == 2
    since_date = (now - dt.timedelta(days=4)).date().isoformat()
    assert len(cli.json("audit", "--since", since_date)) == 3
    until_iso = (now - dt.timedelta(hours=1)).isoformat()
    assert len(cli.json("audit", "--until", until_iso)) == 2
    newest = cli.json("audit", "--limit", "2")
    assert [e["user"] for e in newest] == ["bob", "alice"]

    code, out, _err = cli("audit", "--user", "alice")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "TIME", "(UTC)", "KIND", "RESULT", "REASON", "USER", "TOKEN", "PEER", "METHOD"
    ]  # fmt: skip
    assert len(lines) == 3
    assert all("alice" in line for line in lines[1:])


def test_audit_queries_lists_statements_with_their_token(cli: Cli) -> None:
    token_store, audit_store = _audit_store()
    try:
        now = token_store.now()
        audit_store.write(
            [],
            [
                QueryEvent(now, "alice", "AAAAAAAAAAAA", "10.0.0.1", "q1", "SELECT\n  1", "ok"),
                QueryEvent(now, "bob", None, "10.0.0.2", "q2", "SELECT x FROM y", "error"),
            ],
        )
    finally:
        token_store.close()

    assert cli.json("audit", "--queries", "--user", "alice") == [
        {
            "at": now.isoformat().replace("+00:00", "Z"),
            "user": "alice",
            "token_id": "AAAAAAAAAAAA",
            "peer": "10.0.0.1",
            "query_id": "q1",
            "statement": "SELECT\n  1",
            "result": "ok",
        }
    ]
    code, out, _err = cli("audit", "--queries")
    assert code == 0
    assert "SELECT 1" in out  # one line per statement in the table
    assert "error" in out
    assert cli.json("audit") == [], "statements are not auth events"


@pytest.mark.parametrize("since", ["yesterday", "1y", "-1h", "2026-13-01"])
def test_an_unreadable_time_is_refused_clearly(cli: Cli, since: str) -> None:
    code, _out, err = cli("audit", f"--since={since}")
    assert code == 1
    assert "--since: expected a duration" in err


# -- user names nobody proved ------------------------------------------------------------------

MISTYPED = "hunter2isnotaname"
"""A password typed into the user-name field: it is a valid user name, of no user."""
PASSWORD = "correct horse battery staple"
KEY = b"k" * 32
HASHED = re.compile(r"unknown:[0-9a-f]{16}")


def _handshake(auth: Authenticator, audit: AuditLog, username: str, secret: str) -> None:
    """A connector login as the gateway's handshake records it (grpc/service.py)."""
    try:
        principal = auth.verify(username, secret, peer="10.0.0.1")
    except E6AuthError as error:
        audit.handshake(username, method="password", peer="10.0.0.1", error=error)
    else:
        audit.handshake(username, method="password", peer="10.0.0.1", principal=principal)


def _dump(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(select(auth_events)).all())


def test_a_name_nobody_proved_is_stored_only_as_a_keyed_hash_a_users_name_as_is(
    store: TokenStore, clock: FakeClock
) -> None:
    store.create_user("alice", PASSWORD)
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, clock=clock, key=KEY)
    with Authenticator(store, clock=clock, audit=audit) as auth:
        _handshake(auth, audit, MISTYPED, "anything")
        _handshake(auth, audit, MISTYPED.upper(), "anything")  # the same name, another case
        _handshake(auth, audit, "no such user!", "anything")  # no valid name: grouped too
        _handshake(auth, audit, "Alice", "wrong horse")
        _handshake(auth, audit, "alice", generate_token()[1])  # a user, not proven, keeps it
        _handshake(auth, audit, "alice", PASSWORD)
        audit.flush()

    names = [event.username for event in AuditStore(store.engine).auth_events()]
    assert [event.reason for event in AuditStore(store.engine).auth_events()] == [
        "unknown_user",
        "unknown_user",
        "unknown_user",
        "bad_password",
        "unknown_token",
        None,
    ]
    mistyped, again, invalid, *known = names
    assert mistyped is not None
    assert HASHED.fullmatch(mistyped), names
    assert again == mistyped, "attempts with one name can be grouped"
    assert invalid is not None
    assert HASHED.fullmatch(invalid)
    assert invalid != mistyped
    assert known == ["alice", "alice", "alice"]
    dump = _dump(store.engine)
    for sent in (MISTYPED, MISTYPED.upper(), "no such user!"):
        assert sent not in dump
    # Keyed: no one without the deployment's key can test guesses against the stored form.
    assert mistyped.removeprefix("unknown:") not in (
        hashlib.sha256(MISTYPED.encode()).hexdigest()[:16],
        hmac.new(KEY, MISTYPED.encode(), hashlib.sha256).hexdigest()[:16],
    )


def _unknown_name_as_stored(settings: Settings) -> str | None:
    with Authenticator.from_settings(settings) as auth:
        assert auth.audit is not None
        _handshake(auth, auth.audit, MISTYPED, "anything")
    found = [event.username for event in AuditStore(auth.store.engine).auth_events()]
    # Each run reads its own new row: the newest.
    return found[-1]


def test_replicas_with_the_same_keys_store_the_same_hash_of_an_unknown_name(
    tmp_path: Path,
) -> None:
    def settings(home: str, session_key: str | None) -> Settings:
        return Settings(
            home=tmp_path / home,
            session_key=session_key,
            **FAST_ARGON2_SETTINGS,
            audit_flush_seconds=3600,
        )

    shared = "s" * 40
    first = _unknown_name_as_stored(settings("one", shared))
    replica = _unknown_name_as_stored(settings("two", shared))
    other_key = _unknown_name_as_stored(settings("three", "t" * 40))
    assert first is not None
    assert HASHED.fullmatch(first)
    assert replica == first
    assert other_key != first
    # With the session key generated into <home>, a restart reads it back: the same hash.
    generated = _unknown_name_as_stored(settings("four", None))
    assert _unknown_name_as_stored(settings("four", None)) == generated != first


@pytest.mark.timeout(60)
def test_a_real_gateway_audits_a_password_in_the_user_field_only_as_a_hash(
    cli: Cli,
) -> None:
    settings = Settings(port=0, **FAST_ARGON2_SETTINGS, audit_flush_seconds=3600)
    store = TokenStore.from_settings(settings)
    try:
        store.create_user("alice", PASSWORD)
    finally:
        store.close()
    log = io.StringIO()
    configure_logging(level="DEBUG", stream=log)
    gateway = build_gateway(settings)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
            for user, password in ((MISTYPED, "anything"), ("alice", "wrong horse")):
                with pytest.raises(grpc.RpcError):
                    stub.authenticate(pb.AuthenticateRequest(user=user, password=password))
    finally:
        gateway.stop()  # writes the audit

    events = cli.json("audit")
    assert [(e["kind"], e["reason"]) for e in events] == [
        ("handshake", "unknown_user"),
        ("handshake", "bad_password"),
    ]
    hashed, alice = (e["user"] for e in events)
    assert HASHED.fullmatch(hashed)
    assert alice == "alice"
    code, table, _err = cli("audit")
    assert code == 0
    assert hashed in table
    # The hash finds the attempts with that name again.
    assert [e["reason"] for e in cli.json("audit", "--user", hashed)] == ["unknown_user"]
    reopened = TokenStore.from_settings(settings)
    try:
        dump = _dump(reopened.engine)
    finally:
        reopened.close()
    for shown in (dump, table, json.dumps(events), log.getvalue()):
        assert MISTYPED not in shown


@pytest.mark.timeout(120)
def test_a_batch_with_more_distinct_unknown_names_than_a_statement_takes_is_written(
    store: TokenStore, clock: FakeClock
) -> None:
    # A flood of names during an outage fills the buffer with up to audit_max_pending distinct
    # names: more than one statement may bind (65535 on PostgreSQL). The audit must not stall.
    store.create_user("zed")
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, clock=clock, key=KEY)
    names = [f"name{n}" for n in range(70_000)] + ["zed"]
    for name in names:
        audit.handshake(name, method="password", peer=None, error=UnknownUser())

    assert audit.flush() == len(names)

    written = AuditStore(store.engine).auth_events(limit=len(names))
    assert len(written) == len(names)
    assert written[-1].username == "zed"
    assert all(event.username and HASHED.fullmatch(event.username) for event in written[:-1])


def test_names_and_token_owners_are_found_across_lookup_chunks(
    store: TokenStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stored_audit, "LOOKUP_CHUNK", 2)
    for name in ("amy", "bea", "cid"):
        store.create_user(name)
    tokens = [store.create_token(name) for name in ("amy", "bea", "cid")]
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, clock=clock, key=KEY)
    for name in ("amy", "nobody1", "bea", "nobody2", "cid"):
        audit.handshake(name, method="password", peer=None, error=UnknownUser())
    for new in tokens:
        audit.refused_call("/QueryEngineService/m", InvalidTokenSecret(), None, token_id=new.id)
    audit.flush()

    names = [event.username for event in AuditStore(store.engine).auth_events()]
    assert names[:5] == [
        "amy",
        audit.hashed_name("nobody1"),
        "bea",
        audit.hashed_name("nobody2"),
        "cid",
    ]
    assert names[5:] == ["amy", "bea", "cid"]
