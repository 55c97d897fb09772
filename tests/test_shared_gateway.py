"""One gateway, many users: what one authenticated user can do to the others. Over real gRPC on
loopback, against a real gateway on SQLite and on the machine's PostgreSQL. Each test stands for
a fault of issue 14 that the gateway had: one user starving the rest of workers and threads, an
endless statement, unbounded result memory, dry runs outside the audit."""

from __future__ import annotations

import concurrent.futures
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from e6auth import Settings, TokenStore
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.server import Gateway, build_gateway
from e6auth.store import AuditStore
from e6auth.testing import FAST_ARGON2_SETTINGS

CATALOG = "default"
ENDLESS = {
    "sqlite": (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    ),
    "postgresql": "SELECT pg_sleep(100000)",
}
MIB = 1024 * 1024


@dataclass
class Shared:
    gateway: Gateway
    dialect: str
    schema: str
    tokens: dict[str, str]
    query_url: str
    home: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"


StartShared = Callable[..., Shared]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def start_shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartShared]:
    """Starts a gateway (settings as keywords) for alice (read-only token) and bob."""
    started: list[Gateway] = []

    def start(**options: Any) -> Shared:
        home = tmp_path / f"home{len(started)}"
        home.mkdir()
        if request.param == "sqlite":
            query_url, schema = f"sqlite:///{home}/data.db", "main"
        else:
            # The private schema of the fixture is the connections' search_path: no schema named.
            query_url, schema = request.getfixturevalue("postgres_url"), ""
        engine = create_engine(query_url)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS numbers"))
            connection.execute(text("CREATE TABLE numbers (n integer)"))
            connection.execute(text("INSERT INTO numbers VALUES (1), (2), (3)"))
        engine.dispose()
        config = Settings(
            home=home,
            port=0,
            query_url=query_url,
            throttle_address_failures=0,
            throttle_user_failures=0,
            audit_flush_seconds=0.2,
            **{**FAST_ARGON2_SETTINGS, **options},
        )
        store = TokenStore.from_settings(config)
        try:
            tokens = {}
            for user in ("alice", "bob"):
                store.create_user(user)
                tokens[user] = store.create_token(user, read_only=user == "alice").token
        finally:
            store.close()
        gateway = build_gateway(config)
        started.append(gateway)
        return Shared(gateway, request.param, schema, tokens, query_url, home)

    try:
        yield start
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
def shared(start_shared: StartShared) -> Shared:
    return start_shared()


@pytest.fixture
def stub(shared: Shared) -> Iterator[QueryEngineServiceStub]:
    with grpc.insecure_channel(shared.target) as channel:
        yield QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]


def login(stub: QueryEngineServiceStub, shared: Shared, user: str) -> str:
    request = pb.AuthenticateRequest(user=user, password=shared.tokens[user])
    return str(stub.authenticate(request, timeout=10).sessionId)


def start_query(stub: QueryEngineServiceStub, shared: Shared, session: str, sql: str) -> str:
    prepared = stub.prepareStatementV2(
        pb.PrepareStatementV2Request(
            sessionId=session, catalog=CATALOG, schema=shared.schema, queryString=sql
        ),
        timeout=10,
    )
    stub.executeStatementV2(
        pb.ExecuteStatementV2Request(sessionId=session, queryId=prepared.queryId), timeout=10
    )
    return str(prepared.queryId)


def metadata(
    stub: QueryEngineServiceStub, session: str, query_id: str, timeout: float
) -> pb.GetResultMetadataResponse:
    request = pb.GetResultMetadataRequest(sessionId=session, queryId=query_id)
    return stub.getResultMetadata(request, timeout=timeout)


def batches(stub: QueryEngineServiceStub, session: str, query_id: str) -> list[bytes]:
    found = []
    while True:
        batch = stub.getNextResultBatch(
            pb.GetNextResultBatchRequest(sessionId=session, queryId=query_id), timeout=30
        ).resultBatch
        if not batch:
            return found
        found.append(batch)


def run_query(stub: QueryEngineServiceStub, shared: Shared, session: str, sql: str) -> int:
    """Runs ``sql`` to the end as the connector does; the number of batches."""
    query_id = start_query(stub, shared, session, sql)
    metadata(stub, session, query_id, timeout=30)
    found = len(batches(stub, session, query_id))
    stub.clear(pb.ClearRequest(sessionId=session, queryId=query_id), timeout=10)
    return found


def status_of(call: Callable[[], object]) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return None


def details_of(call: Callable[[], object]) -> str:
    try:
        call()
    except grpc.RpcError as error:
        return str(error.details())
    raise AssertionError("the call succeeded")


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- fair share ---------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_abandoned_endless_queries_of_one_user_leave_the_gateway_to_another(
    shared: Shared, stub: QueryEngineServiceStub
) -> None:
    alice = login(stub, shared, "alice")
    started, refused = [], []
    for _ in range(48):
        try:
            query_id = start_query(stub, shared, alice, ENDLESS[shared.dialect])
        except grpc.RpcError as error:
            refused.append((error.code(), error.details()))
            continue
        started.append(query_id)
        # The client gives up on the results, and never clears the query. Each give-up is waited
        # out, 40 times over: 0.2 s is ample on loopback (0.5 s made the test 20 s long).
        assert status_of(lambda q=query_id: metadata(stub, alice, q, timeout=0.2)) == (
            grpc.StatusCode.DEADLINE_EXCEEDED
        )
    # 8 run, the next 32 wait behind them holding no worker, the rest are refused.
    assert shared.gateway.queries.running_queries("alice") == 8
    assert len(started) == 8 + 32
    assert {code for code, _ in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert "at most 8 running and 32 waiting" in refused[0][1]

    bob = login(stub, shared, "bob")
    began = time.monotonic()
    assert run_query(stub, shared, bob, "SELECT n FROM numbers") == 1
    latency = time.monotonic() - began
    assert latency < 1.0, f"bob waited {latency:.2f} s"
    print(f"victim's query beside 40 abandoned endless ones: {latency * 1000:.0f} ms")

    for query_id in started:
        stub.cancelQuery(pb.CancelQueryRequest(sessionId=alice, queryId=query_id), timeout=10)
    wait_for(lambda: shared.gateway.queries.running_queries("alice") == 0)


@pytest.mark.timeout(90)
def test_waiting_reads_never_take_the_threads_that_authenticate_and_health_need(
    start_shared: StartShared,
) -> None:
    shared = start_shared(grpc_max_workers=8)
    with grpc.insecure_channel(shared.target) as channel:
        stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
        health = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        alice = login(stub, shared, "alice")
        query_id = start_query(stub, shared, alice, ENDLESS[shared.dialect])
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            # 32 reads with no deadline at all on one endless query: more than the server has
            # threads. They are refused beyond the bound instead of waiting for a thread.
            reads = [
                pool.submit(status_of, lambda: metadata(stub, alice, query_id, timeout=60))
                for _ in range(32)
            ]
            time.sleep(1.0)
            began = time.monotonic()
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            login(stub, shared, "bob")
            assert time.monotonic() - began < 2.0
            refused = [read.result() for read in reads if read.done()]
            assert refused, "every read waited"
            assert set(refused) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            stub.cancelQuery(pb.CancelQueryRequest(sessionId=alice, queryId=query_id), timeout=5)
            outcomes = [read.result(timeout=10) for read in reads]
        assert set(outcomes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
        assert shared.gateway.queries.waiting_calls == 0


@pytest.mark.timeout(60)
def test_a_read_whose_client_gave_up_frees_its_thread(
    shared: Shared, stub: QueryEngineServiceStub
) -> None:
    alice = login(stub, shared, "alice")
    query_id = start_query(stub, shared, alice, ENDLESS[shared.dialect])
    for _ in range(8):
        status = status_of(lambda: metadata(stub, alice, query_id, timeout=0.3))
        assert status == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: shared.gateway.queries.waiting_calls == 0, seconds=2.0)
    stub.cancelQuery(pb.CancelQueryRequest(sessionId=alice, queryId=query_id), timeout=5)


# --- the statement timeout ----------------------------------------------------------------------


def gateway_cpu_seconds(during: float) -> float:
    """CPU the process (the gateway runs in it) spends in ``during`` seconds of wall time."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(during)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.timeout(60)
def test_an_endless_statement_ends_at_the_statement_timeout_and_frees_everything(
    start_shared: StartShared,
) -> None:
    shared = start_shared(statement_timeout_seconds=1)
    with grpc.insecure_channel(shared.target) as channel:
        stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
        alice = login(stub, shared, "alice")
        began = time.monotonic()
        query_id = start_query(stub, shared, alice, ENDLESS[shared.dialect])
        details = details_of(lambda: metadata(stub, alice, query_id, timeout=30))
        took = time.monotonic() - began
        assert "statement timeout (1 s) exceeded" in details
        assert took < 3.0, took
        wait_for(lambda: shared.gateway.queries.running_queries("alice") == 0, 2.0)
        cpu = gateway_cpu_seconds(2.0)
        assert cpu < 0.5, f"{cpu:.2f} s of CPU in 2 s after the timeout"
        if shared.dialect == "postgresql":
            engine = create_engine(shared.query_url)
            with engine.connect() as connection:
                sleeping = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE query LIKE '%pg_sleep(100000)%' AND state = 'active'"
                        " AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            engine.dispose()
            assert sleeping == 0
        # The session goes on.
        assert run_query(stub, shared, alice, "SELECT n FROM numbers") == 1


@pytest.mark.timeout(60)
def test_a_query_whose_results_nobody_reads_gives_back_its_worker_at_the_timeout(
    start_shared: StartShared,
) -> None:
    shared = start_shared(statement_timeout_seconds=1, query_batch_rows=1)
    with grpc.insecure_channel(shared.target) as channel:
        stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
        bob = login(stub, shared, "bob")
        # Three batches: the worker waits for a reader that never comes.
        query_id = start_query(stub, shared, bob, "SELECT n FROM numbers")
        metadata(stub, bob, query_id, timeout=10)
        assert shared.gateway.queries.running_queries("bob") == 1
        wait_for(lambda: shared.gateway.queries.running_queries("bob") == 0, 5.0)
        details = details_of(lambda: batches(stub, bob, query_id))
        assert "statement timeout (1 s) exceeded" in details


# --- memory -------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.timeout(60)
def test_a_result_of_huge_values_is_refused_with_a_clear_error_and_bounded_memory(
    shared: Shared, stub: QueryEngineServiceStub
) -> None:
    if shared.dialect == "sqlite":
        huge = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20)"
            " SELECT zeroblob(20000000) FROM c"
        )
    else:
        huge = "SELECT repeat('x', 20000000) FROM generate_series(1, 20)"
    before = peak_rss_mib()
    bob = login(stub, shared, "bob")
    query_id = start_query(stub, shared, bob, huge)
    details = details_of(lambda: metadata(stub, bob, query_id, timeout=30))
    growth = peak_rss_mib() - before
    assert "max_batch_bytes" in details
    assert "too large" in details
    print(f"peak RSS growth under 20 x 20 MB: {growth:.0f} MiB")
    assert growth < 256


@pytest.mark.timeout(60)
def test_batches_are_cut_by_bytes(start_shared: StartShared) -> None:
    shared = start_shared(max_batch_bytes=2 * MIB)
    sql = {
        "sqlite": "SELECT n, randomblob(500000) FROM numbers, (SELECT 1 UNION ALL SELECT 2)",
        "postgresql": "SELECT n, repeat('y', 500000) FROM numbers, (SELECT 1 UNION ALL SELECT 2) t",
    }[shared.dialect]
    with grpc.insecure_channel(shared.target) as channel:
        stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
        bob = login(stub, shared, "bob")
        query_id = start_query(stub, shared, bob, sql)
        metadata(stub, bob, query_id, timeout=30)
        found = batches(stub, bob, query_id)
    # Six rows of half a megabyte: three or four to a batch of at most 2 MiB, never one batch.
    assert len(found) >= 2
    assert all(len(batch) <= 2 * MIB + 64 * 1024 for batch in found)
    assert sum(len(batch) for batch in found) >= 6 * 500_000


# --- dry runs -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_dry_runs_are_audited(shared: Shared, stub: QueryEngineServiceStub) -> None:
    bob = login(stub, shared, "bob")
    answer = stub.dryRunV2(
        pb.DryRunRequestV2(
            sessionId=bob,
            catalog=CATALOG,
            schema=shared.schema,
            queryString="SELECT n FROM numbers",
        ),
        timeout=10,
    )
    assert answer.dryrunValue
    shared.gateway.authenticator.audit.flush()  # type: ignore[union-attr]
    audit = AuditStore(shared.gateway.authenticator.store.engine)
    events = [event for event in audit.query_events(user="bob") if event.query_id]
    assert [(event.statement, event.result) for event in events] == [
        ("SELECT n FROM numbers", "ok")
    ]
    assert events[0].query_id.startswith("dry-run-")


@pytest.mark.timeout(60)
def test_a_dry_run_stops_when_its_client_cancels_and_is_audited_as_cancelled(
    shared: Shared, stub: QueryEngineServiceStub
) -> None:
    if shared.dialect != "postgresql":
        pytest.skip("SQLite plans every statement at once: only PostgreSQL has a slow plan")
    # The planner runs an immutable function to fold it: planning this takes ten seconds.
    engine = create_engine(shared.query_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION slow_plan() RETURNS int IMMUTABLE LANGUAGE plpgsql"
                " AS $$ BEGIN PERFORM pg_sleep(10); RETURN 1; END $$"
            )
        )
    bob = login(stub, shared, "bob")
    request = pb.DryRunRequestV2(
        sessionId=bob, catalog=CATALOG, schema=shared.schema, queryString="SELECT slow_plan()"
    )
    assert status_of(lambda: stub.dryRunV2(request, timeout=1.0)) == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )

    def planning() -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                        " AND query LIKE '%slow_plan()%' AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            )

    wait_for(lambda: planning() == 0, seconds=5.0)  # well before the plan's ten seconds
    engine.dispose()
    audit = shared.gateway.authenticator.audit
    assert audit is not None

    def audited() -> list[tuple[str, str]]:
        # The handler records the dry run once the cancelled statement has returned.
        audit.flush()
        return [(event.statement, event.result) for event in audit.store.query_events(user="bob")]

    wait_for(lambda: audited() == [("SELECT slow_plan()", "cancelled")], seconds=5.0)


@pytest.mark.timeout(60)
def test_the_connector_shows_the_statement_timeout(tmp_path: Path) -> None:
    """What an analyst sees: the real connector's error for a statement past the timeout."""
    from test_connector import Connector
    from test_connector import Gateway as ServedGateway

    home = tmp_path / "home"
    gateway = ServedGateway(home, ("--demo", "--statement-timeout", "1"), {})
    connector = Connector()
    try:
        conn = connector.connect(
            gateway,
            database="main",
            catalog=CATALOG,
            username="demo",
            password=gateway.demo_token,
        )
        began = time.monotonic()
        answer = connector.execute(conn, ENDLESS["sqlite"])
        assert not answer["ok"], answer
        assert answer["error"]["code"] == "INVALID_ARGUMENT"
        assert "statement timeout (1 s) exceeded" in answer["error"]["details"]
        assert time.monotonic() - began < 5
        assert connector.rows(conn, "SELECT 1") == [[1]]  # the connection goes on
    finally:
        connector.close()
        gateway.stop()
