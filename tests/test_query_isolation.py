"""The query path as a service shared by many users (issue 14), on SQLite and the real PostgreSQL:
what one user's statement does must not persist past a read-only transaction, reach another
user's statement or temporary objects, run during a dry run, or reach the token store."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, make_url, text

from e6auth import Settings
from e6auth.errors import QueryCancelled, QueryError, SettingsError
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.server import build_gateway
from e6auth.query import SQLAlchemyBackend
from e6auth.query.separation import same_database
from e6auth.testing import memory_store
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.parameters import SessionParameters

ROWS = [(1, "one"), (2, "two"), (3, "three")]
WORKTREE = Path(__file__).resolve().parent.parent


def run_sql(backend: SQLAlchemyBackend, sql: str, **options: Any) -> list[tuple[Any, ...]]:
    with backend.run(sql, catalog="", schema="", **options) as run:
        run.execute()
        rows: list[tuple[Any, ...]] = []
        while batch := run.fetch(100):
            rows.extend(tuple(row) for row in batch)
    return rows


def dialect_of(url: str) -> str:
    return make_url(url).get_backend_name()


@pytest.fixture
def backend(store_url: str) -> Iterator[SQLAlchemyBackend]:
    # One pooled connection: every statement reuses it, as the next user's would.
    backend = SQLAlchemyBackend(store_url, pool_size=1)
    run_sql(backend, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(20))")
    run_sql(backend, "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def admin(postgres_admin_url: str) -> Iterator[Any]:
    """An autocommit superuser engine, to look at (and clean up) what the gateway cannot."""
    engine = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()


# --- 3: a read-only statement's transaction never commits ------------------------------------


@pytest.mark.postgres
def test_a_read_only_statement_leaves_no_large_object(postgres_url: str, admin: Any) -> None:
    # PostgreSQL lets a read-only transaction create large objects: only a rollback undoes them.
    backend = SQLAlchemyBackend(postgres_url, pool_size=1)
    made: list[int] = []
    try:
        for sql in ("SELECT lo_from_bytea(0, 'x')", "SELECT lo_create(0)"):
            ((oid,),) = run_sql(backend, sql, read_only=True)
            made.append(oid)
        with admin.connect() as connection:
            left = connection.execute(
                text("SELECT oid FROM pg_largeobject_metadata WHERE oid = ANY(:oids)"),
                {"oids": made},
            ).all()
        assert left == []
    finally:
        with admin.connect() as connection:
            for oid in made:
                connection.execute(
                    text("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = :oid"),
                    {"oid": oid},
                )
        backend.close()


# --- 4: each user's statements run under their own database role -----------------------------


class Roles:
    """A NOSUPERUSER gateway login role, and per-user roles granted to it, dropped afterwards."""

    def __init__(self, admin: Any, schema: str) -> None:
        tag = secrets.token_hex(4)
        self.admin = admin
        self.gateway = f"e6gw_{tag}"
        self.template = f"e6_{tag}_{{username}}"
        self.users = ("alice", "bob")
        self.roles = [self.template.format(username=user) for user in self.users]
        self.schema = schema
        statements = [f"CREATE ROLE {self.gateway} LOGIN NOSUPERUSER NOINHERIT"]
        for role in self.roles:
            statements += [
                f"CREATE ROLE {role} NOLOGIN",
                f"GRANT {role} TO {self.gateway}",
                f'GRANT USAGE ON SCHEMA "{schema}" TO {role}',
            ]
        statements += [
            f'GRANT USAGE ON SCHEMA "{schema}" TO {self.gateway}',
            f'CREATE TABLE "{schema}".secrets (id INTEGER PRIMARY KEY, v TEXT)',
            f"INSERT INTO \"{schema}\".secrets VALUES (1, 'nothing yet')",  # noqa: S608
            f'GRANT SELECT, UPDATE ON "{schema}".secrets TO {", ".join(self.roles)}',
        ]
        with admin.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))

    def url(self) -> str:
        return (
            f"postgresql+psycopg://{self.gateway}@127.0.0.1:5432/test"
            f"?options=-csearch_path%3D{self.schema}"
        )

    def drop(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :u"),
                {"u": self.gateway},
            )
            for role in (*self.roles, self.gateway):
                connection.execute(text(f"DROP OWNED BY {role}"))
                connection.execute(text(f"DROP ROLE {role}"))


@pytest.fixture
def roles(postgres_url: str, admin: Any) -> Iterator[Roles]:
    schema = make_url(postgres_url).query["options"]
    assert isinstance(schema, str)
    made = Roles(admin, schema.removeprefix("-csearch_path="))
    try:
        yield made
    finally:
        made.drop()


def active_pid(admin: Any, fragment: str, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    with admin.connect() as connection:
        while time.monotonic() < deadline:
            pid = connection.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE state = 'active'"
                    " AND query LIKE '%' || :f || '%' AND pid <> pg_backend_pid()"
                ),
                {"f": fragment},
            ).scalar()
            if pid is not None:
                return int(pid)
            time.sleep(0.05)
    pytest.fail(f"no active statement with {fragment!r}")


@pytest.mark.postgres
def test_users_cannot_see_or_cancel_each_others_statements(roles: Roles, admin: Any) -> None:
    backend = SQLAlchemyBackend(roles.url(), role_template=roles.template)
    outcome: list[object] = []

    def alice() -> None:
        try:
            outcome.append(
                run_sql(
                    backend,
                    "UPDATE secrets SET v = 'VICTIM-SECRET' || (SELECT '' FROM pg_sleep(2))",
                    user="alice",
                )
            )
        except QueryError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=alice)
    worker.start()
    try:
        pid = active_pid(admin, "VICTIM-SECRET")
        seen = run_sql(
            backend,
            "SELECT pid, coalesce(query, '') FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
            read_only=True,
            user="bob",
        )
        assert not any("VICTIM-SECRET" in query for _pid, query in seen)
        with pytest.raises(QueryError, match=r"permission denied|must be a member"):
            run_sql(backend, f"SELECT pg_cancel_backend({pid})", read_only=True, user="bob")
    finally:
        worker.join()
        backend.close()
    assert outcome == [[]], outcome
    with admin.connect() as connection:
        query = f'SELECT v FROM "{roles.schema}".secrets'  # noqa: S608 - the test's own schema
        stored = connection.execute(text(query)).scalar()
    assert stored == "VICTIM-SECRET"


@pytest.mark.postgres
def test_statements_run_as_the_users_role_and_browsing_as_the_gateways(roles: Roles) -> None:
    backend = SQLAlchemyBackend(roles.url(), role_template=roles.template, pool_size=1)
    try:
        assert run_sql(backend, "SELECT session_user, current_user", user="alice") == [
            (roles.gateway, roles.roles[0])
        ]
        # On the same connection: the role lasts for its statement's transaction only.
        assert run_sql(backend, "SELECT current_user", read_only=True, user="bob") == [
            (roles.roles[1],)
        ]
        plan = backend.explain("SELECT current_user", catalog="", schema="", user="bob")
        assert plan
        assert '"valid": true' in backend.dry_run(
            "SELECT * FROM secrets", catalog="", schema="", user="bob"
        )
        # One statement at a time for every token: "RESET ROLE; ..." cannot run the rest as
        # the gateway's login role.
        with pytest.raises(QueryError, match="multiple commands"):
            run_sql(backend, "RESET ROLE; SELECT current_user", user="alice")
        # Fail closed: the gateway's own role may see and cancel every user's statements.
        with pytest.raises(QueryError, match="no user"):
            run_sql(backend, "SELECT current_user")
        assert "secrets" in backend.tables("", "")
        assert ("v", "string") in backend.columns("", "", "secrets")
    finally:
        backend.close()


@pytest.mark.postgres
def test_a_user_without_a_database_role_is_told_so(roles: Roles) -> None:
    backend = SQLAlchemyBackend(roles.url(), role_template=roles.template)
    missing = roles.template.format(username="carol")
    try:
        with pytest.raises(QueryError) as raised:
            run_sql(backend, "SELECT 1", user="carol")
        assert str(raised.value.detail) == f"no database role '{missing}' for user carol"
        with pytest.raises(QueryError, match="no database role"):
            backend.dry_run("SELECT 1", catalog="", schema="", user="carol")
        with pytest.raises(QueryError, match="database role name"):
            run_sql(backend, "SELECT 1", user="x" * 80)
    finally:
        backend.close()


def test_role_templates_are_checked_once() -> None:
    url = "postgresql+psycopg://gateway@127.0.0.1:5432/test"  # never connected to
    for bad in ("e6_{user}", "e6_{username!r}", "e6_{username:>9}", "e6_{0}", "e6_{username.x}"):
        with pytest.raises(ValueError, match="role_template"):
            SQLAlchemyBackend(url, role_template=bad)


@pytest.mark.postgres
def test_a_shared_role_is_warned_about(
    postgres_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="e6auth"):
        SQLAlchemyBackend(postgres_url).close()
        SQLAlchemyBackend(postgres_url, role_template="e6_{username}").close()
        SQLAlchemyBackend(f"sqlite:///{tmp_path / 'q.db'}").close()
    warnings = [record for record in caplog.records if "one database role" in record.message]
    assert len(warnings) == 1
    assert "postgres@" not in warnings[0].message


# --- 5: SQLite temporary objects stay with the statement that made them -----------------------


def test_sqlite_temporary_objects_do_not_reach_the_next_user(tmp_path: Path) -> None:
    backend = SQLAlchemyBackend(f"sqlite:///{tmp_path / 'q.db'}", pool_size=1)
    try:
        run_sql(backend, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        run_sql(backend, "INSERT INTO customers VALUES (1, 'real')")
        run_sql(backend, "CREATE TABLE loot (id INTEGER)")
        # alice
        run_sql(backend, "CREATE TEMP VIEW customers AS SELECT 1 AS id, 'fake' AS name")
        run_sql(
            backend,
            "CREATE TEMP TRIGGER copy AFTER INSERT ON main.customers"
            " BEGIN INSERT INTO loot VALUES (new.id); END",
        )
        run_sql(backend, "CREATE TEMP TABLE scratch (x INTEGER)")
        # bob, on the same pooled connection
        assert run_sql(backend, "SELECT name FROM customers") == [("real",)]
        run_sql(backend, "INSERT INTO customers VALUES (2, 'private')")
        assert run_sql(backend, "SELECT count(*) FROM loot") == [(0,)]
        assert run_sql(backend, "SELECT type, name FROM temp.sqlite_master") == []
        # A user's temporary objects still work within their own statement's transaction.
        run_sql(backend, "CREATE TEMP TABLE mine (x INTEGER)")
        assert run_sql(backend, "SELECT name FROM temp.sqlite_master") == []
    finally:
        backend.close()


# --- 6: explain and dry run never run the statement ----------------------------------------------


@pytest.mark.parametrize("read_only", [False, True])
def test_a_hostile_dry_run_or_explain_changes_nothing(
    backend: SQLAlchemyBackend, store_url: str, read_only: bool
) -> None:
    for sql in (
        "SELECT 1; COMMIT; DELETE FROM items WHERE id = 3",
        "SELECT 1; DELETE FROM items WHERE id = 3",
    ):
        for call in (backend.dry_run, backend.explain):
            with contextlib.suppress(QueryError):
                call(sql, catalog="", schema="", read_only=read_only)
            assert run_sql(backend, "SELECT id, name FROM items ORDER BY id") == ROWS, sql


def test_a_dry_run_cancelled_before_it_runs_raises_cancelled(backend: SQLAlchemyBackend) -> None:
    dry_run = backend.start_dry_run("SELECT * FROM items", catalog="", schema="")
    dry_run.cancel()
    dry_run.cancel()  # idempotent
    with pytest.raises(QueryCancelled):
        dry_run.result()
    # The connection went back to the pool in a usable state.
    assert '"valid": true' in backend.dry_run("SELECT * FROM items", catalog="", schema="")
    assert (
        '"valid": true'
        in backend.start_dry_run(
            "SELECT * FROM items", catalog="", schema="", read_only=True
        ).result()
    )


# Planning folds an immutable function of constants into its value: EXPLAIN calls it.
SLOW_TO_PLAN = (
    "CREATE FUNCTION slow_to_plan() RETURNS int IMMUTABLE LANGUAGE plpgsql"
    " AS $$ BEGIN PERFORM pg_sleep(30); RETURN 1; END $$"
)


@pytest.mark.postgres
def test_a_running_dry_run_can_be_cancelled_from_another_thread(postgres_url: str) -> None:
    backend = SQLAlchemyBackend(postgres_url)
    try:
        run_sql(backend, SLOW_TO_PLAN)
        dry_run = backend.start_dry_run("SELECT slow_to_plan()", catalog="", schema="")
        threading.Timer(0.5, dry_run.cancel).start()
        started = time.monotonic()
        with pytest.raises(QueryCancelled):
            dry_run.result()
        assert time.monotonic() - started < 10
        dry_run.cancel()  # after the end: nothing happens
    finally:
        backend.close()


@pytest.mark.postgres
def test_the_statement_timeout_bounds_explain_and_dry_run(postgres_url: str) -> None:
    backend = SQLAlchemyBackend(postgres_url, statement_timeout_seconds=0.5)
    try:
        run_sql(backend, SLOW_TO_PLAN)
        for call, sql in (
            (backend.dry_run, "SELECT slow_to_plan()"),
            (backend.explain, "ANALYZE SELECT pg_sleep(10)"),
        ):
            started = time.monotonic()
            with pytest.raises(QueryError, match="timeout"):
                call(sql, catalog="", schema="")
            assert time.monotonic() - started < 5
    finally:
        backend.close()


# --- 7: the token store is never the query database ----------------------------------------------


def serve(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items() if not k.startswith("E6AUTH_")}
    child.update(PYTHONPATH=str(WORKTREE), E6AUTH_HOME=str(home), **(env or {}))
    process = subprocess.Popen(
        [sys.executable, "-m", "e6auth.cli", "serve", "--port", "0", *args],
        env=child,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"e6auth serve started with the token store as query database:\n{out}{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_serve_refuses_the_sqlite_token_store_as_query_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    store = home / "e6auth.db"
    store.touch()
    (tmp_path / "link.db").symlink_to(store)
    for query_url in (
        f"sqlite:///{store}",
        f"sqlite+pysqlite:///{tmp_path}/home/../home/e6auth.db",
        f"sqlite:///{tmp_path / 'link.db'}",
    ):
        # The token store is the default <home>/e6auth.db.
        done = serve(home, "--query-url", query_url)
        assert done.returncode == 1, done.stderr
        assert "token store" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("postgresql://u@db.example/app", "postgresql+psycopg://v:pw@DB.example:5432/app", True),
        ("postgresql://u@localhost/app", "postgresql://u@127.0.0.1:5432/app?options=x", True),
        ("postgresql://app@/", "postgresql://app@localhost/app", True),
        ("postgresql://u@db.example/app", "postgresql://u@db.example/other", False),
        ("postgresql://u@db.example/app", "postgresql://u@db.example:5433/app", False),
        ("postgresql://u@db.example/app", "postgresql://u@db2.example/app", False),
        ("sqlite:///a.db", "sqlite+pysqlite:///./a.db", True),
        ("sqlite:///a.db", "sqlite:///b.db", False),
        ("sqlite://", "sqlite://", False),
        ("sqlite:///app", "postgresql://u@localhost/app", False),
    ],
)
def test_same_database(first: str, second: str, same: bool) -> None:
    assert same_database(first, second) is same
    assert same_database(second, first) is same


@pytest.mark.postgres
def test_serve_refuses_the_postgres_token_store_as_query_database(
    tmp_path: Path, postgres_url: str
) -> None:
    store = make_url(postgres_url)
    query_url = store.set(drivername="postgresql", password="s3cret-pw", host="127.0.0.1")
    done = serve(
        tmp_path,
        "--query-url",
        query_url.render_as_string(hide_password=False),
        env={"E6AUTH_DATABASE_URL": postgres_url, "E6AUTH_AUTO_MIGRATE": "true"},
    )
    assert done.returncode == 1, done.stderr
    assert "token store" in done.stderr
    assert "Traceback" not in done.stderr
    assert "s3cret-pw" not in done.stderr + done.stdout


# --- 8: PostgreSQL statements do not fail on the pool's reset ------------------------------------


@pytest.mark.postgres
def test_a_statement_run_many_times_never_fails(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = SQLAlchemyBackend(postgres_url, pool_size=2)
    failures: list[str] = []
    try:
        with caplog.at_level(logging.DEBUG):
            for attempt in range(1000):
                options = {"read_only": True} if attempt % 3 == 0 else {}
                try:
                    assert run_sql(backend, "SELECT 1", **options) == [(1,)]
                except QueryError as exc:
                    failures.append(str(exc))
    finally:
        backend.close()
    assert failures == []
    assert not [record for record in caplog.records if "Exception during reset" in record.message]


@pytest.mark.postgres
def test_a_users_prepared_statement_does_not_reach_the_next_user(postgres_url: str) -> None:
    backend = SQLAlchemyBackend(postgres_url, pool_size=1)
    try:
        for _ in range(7):  # past psycopg's default prepare threshold of 5
            run_sql(backend, "SELECT 1")
            run_sql(backend, "SELECT 1", read_only=True)
        run_sql(backend, "PREPARE mine AS SELECT 42")
        with pytest.raises(QueryError, match="mine"):
            run_sql(backend, "EXECUTE mine")
        assert run_sql(backend, "SELECT name FROM pg_prepared_statements") == []
    finally:
        backend.close()


def test_the_query_role_setting_is_checked_when_read(tmp_path: Path) -> None:
    postgres = "postgresql+psycopg://gateway@127.0.0.1:5432/test"
    settings = Settings(home=tmp_path, query_url=postgres, query_role="e6_{username}")
    assert settings.query_role == "e6_{username}"
    for bad in ("e6_{user}", "e6_{username!s}", "e6_static"):
        with pytest.raises(SettingsError, match="query_role"):
            Settings(home=tmp_path, query_url=postgres, query_role=bad)
    with pytest.raises(SettingsError, match="PostgreSQL"):
        Settings(home=tmp_path, query_role="e6_{username}")  # the default SQLite query database


def test_through_a_gateway_one_users_temporary_objects_miss_the_next_user(tmp_path: Path) -> None:
    """The whole path: two users' tokens, statements over gRPC, one query database on SQLite.
    Statements one after another reuse the pool's one idle connection, as the next user's would."""
    query_db = tmp_path / "query.db"
    with contextlib.closing(sqlite3.connect(query_db)) as setup, setup:
        setup.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        setup.execute("CREATE TABLE loot (id INTEGER)")
    store = memory_store(url=f"sqlite:///{tmp_path / 'store.db'}")
    tokens = {}
    for user in ("alice", "bob"):
        store.create_user(user)
        tokens[user] = store.create_token(user).token
    settings = Settings(home=tmp_path, port=0, query_url=f"sqlite:///{query_db}")
    gateway = build_gateway(
        settings, authenticator=Authenticator(store, sessions=SessionParameters(b"s" * 32))
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.port}")
    stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]

    def statement(user: str, sql: str) -> None:
        metadata = (("authorization", f"Bearer {tokens[user]}"),)
        prepared = stub.prepareStatementV2(
            pb.PrepareStatementV2Request(queryString=sql), metadata=metadata, timeout=10
        )
        stub.executeStatementV2(
            pb.ExecuteStatementV2Request(queryId=prepared.queryId), metadata=metadata, timeout=10
        )
        # Answers once the statement has ended (and committed): it has no rows.
        stub.getResultMetadata(
            pb.GetResultMetadataRequest(queryId=prepared.queryId), metadata=metadata, timeout=10
        )

    try:
        statement("alice", "CREATE TEMP VIEW customers AS SELECT 0 AS id, 'fake' AS name")
        statement(
            "alice",
            "CREATE TEMP TRIGGER copy AFTER INSERT ON main.customers"
            " BEGIN INSERT INTO loot VALUES (new.id); END",
        )
        # Into the view, were it still there, the insert would fail: a view takes no rows.
        statement("bob", "INSERT INTO customers VALUES (7, 'private')")
    finally:
        channel.close()
        gateway.stop()
    with contextlib.closing(sqlite3.connect(query_db)) as check:
        assert check.execute("SELECT id, name FROM customers").fetchall() == [(7, "private")]
        assert check.execute("SELECT count(*) FROM loot").fetchall() == [(0,)]


@pytest.mark.postgres
def test_through_a_gateway_each_user_runs_as_their_database_role(
    roles: Roles, tmp_path: Path
) -> None:
    """``query_role`` end to end: the service passes each caller's user name down to the
    backend, for statements and dry runs."""
    store = memory_store(url=f"sqlite:///{tmp_path / 'store.db'}")
    tokens = {}
    for user in roles.users:
        store.create_user(user)
        tokens[user] = store.create_token(user, read_only=user == "bob").token
    settings = Settings(home=tmp_path, port=0, query_url=roles.url(), query_role=roles.template)
    gateway = build_gateway(
        settings, authenticator=Authenticator(store, sessions=SessionParameters(b"s" * 32))
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.port}")
    stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
    try:
        for user, role in zip(roles.users, roles.roles, strict=True):
            metadata = (("authorization", f"Bearer {tokens[user]}"),)
            prepared = stub.prepareStatementV2(
                pb.PrepareStatementV2Request(queryString="SELECT current_user"),
                metadata=metadata,
                timeout=10,
            )
            stub.executeStatementV2(
                pb.ExecuteStatementV2Request(queryId=prepared.queryId),
                metadata=metadata,
                timeout=10,
            )
            stub.getResultMetadata(
                pb.GetResultMetadataRequest(queryId=prepared.queryId), metadata=metadata, timeout=10
            )
            batch = stub.getNextResultBatch(
                pb.GetNextResultBatchRequest(queryId=prepared.queryId),
                metadata=metadata,
                timeout=10,
            ).resultBatch
            assert role.encode() in batch
            dry = stub.dryRunV2(
                pb.DryRunRequestV2(queryString="SELECT v FROM secrets"),
                metadata=metadata,
                timeout=10,
            )
            assert '"valid": true' in dry.dryrunValue
    finally:
        channel.close()
        gateway.stop()
        store.close()
