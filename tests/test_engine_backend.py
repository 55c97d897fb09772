"""SQLAlchemyBackend on SQLite and on the real PostgreSQL: browsing, running, errors, cancel."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects import postgresql

from e6auth.errors import QueryCancelled, QueryError
from e6auth.query import QueryRun, SQLAlchemyBackend
from e6auth.query.keywords import first_keyword
from e6auth.query.type_names import hive_type_name

ITEMS = (
    "CREATE TABLE items (id BIGINT, qty INTEGER, price DOUBLE PRECISION, name VARCHAR(20),"
    " active BOOLEAN, added DATE, seen TIMESTAMP, amount NUMERIC(10,2), note TEXT)"
)
ONE_ITEM = (
    "INSERT INTO items VALUES"
    " (1, 2, 2.5, 'é', TRUE, '2024-01-02', '2024-01-02 03:04:05', 12.34, NULL)"
)
# Runs until stopped: a long statement on each database.
ENDLESS = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
    " SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(30)",
}


def run_sql(
    backend: SQLAlchemyBackend, sql: str, *, schema: str | None = ""
) -> tuple[list[str], list[tuple[Any, ...]], int]:
    """Column names, all rows and affected rows of one statement."""
    with backend.run(sql, catalog="", schema=schema) as run:
        names = run.execute()
        rows: list[tuple[Any, ...]] = []
        while batch := run.fetch(100):
            rows.extend(tuple(row) for row in batch)
    return names, rows, run.affected_rows


def execute_and_fetch(run: QueryRun) -> None:
    with run:
        run.execute()
        run.fetch(1)


def dialect_of(url: str) -> str:
    return make_url(url).get_backend_name()


def default_schema(backend: SQLAlchemyBackend, url: str) -> str:
    if dialect_of(url) == "sqlite":
        return "main"
    return str(run_sql(backend, "SELECT current_schema()")[1][0][0])


@pytest.fixture
def backend(store_url: str) -> Iterator[SQLAlchemyBackend]:
    backend = SQLAlchemyBackend(store_url)
    run_sql(backend, ITEMS)
    run_sql(backend, ONE_ITEM)
    try:
        yield backend
    finally:
        backend.close()


# --- catalogs and schemas -------------------------------------------------------------------


def test_one_catalog_is_served_and_it_is_the_default(store_url: str) -> None:
    assert SQLAlchemyBackend(store_url).catalogs() == [("default", True)]
    assert SQLAlchemyBackend(store_url, catalog="sales").catalogs() == [("sales", True)]


def test_empty_or_absent_catalog_means_the_default(
    backend: SQLAlchemyBackend, store_url: str
) -> None:
    # Other tests' schemas come and go in the shared PostgreSQL database between the three
    # calls (a CI run failed on one created meanwhile): compare all the others.
    own = default_schema(backend, store_url)

    def settled(catalog: str | None) -> list[str]:
        return [s for s in backend.schemas(catalog) if s == own or not s.startswith("e6auth_test_")]

    assert settled("") == settled(None) == settled("default")
    assert own in settled("")


def test_unknown_catalog_is_refused_naming_the_served_one(backend: SQLAlchemyBackend) -> None:
    calls: list[Callable[[], object]] = [
        lambda: backend.schemas("other"),
        lambda: backend.tables("other", ""),
        lambda: backend.columns("other", "", "items"),
        lambda: backend.run("SELECT 1", catalog="other", schema="").execute(),
        lambda: backend.explain("SELECT 1", catalog="other", schema=""),
        lambda: backend.dry_run("SELECT 1", catalog="other", schema=""),
    ]
    for call in calls:
        with pytest.raises(QueryError, match=r"unknown catalog 'other'.*serves catalog 'default'"):
            call()


def test_schemas_include_the_default_schema(backend: SQLAlchemyBackend, store_url: str) -> None:
    assert default_schema(backend, store_url) in backend.schemas("")


def test_tables_list_tables_and_views(backend: SQLAlchemyBackend, store_url: str) -> None:
    run_sql(backend, "CREATE VIEW cheap AS SELECT * FROM items WHERE price < 10")
    assert backend.tables("", "") == ["cheap", "items"]
    assert backend.tables("", default_schema(backend, store_url)) == ["cheap", "items"]


def test_columns_have_type_names_the_connectors_dialect_maps(backend: SQLAlchemyBackend) -> None:
    assert backend.columns("", "", "items") == [
        ("id", "bigint"),
        ("qty", "int"),
        ("price", "double"),
        ("name", "varchar(20)"),
        ("active", "boolean"),
        ("added", "date"),
        ("seen", "timestamp"),
        ("amount", "decimal(10,2)"),
        ("note", "string"),
    ]


def test_unknown_schema_or_table_is_a_query_error(backend: SQLAlchemyBackend) -> None:
    for call in (
        lambda: backend.tables("", "nowhere"),
        lambda: backend.columns("", "nowhere", "items"),
        lambda: run_sql(backend, "SELECT 1", schema="nowhere"),
        lambda: backend.explain("SELECT 1", catalog="", schema="nowhere"),
    ):
        with pytest.raises(QueryError, match="unknown schema 'nowhere'"):
            call()
    with pytest.raises(QueryError, match="unknown table 'missing'"):
        backend.columns("", "", "missing")


# --- running statements ---------------------------------------------------------------------


def test_select_returns_names_and_rows(backend: SQLAlchemyBackend) -> None:
    names, rows, _ = run_sql(backend, "SELECT id, name, note FROM items")
    assert names == ["id", "name", "note"]
    assert rows == [(1, "é", None)]


def test_percent_signs_and_colons_are_sql_not_parameters(backend: SQLAlchemyBackend) -> None:
    rows = run_sql(backend, "SELECT 'a%b', '%s', ':name', '12:30' WHERE 'x' LIKE '%'")[1]
    assert rows == [("a%b", "%s", ":name", "12:30")]


def test_settings_are_checked_once(store_url: str) -> None:
    for options in ({"catalog": ""}, {"statement_timeout_seconds": 0}, {"pool_size": 0}):
        with pytest.raises(ValueError, match="must"):
            SQLAlchemyBackend(store_url, **options)


def test_statement_without_rows_reports_affected_rows_and_commits(
    backend: SQLAlchemyBackend,
) -> None:
    names, rows, affected = run_sql(backend, "UPDATE items SET qty = qty + 1")
    assert (names, rows, affected) == ([], [], 1)
    assert run_sql(backend, "SELECT qty FROM items")[1] == [(3,)]


def test_a_run_left_by_an_error_rolls_back(backend: SQLAlchemyBackend) -> None:
    def insert_then_fail() -> None:
        with backend.run(ONE_ITEM, catalog="", schema="") as run:
            run.execute()
            raise RuntimeError("the reader went away")

    with pytest.raises(RuntimeError):
        insert_then_fail()
    assert run_sql(backend, "SELECT count(*) FROM items")[1] == [(1,)]


def test_database_error_is_a_query_error_with_the_databases_message(
    backend: SQLAlchemyBackend,
) -> None:
    with pytest.raises(QueryError) as raised:
        run_sql(backend, "SELECT * FROM missing_table")
    assert "missing_table" in raised.value.detail
    assert raised.value.__cause__ is None  # no driver exception travels with it
    assert "[SQL:" not in raised.value.detail


def test_unreachable_database_names_no_host_user_or_password(tmp_path: Path) -> None:
    for url in (
        "postgresql+psycopg://someone:Secr3tPassw0rd@127.0.0.1:1/db?connect_timeout=2",
        f"sqlite:///{tmp_path}/no/such/folder/x.db",
    ):
        backend = SQLAlchemyBackend(url)
        with pytest.raises(QueryError) as raised:
            run_sql(backend, "SELECT 1")
        message = raised.value.detail
        assert message.startswith("database unavailable (")
        for secret in ("Secr3tPassw0rd", "someone", "127.0.0.1", str(tmp_path)):
            assert secret not in message


@pytest.mark.postgres
def test_password_in_a_database_message_is_masked(postgres_url: str) -> None:
    url = make_url(postgres_url)
    if url.password is None:
        url = url.set(password="Secr3tPassw0rd")  # the test server trusts local connections
    password = str(url.password)
    backend = SQLAlchemyBackend(url.render_as_string(hide_password=False))
    with pytest.raises(QueryError) as raised:
        run_sql(backend, f"SELECT '{password}'::int")
    assert password not in raised.value.detail
    assert "***" in raised.value.detail


def test_explain_and_dry_run_do_not_run_the_statement(backend: SQLAlchemyBackend) -> None:
    plan = backend.explain("SELECT * FROM items WHERE id = 1", catalog="", schema="")
    assert "items" in plan.lower()
    checked = json.loads(backend.dry_run(ONE_ITEM, catalog="", schema=""))
    assert checked["valid"] is True
    assert run_sql(backend, "SELECT count(*) FROM items")[1] == [(1,)]


def test_dry_run_of_an_invalid_statement_is_a_query_error(backend: SQLAlchemyBackend) -> None:
    with pytest.raises(QueryError, match="missing_table"):
        backend.dry_run("SELECT * FROM missing_table", catalog="", schema="")


@pytest.mark.postgres
def test_dry_run_of_ddl_on_postgres_says_it_cannot_tell(postgres_url: str) -> None:
    backend = SQLAlchemyBackend(postgres_url)
    checked = json.loads(backend.dry_run("CREATE TABLE t (a int)", catalog="", schema=""))
    assert checked["valid"] is None
    assert "t" not in backend.tables("", "")


@pytest.mark.postgres
def test_a_dry_run_that_postgres_cannot_check_still_refuses_what_a_run_refuses(
    postgres_url: str,
) -> None:
    """Its answer takes no connection, but an unknown catalog and a cancel end it as they end
    a run."""
    backend = SQLAlchemyBackend(postgres_url)
    try:
        with pytest.raises(QueryError, match="unknown catalog"):
            backend.dry_run("CREATE TABLE t (a int)", catalog="elsewhere", schema="")
        dry_run = backend.start_dry_run("CREATE TABLE t (a int)", catalog="", schema="")
        dry_run.cancel()
        with pytest.raises(QueryCancelled):
            dry_run.result()
    finally:
        backend.close()


# --- cancel and timeouts --------------------------------------------------------------------


def test_cancel_stops_a_running_statement(store_url: str) -> None:
    backend = SQLAlchemyBackend(store_url, pool_size=1)
    run = backend.run(ENDLESS[dialect_of(store_url)], catalog="", schema="")
    started = time.monotonic()
    timer = threading.Timer(0.2, run.cancel)
    timer.start()
    with pytest.raises(QueryCancelled):
        execute_and_fetch(run)
    assert time.monotonic() - started < 5
    # The one pooled connection came back and is usable.
    assert run_sql(backend, "SELECT 1")[1] == [(1,)]


def test_cancel_before_execute_runs_nothing(backend: SQLAlchemyBackend) -> None:
    run = backend.run("DELETE FROM items", catalog="", schema="")
    run.cancel()
    with pytest.raises(QueryCancelled):
        execute_and_fetch(run)
    assert run_sql(backend, "SELECT count(*) FROM items")[1] == [(1,)]


def test_a_late_cancel_does_not_reach_the_connections_next_user(store_url: str) -> None:
    backend = SQLAlchemyBackend(store_url, pool_size=1)
    finished = backend.run("SELECT 1", catalog="", schema="")
    with finished:
        finished.execute()
    finished.cancel()
    assert run_sql(backend, "SELECT 2")[1] == [(2,)]


def test_statement_timeout(store_url: str) -> None:
    backend = SQLAlchemyBackend(store_url, statement_timeout_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(QueryError, match="timeout") as raised:
        run_sql(backend, ENDLESS[dialect_of(store_url)])
    assert not isinstance(raised.value, QueryCancelled)
    assert time.monotonic() - started < 5


# --- isolation between users ----------------------------------------------------------------


def test_sqlite_statements_cannot_open_other_files(tmp_path: Path) -> None:
    backend = SQLAlchemyBackend(f"sqlite:///{tmp_path}/data.db")
    run_sql(backend, ITEMS)
    for sql in (
        f"ATTACH DATABASE '{tmp_path}/other.db' AS other",
        f"VACUUM INTO '{tmp_path}/copy.db'",
    ):
        with pytest.raises(QueryError, match=r"not authorized|authorization denied"):
            run_sql(backend, sql)
    assert sorted(path.name for path in tmp_path.glob("*.db")) == ["data.db"]


def test_sqlite_pragmas_may_read_but_not_change_the_connection(tmp_path: Path) -> None:
    backend = SQLAlchemyBackend(f"sqlite:///{tmp_path}/data.db", pool_size=1)
    run_sql(backend, ITEMS)
    assert [row[1] for row in run_sql(backend, "PRAGMA table_info(items)")[1]][:2] == ["id", "qty"]
    with pytest.raises(QueryError, match="not authorized"):
        run_sql(backend, "PRAGMA foreign_keys = OFF")
    # Still on for the next statement on the same connection.
    run_sql(backend, "CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    run_sql(backend, "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id))")
    with pytest.raises(QueryError, match="FOREIGN KEY"):
        run_sql(backend, "INSERT INTO child VALUES (42)")


@pytest.mark.postgres
def test_session_state_does_not_outlive_a_query(postgres_url: str) -> None:
    backend = SQLAlchemyBackend(postgres_url, pool_size=1)  # every run on the same connection
    baseline = run_sql(backend, "SHOW statement_timeout")[1]
    run_sql(backend, "CREATE TEMP TABLE leftover (a int)")
    run_sql(backend, "SET statement_timeout = 1234")
    assert run_sql(backend, "SHOW statement_timeout")[1] == baseline
    with pytest.raises(QueryError, match="leftover"):
        run_sql(backend, "SELECT * FROM leftover")


@pytest.mark.postgres
def test_request_schema_becomes_the_search_path_and_hostile_names_are_inert(
    postgres_url: str,
) -> None:
    backend = SQLAlchemyBackend(postgres_url)
    home = default_schema(backend, postgres_url)
    hostile = 'x"; DROP TABLE victim; --'
    quoted = '"x""; DROP TABLE victim; --"'
    run_sql(backend, "CREATE TABLE victim (v int)")
    run_sql(backend, "INSERT INTO victim VALUES (1)")
    run_sql(backend, f"CREATE SCHEMA {quoted}")
    try:
        run_sql(backend, f"CREATE TABLE {quoted}.victim (v int)")
        run_sql(backend, f"INSERT INTO {quoted}.victim VALUES (2)")  # noqa: S608
        assert run_sql(backend, "SELECT v FROM victim", schema=hostile)[1] == [(2,)]
        assert run_sql(backend, "SELECT v FROM victim", schema=home)[1] == [(1,)]
        assert backend.tables("", hostile) == ["victim"]
        with pytest.raises(QueryError, match="unknown schema"):
            run_sql(backend, "SELECT 1", schema='y"; DROP TABLE victim; --')
        assert run_sql(backend, "SELECT v FROM victim", schema=home)[1] == [(1,)]
    finally:
        run_sql(backend, f"DROP SCHEMA {quoted} CASCADE")


# --- PostgreSQL streaming -------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_streams_a_query_in_batches(postgres_url: str) -> None:
    backend = SQLAlchemyBackend(postgres_url)
    with backend.run("SELECT g FROM generate_series(1, 25000) g", catalog="", schema="") as run:
        assert run.execute() == ["g"]
        sizes = []
        while batch := run.fetch(10_000):
            sizes.append(len(batch))
    assert sizes == [10_000, 10_000, 5_000]


@pytest.mark.postgres
def test_postgres_error_in_a_streamed_query_shows_the_users_statement(postgres_url: str) -> None:
    backend = SQLAlchemyBackend(postgres_url)
    with pytest.raises(QueryError) as raised:
        run_sql(backend, "select * from nope")
    lines = raised.value.detail.splitlines()
    assert "DECLARE" not in raised.value.detail
    assert lines[1] == "LINE 1: select * from nope"
    assert lines[2].index("^") == lines[1].index("nope")


@pytest.mark.postgres
def test_postgres_runs_writes_that_return_rows(postgres_url: str) -> None:
    backend = SQLAlchemyBackend(postgres_url)
    run_sql(backend, "CREATE TABLE t (a int)")
    inserted = "WITH x AS (INSERT INTO t VALUES (5) RETURNING a) SELECT a FROM x"
    assert run_sql(backend, inserted)[1] == [(5,)]
    assert run_sql(backend, "INSERT INTO t VALUES (6) RETURNING a")[1] == [(6,)]
    assert run_sql(backend, "SELECT a FROM t ORDER BY a")[1] == [(5,), (6,)]


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "name"),
    [
        (sqltypes.Boolean(), "boolean"),
        (sqltypes.SmallInteger(), "smallint"),
        (sqltypes.Integer(), "int"),
        (sqltypes.BigInteger(), "bigint"),
        (sqltypes.REAL(), "double"),
        (postgresql.DOUBLE_PRECISION(), "double"),
        (sqltypes.Numeric(), "decimal"),
        (sqltypes.Numeric(38, 0), "decimal(38,0)"),
        (sqltypes.String(), "string"),
        (sqltypes.String(12), "varchar(12)"),
        (sqltypes.CHAR(3), "char(3)"),
        (sqltypes.Text(), "string"),
        (sqltypes.Date(), "date"),
        (sqltypes.DateTime(timezone=True), "timestamp"),
        (sqltypes.Time(), "string"),
        (postgresql.INTERVAL(), "interval day to second"),
        (sqltypes.LargeBinary(), "binary"),
        (sqltypes.VARBINARY(16), "binary"),
        (postgresql.BYTEA(), "binary"),
        (postgresql.ARRAY(sqltypes.Integer()), "array<int>"),
        (postgresql.JSONB(), "string"),
        (sqltypes.Uuid(), "string"),
        (sqltypes.NullType(), "string"),
    ],
)
def test_hive_type_names(type_: sqltypes.TypeEngine[Any], name: str) -> None:
    assert hive_type_name(type_) == name


@pytest.mark.parametrize(
    ("sql", "keyword"),
    [
        ("SELECT 1", "select"),
        ("  -- a comment\n /* another */ (select 1)", "select"),
        ("With x AS (SELECT 1) SELECT * FROM x", "with"),
        ("insert into t values (1)", "insert"),
        ("", ""),
        ("-- only a comment", ""),
    ],
)
def test_first_keyword(sql: str, keyword: str) -> None:
    assert first_keyword(sql) == keyword
