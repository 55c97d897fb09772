"""Read-only statements on SQLite and the real PostgreSQL: the database refuses every write, and
hostile statements cannot escape the read-only transaction. No SQL is parsed to decide this."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from e6auth.errors import QueryError, ReadOnlyViolation
from e6auth.query import QueryManager, SQLAlchemyBackend

ROWS = [(1, "one"), (2, "two"), (3, "three")]

# Plain writes: each must come back as ReadOnlyViolation (PERMISSION_DENIED), on both databases.
WRITES = [
    "INSERT INTO items VALUES (4, 'four')",
    "UPDATE items SET name = 'x'",
    "DELETE FROM items",
    "CREATE TABLE other (x INTEGER)",
    "CREATE TEMP TABLE other (x INTEGER)",
    "CREATE INDEX items_name ON items (name)",
    "CREATE VIEW v AS SELECT 1 AS x",
    "ALTER TABLE items ADD COLUMN extra INTEGER",
    "DROP TABLE items",
]

# Tricks that get past SQL parsers. They may fail as anything, or succeed harmlessly: what is
# checked is that the data is unchanged and that later statements are still read-only.
HOSTILE_COMMON = [
    "SELECT 1; DELETE FROM items",
    "COMMIT; DELETE FROM items",
    "ROLLBACK; DELETE FROM items",
    "BEGIN; DELETE FROM items; COMMIT",
    "WITH gone AS (DELETE FROM items RETURNING id) SELECT * FROM gone",
    "SAVEPOINT s",
    "COMMIT",
]
HOSTILE = {
    "sqlite": [
        "PRAGMA query_only = 0",
        "PRAGMA user_version = 7",
        "PRAGMA journal_mode = DELETE",
        "ATTACH DATABASE ':memory:' AS elsewhere",
        "VACUUM",
        "REINDEX",
        "ANALYZE",
        "BEGIN IMMEDIATE",
        "REPLACE INTO items VALUES (1, 'replaced')",
        "INSERT OR IGNORE INTO items VALUES (9, 'nine')",
        "CREATE TRIGGER t AFTER INSERT ON items BEGIN DELETE FROM items; END",
    ],
    "postgresql": [
        "SET TRANSACTION READ WRITE",
        "SET TRANSACTION READ WRITE; DELETE FROM items",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT; DELETE FROM items",
        "SET default_transaction_read_only = off",
        "SET default_transaction_read_only = off; COMMIT; DELETE FROM items",
        "SELECT set_config('transaction_read_only', 'off', false)",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "DO $$ BEGIN DELETE FROM items; END $$",
        "DO $$ BEGIN COMMIT; DELETE FROM items; END $$",
        "DO $$ BEGIN SET TRANSACTION READ WRITE; DELETE FROM items; END $$",
        "DO $$ BEGIN PERFORM set_config('transaction_read_only', 'off', true);"
        " DELETE FROM items; END $$",
        "SELECT remove_items()",
        "CALL remove_items_and_commit()",
        "SELECT nextval('counter')",
        "TRUNCATE items",
        "LOCK TABLE items IN ACCESS EXCLUSIVE MODE",
        "NOTIFY somewhere",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "GRANT SELECT ON items TO PUBLIC",
        "COMMENT ON TABLE items IS 'mine now'",
        "EXPLAIN ANALYZE DELETE FROM items",
        "DECLARE c CURSOR FOR SELECT 1; DELETE FROM items",
        "PREPARE p AS DELETE FROM items",
    ],
}

# Made by a writer before the read-only statements run: things a hostile statement could use.
POSTGRES_SETUP = [
    "CREATE SEQUENCE counter",
    "CREATE FUNCTION remove_items() RETURNS bigint LANGUAGE sql AS 'DELETE FROM items RETURNING 1'",
    "CREATE PROCEDURE remove_items_and_commit() LANGUAGE plpgsql AS"
    " $$ BEGIN DELETE FROM items; COMMIT; END $$",
]


def run_sql(backend: SQLAlchemyBackend, sql: str, *, read_only: bool = False) -> list[Any]:
    with backend.run(sql, catalog="", schema="", read_only=read_only) as run:
        run.execute()
        rows: list[Any] = []
        while batch := run.fetch(100):
            rows.extend(tuple(row) for row in batch)
    return rows


def dialect_of(url: str) -> str:
    return make_url(url).get_backend_name()


def snapshot(backend: SQLAlchemyBackend) -> tuple[list[Any], list[str]]:
    """What a write would change: the rows, and which tables and views exist."""
    return run_sql(backend, "SELECT id, name FROM items ORDER BY id"), backend.tables("", "")


@pytest.fixture
def backend(store_url: str) -> Iterator[SQLAlchemyBackend]:
    # One pooled connection: every statement reuses it, so session state would leak if it could.
    backend = SQLAlchemyBackend(store_url, pool_size=1)
    run_sql(backend, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(20))")
    run_sql(backend, "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    if dialect_of(store_url) == "postgresql":
        for statement in POSTGRES_SETUP:
            run_sql(backend, statement)
    try:
        yield backend
    finally:
        backend.close()


def test_a_read_only_statement_reads(backend: SQLAlchemyBackend) -> None:
    assert run_sql(backend, "SELECT id, name FROM items ORDER BY id", read_only=True) == ROWS
    assert run_sql(
        backend, "WITH t AS (SELECT count(*) AS n FROM items) SELECT n FROM t", read_only=True
    ) == [(3,)]
    # Twice: the second may reuse what the first left on the connection (a prepared statement).
    assert run_sql(backend, "SELECT count(*) FROM items", read_only=True) == [(3,)]
    assert run_sql(backend, "SELECT count(*) FROM items", read_only=True) == [(3,)]


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_by_the_database(backend: SQLAlchemyBackend, sql: str) -> None:
    before = snapshot(backend)
    with pytest.raises(ReadOnlyViolation) as refused:
        run_sql(backend, sql, read_only=True)
    assert refused.value.grpc_status == "PERMISSION_DENIED"
    assert refused.value.reason == "read_only"
    assert refused.value.client_message().startswith("read-only token: ")
    assert snapshot(backend) == before
    # The same statement without the restriction runs: the refusal came from read-only.
    run_sql(backend, sql)


def test_hostile_statements_change_nothing(backend: SQLAlchemyBackend, store_url: str) -> None:
    before = snapshot(backend)
    for sql in HOSTILE_COMMON + HOSTILE[dialect_of(store_url)]:
        with contextlib.suppress(QueryError):
            run_sql(backend, sql, read_only=True)
        assert snapshot(backend) == before, sql
        # Whatever the statement did to the connection, the next read-only one is read-only.
        with pytest.raises(ReadOnlyViolation):
            run_sql(backend, "DELETE FROM items", read_only=True)
        assert snapshot(backend) == before, sql
    # And writers are not left read-only either.
    run_sql(backend, "DELETE FROM items WHERE id = 3")
    assert run_sql(backend, "SELECT count(*) FROM items") == [(2,)]


def test_escapes_are_refused_as_read_only(backend: SQLAlchemyBackend, store_url: str) -> None:
    """The ways out of the transaction that exist come back as PERMISSION_DENIED, not as a
    syntax error: the user should learn it is the token's scope that stopped them."""
    if dialect_of(store_url) == "postgresql":
        escapes = [
            "COMMIT; DELETE FROM items",
            "SELECT 1; DELETE FROM items",
            "SET TRANSACTION READ WRITE",
            "DO $$ BEGIN COMMIT; DELETE FROM items; END $$",
            "SELECT remove_items()",
            "SELECT nextval('counter')",
        ]
    else:
        # (sqlite3 runs one statement per call for every token: "a; b" is refused anyway.)
        escapes = [
            "PRAGMA query_only = 0",
            "ATTACH DATABASE ':memory:' AS elsewhere",
            "BEGIN",
            "COMMIT",
        ]
    for sql in escapes:
        with pytest.raises(ReadOnlyViolation):
            run_sql(backend, sql, read_only=True)


def test_explain_and_dry_run_stay_read_only(backend: SQLAlchemyBackend, store_url: str) -> None:
    before = snapshot(backend)
    assert backend.explain("SELECT * FROM items", catalog="", schema="", read_only=True)
    if dialect_of(store_url) == "postgresql":
        hostile = ["ANALYZE DELETE FROM items", "SELECT 1; COMMIT; DELETE FROM items"]
    else:
        hostile = ["SELECT 1; DELETE FROM items"]
    for sql in hostile:
        with pytest.raises(QueryError):
            backend.explain(sql, catalog="", schema="", read_only=True)
        # PostgreSQL's dry run does not even try ANALYZE: either way nothing runs.
        with contextlib.suppress(QueryError):
            backend.dry_run(sql, catalog="", schema="", read_only=True)
        assert snapshot(backend) == before


def test_query_manager_runs_read_only_queries_read_only(backend: SQLAlchemyBackend) -> None:
    queries = QueryManager(backend, workers=1)
    try:
        before = snapshot(backend)
        reader = queries.prepare("o", "SELECT count(*) FROM items", catalog=None, schema=None)
        writer = queries.prepare(
            "o", "DELETE FROM items", catalog=None, schema=None, read_only=True
        )
        queries.execute("o", reader)
        queries.execute("o", writer)
        assert queries.metadata("o", reader)
        with pytest.raises(ReadOnlyViolation):
            queries.metadata("o", writer)
        assert snapshot(backend) == before
    finally:
        queries.close()


def test_other_databases_refuse_read_only_statements(tmp_path: Path) -> None:
    """Read-only is enforced only where it is implemented; anywhere else it fails closed. (No
    third database is installed here, so a SQLite backend is made to look like one.)"""
    backend = SQLAlchemyBackend(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        backend._dialect_name = "mysql"
        with pytest.raises(ReadOnlyViolation, match="SQLite and PostgreSQL only"):
            run_sql(backend, "SELECT 1", read_only=True)
        with pytest.raises(ReadOnlyViolation, match="SQLite and PostgreSQL only"):
            backend.explain("SELECT 1", catalog="", schema="", read_only=True)
    finally:
        backend.close()
