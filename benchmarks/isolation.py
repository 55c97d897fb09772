"""What one user's queries cost the others on a shared gateway (issue 14): ``python -m
benchmarks.isolation [--quick] [--output FILE]``.

Real `e6auth serve` processes on a SQLite query database, real gRPC over loopback, three
measurements:

- **victim latency**: bob's ``SELECT`` round trips (prepare, execute, metadata, batches, clear),
  alone and then beside 24 endless queries of alice whose results she abandoned (a 0.5 s deadline
  on ``getResultMetadata``, never cleared); medians and the ratio, in one run;
- **result memory**: the gateway's peak RSS (``VmHWM``) growth over its resting RSS while a query
  returns 20 rows of ``zeroblob(20000000)``, at the default ``max_batch_bytes`` (refused: a row
  over the limit) and at 32 MiB (streamed, one row a batch);
- **after a timeout**: with a statement timeout of 2 s, how long an endless recursive CTE runs
  before the client gets the timeout, and the gateway's CPU (``/proc/PID/stat``) over the three
  seconds after it.

Figures go to ``benchmarks/results/isolation.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy import create_engine, text

from benchmarks._common import RESULTS, machine_info, write_report
from benchmarks.revocation import Replica
from e6auth import Settings, TokenStore
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub

ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
HUGE = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20)"
    " SELECT zeroblob(20000000) FROM c"
)
VICTIM = "SELECT n FROM numbers"
ABANDONED = 24
MIB = 1024 * 1024


@contextmanager
def gateway(folder: Path, **settings: str) -> Iterator[tuple[Replica, dict[str, str]]]:
    """A gateway on a fresh home and query database, with tokens for alice and bob; keywords
    are E6AUTH_ settings."""
    home = folder / f"home{len(list(folder.iterdir()))}"
    home.mkdir()
    query_url = f"sqlite:///{home}/data.db"
    engine = create_engine(query_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE numbers (n integer)"))
        connection.execute(text("INSERT INTO numbers VALUES (1), (2), (3)"))
    engine.dispose()
    store = TokenStore.from_settings(Settings(home=home))
    try:
        tokens = {}
        for user in ("alice", "bob"):
            store.create_user(user)
            tokens[user] = store.create_token(user).token
    finally:
        store.close()
    env = {"E6AUTH_QUERY_URL": query_url, "E6AUTH_THROTTLE_ADDRESS_FAILURES": "0"}
    replica = Replica(
        home, env | {f"E6AUTH_{name.upper()}": value for name, value in settings.items()}
    )
    try:
        replica.wait_until_serving()
        yield replica, tokens
    finally:
        replica.stop()


class Client:
    def __init__(self, address: str) -> None:
        # Unlimited, as the e6data connector's channel.
        self.channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", -1)]
        )
        self.stub = QueryEngineServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def login(self, user: str, token: str) -> str:
        request = pb.AuthenticateRequest(user=user, password=token)
        return str(self.stub.authenticate(request, timeout=10).sessionId)

    def start(self, session: str, sql: str) -> str:
        prepared = self.stub.prepareStatementV2(
            pb.PrepareStatementV2Request(sessionId=session, schema="main", queryString=sql),
            timeout=10,
        )
        self.stub.executeStatementV2(
            pb.ExecuteStatementV2Request(sessionId=session, queryId=prepared.queryId), timeout=10
        )
        return str(prepared.queryId)

    def read(self, session: str, query_id: str, timeout: float = 60) -> str:
        """Metadata and every batch; '' or the error's details."""
        try:
            self.stub.getResultMetadata(
                pb.GetResultMetadataRequest(sessionId=session, queryId=query_id), timeout=timeout
            )
            while self.stub.getNextResultBatch(
                pb.GetNextResultBatchRequest(sessionId=session, queryId=query_id), timeout=timeout
            ).resultBatch:
                pass
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
        return ""

    def round_trip(self, session: str, sql: str) -> float:
        began = time.perf_counter()
        query_id = self.start(session, sql)
        failure = self.read(session, query_id)
        self.stub.clear(pb.ClearRequest(sessionId=session, queryId=query_id), timeout=10)
        if failure:
            raise RuntimeError(failure)
        return time.perf_counter() - began

    def close(self) -> None:
        self.channel.close()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def victim_latency(folder: Path, rounds: int) -> dict[str, Any]:
    with gateway(folder) as (replica, tokens):
        client = Client(replica.address)
        bob = client.login("bob", tokens["bob"])
        alone = [client.round_trip(bob, VICTIM) for _ in range(rounds)]
        alice = client.login("alice", tokens["alice"])
        started = refused = 0
        for _ in range(ABANDONED):
            try:
                query_id = client.start(alice, ENDLESS)
            except grpc.RpcError:
                refused += 1
                continue
            started += 1
            client.read(alice, query_id, timeout=0.5)  # abandoned: DEADLINE_EXCEEDED
        beside = [client.round_trip(bob, VICTIM) for _ in range(rounds)]
        client.close()
    return {
        "abandoned_endless_queries": ABANDONED,
        "accepted": started,
        "refused": refused,
        "alone_ms": _ms(alone),
        "beside_ms": _ms(beside),
        "ratio_of_medians": round(statistics.median(beside) / statistics.median(alone), 2),
    }


def result_memory(folder: Path, **settings: str) -> dict[str, Any]:
    with gateway(folder, **settings) as (replica, tokens):
        client = Client(replica.address)
        bob = client.login("bob", tokens["bob"])
        client.round_trip(bob, VICTIM)
        time.sleep(0.5)
        resting = status_kib(replica.process.pid, "VmRSS")
        query_id = client.start(bob, HUGE)
        failure = client.read(bob, query_id)
        peak = status_kib(replica.process.pid, "VmHWM")
        client.close()
    return {
        "resting_rss_mib": round(resting / 1024, 1),
        "peak_growth_mib": round((peak - resting) / 1024, 1),
        "outcome": failure or "20 rows received",
    }


def after_timeout(folder: Path) -> dict[str, Any]:
    with gateway(folder, statement_timeout_seconds="2") as (replica, tokens):
        client = Client(replica.address)
        alice = client.login("alice", tokens["alice"])
        began = time.perf_counter()
        failure = client.read(alice, client.start(alice, ENDLESS))
        ended = time.perf_counter() - began
        time.sleep(0.5)
        before = cpu_seconds(replica.process.pid)
        time.sleep(3.0)
        used = cpu_seconds(replica.process.pid) - before
        client.close()
    return {
        "statement_timeout_s": 2,
        "error_after_s": round(ended, 2),
        "error": failure,
        "gateway_cpu_percent_3s_later": round(used / 3.0 * 100, 1),
    }


def _ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "median": round(statistics.median(ordered) * 1000, 2),
        "p95": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 victim rounds, not 50")
    parser.add_argument("--output", type=Path, default=RESULTS / "isolation.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="e6auth-isolation-") as temporary:
        folder = Path(temporary)
        latency = victim_latency(folder, 10 if args.quick else 50)
        print(
            f"victim SELECT: {latency['alone_ms']['median']} ms alone, "
            f"{latency['beside_ms']['median']} ms median (max {latency['beside_ms']['max']} ms) "
            f"beside {ABANDONED} abandoned endless queries ({latency['accepted']} accepted: "
            f"8 run, the rest wait behind them; {latency['refused']} refused)"
        )
        refused = result_memory(folder)
        streamed = result_memory(folder, max_batch_bytes=str(32 * MIB))
        for name, memory in (("default limit", refused), ("32 MiB batches", streamed)):
            print(
                f"20 x 20 MB rows, {name}: peak RSS +{memory['peak_growth_mib']} MiB over "
                f"{memory['resting_rss_mib']} MiB ({memory['outcome'][:90]})"
            )
        timeout = after_timeout(folder)
        print(
            f"endless CTE, statement timeout 2 s: error after {timeout['error_after_s']} s; "
            f"gateway CPU {timeout['gateway_cpu_percent_3s_later']} % in the 3 s after"
        )
    write_report(
        {
            "machine": machine_info(),
            "victim_latency": latency,
            "result_memory": {
                "default_max_batch_bytes": refused,
                "max_batch_bytes_32MiB": streamed,
            },
            "after_timeout": timeout,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
