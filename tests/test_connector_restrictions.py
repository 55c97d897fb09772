"""Per-token restrictions end to end: the real e6data connector against a real `e6auth serve`.

A read-only token can read but its writes are refused by the database (PERMISSION_DENIED), on the
SQLite default and on PostgreSQL; a token limited to address ranges works from loopback only if
loopback is in them. (A live connection cannot change its address here: that a session is checked
on every call is tested at the Authenticator level, in test_restrictions.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from test_connector import (  # the harness: gateway processes and the connector worker
    CATALOG,
    PASSWORD,
    Connector,
    Gateway,
    StartGateway,
    assert_error,
    connector,
    home,
    settings,
    start_gateway,
    store,
)

from e6auth import TokenStore

__all__ = ["connector", "home", "settings", "start_gateway", "store"]  # fixtures, used by name

NOT_FROM_HERE = ("PERMISSION_DENIED", "this token may not be used from this address")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def query_gateway(request: pytest.FixtureRequest, start_gateway: StartGateway) -> Gateway:
    """A gateway on its default SQLite query database, or on a private PostgreSQL schema."""
    if request.param == "sqlite":
        return start_gateway()
    url: str = request.getfixturevalue("postgres_url")
    return start_gateway("--query-url", url)


def credentials(mode: str, token: str) -> dict[str, Any]:
    return (
        {"username": "alice", "password": token} if mode == "password" else {"access_token": token}
    )


def ok_rows(connector: Connector, conn: str, sql: str) -> list[list[object]]:
    answer = connector.execute(conn, sql)
    assert answer["ok"], answer
    rows: list[list[object]] = answer["rows"]
    return rows


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["password", "bearer"])
def test_a_read_only_token_reads_and_every_write_is_refused(
    query_gateway: Gateway, connector: Connector, store: TokenStore, mode: str
) -> None:
    store.create_user("alice", PASSWORD)
    writer = store.create_token("alice").token
    reader = store.create_token("alice", read_only=True).token
    admin = connector.connect(query_gateway, catalog=CATALOG, **credentials(mode, writer))
    for sql in (
        "CREATE TABLE notes (id INTEGER, body VARCHAR(20))",
        "INSERT INTO notes VALUES (1, 'one'), (2, 'two')",
    ):
        answer = connector.execute(admin, sql)
        assert answer["ok"], answer
    before = ok_rows(connector, admin, "SELECT id, body FROM notes ORDER BY id")
    assert before == [[1, "one"], [2, "two"]]

    conn = connector.connect(query_gateway, catalog=CATALOG, **credentials(mode, reader))
    assert ok_rows(connector, conn, "SELECT id, body FROM notes ORDER BY id") == before
    writes = [
        "INSERT INTO notes VALUES (3, 'three')",
        "UPDATE notes SET body = 'changed'",
        "DELETE FROM notes",
        "CREATE TABLE other (x INTEGER)",
        "DROP TABLE notes",
        "COMMIT",  # harmless alone; it must not open a way for what follows
    ]
    for sql in writes[:-1]:
        answer = connector.execute(conn, sql)
        assert not answer["ok"], (sql, answer)
        assert answer["error"]["code"] == "PERMISSION_DENIED", (sql, answer)
        assert answer["error"]["details"].startswith("read-only token: "), (sql, answer)
    # "a; b" is one statement for PostgreSQL's simple protocol: not for a read-only token.
    escape = connector.execute(conn, "COMMIT; DELETE FROM notes")
    assert not escape["ok"], escape
    # The connection lives on, and the data is as it was.
    assert ok_rows(connector, conn, "SELECT count(*) FROM notes") == [[2]]
    assert ok_rows(connector, admin, "SELECT id, body FROM notes ORDER BY id") == before
    missing = connector.execute(admin, "SELECT * FROM other")
    assert not missing["ok"], missing
    assert missing["error"]["code"] == "INVALID_ARGUMENT", missing


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["password", "bearer"])
def test_a_token_works_only_from_its_address_ranges(
    start_gateway: StartGateway, connector: Connector, store: TokenStore, mode: str
) -> None:
    gateway = start_gateway("--demo")
    store.create_user("alice", PASSWORD)
    loopback = store.create_token("alice", allow_from=["127.0.0.0/8", "::1/128"]).token
    elsewhere = store.create_token("alice", allow_from=["10.0.0.0/8"]).token

    allowed = connector.connect(gateway, catalog=CATALOG, **credentials(mode, loopback))
    assert ok_rows(connector, allowed, "SELECT count(*) FROM customers") == [[120]]

    refused = connector.connect(gateway, catalog=CATALOG, **credentials(mode, elsewhere))
    answer = connector.execute(refused, "SELECT count(*) FROM customers")
    assert_error(answer, *NOT_FROM_HERE)
    for token in (loopback, elsewhere):
        assert token not in gateway.log.text
    # The allowed connection was not disturbed.
    assert ok_rows(connector, allowed, "SELECT count(*) FROM customers") == [[120]]
