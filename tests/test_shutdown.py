"""SIGTERM on a real `e6auth serve` with a slow call in flight: the call completes, the process
exits 0 within its grace period, and the last use of the token that made the call is in the store,
written by the flush on the way out (the periodic one is an hour away)."""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

# The gateway helpers of the replica tests: the same processes, the same client.
from test_replicas import PEPPER, SESSION_KEY, ServeProcess

from e6auth import Settings, TokenStore
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub

pytestmark = pytest.mark.postgres

GRACE_SECONDS = 10.0
QUERY_SECONDS = 2.0
# The query runs on PostgreSQL, so that it is slow by sleeping, not by taking a core from the
# gateway; a constant, so the f-string builds no SQL from input.
SLOW_QUERY = f"SELECT 1 AS done FROM pg_sleep({QUERY_SECONDS})"  # noqa: S608


@pytest.mark.timeout(60)
def test_sigterm_lets_the_call_in_flight_finish_then_exits_0_and_writes_last_used(
    postgres_url: str, postgres_query_url: str, tmp_path: Path
) -> None:
    store = TokenStore.from_settings(
        Settings(
            home=tmp_path / "test", database_url=postgres_url, pepper=PEPPER, auto_migrate=True
        )
    )
    store.create_user("alice")
    token = store.create_token("alice")
    home = tmp_path / "gateway"
    home.mkdir()  # see test_replicas.test_a_replica_on_a_fresh_home_serves_queries
    gateway = ServeProcess(
        home,
        {
            "E6AUTH_DATABASE_URL": postgres_url,
            "E6AUTH_PEPPER": PEPPER,
            "E6AUTH_SESSION_KEY": SESSION_KEY,
            "E6AUTH_LAST_USED_FLUSH_SECONDS": "3600",
            "E6AUTH_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        },
        ["--query-url", postgres_query_url],
    )
    metadata = (("authorization", f"Bearer {token.token}"),)
    try:
        channel = grpc.insecure_channel(gateway.wait_until_serving())
        stub = QueryEngineServiceStub(channel)
        prepared = stub.prepareStatementV2(
            pb.PrepareStatementV2Request(queryString=SLOW_QUERY), metadata=metadata, timeout=10
        )
        stub.executeStatementV2(
            pb.ExecuteStatementV2Request(queryId=prepared.queryId), metadata=metadata, timeout=10
        )
        with ThreadPoolExecutor(1) as pool:
            # Blocks until the statement has its columns, which pg_sleep holds back.
            started = time.monotonic()
            in_flight = pool.submit(
                stub.getResultMetadata,
                pb.GetResultMetadataRequest(queryId=prepared.queryId),
                metadata=metadata,
                timeout=30,
            )
            time.sleep(QUERY_SECONDS / 4)
            assert not in_flight.done(), in_flight.exception()
            (before,) = store.list_tokens("alice")
            assert before.last_used_at is None  # nothing written yet: only the stop can

            stopping = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            answer = in_flight.result(timeout=GRACE_SECONDS + 5)
            answered_after = time.monotonic() - started
        channel.close()
        try:
            code = gateway.process.wait(GRACE_SECONDS + 5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {GRACE_SECONDS + 5} s after SIGTERM\n{gateway.log.text}")
        stopped_in = time.monotonic() - stopping
    finally:
        gateway.stop()

    try:
        assert answer.resultMetaData, answer
        assert answered_after >= QUERY_SECONDS * 0.9, f"answered after {answered_after:.2f} s"
        assert code == 0, gateway.log.text
        assert stopped_in <= GRACE_SECONDS, f"stopped {stopped_in:.1f} s after SIGTERM"
        (after,) = store.list_tokens("alice")
        assert after.last_used_at is not None, gateway.log.text
    finally:
        store.close()
