"""A rolling restart of two real `e6auth serve` processes under load from the real e6data
connector: SIGTERM drains (health NOT_SERVING, new logins and statements refused, the calls of
the queries already started served), so no query that had started is lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_connector import Connector
from test_replicas import PEPPER, SESSION_KEY, ServeProcess

from e6auth import Settings, TokenStore
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.query import create_demo_database
from e6auth.testing import FAST_ARGON2_SETTINGS

# A query that takes a while on SQLite (so that several are in flight at every SIGTERM), and
# whose answer is known.
COUNT = 60_000
SQL = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 60000)"
    " SELECT count(*) FROM c"
)
THREADS = 6


def environment(home: Path) -> dict[str, str]:
    return {
        "E6AUTH_DATABASE_URL": f"sqlite:///{home}/e6auth.db",
        "E6AUTH_PEPPER": PEPPER,
        "E6AUTH_SESSION_KEY": SESSION_KEY,
        "E6AUTH_SHUTDOWN_GRACE_SECONDS": "10",
        "E6AUTH_ARGON2_MEMORY_KIB": str(FAST_ARGON2_SETTINGS["argon2_memory_kib"]),
        "E6AUTH_ARGON2_TIME_COST": str(FAST_ARGON2_SETTINGS["argon2_time_cost"]),
        "E6AUTH_ARGON2_PARALLELISM": str(FAST_ARGON2_SETTINGS["argon2_parallelism"]),
    }


def prepared_home(tmp_path: Path) -> tuple[Path, dict[str, str], str, str]:
    """A home shared by the gateways: its environment, a token of alice's, the demo database."""
    home = tmp_path / "home"
    home.mkdir()
    env = environment(home)
    store = TokenStore.from_settings(
        Settings(home=home, database_url=env["E6AUTH_DATABASE_URL"], pepper=PEPPER)
    )
    try:
        store.create_user("alice")
        token = store.create_token("alice").token
    finally:
        store.close()
    return home, env, token, create_demo_database(home / "demo.db")


def serving(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        try:
            return int(health.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
        except grpc.RpcError:
            return -1


@pytest.mark.timeout(180)
def test_a_rolling_restart_under_load_loses_no_started_query(tmp_path: Path) -> None:
    home, env, token, query_url = prepared_home(tmp_path)
    args = ["--query-url", query_url]
    gateways = [ServeProcess(home, env, args) for _ in range(2)]
    for gateway in gateways:
        gateway.wait_until_serving()
    targets_file, stop_file = tmp_path / "targets", tmp_path / "stop"
    targets_file.write_text("\n".join(gateway.address for gateway in gateways))
    connector = Connector()
    try:
        connector.send(
            "rolling",
            targets_file=str(targets_file),
            stop_file=str(stop_file),
            threads=THREADS,
            sql=SQL,
            expect=[[COUNT]],
            connect={
                "username": "alice",
                "password": token,
                "database": "main",
                "catalog": "default",
            },
        )
        time.sleep(2.0)
        began = time.monotonic()
        for index, old in enumerate(list(gateways)):
            old.process.send_signal(signal.SIGTERM)
            # The balancer sees NOT_SERVING (or the port closed) and stops sending new work.
            deadline = time.monotonic() + 5
            while serving(old.address) == health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, "health still SERVING after SIGTERM"
                time.sleep(0.05)
            targets_file.write_text(
                "\n".join(g.address for g in gateways if g is not old and g.process.poll() is None)
            )
            assert old.process.wait(15) == 0, old.log.text
            new = ServeProcess(home, env, args)
            new.wait_until_serving()
            gateways[index] = new
            targets_file.write_text("\n".join(gateway.address for gateway in gateways))
            time.sleep(1.0)
        took = time.monotonic() - began
        time.sleep(1.0)
        stop_file.touch()
        result = connector.receive(timeout=60)
    finally:
        stop_file.touch()
        connector.close()
        for gateway in gateways:
            gateway.stop()
    print(f"rolling restart of 2 gateways under load: {took:.1f} s; {result}")
    assert result["ok"], result
    assert result["lost"] == [], result["lost"]
    assert result["wrong"] == 0
    assert result["answered"] >= 20, result


@pytest.mark.timeout(60)
def test_a_draining_gateway_refuses_new_logins_and_statements_but_serves_open_queries(
    tmp_path: Path,
) -> None:
    home, env, token, query_url = prepared_home(tmp_path)
    gateway = ServeProcess(home, env, ["--query-url", query_url])
    try:
        with grpc.insecure_channel(gateway.wait_until_serving()) as channel:
            stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
            session = stub.authenticate(
                pb.AuthenticateRequest(user="alice", password=token), timeout=10
            ).sessionId
            prepared = stub.prepareStatementV2(
                pb.PrepareStatementV2Request(
                    sessionId=session, schema="main", queryString="SELECT id FROM customers"
                ),
                timeout=10,
            )
            gateway.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            for refused in (
                lambda: stub.authenticate(
                    pb.AuthenticateRequest(user="alice", password=token), timeout=5
                ),
                lambda: stub.prepareStatementV2(
                    pb.PrepareStatementV2Request(sessionId=session, queryString="SELECT 1"),
                    timeout=5,
                ),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    refused()
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "shutting down" in str(caught.value.details())
            # The query prepared before SIGTERM runs to the end.
            stub.executeStatementV2(
                pb.ExecuteStatementV2Request(sessionId=session, queryId=prepared.queryId),
                timeout=10,
            )
            stub.getResultMetadata(
                pb.GetResultMetadataRequest(sessionId=session, queryId=prepared.queryId),
                timeout=10,
            )
            batch = stub.getNextResultBatch(
                pb.GetNextResultBatchRequest(sessionId=session, queryId=prepared.queryId),
                timeout=10,
            )
            assert batch.resultBatch
            end = stub.getNextResultBatch(
                pb.GetNextResultBatchRequest(sessionId=session, queryId=prepared.queryId),
                timeout=10,
            )
            assert not end.resultBatch
        assert gateway.process.wait(15) == 0
    finally:
        gateway.stop()
