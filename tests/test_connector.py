"""End to end: the real e6data connector (3.0.2) against a real `e6auth serve` process.

The connector runs in a process of its own (``connector_worker.py``): its generated protobuf
modules register unpackaged message names that clash with e6auth's own stubs, so it is never
imported here. Users and tokens are made in this process or with the `e6auth` command, both other
writers than the gateway, which learns of deletions through the invalidation log.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
import zlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from connector_worker import decode_rows
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from processes import Lines, stop_process
from sqlalchemy import create_engine, make_url, text

from e6auth import Settings, TokenStore
from e6auth.credentials.tokens import (
    ALPHABET,
    CHECKSUM_LENGTH,
    ID_LENGTH,
    PREFIX,
    SECRET_LENGTH,
    split_token,
)
from e6auth.testing import FAST_ARGON2, FAST_ARGON2_SETTINGS

E6AUTH = str(Path(sysconfig.get_path("scripts")) / "e6auth")
WORKER = Path(__file__).with_name("connector_worker.py")
READY = re.compile(r"^e6auth serving on (?P<host>\S+):(?P<port>\d+); Ctrl-C stops$")
DEMO_TOKEN = re.compile(r"^\s+(e6pat_\S+)$")
START_SECONDS = 20.0
CALL_SECONDS = 30.0
# The design's target for a change made elsewhere is "about a second"; the gateway here polls the
# invalidation log every 0.2 s, and the connector sleeps 0.2 s before it logs in again.
REFUSAL_BUDGET_SECONDS = 2.0
PASSWORD = "correct horse battery staple"
UNIFORM = ("UNAUTHENTICATED", "invalid credentials")
CATALOG = "default"
SQLITE_SCHEMA = "main"

GATEWAY_ENV = {
    "E6AUTH_INVALIDATION_POLL_SECONDS": "0.2",
    # Production argon2 costs would only slow the logins down; what they cost is not tested here.
    "E6AUTH_ARGON2_MEMORY_KIB": str(FAST_ARGON2.memory_kib),
    "E6AUTH_ARGON2_TIME_COST": str(FAST_ARGON2.time_cost),
    "E6AUTH_ARGON2_PARALLELISM": str(FAST_ARGON2.parallelism),
}


def child_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("E6AUTH_")}
    return {**env, "E6AUTH_HOME": str(home), **GATEWAY_ENV, **(extra or {})}


class Gateway:
    """A running `e6auth -v serve --port 0 …`; its log (stderr) is kept for assertions."""

    def __init__(self, home: Path, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.home = home
        self.process = subprocess.Popen(
            [E6AUTH, "-v", "serve", "--port", "0", *args],
            env=child_env(home, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.out = Lines(self.process.stdout)
        self.log = Lines(self.process.stderr)
        self.host, self.port = self._wait_until_serving()

    def _wait_until_serving(self) -> tuple[str, int]:
        deadline = time.monotonic() + START_SECONDS
        try:
            while True:
                line = self.out.next(max(0.0, deadline - time.monotonic()))
                if line is None:
                    break
                ready = READY.match(line)
                if ready:
                    return ready["host"], int(ready["port"])
        except TimeoutError:
            pass
        self.stop()
        pytest.fail(f"the gateway did not start:\n{self.out.text}\n{self.log.text}")

    @property
    def demo_token(self) -> str:
        found = [match[1] for line in self.out.seen if (match := DEMO_TOKEN.match(line))]
        assert len(found) == 1, self.out.text
        return found[0]

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self.process, timeout)


StartGateway = Callable[..., Gateway]


class Connector:
    """The worker process that drives the real connector (see ``connector_worker.py``)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._answers = Lines(self.process.stdout)
        self.log = Lines(self.process.stderr)
        self._ids = 0

    def call(self, op: str, *, timeout: float = CALL_SECONDS, **fields: Any) -> dict[str, Any]:
        self.send(op, **fields)
        return self.receive(timeout)

    def send(self, op: str, **fields: Any) -> None:
        """Start a command; :meth:`receive` its answer (the worker runs one at a time)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = CALL_SECONDS) -> dict[str, Any]:
        try:
            line = self._answers.next(timeout)
        except TimeoutError:
            pytest.fail(f"the connector did not answer within {timeout} s:\n{self.log.text}")
        if line is None:
            pytest.fail(f"the connector worker died:\n{self.log.text}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def connect(self, gateway: Gateway, **options: Any) -> str:
        """A new Connection to the gateway (the connector sends nothing until first used)."""
        self._ids += 1
        conn = f"c{self._ids}"
        answer = self.call("connect", id=conn, host=gateway.host, port=gateway.port, **options)
        assert answer["ok"], answer
        return conn

    def execute(self, conn: str, sql: str, **fields: Any) -> dict[str, Any]:
        return self.call("execute", conn=conn, sql=sql, **fields)

    def rows(self, conn: str, sql: str, *, timeout: float = CALL_SECONDS) -> list[list[object]]:
        answer = self.execute(conn, sql, timeout=timeout)
        assert answer["ok"], answer
        return decode_rows(answer["rows"])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def settings(home: Path) -> Settings:
    return Settings(
        home=home,
        **FAST_ARGON2_SETTINGS,
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[TokenStore]:
    token_store = TokenStore.from_settings(settings)
    try:
        yield token_store
    finally:
        token_store.close()


@pytest.fixture
def start_gateway(home: Path) -> Iterator[StartGateway]:
    """Starts gateways on the test's home: ``start_gateway("--demo", E6AUTH_X="1")``."""
    started: list[Gateway] = []

    def start(*args: str, **env: str) -> Gateway:
        gateway = Gateway(home, args, env)
        started.append(gateway)
        return gateway

    try:
        yield start
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
def gateway(start_gateway: StartGateway) -> Gateway:
    """A gateway on the demo dataset (SQLite: customers, orders)."""
    return start_gateway("--demo")


@pytest.fixture
def connector() -> Iterator[Connector]:
    worker = Connector()
    try:
        yield worker
    finally:
        worker.close()


@pytest.fixture
def alice(store: TokenStore) -> str:
    """User alice with PASSWORD; returns a token of hers."""
    store.create_user("alice", PASSWORD)
    return store.create_token("alice").token


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [E6AUTH, *args],
        env=child_env(home),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def demo_rows(home: Path, sql: str) -> list[list[object]]:
    """What SQLite itself answers on the demo database: the truth the gateway must pass on."""
    connection = sqlite3.connect(home / "demo.db")
    try:
        return [list(row) for row in connection.execute(sql)]
    finally:
        connection.close()


def assert_error(answer: dict[str, Any], code: str, details: str) -> None:
    assert not answer["ok"], answer
    error = answer["error"]
    assert (error.get("code"), error.get("details")) == (code, details), error


def demo_connection(connector: Connector, gateway: Gateway, **credentials: Any) -> str:
    return connector.connect(gateway, database=SQLITE_SCHEMA, catalog=CATALOG, **credentials)


# -- logging in --------------------------------------------------------------------------------

CUSTOMERS_SQL = (
    "SELECT id, name, email, credit_limit FROM customers WHERE id IN (1, 9, 11) ORDER BY id"
)


@pytest.mark.timeout(60)
def test_a_password_login_runs_a_query_and_returns_exact_rows(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    conn = demo_connection(connector, gateway, username="alice", password=PASSWORD)

    rows = connector.rows(conn, CUSTOMERS_SQL)

    assert rows == demo_rows(gateway.home, CUSTOMERS_SQL)
    assert [row[0] for row in rows] == [1, 9, 11]
    assert rows[1][2] is None  # customer 9 has no e-mail


@pytest.mark.timeout(60)
def test_a_token_login_uses_the_token_as_the_password(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    conn = demo_connection(connector, gateway, username="alice", password=alice)

    assert connector.rows(conn, CUSTOMERS_SQL) == demo_rows(gateway.home, CUSTOMERS_SQL)


@pytest.mark.timeout(60)
def test_bearer_mode_sends_the_token_on_every_call(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    conn = demo_connection(connector, gateway, access_token=alice)

    assert connector.rows(conn, CUSTOMERS_SQL) == demo_rows(gateway.home, CUSTOMERS_SQL)


@pytest.mark.timeout(60)
def test_a_connection_without_a_catalog_runs_queries_too(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    # No catalog: the connector uses prepareStatement/executeStatement, not the V2 calls.
    conn = connector.connect(gateway, username="alice", password=alice)

    assert connector.rows(conn, "SELECT count(*) FROM orders") == [[400]]


def forged(token: str) -> str:
    """The same token id with another secret and a valid checksum: a guess, well formed."""
    body = token[: len(PREFIX) + ID_LENGTH + 1] + "A" * SECRET_LENGTH
    number, digits = zlib.crc32(body.encode("ascii")), []
    for _ in range(CHECKSUM_LENGTH):
        number, digit = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return body + "".join(reversed(digits))


def mistyped(token: str) -> str:
    """The token with one character of its secret changed: the checksum no longer matches."""
    position = len(PREFIX) + ID_LENGTH + 1
    return token[:position] + ("B" if token[position] == "A" else "A") + token[position + 1 :]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param({"username": "alice", "password": "not her password"}, id="wrong-password"),
        pytest.param({"username": "bob", "password": "{token}"}, id="another-users-token"),
        pytest.param({"username": "nobody", "password": PASSWORD}, id="unknown-user"),
        pytest.param({"username": "nobody", "password": "{token}"}, id="unknown-user-token"),
        pytest.param({"username": "alice", "password": "{forged}"}, id="forged-token"),
        pytest.param({"username": "alice", "password": "{mistyped}"}, id="mistyped-token"),
        pytest.param({"access_token": "{forged}"}, id="bearer-forged-token"),
        pytest.param({"access_token": "not a token"}, id="bearer-junk"),
    ],
)
def test_refusals_say_only_invalid_credentials(
    gateway: Gateway,
    connector: Connector,
    store: TokenStore,
    alice: str,
    credentials: dict[str, str],
) -> None:
    store.create_user("bob", "bob's password")
    secrets_ = {"token": alice, "forged": forged(alice), "mistyped": mistyped(alice)}
    values = {name: value.format(**secrets_) for name, value in credentials.items()}
    conn = demo_connection(connector, gateway, **values)

    assert_error(connector.execute(conn, "SELECT 1"), *UNIFORM)
    # The refusal leaves the connection usable: the next attempt asks again, and is refused again.
    assert_error(connector.execute(conn, "SELECT 1"), *UNIFORM)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["password", "bearer"])
def test_an_expired_token_is_refused_as_expired(
    gateway: Gateway, connector: Connector, settings: Settings, alice: str, mode: str
) -> None:
    # Made by a store whose clock is three days behind: a one-day token, expired before first use.
    behind = TokenStore.from_settings(settings, clock=lambda: time.time() - 3 * 86_400)
    try:
        expired = behind.create_token("alice", expires_days=1)
    finally:
        behind.close()
    assert expired.expires_at is not None
    assert expired.expires_at < dt.datetime.now(dt.UTC)
    credentials = (
        {"username": "alice", "password": expired.token}
        if mode == "password"
        else {"access_token": expired.token}
    )
    conn = demo_connection(connector, gateway, **credentials)

    assert_error(connector.execute(conn, "SELECT 1"), "UNAUTHENTICATED", "token expired")


# -- credentials that die while a connection is open -------------------------------------------


def refused_after(
    connector: Connector, conn: str, since: float, budget: float
) -> tuple[float, dict[str, Any]]:
    """Run a query on ``conn`` until it fails; the seconds from ``since`` and the failure."""
    while True:
        answer = connector.execute(conn, "SELECT 1")
        elapsed = time.monotonic() - since
        if not answer["ok"]:
            return elapsed, answer
        if elapsed > budget + 5:
            pytest.fail(f"still accepted {elapsed:.1f} s after the change")
        time.sleep(0.05)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["password", "bearer"])
def test_a_token_deleted_from_the_command_line_ends_an_open_connection(
    gateway: Gateway,
    connector: Connector,
    store: TokenStore,
    alice: str,
    mode: str,
) -> None:
    credentials = (
        {"username": "alice", "password": alice} if mode == "password" else {"access_token": alice}
    )
    conn = demo_connection(connector, gateway, **credentials)
    assert connector.rows(conn, "SELECT 1") == [[1]]
    token_id = store.list_tokens("alice")[0].id

    run_cli(gateway.home, "token", "delete", token_id, "--yes")
    deleted_at = time.monotonic()
    delay, answer = refused_after(connector, conn, deleted_at, REFUSAL_BUDGET_SECONDS)

    assert_error(answer, "UNAUTHENTICATED", "token revoked")
    assert delay < REFUSAL_BUDGET_SECONDS, f"refused {delay:.2f} s after the delete"
    if mode == "password":
        # The session ended first (INTERNAL "Access denied"); the connector logged in again with
        # the deleted token and was told why it cannot.
        assert gateway.log.has("session_revoked"), gateway.log.text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("credential", ["password", "token"])
def test_a_disabled_users_open_connection_is_refused(
    gateway: Gateway, connector: Connector, alice: str, credential: str
) -> None:
    secret = PASSWORD if credential == "password" else alice
    conn = demo_connection(connector, gateway, username="alice", password=secret)
    assert connector.rows(conn, "SELECT 1") == [[1]]

    run_cli(gateway.home, "user", "disable", "alice")
    delay, answer = refused_after(connector, conn, time.monotonic(), REFUSAL_BUDGET_SECONDS)

    assert_error(answer, "UNAUTHENTICATED", "user disabled")
    assert delay < REFUSAL_BUDGET_SECONDS, f"refused {delay:.2f} s after the disable"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("setting", "limit", "refusal"),
    [
        ("E6AUTH_SESSION_IDLE_SECONDS", 1.0, "idle too long"),
        # Sessions expire on whole seconds: this one lives from 2 to 3 s.
        ("E6AUTH_SESSION_MAX_AGE_SECONDS", 3.0, "past its maximum age"),
    ],
    ids=["idle", "max-age"],
)
def test_an_expired_session_is_renewed_by_the_connector_by_itself(
    start_gateway: StartGateway,
    connector: Connector,
    alice: str,
    setting: str,
    limit: float,
    refusal: str,
) -> None:
    gateway = start_gateway("--demo", **{setting: str(limit)})
    conn = demo_connection(connector, gateway, username="alice", password=alice)
    assert connector.rows(conn, "SELECT 1") == [[1]]

    time.sleep(limit + 0.5)  # real time: the limit is the gateway's, in another process

    assert connector.rows(conn, "SELECT 2") == [[2]]
    # It did expire: the gateway refused the stale session before the connector logged in again.
    assert gateway.log.has(refusal), gateway.log.text


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_a_query_running_longer_than_the_idle_limit_keeps_its_session(
    start_gateway: StartGateway, connector: Connector, alice: str, postgres_url: str
) -> None:
    # A session is busy, not idle, while its getResultMetadata waits for a slow statement. The
    # connector does not log in again for getNextResultBatch: a session that expires there loses
    # the whole result.
    gateway = start_gateway("--query-url", postgres_url, E6AUTH_SESSION_IDLE_SECONDS="2")
    conn = connector.connect(gateway, username="alice", password=alice, catalog=CATALOG)

    answer = connector.execute(conn, "SELECT 1 AS done FROM pg_sleep(4)")

    assert answer["ok"], answer
    assert decode_rows(answer["rows"]) == [[1]]


# -- SQLAlchemy --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_sqlalchemy_dialect_reads_rows_and_reflects_columns(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    url = f"e6data://alice:{alice}@{gateway.host}:{gateway.port}/?catalog={CATALOG}&schema=main"
    sql = "SELECT id, name, country FROM customers WHERE id <= 3 ORDER BY id"

    answer = connector.call("sqlalchemy", url=url, sql=sql, reflect_table="customers")

    assert answer["ok"], answer
    assert decode_rows(answer["rows"]) == demo_rows(gateway.home, sql)
    assert answer["columns"] == [
        ["id", "Integer"],
        ["name", "String"],
        ["email", "String"],
        ["country", "String"],
        ["signup_date", "E6dataDate"],
        ["credit_limit", "Float"],
        ["vip", "Boolean"],
    ]
    # Selected through the reflected table, the dialect's types parse what comes back.
    first = decode_rows(answer["table_rows"])[0]
    assert first == [1, "Zoë Hopper", "customer1@example.com", "PL", dt.date(2023, 2, 7), 637.01, 0]


@pytest.mark.timeout(60)
def test_the_sqlalchemy_dialect_in_bearer_mode_as_the_integration_guide_shows(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    """docs/integration.md: no credentials in the URL, the token in ``connect_args``."""
    url = f"e6data://{gateway.host}:{gateway.port}/?catalog={CATALOG}&schema=main"
    sql = "SELECT id, name FROM customers WHERE id <= 3 ORDER BY id"

    answer = connector.call("sqlalchemy", url=url, sql=sql, connect_args={"access_token": alice})
    forged = alice[:-12] + "0" * 12
    refused = connector.call("sqlalchemy", url=url, sql=sql, connect_args={"access_token": forged})

    assert answer["ok"], answer
    assert decode_rows(answer["rows"]) == demo_rows(gateway.home, sql)
    assert not refused["ok"], refused
    assert refused["error"]["code"] == "UNAUTHENTICATED", refused


# -- many at once ------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_32_concurrent_connections_each_get_their_own_right_answers(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    queries = [
        "SELECT {i} AS connection, id, name FROM customers WHERE id = {i} + 1",
        "SELECT count(*), sum(quantity) FROM orders WHERE customer_id = {i} + 1",
        "SELECT id, unit_price, note FROM orders WHERE id % 32 = {i} ORDER BY id",
    ]
    connect = {
        "host": gateway.host,
        "port": gateway.port,
        "username": "alice",
        "password": alice,
        "database": SQLITE_SCHEMA,
        "catalog": CATALOG,
    }

    answer = connector.call("concurrent", n=32, connect=connect, queries=queries, timeout=80)

    assert answer["ok"], answer
    results = answer["results"]
    failures = [result for result in results if not result["ok"]]
    assert not failures, failures[:3]
    for number, result in enumerate(results):
        expected = [demo_rows(gateway.home, query.format(i=number)) for query in queries]
        assert [decode_rows(rows) for rows in result["rows"]] == expected, number


# -- values ------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_gateway(request: pytest.FixtureRequest, start_gateway: StartGateway) -> Gateway:
    """A gateway on the demo dataset, or on a private PostgreSQL schema."""
    if request.param == "sqlite":
        return start_gateway("--demo")
    url: str = request.getfixturevalue("postgres_url")
    return start_gateway("--query-url", url)


# The connector inlines parameters itself, Hive style: ' becomes \', \ becomes \\, and CR, LF
# and TAB become \r, \n and \t (protocol reference, 2.6). The gateway has to read them so.
TRICKY_STRINGS = ["it's", "back\\slash", "tab\there", "line\nbreak", "cr\rlf", "'", "\\'"]


@pytest.mark.timeout(60)
def test_string_parameters_bound_by_the_connector_arrive_unchanged(
    any_gateway: Gateway, connector: Connector, alice: str
) -> None:
    conn = connector.connect(any_gateway, username="alice", password=alice, catalog=CATALOG)

    answers = {
        value: connector.execute(conn, "SELECT %(value)s AS v", parameters={"value": value})
        for value in TRICKY_STRINGS
    }

    received = {
        value: decode_rows(answer["rows"]) if answer["ok"] else answer["error"]
        for value, answer in answers.items()
    }
    assert received == {value: [[value]] for value in TRICKY_STRINGS}


@pytest.mark.timeout(60)
def test_a_quote_in_a_parameter_cannot_end_its_string_literal(
    any_gateway: Gateway, connector: Connector, alice: str
) -> None:
    conn = connector.connect(any_gateway, username="alice", password=alice, catalog=CATALOG)
    sql = "SELECT count(*) FROM (SELECT 'alice' AS name) AS people WHERE name = %(name)s"

    answer = connector.execute(conn, sql, parameters={"name": "' OR 1 = 1 --"})

    # Read as standard SQL, the connector's \' closes the literal and the rest becomes SQL.
    assert answer["ok"], answer
    assert decode_rows(answer["rows"]) == [[0]], "the parameter's text ran as SQL"


@pytest.mark.timeout(60)
def test_a_result_of_many_batches_arrives_whole_and_in_order(
    start_gateway: StartGateway, connector: Connector, alice: str
) -> None:
    gateway = start_gateway("--demo", E6AUTH_QUERY_BATCH_ROWS="1000")
    conn = demo_connection(connector, gateway, username="alice", password=alice)
    # 25 batches; the text column is NULL throughout the first one, so its type is learnt late.
    sql = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25000)"
        " SELECT i, CASE WHEN i > 1500 THEN 'row ' || i END AS label FROM n"
    )

    rows = connector.rows(conn, sql)

    assert rows == [[i, f"row {i}" if i > 1500 else None] for i in range(1, 25_001)]


TYPED_TABLE = """
CREATE TABLE typed (
    id integer PRIMARY KEY,
    big bigint,
    small smallint,
    dbl double precision,
    flt real,
    txt text,
    vc varchar(20),
    flag boolean,
    day date,
    moment timestamp,
    amount numeric(38, 10)
)
"""
TYPED_NAMES = [
    "id", "big", "small", "dbl", "flt", "txt", "vc", "flag", "day", "moment", "amount",
]  # fmt: skip
# What the gateway declares each column as: the connector's vector type names.
TYPED_VECTORS = [
    "LONG", "LONG", "LONG", "DOUBLE", "DOUBLE", "STRING", "STRING", "BOOLEAN", "DATE", "DATETIME",
    "DECIMAL128",
]  # fmt: skip
TYPED_ROWS = [
    # id, big, small, dbl, flt, txt, vc, flag, day, moment, amount
    (1, -(2**63), -32768, 0.1, 0.5, "naïve café", "ascii", True, "2024-02-29",
     "2024-01-15 10:20:30.123", "1234567890123456789012345678.0123456789"),
    (2, 2**63 - 1, 32767, -1.7976931348623157e308, -3.25, "日本語 😀👍🏽", "", False,
     "1970-01-01", "1970-01-01 00:00:00", "-0.0000000001"),
    (3, 0, 0, 5e-324, 1e-3, "line\nbreak\ttab 'quote' \\ back", "ß", True, "1969-12-31",
     "1969-12-31 23:59:59.999", "-9999999999999999999999999999.9999999999"),
    (4, 42, 7, -0.0, 16777216.0, "", "x", False, "9999-12-31",
     "2024-06-30 12:34:56.987654", "0"),
    (5, None, None, None, None, None, None, None, None, None, None),
]  # fmt: skip
TYPED_EXPECTED: list[list[object]] = [
    [1, -(2**63), -32768, 0.1, 0.5, "naïve café", "ascii", True, "2024-02-29",
     "2024-01-15T10:20:30.123+00:00", Decimal("1234567890123456789012345678.0123456789")],
    [2, 2**63 - 1, 32767, -1.7976931348623157e308, -3.25, "日本語 😀👍🏽", "", False,
     "1970-01-01", "1970-01-01T00:00:00.000+00:00", Decimal("-1E-10")],
    [3, 0, 0, 5e-324, 0.001, "line\nbreak\ttab 'quote' \\ back", "ß", True,
     "1969-12-31", "1969-12-31T23:59:59.999+00:00",
     Decimal("-9999999999999999999999999999.9999999999")],
    [4, 42, 7, -0.0, 16777216.0, "", "x", False, "9999-12-31",
     "2024-06-30T12:34:56.987+00:00", Decimal("0E-10")],
    [5, None, None, None, None, None, None, None, None, None, None],
]  # fmt: skip


def exact(rows: list[list[object]]) -> list[list[object]]:
    """Rows with floats and decimals as their exact text: ``-0.0 != 0.0`` and the exponent of a
    Decimal (its scale) count."""
    return [
        [repr(cell) if isinstance(cell, float | Decimal) else cell for cell in row] for row in rows
    ]


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_values_round_trip_exactly_from_postgresql(
    start_gateway: StartGateway, connector: Connector, alice: str, postgres_url: str
) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            connection.execute(text(TYPED_TABLE))
            connection.execute(
                text(
                    "INSERT INTO typed VALUES (:id, :big, :small, :dbl, :flt, :txt, :vc, :flag,"
                    " CAST(:day AS date), CAST(:moment AS timestamp), CAST(:amount AS numeric))"
                ),
                [dict(zip(TYPED_NAMES, row, strict=True)) for row in TYPED_ROWS],
            )
    finally:
        engine.dispose()
    options = make_url(postgres_url).query["options"]  # -csearch_path=<the private schema>
    assert isinstance(options, str)
    gateway = start_gateway("--query-url", postgres_url)
    conn = connector.connect(
        gateway,
        username="alice",
        password=alice,
        catalog=CATALOG,
        database=options.removeprefix("-csearch_path="),
    )

    answer = connector.execute(conn, "SELECT * FROM typed ORDER BY id")

    assert answer["ok"], answer
    assert answer["description"] == [
        [name, vector_type] for name, vector_type in zip(TYPED_NAMES, TYPED_VECTORS, strict=True)
    ]
    assert exact(decode_rows(answer["rows"])) == exact(TYPED_EXPECTED)


@pytest.mark.timeout(60)
def test_the_whole_demo_dataset_comes_through_unchanged(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    conn = demo_connection(connector, gateway, access_token=gateway.demo_token)

    for table in ("customers", "orders"):
        sql = f"SELECT * FROM {table} ORDER BY id"  # noqa: S608 - fixed table names
        rows = connector.rows(conn, sql)
        assert exact(rows) == exact(demo_rows(gateway.home, sql)), table
    assert len(rows) == 400
    # What the data is there for: non-ASCII text and NULLs made it.
    assert any(isinstance(row[7], str) and "—" in row[7] for row in rows)
    assert any(row[6] is None for row in rows)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["password", "bearer"])
def test_the_connector_browses_catalogs_schemas_tables_and_columns(
    gateway: Gateway, connector: Connector, alice: str, mode: str
) -> None:
    credentials = (
        {"username": "alice", "password": alice} if mode == "password" else {"access_token": alice}
    )
    conn = demo_connection(connector, gateway, **credentials)

    answer = connector.call(
        "browse", conn=conn, catalog=CATALOG, database=SQLITE_SCHEMA, table="orders"
    )

    assert answer["ok"], answer
    assert answer["catalogs"] == [[CATALOG, True]]
    assert answer["schemas"] == [SQLITE_SCHEMA]
    assert answer["tables"] == ["customers", "orders"]
    # Hive-style names, which the connector's SQLAlchemy dialect maps to types.
    assert answer["columns"] == [
        ["id", "int"],
        ["customer_id", "int"],
        ["ordered_at", "timestamp"],
        ["status", "string"],
        ["quantity", "int"],
        ["unit_price", "double"],
        ["discount", "double"],
        ["note", "string"],
    ]


# -- errors and isolation ----------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_sql_error_is_invalid_argument_with_the_database_message_and_the_connection_lives(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    conn = demo_connection(connector, gateway, username="alice", password=alice)

    answer = connector.execute(conn, "SELECT * FROM no_such_table")

    assert not answer["ok"], answer
    assert answer["error"]["code"] == "INVALID_ARGUMENT", answer
    assert "no such table: no_such_table" in answer["error"]["details"]
    assert connector.rows(conn, "SELECT count(*) FROM customers") == [[120]]


@pytest.mark.timeout(60)
def test_one_session_cannot_read_another_sessions_query(
    gateway: Gateway, connector: Connector, alice: str
) -> None:
    mine = demo_connection(connector, gateway, username="alice", password=alice)
    # Another session of the same user: queries belong to sessions, not to users.
    other = demo_connection(connector, gateway, username="alice", password=PASSWORD)
    assert connector.rows(other, "SELECT 1") == [[1]]  # it has a session
    started = connector.execute(mine, "SELECT id FROM customers WHERE id <= 2", keep="kept")
    assert started["ok"], started

    stolen = connector.call(
        "read_query", conn=other, query_id=started["query_id"], engine_ip=started["engine_ip"]
    )

    assert stolen["ok"], stolen
    for call in ("metadata", "batch"):
        assert_error(stolen[call], "NOT_FOUND", "no such query")
    # The owner still reads every row.
    fetched = connector.call("fetch", cursor="kept")
    assert fetched["ok"], fetched
    assert fetched["rows"] == [[1], [2]]


# -- TLS ---------------------------------------------------------------------------------------


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, signed by its own key; (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "gateway.crt", folder / "gateway.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.timeout(60)
def test_tls_serves_the_connector_and_refuses_plaintext(
    start_gateway: StartGateway, connector: Connector, alice: str, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    gateway = start_gateway("--demo", "--tls-cert", str(cert), "--tls-key", str(key))

    secure = demo_connection(
        connector, gateway, username="alice", password=alice, secure=True, ssl_cert=str(cert)
    )
    plain = demo_connection(connector, gateway, username="alice", password=alice)

    assert connector.rows(secure, "SELECT count(*) FROM customers") == [[120]]
    refused = connector.execute(plain, "SELECT 1")
    assert not refused["ok"], refused
    assert refused["error"]["code"] == "UNAVAILABLE", refused


# -- gRPC services beside QueryEngineService (plain grpc: no connector here) -------------------


@pytest.mark.timeout(60)
def test_health_checking_and_reflection(gateway: Gateway) -> None:
    with grpc.insecure_channel(f"{gateway.host}:{gateway.port}") as channel:
        # The stubs' types do not declare the generated methods.
        health: Any = health_pb2_grpc.HealthStub(channel)
        for service in ("", "QueryEngineService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service

        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        [response] = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        names = {service.name for service in response.list_services_response.service}
        assert {"QueryEngineService", "grpc.health.v1.Health"} <= names


@pytest.mark.timeout(60)
def test_a_query_call_without_credentials_is_refused(gateway: Gateway) -> None:
    with grpc.insecure_channel(f"{gateway.host}:{gateway.port}") as channel:
        # An empty GetSchemaNamesV2Request: no session id, no bearer token.
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/QueryEngineService/getSchemaNamesV2"
        )
        with pytest.raises(grpc.RpcError) as refused:
            call(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "authentication required"


# -- audit -----------------------------------------------------------------------------------

WRONG_PASSWORD = "not her password"


def audit_json(home: Path, *args: str) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = json.loads(
        run_cli(home, "audit", "--json", "--limit", "1000", *args).stdout
    )
    return answer


def table_dump(home: Path) -> str:
    connection = sqlite3.connect(home / "e6auth.db")
    try:
        rows = [
            *connection.execute("SELECT * FROM e6auth_auth_events"),
            *connection.execute("SELECT * FROM e6auth_query_events"),
        ]
    finally:
        connection.close()
    return repr(rows)


@pytest.mark.timeout(120)
def test_handshakes_refusals_and_queries_are_audited_with_their_token_and_no_secret(
    start_gateway: StartGateway, connector: Connector, store: TokenStore, alice: str
) -> None:
    gateway = start_gateway("--demo", E6AUTH_AUDIT_FLUSH_SECONDS="3600")
    token_id = split_token(alice).id
    guess = forged(alice)

    by_token = demo_connection(connector, gateway, username="alice", password=alice)
    assert connector.rows(by_token, "SELECT count(*) FROM orders") == [[400]]
    by_password = demo_connection(connector, gateway, username="alice", password=PASSWORD)
    assert connector.rows(by_password, "SELECT 7") == [[7]]
    failing = connector.execute(by_password, "SELECT * FROM no_such_table")
    assert not failing["ok"], failing
    wrong = demo_connection(connector, gateway, username="alice", password=WRONG_PASSWORD)
    assert_error(connector.execute(wrong, "SELECT 1"), *UNIFORM)
    # A token typed into the user field, and a guessed token sent as a bearer credential.
    confused = demo_connection(connector, gateway, username=alice, password=PASSWORD)
    assert_error(connector.execute(confused, "SELECT 1"), *UNIFORM)
    bearer = demo_connection(connector, gateway, access_token=guess)
    assert_error(connector.execute(bearer, "SELECT 1"), *UNIFORM)

    assert gateway.stop() == 0  # the audit is written at the latest when the gateway stops

    events = audit_json(gateway.home)
    handshakes = [event for event in events if event["kind"] == "handshake"]
    accepted = {(e["user"], e["method"], e["token_id"]) for e in handshakes if e["result"] == "ok"}
    assert accepted == {("alice", "token", token_id), ("alice", "password", None)}
    refused = {(e["user"], e["reason"]) for e in handshakes if e["result"] == "refused"}
    assert ("alice", "bad_password") in refused
    assert (None, "unknown_user") in refused, "a token in the user field is not stored"
    assert all(event["peer"] == "127.0.0.1" for event in handshakes), handshakes
    calls = [event for event in events if event["kind"] == "call"]
    assert calls, events
    assert all(event["result"] == "refused" for event in calls)
    assert {
        (event["reason"], event["token_id"], event["user"])
        for event in calls
        if event["reason"] == "bad_token_secret"
    } == {("bad_token_secret", token_id, "alice")}, calls
    assert all(event["method"].startswith("/QueryEngineService/") for event in calls)
    assert [event["kind"] for event in audit_json(gateway.home, "--user", "nobody")] == []

    queries = audit_json(gateway.home, "--queries")
    ran = {(q["statement"], q["user"], q["token_id"], q["result"]) for q in queries}
    assert ("SELECT count(*) FROM orders", "alice", token_id, "ok") in ran
    assert ("SELECT 7", "alice", None, "ok") in ran
    assert ("SELECT * FROM no_such_table", "alice", None, "error") in ran
    assert all(q["peer"] == "127.0.0.1" and q["query_id"] for q in queries), queries

    table = run_cli(gateway.home, "audit").stdout
    assert token_id in table
    assert "bad_password" in table

    dump = table_dump(gateway.home)
    for secret in (alice, split_token(alice).secret, guess, split_token(guess).secret):
        assert secret not in dump
    for password in (PASSWORD, WRONG_PASSWORD):
        assert password not in dump


# -- stopping ----------------------------------------------------------------------------------

ENDLESS_SQLITE_QUERY = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000000000)"
    " SELECT count(*) FROM n"
)

GRACE_SECONDS = 5.0


@pytest.mark.timeout(60)
def test_sigterm_stops_within_the_grace_period_and_flushes_last_used_times(
    start_gateway: StartGateway, connector: Connector, alice: str
) -> None:
    gateway = start_gateway(
        "--demo",
        # Never flushed on the way: only the flush on stopping can write the last use.
        E6AUTH_LAST_USED_FLUSH_SECONDS="3600",
        E6AUTH_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
    )
    conn = demo_connection(connector, gateway, username="alice", password=alice)
    assert connector.rows(conn, "SELECT 1") == [[1]]

    def alices_token() -> dict[str, Any]:
        listed = json.loads(
            run_cli(gateway.home, "token", "list", "--user", "alice", "--json").stdout
        )
        assert len(listed) == 1, listed
        token: dict[str, Any] = listed[0]
        return token

    assert alices_token()["last_used_at"] is None
    used_before = dt.datetime.now(dt.UTC)

    stopping = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    code = gateway.process.wait(GRACE_SECONDS + 10)
    stopped_in = time.monotonic() - stopping

    assert code == 0, gateway.log.text
    assert stopped_in <= GRACE_SECONDS, f"took {stopped_in:.1f} s"
    token = alices_token()
    assert token["last_used_at"] is not None, token
    last_used = dt.datetime.fromisoformat(token["last_used_at"])
    assert used_before - dt.timedelta(seconds=30) <= last_used <= used_before, token
    assert token["last_used_peers"] == ["127.0.0.1"], token


@pytest.mark.timeout(60)
def test_sigterm_cuts_a_call_still_running_after_the_grace_period_and_exits(
    start_gateway: StartGateway, connector: Connector, alice: str
) -> None:
    grace = 1.0
    gateway = start_gateway("--demo", E6AUTH_SHUTDOWN_GRACE_SECONDS=str(grace))
    conn = demo_connection(connector, gateway, username="alice", password=alice)
    assert connector.rows(conn, "SELECT 1") == [[1]]
    connector.send("execute", conn=conn, sql=ENDLESS_SQLITE_QUERY)
    time.sleep(0.5)  # it is running: SQLite counts for minutes

    stopping = time.monotonic()
    gateway.process.send_signal(signal.SIGTERM)
    code = gateway.process.wait(30)
    stopped_in = time.monotonic() - stopping
    answer = connector.receive()

    assert code == 0, gateway.log.text
    # The signal is noticed within half a second, then calls get the grace period; the running
    # statement is cancelled, not waited for.
    assert grace <= stopped_in <= grace + 2.0, f"took {stopped_in:.1f} s"
    assert not answer["ok"], answer
    assert answer["error"]["code"] == "UNAVAILABLE", answer
