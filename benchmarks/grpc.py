"""What authentication costs the gRPC gateway: saturated throughput with and without, handshakes.

One server process runs the production gateway (``build_gateway``: ``QueryEngineService`` behind
``AuthInterceptor``, SQLite token store in a temporary ``E6AUTH_HOME``) and, on two more ports, two
identical twins: the same service on the same ``QueryManager`` and query database behind
``FixedPrincipalInterceptor``, which sets a fixed principal instead of verifying anything. This
process is the load generator: client threads, each with its own channels (and so its own HTTP/2
connections), drive one arm at a time:

- ``no auth``: the first fixed-principal server; the requests still carry a session id, ignored.
- ``no auth 2``: the second, identical one, an A/A control. Its ratio to ``no auth`` is what the
  measurement reports as a difference between two servers that differ in nothing but their port,
  thread pool and place in the round: the bias and noise floor of every other ratio.
- ``session``: the connector's normal mode, a session id (from ``authenticate`` with a PAT) in
  every request.
- ``bearer``: ``authorization: Bearer <PAT>`` metadata on every call.

Two workloads: a cheap query round trip (``SELECT 1``: prepare, execute, metadata, batches until
the empty one, clear; six RPCs) and a single browse RPC (``getSchemaNamesV2``). A saturation sweep
first shows where more client threads stop adding throughput. Then rounds interleave the arms,
in an order drawn at random for each round (seeded), in short windows, so that drift and other
processes on the machine hit all arms alike; the overhead is 1 - the median over rounds of (arm's
ops/s / no auth's ops/s in the same round), with a distribution-free 95 % interval. The same is
reported against the mean of the two no-auth arms in the round, which halves the weight of either
twin's own quirks. Each window also records, from ``/proc``, the server's CPU time and context
switches per RPC and the CPU other processes took.

A full run spreads its rounds over three such server processes, started one after the other:
two identical servers in one process can differ by over 1 % for as long as it lives (the A/A
control shows it), and a fresh process draws that luck anew for every arm.

Where the machine has two CPUs or more, the server process runs on one of them and the load
generator on the others, as if the connectors were on other machines (``--no-pin`` leaves both
to the scheduler); see ``_placement``.

The handshake (the ``authenticate`` RPC, one client, otherwise idle server) is timed for PATs
and for passwords at the production argon2 parameters, each on first use (cold: a store read, or
argon2) and repeated (served by the verification cache).

Run ``python -m benchmarks.grpc [--quick]`` (or ``python benchmarks/grpc.py``); the table goes to
stdout, the figures to ``benchmarks/results/grpc.json``. Linux only for the CPU figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file, this folder comes first on sys.path and this very file would shadow grpcio:
    # put the project root there instead.
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import random
import secrets
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from benchmarks._common import (
    RESULTS,
    Column,
    Table,
    cpu_model,
    machine_info,
    percentile_curve,
    production_argon2,
    summary,
    time_calls,
    time_interleaved,
    write_report,
)
from benchmarks._no_auth import FixedPrincipalInterceptor
from e6auth import Settings
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc import e6x_engine_pb2_grpc as pb_grpc
from e6auth.grpc.server import SERVER_OPTIONS, Gateway, build_gateway
from e6auth.grpc.service import QueryEngineService, add_to_server
from e6auth.store import TokenStore
from e6auth.verify.principal import Principal

DEFAULT_OUTPUT = RESULTS / "grpc.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_OVERHEAD = 0.02

Arm = Literal["plain", "plain2", "session", "bearer"]
Workload = Literal["query", "metadata"]
ARMS: tuple[Arm, ...] = ("plain", "plain2", "session", "bearer")
AUTH_ARMS: tuple[Arm, ...] = ("session", "bearer")
CONTROL_ARM: Arm = "plain2"
"""The A/A control: a second no-auth server identical to the first."""
WORKLOADS: tuple[Workload, ...] = ("query", "metadata")
ARM_LABELS: dict[Arm, str] = {
    "plain": "no auth",
    "plain2": "no auth 2",
    "session": "session id",
    "bearer": "bearer PAT",
}
DEFAULT_SEED = 20_260_128
WORKLOAD_LABELS: dict[Workload, str] = {
    "query": "SELECT 1 round trip",
    "metadata": "getSchemaNamesV2",
}
QUERY = "SELECT 1"
USER = "bench"
CATALOG = "default"
RPC_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of everything one run does."""

    concurrency: int
    rounds: int
    warmup_seconds: float
    window_seconds: float
    sweep: tuple[int, ...]
    sweep_warmup_seconds: float
    sweep_window_seconds: float
    cold_passwords: int
    cold_tokens: int
    cached_logins: int
    seed: int = DEFAULT_SEED
    """Seeds the order of the arms in each round."""
    pin: bool = True
    """Server on one CPU, load generator on the others (where the machine allows)."""
    processes: int = 1
    """Server processes the rounds are spread over, one after the other."""


# Short windows and many rounds: on a shared machine, other processes come and go within
# seconds, and adjacent short windows see the same disturbance; the median over rounds drops
# the rounds it hit hardest. Eight client threads: with the server on a CPU of its own, it is
# saturated (one core busy) from four, and more only add client-side contention (sweep of
# 2026-11-28 07:03 UTC).
# Three server processes: two identical servers in one process differ by up to 1.5 % (the A/A
# control, 2026-11-28 09:25 UTC, its 95 % interval excluding 1), which stays the same for the
# whole life of the process (where its objects and thread stacks landed, presumably), so the
# rounds are spread over fresh processes for that to average out too.
FULL = Plan(
    concurrency=8,
    rounds=33,
    warmup_seconds=0.2,
    window_seconds=0.75,
    sweep=(1, 2, 4, 8, 16, 32, 64),
    sweep_warmup_seconds=0.25,
    sweep_window_seconds=1.0,
    cold_passwords=40,
    cold_tokens=200,
    cached_logins=3000,
    processes=3,
)
QUICK = Plan(
    concurrency=8,
    rounds=5,
    warmup_seconds=0.15,
    window_seconds=0.4,
    sweep=(1, 4, 16),
    sweep_warmup_seconds=0.15,
    sweep_window_seconds=0.4,
    cold_passwords=5,
    cold_tokens=20,
    cached_logins=300,
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.serve:
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})  # before any thread: they all inherit it
        return _serve(args.cold_passwords, args.cold_tokens)
    plan = QUICK if args.quick else FULL
    if args.concurrency is not None:
        plan = dataclasses.replace(plan, concurrency=args.concurrency)
    if args.rounds is not None:
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.window is not None:
        plan = dataclasses.replace(plan, window_seconds=args.window)
    if args.no_sweep:
        plan = dataclasses.replace(plan, sweep=())
    if args.seed is not None:
        plan = dataclasses.replace(plan, seed=args.seed)
    if args.no_pin:
        plan = dataclasses.replace(plan, pin=False)
    report = _run(plan, quick=args.quick)
    _print_table(report)
    write_report(report, args.output)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help="5 short rounds and few logins (under a minute)"
    )
    parser.add_argument("--concurrency", type=int, metavar="N", help="client threads")
    parser.add_argument("--rounds", type=int, metavar="N", help="interleaved rounds")
    parser.add_argument("--window", type=float, metavar="SECONDS", help="measured time per arm")
    parser.add_argument("--no-sweep", action="store_true", help="skip the saturation sweep")
    parser.add_argument(
        "--seed", type=int, metavar="N", help=f"seed of the arm order (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the scheduler place the server and the clients (default: server on one CPU)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    # The server process is this module too; these are for it, not for people.
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cold-passwords", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cold-tokens", type=int, default=0, help=argparse.SUPPRESS)
    return parser


# -- the server process -------------------------------------------------------------------------


def _serve(cold_passwords: int, cold_tokens: int) -> int:
    """Create the users and tokens, start the three servers, tell the parent (one JSON line on
    stdout) where they listen and what the credentials are, serve until stdin closes."""
    settings = Settings(port=0)
    argon2 = settings.argon2
    if production_argon2() != {
        "memory_kib": argon2.memory_kib,
        "time_cost": argon2.time_cost,
        "parallelism": argon2.parallelism,
    }:
        raise SystemExit(f"the server would hash with {argon2}, not the production defaults")
    store = TokenStore.from_settings(settings)
    try:
        credentials = _make_credentials(store, cold_passwords, cold_tokens)
        user = store.find_user(USER)
    finally:
        store.close()
    if user is None:
        raise SystemExit(f"user {USER} vanished from the store")
    # The principal the bearer arm resolves to, so that queries have the same kind of owner.
    principal = Principal(
        username=user.name, user_id=user.id, method="token", token_id=credentials["token_id"]
    )
    gateway = build_gateway(settings)
    # The no-auth arms: what build_gateway makes, the interceptor aside, on the same queries;
    # two identical twins, the second an A/A control of the first.
    twins = [_plain_server(gateway, principal, settings, name) for name in ("plain", "plain2")]
    try:
        ready = {
            "auth_port": gateway.port,
            "plain_port": twins[0][1],
            "plain2_port": twins[1][1],
            "grpc_max_workers": settings.grpc_max_workers,
            **credentials,
        }
        print(json.dumps(ready), flush=True)
        sys.stdin.read()  # the parent closes our stdin when it is done, or when it dies
    finally:
        for twin, _port in twins:
            twin.stop(None).wait()
        gateway.stop()
    return 0


def _plain_server(
    gateway: Gateway, principal: Principal, settings: Settings, name: str
) -> tuple[grpc.Server, int]:
    """A started twin of the gateway behind FixedPrincipalInterceptor, and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.grpc_max_workers, thread_name_prefix=f"e6auth-grpc-{name}"
        ),
        interceptors=[FixedPrincipalInterceptor(principal)],
        options=SERVER_OPTIONS,
    )
    add_to_server(
        QueryEngineService(gateway.authenticator, gateway.queries, gateway.backend), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _make_credentials(store: TokenStore, cold_passwords: int, cold_tokens: int) -> dict[str, Any]:
    password = secrets.token_urlsafe(24)  # throwaway users in a throwaway database
    store.create_user(USER, password)
    token = store.create_token(USER, comment="benchmark")
    users = [(f"{USER}-cold-{index}", secrets.token_urlsafe(24)) for index in range(cold_passwords)]
    for name, secret in users:
        store.create_user(name, secret)
    tokens = [store.create_token(USER, comment="cold").token for _ in range(cold_tokens)]
    return {
        "user": USER,
        "password": password,
        "token": token.token,
        "token_id": token.id,
        "cold_users": users,
        "cold_tokens": tokens,
    }


@dataclass(frozen=True, slots=True)
class Server:
    pid: int
    auth_port: int
    plain_port: int
    plain2_port: int
    grpc_max_workers: int
    user: str
    password: str
    token: str
    cold_users: list[tuple[str, str]]
    cold_tokens: list[str]


@dataclass(frozen=True, slots=True)
class Placement:
    """Which CPUs the server and the load generator run on; None: wherever the scheduler likes."""

    server_cpu: int | None
    client_cpus: tuple[int, ...] | None


def _placement(plan: Plan) -> Placement:
    """The server on one CPU of its own, the clients on the rest.

    In production the connectors run on other machines; here they share two cores with the
    server. Left to the scheduler, the server's threads and the clients' compete for both cores
    and hand the GIL across them: on 2026-11-28 the same SELECT 1 round trip ran at 247 ops/s
    unpinned (06:11 UTC, 16 client threads) and 381 ops/s pinned (07:04 UTC, 8), and server CPU
    per RPC fell from 643 to 418 µs (medians over windows). Pinning does not make single windows
    steadier (their A/A ratios spread as widely): the rounds and the median deal with that.
    """
    if not plan.pin or not hasattr(os, "sched_getaffinity"):
        return Placement(None, None)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Placement(None, None)
    return Placement(cpus[-1], tuple(cpus[:-1]))


@contextmanager
def _server_process(plan: Plan, placement: Placement) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="e6auth-bench-grpc-") as home:
        # None of the caller's E6AUTH_*: they would change what is measured.
        env = {key: value for key, value in os.environ.items() if not key.startswith("E6AUTH_")}
        env["E6AUTH_HOME"] = home
        # Keys from the environment, as a deployment with replicas has them: the server then
        # writes no key files (and warns about none).
        env["E6AUTH_PEPPER"] = secrets.token_urlsafe(48)
        env["E6AUTH_SESSION_KEY"] = secrets.token_urlsafe(48)
        command = [sys.executable, "-m", "benchmarks.grpc", "--serve"]
        command += [f"--cold-passwords={plan.cold_passwords}", f"--cold-tokens={plan.cold_tokens}"]
        if placement.server_cpu is not None:
            command.append(f"--cpu={placement.server_cpu}")
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            line = process.stdout.readline()
            if not line:
                raise SystemExit(f"the server process exited ({process.wait()}) before serving")
            ready = json.loads(line)
            ready.pop("token_id")
            ready["cold_users"] = [tuple(pair) for pair in ready["cold_users"]]
            yield Server(pid=process.pid, **ready)
        finally:
            process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True, slots=True)
class Usage:
    """What a process has used so far, all its threads together."""

    user: float
    system: float
    switches: int
    """Context switches, voluntary or not: a thread waiting for the GIL or a lock is one."""

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def __sub__(self, start: Usage) -> Usage:
        return Usage(
            self.user - start.user, self.system - start.system, self.switches - start.switches
        )


def _process_usage(pid: int) -> Usage | None:
    """The CPU time and context switches of a process; None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        switches = sum(_switches(status) for status in Path(f"/proc/{pid}/task").glob("*/status"))
    except OSError:
        return None
    # After the command name (in parentheses, may hold spaces): field 3 is the state, 14 utime,
    # 15 stime.
    fields = stat.rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return Usage(int(fields[11]) / ticks, int(fields[12]) / ticks, switches)


def _switches(status: Path) -> int:
    try:
        lines = status.read_text().splitlines()
    except OSError:  # the thread has just ended
        return 0
    return sum(int(line.split()[1]) for line in lines if "ctxt_switches:" in line)


def _machine_busy_seconds() -> float | None:
    """CPU time every process on the machine has used (time stolen by the hypervisor included:
    it is time this benchmark did not get); None where /proc is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal (guest time is counted in user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# -- the clients --------------------------------------------------------------------------------

Metadata = tuple[tuple[str, str], ...]
# What the connector sends on every call (its _get_grpc_header); plannerip once it has a query.
BASE_METADATA: Metadata = (("cluster-name", CATALOG),)


def _channel(port: int) -> grpc.Channel:
    # A local subchannel pool, or every channel to a port would share one TCP connection: many
    # connectors mean many connections.
    return grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


def _stub(channel: grpc.Channel) -> Any:
    # The generated stub carries no annotations.
    return pb_grpc.QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]


class Caller:
    """One arm as one client sees it: a stub, the session id its requests carry, its metadata."""

    def __init__(self, stub: Any, session_id: str, metadata: Metadata) -> None:
        self._stub = stub
        self._session = session_id
        self._metadata = metadata

    def query(self) -> int:
        """One ``SELECT 1`` the way the connector runs it; returns the number of RPCs."""
        stub, session, metadata = self._stub, self._session, self._metadata
        prepared = stub.prepareStatement(
            pb.PrepareStatementRequest(sessionId=session, queryString=QUERY),
            metadata=metadata,
            timeout=RPC_TIMEOUT_SECONDS,
        )
        engine, query_id = prepared.engineIP, prepared.queryId
        metadata = (*metadata, ("plannerip", engine))
        ids = {"engineIP": engine, "sessionId": session, "queryId": query_id}
        stub.executeStatement(
            pb.ExecuteStatementRequest(**ids), metadata=metadata, timeout=RPC_TIMEOUT_SECONDS
        )
        stub.getResultMetadata(
            pb.GetResultMetadataRequest(**ids), metadata=metadata, timeout=RPC_TIMEOUT_SECONDS
        )
        rpcs = 4
        while stub.getNextResultBatch(
            pb.GetNextResultBatchRequest(**ids), metadata=metadata, timeout=RPC_TIMEOUT_SECONDS
        ).resultBatch:
            rpcs += 1
        stub.clearOrCancelQuery(
            pb.ClearOrCancelQueryRequest(**ids), metadata=metadata, timeout=RPC_TIMEOUT_SECONDS
        )
        return rpcs + 1

    def schemas(self) -> int:
        response = self._stub.getSchemaNamesV2(
            pb.GetSchemaNamesV2Request(sessionId=self._session, catalog=CATALOG),
            metadata=self._metadata,
            timeout=RPC_TIMEOUT_SECONDS,
        )
        if not response.schemas:
            raise AssertionError("getSchemaNamesV2 answered no schema")
        return 1

    def operation(self, workload: Workload) -> Callable[[], int]:
        return self.query if workload == "query" else self.schemas


class Client:
    """One simulated connector: its own channels, and a session from a PAT login."""

    def __init__(self, server: Server) -> None:
        self._channels = [
            _channel(server.plain_port),
            _channel(server.plain2_port),
            _channel(server.auth_port),
        ]
        plain, plain2, auth = (_stub(channel) for channel in self._channels)
        session = auth.authenticate(
            pb.AuthenticateRequest(user=server.user, password=server.token),
            metadata=BASE_METADATA,
            timeout=RPC_TIMEOUT_SECONDS,
        ).sessionId
        bearer = (*BASE_METADATA, ("authorization", f"Bearer {server.token}"))
        self.arms: dict[Arm, Caller] = {
            # The same requests as the session arm: the bytes on the wire differ in nothing.
            "plain": Caller(plain, session, BASE_METADATA),
            "plain2": Caller(plain2, session, BASE_METADATA),
            "session": Caller(auth, session, BASE_METADATA),
            "bearer": Caller(auth, "", bearer),
        }

    def check(self) -> None:
        """Each arm answers, and a query yields one batch then the end, as counted."""
        for caller in self.arms.values():
            if caller.query() != 6:
                raise AssertionError("SELECT 1 did not take one batch and an empty one")
            caller.schemas()

    def close(self) -> None:
        for channel in self._channels:
            channel.close()


@dataclass(frozen=True, slots=True)
class Counters:
    """Everything a window is measured by, read at its start and at its end."""

    at: float
    ops: int
    rpcs: int
    server: Usage | None
    client_cpu: float
    machine_cpu: float | None

    def __sub__(self, start: Counters) -> Sample:
        server = None if self.server is None or start.server is None else self.server - start.server
        machine = (
            None
            if self.machine_cpu is None or start.machine_cpu is None
            else self.machine_cpu - start.machine_cpu
        )
        client = self.client_cpu - start.client_cpu
        return Sample(
            seconds=self.at - start.at,
            ops=self.ops - start.ops,
            rpcs=self.rpcs - start.rpcs,
            server=server,
            client_cpu=client,
            other_cpu=None if machine is None or server is None else machine - server.cpu - client,
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One window: what was done, and the CPU time the server, the clients and every other
    process on the machine took meanwhile."""

    seconds: float
    ops: int
    rpcs: int
    server: Usage | None
    client_cpu: float
    other_cpu: float | None

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "seconds": round(self.seconds, 3),
            "ops": self.ops,
            "rpcs": self.rpcs,
            "ops_per_s": round(self.ops / self.seconds, 1),
            "rpcs_per_s": round(self.rpcs / self.seconds, 1),
            "server_cpu_cores": None,
            "server_cpu_us_per_rpc": None,
            "server_system_share": None,
            "server_switches_per_rpc": None,
            "client_cpu_cores": self._cores(self.client_cpu),
            "other_cpu_cores": None if self.other_cpu is None else self._cores(self.other_cpu),
        }
        if self.server is not None and self.rpcs:
            server = self.server
            figures["server_cpu_cores"] = self._cores(server.cpu)
            figures["server_cpu_us_per_rpc"] = round(server.cpu / self.rpcs * 1e6, 1)
            figures["server_system_share"] = (
                round(server.system / server.cpu, 3) if server.cpu else None
            )
            figures["server_switches_per_rpc"] = round(server.switches / self.rpcs, 2)
        return figures

    def _cores(self, cpu_seconds: float) -> float:
        return round(cpu_seconds / self.seconds, 3)


class LoadPool:
    """``concurrency`` client threads that drive one (arm, workload) at a time, flat out.

    Each phase starts every thread at once (a barrier), lets the load settle for the warm-up,
    counts completed operations over the window, then stops every thread before the next phase
    so that no call of one arm lands in another's window.
    """

    def __init__(self, server: Server, concurrency: int) -> None:
        self._server_pid = server.pid
        self._clients = [Client(server) for _ in range(concurrency)]
        self._clients[0].check()
        self._ops = [0] * concurrency
        self._rpcs = [0] * concurrency
        self._phase: tuple[Arm, Workload] | None = None
        self._stop = threading.Event()
        self._start_line = threading.Barrier(concurrency + 1)
        self._finish_line = threading.Barrier(concurrency + 1)
        self._errors: list[BaseException] = []
        self._threads = [
            threading.Thread(target=self._work, args=(index,), name=f"bench-client-{index}")
            for index in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self, index: int) -> None:
        client = self._clients[index]
        try:
            while True:
                self._start_line.wait()
                if self._phase is None:
                    return
                arm, workload = self._phase
                operation = client.arms[arm].operation(workload)
                while not self._stop.is_set():
                    self._rpcs[index] += operation()
                    self._ops[index] += 1
                self._finish_line.wait()
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:
            self._errors.append(exc)
            self._start_line.abort()
            self._finish_line.abort()

    def _counters(self) -> Counters:
        return Counters(
            at=time.perf_counter(),
            ops=sum(self._ops),
            rpcs=sum(self._rpcs),
            server=_process_usage(self._server_pid),
            client_cpu=time.process_time(),
            machine_cpu=_machine_busy_seconds(),
        )

    def run(self, arm: Arm, workload: Workload, warmup: float, window: float) -> Sample:
        self._phase = (arm, workload)
        self._stop.clear()
        try:
            self._start_line.wait()
            time.sleep(warmup)
            start = self._counters()
            time.sleep(window)
            end = self._counters()
            self._stop.set()
            self._finish_line.wait()
        except threading.BrokenBarrierError:
            raise RuntimeError(f"a client failed in {arm}/{workload}") from (
                self._errors[0] if self._errors else None
            )
        return end - start

    def close(self) -> None:
        self._phase = None
        with suppress(threading.BrokenBarrierError):  # a client failed: the threads are out
            self._start_line.wait(timeout=RPC_TIMEOUT_SECONDS)
        for thread in self._threads:
            thread.join()
        for client in self._clients:
            client.close()


@contextmanager
def _load_pool(server: Server, concurrency: int) -> Iterator[LoadPool]:
    pool = LoadPool(server, concurrency)
    try:
        yield pool
    finally:
        pool.close()


# -- the measurements ---------------------------------------------------------------------------


def _run(plan: Plan, *, quick: bool) -> dict[str, Any]:
    report: dict[str, Any] = {
        "benchmark": "grpc",
        **machine_info(),
        "cpu_model": cpu_model(),
        "grpcio": importlib.metadata.version("grpcio"),
        "protobuf": importlib.metadata.version("protobuf"),
        "e6auth_source": _source_state(),
        "load_average_at_start": list(os.getloadavg()),
        "quick": quick,
        "argon2": production_argon2(),
    }
    print(
        f"starting the server; creating {plan.cold_passwords} users (production argon2)…",
        flush=True,
    )
    placement = _placement(plan)
    if placement.client_cpus is not None:
        # This thread first: the client threads and grpc's own threads inherit its CPUs.
        os.sched_setaffinity(0, placement.client_cpus)
    report["placement"] = dataclasses.asdict(placement)
    report["settings"] = {
        **dataclasses.asdict(plan),
        "server": "one process: build_gateway (AuthInterceptor) and two identical twin "
        "servers with FixedPrincipalInterceptor on the same QueryManager (plain, and plain2 "
        "as an A/A control); SQLite token store; the rounds spread evenly over "
        f"{plan.processes} such processes, started one after the other",
        "arm_order": "a seeded random permutation of the arms per round; the workloads "
        "alternate which goes first",
        "server_options": dict(SERVER_OPTIONS),
        "client": "this process; one thread per client, each with its own channels",
        "query": QUERY,
        "target_overhead": TARGET_OVERHEAD,
    }
    # A random order in each round: no arm keeps a place, nor always follows the same arm.
    order = random.Random(plan.seed)
    report["rounds"] = []
    for process in range(plan.processes):
        with _server_process(plan, placement) as server:
            report["settings"]["grpc_max_workers"] = server.grpc_max_workers
            if process == 0:
                print("timing the handshake…", flush=True)
                report["handshake"] = _handshake(server, plan)
                print(f"saturation sweep over {list(plan.sweep)} client threads…", flush=True)
                report["sweep"] = _sweep(server, plan)
            first = len(report["rounds"])
            count = (plan.rounds * (process + 1)) // plan.processes - first
            print(
                f"server process {process + 1} of {plan.processes}: {count} rounds of"
                f" {len(ARMS) * len(WORKLOADS)} windows ({plan.concurrency} client threads,"
                f" {plan.window_seconds} s each)…",
                flush=True,
            )
            report["rounds"] += _rounds(server, plan, order, first, count, process + 1)
    report["results"] = _results(report["rounds"])
    report["control"] = {
        workload: {
            "arms": f"{CONTROL_ARM} / plain",
            "what": "two identical no-auth servers: the bias and noise floor of every ratio",
            **{
                key: report["results"][workload][CONTROL_ARM][key]
                for key in ("ratio_median", "ratio_ci95", "overhead", "ci_contains_1")
            },
        }
        for workload in WORKLOADS
    }
    return report


def _source_state() -> dict[str, Any] | None:
    """The commit measured, and whether e6auth/ had uncommitted changes on top of it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "e6auth"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "modified": bool(changes.strip())}


def _handshake(server: Server, plan: Plan) -> dict[str, Any]:
    channel = _channel(server.auth_port)
    stub = _stub(channel)

    def login(user: str, secret: str) -> None:
        response = stub.authenticate(
            pb.AuthenticateRequest(user=user, password=secret),
            metadata=BASE_METADATA,
            timeout=RPC_TIMEOUT_SECONDS,
        )
        if not response.sessionId:
            raise AssertionError("authenticate answered no session")

    try:
        cold_tokens = iter(server.cold_tokens)
        cold_users = iter(server.cold_users)
        pat_cold = time_calls(lambda: login(server.user, next(cold_tokens)), plan.cold_tokens)
        password_cold = time_calls(lambda: login(*next(cold_users)), plan.cold_passwords)
        login(server.user, server.token)
        login(server.user, server.password)
        # Interleaved: a drift in CPU speed then biases neither.
        pat_cached, password_cached = time_interleaved(
            [lambda: login(server.user, server.token), lambda: login(server.user, server.password)],
            plan.cached_logins,
        )
    finally:
        channel.close()
    return {
        # With the percentile curve that ``python -m benchmarks`` plots.
        name: {**summary(times), "percentiles_us": percentile_curve(times)}
        for name, times in (
            ("pat_cold", pat_cold),
            ("pat_cached", pat_cached),
            ("password_cold", password_cold),
            ("password_cached", password_cached),
        )
    }


def _sweep(server: Server, plan: Plan) -> list[dict[str, Any]]:
    """Throughput by number of client threads: where it stops growing, the server is saturated."""
    levels = []
    for concurrency in plan.sweep:
        with _load_pool(server, concurrency) as pool:
            level: dict[str, Any] = {"concurrency": concurrency}
            for arm in ("plain", "session"):
                sample = pool.run(
                    arm, "query", plan.sweep_warmup_seconds, plan.sweep_window_seconds
                )
                level[arm] = sample.figures()
        levels.append(level)
        print(
            f"  {concurrency:>3} threads: no auth {level['plain']['ops_per_s']:,.0f} ops/s,"
            f" session {level['session']['ops_per_s']:,.0f} ops/s",
            flush=True,
        )
    return levels


def _rounds(
    server: Server, plan: Plan, order: random.Random, first: int, count: int, process: int
) -> list[dict[str, Any]]:
    """Rounds ``first + 1`` to ``first + count``, on one server process (numbered from 1)."""
    rounds = []
    with _load_pool(server, plan.concurrency) as pool:
        for number in range(first, first + count):
            arms = tuple(order.sample(ARMS, len(ARMS)))
            workloads = WORKLOADS if number % 2 == 0 else WORKLOADS[::-1]
            figures: dict[str, Any] = {
                "round": number + 1,
                "process": process,
                "order": list(arms),
            }
            for workload in workloads:
                figures[workload] = {
                    arm: pool.run(arm, workload, plan.warmup_seconds, plan.window_seconds).figures()
                    for arm in arms
                }
            rounds.append(figures)
            print(
                f"  round {number + 1}: "
                + "; ".join(
                    f"{workload} "
                    + " ".join(f"{arm} {figures[workload][arm]['ops_per_s']:,.0f}" for arm in ARMS)
                    for workload in WORKLOADS
                ),
                flush=True,
            )
    return rounds


def _results(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per arm and, for the control and each authenticating arm, the median over rounds
    of its throughput over the no-auth arm's in the same round, with a distribution-free 95 %
    interval; for the authenticating arms also over the mean of the two no-auth arms."""
    results: dict[str, Any] = {}
    for workload in WORKLOADS:
        per_arm: dict[str, Any] = {}
        for arm in ARMS:
            samples = [entry[workload][arm] for entry in rounds]
            per_arm[arm] = {
                key: _median([sample[key] for sample in samples])
                for key in (
                    "ops_per_s",
                    "rpcs_per_s",
                    "server_cpu_cores",
                    "server_cpu_us_per_rpc",
                    "server_system_share",
                    "server_switches_per_rpc",
                    "client_cpu_cores",
                    "other_cpu_cores",
                )
            }
        for arm in (CONTROL_ARM, *AUTH_ARMS):
            pairs = [(entry[workload][arm], entry[workload]["plain"]) for entry in rounds]
            ratios = [mine["ops_per_s"] / plain["ops_per_s"] for mine, plain in pairs]
            ratio = statistics.median(ratios)
            interval = _median_interval(ratios)
            cpu_pairs = [
                (mine["server_cpu_us_per_rpc"], plain["server_cpu_us_per_rpc"])
                for mine, plain in pairs
                if mine["server_cpu_us_per_rpc"] is not None
            ]
            cpu_ratio = _median([plain / mine for mine, plain in cpu_pairs])
            per_arm[arm].update(
                {
                    "ratio_per_round": [round(value, 4) for value in ratios],
                    "ratio_median": round(ratio, 4),
                    "ratio_ci95": _rounded(interval),
                    "overhead": round(1 - ratio, 4),
                    # Throughput lost if the server's CPU were all that limited it.
                    "cpu_overhead": None if cpu_ratio is None else round(1 - cpu_ratio, 4),
                    "server_cpu_us_per_rpc_over_plain": _median(
                        [mine - plain for mine, plain in cpu_pairs]
                    ),
                }
            )
            if arm == CONTROL_ARM:
                # Not a cost: two identical servers. Its overhead is the measurement's bias.
                per_arm[arm]["ci_contains_1"] = (
                    None if interval is None else interval[0] <= 1 <= interval[1]
                )
            else:
                per_arm[arm]["verdict"] = _verdict(ratio, interval)
                per_arm[arm].update(_against_plain_mean(rounds, workload, arm))
        results[workload] = per_arm
    return results


def _against_plain_mean(
    rounds: list[dict[str, Any]], workload: Workload, arm: Arm
) -> dict[str, Any]:
    """The arm's throughput over the mean of both no-auth arms' in the same round."""
    ratios = [
        entry[workload][arm]["ops_per_s"]
        / ((entry[workload]["plain"]["ops_per_s"] + entry[workload][CONTROL_ARM]["ops_per_s"]) / 2)
        for entry in rounds
    ]
    ratio = statistics.median(ratios)
    interval = _median_interval(ratios)
    return {
        "ratio_vs_plain_mean_per_round": [round(value, 4) for value in ratios],
        "ratio_vs_plain_mean_median": round(ratio, 4),
        "ratio_vs_plain_mean_ci95": _rounded(interval),
        "overhead_vs_plain_mean": round(1 - ratio, 4),
        "verdict_vs_plain_mean": _verdict(ratio, interval),
    }


def _rounded(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [round(value, 4) for value in interval]


def _verdict(ratio: float, interval: tuple[float, float] | None) -> str:
    """Whether the target is met, judged on the interval where there is one: a point estimate
    on the right side of 2 % means little when the noise is larger."""
    if interval is None:
        return "met" if 1 - ratio <= TARGET_OVERHEAD else "missed"
    low, high = interval
    if 1 - low <= TARGET_OVERHEAD:
        return "met"
    if 1 - high > TARGET_OVERHEAD:
        return "missed"
    return "met (median)" if 1 - ratio <= TARGET_OVERHEAD else "missed (median)"


def _median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A confidence interval for the median from order statistics (no assumption about the
    distribution; rounds disturbed by other processes are outliers, not noise to average). None
    when there are too few values for one."""
    count = len(values)
    tail = (1 - confidence) / 2
    excluded = 0
    below = 0.0  # P(Binomial(count, 1/2) < excluded)
    while below + math.comb(count, excluded) / 2**count <= tail:
        below += math.comb(count, excluded) / 2**count
        excluded += 1
    if excluded == 0:
        return None
    ordered = sorted(values)
    return ordered[excluded - 1], ordered[count - excluded]


def _median(values: list[Any]) -> float | None:
    present = [value for value in values if value is not None]
    return round(statistics.median(present), 3) if present else None


# -- the table ----------------------------------------------------------------------------------

_THROUGHPUT = Table(
    Column("workload", 21, align="<"),
    Column("arm", 12, align="<"),
    Column("ops/s", 8, ",.0f"),
    Column("srv CPU", 8, ".2f"),
    Column("µs/RPC", 8, ".0f"),
    Column("sw/RPC", 8, ".1f"),
    Column("ratio", 7, ".3f"),
    Column("95% CI", 17),
    Column("overhead", 9),
    Column("verdict", 17),
    Column("CPU ovh", 8),
    Column("+µs/RPC", 8, ".1f"),
)
_ADJUSTED = Table(
    Column("workload", 21, align="<"),
    Column("arms", 28, align="<"),
    Column("ratio", 7, ".3f"),
    Column("95% CI", 17),
    Column("overhead", 9),
    Column("verdict", 18),
)
_SWEEP = Table(
    Column("threads", 8),
    Column("no auth ops/s", 15, ",.0f"),
    Column("srv CPU", 9, ".2f"),
    Column("session ops/s", 15, ",.0f"),
    Column("srv CPU", 9, ".2f"),
    Column("client CPU", 12, ".2f"),
    Column("other CPU", 11, ".2f"),
)
_LATENCY = Table(
    Column("login (authenticate RPC)", 34, align="<"),
    Column("n", 6),
    Column("p50 µs", 11, ",.0f"),
    Column("p90 µs", 11, ",.0f"),
    Column("p99 µs", 11, ",.0f"),
    Column("max µs", 11, ",.0f"),
)


def _print_table(report: dict[str, Any]) -> None:
    settings = report["settings"]
    argon2 = report["argon2"]
    print(
        f"\ne6auth gRPC gateway with and without authentication — {report['date']} on"
        f" {report['hostname']} ({report['cpu_model']}, {report['cpu_count']} CPUs,"
        f" Python {report['python']}, grpcio {report['grpcio']})"
    )
    placement = report.get("placement") or {}
    where = (
        f"server on CPU {placement['server_cpu']}, clients on CPUs"
        f" {', '.join(map(str, placement['client_cpus']))}"
        if placement.get("server_cpu") is not None
        else "placed by the scheduler"
    )
    print(
        f"server: one process at a time ({settings.get('processes', 1)} in turn),"
        f" {settings['grpc_max_workers']} worker threads per server;"
        f" client: {settings['concurrency']} threads in another process; {where};"
        f" {settings['rounds']} interleaved rounds of {settings['window_seconds']} s per arm\n"
    )
    print("saturation (SELECT 1 round trips; server and client CPU in cores)")
    _SWEEP.print_header()
    for level in report["sweep"]:
        plain, session = level["plain"], level["session"]
        _SWEEP.print_row(
            level["concurrency"],
            plain["ops_per_s"],
            _dash(plain["server_cpu_cores"]),
            session["ops_per_s"],
            _dash(session["server_cpu_cores"]),
            session["client_cpu_cores"],
            _dash(session["other_cpu_cores"]),
        )
    print(
        "\nthroughput at saturation, medians over rounds. srv CPU: server cores busy; µs/RPC and"
        " sw/RPC: server CPU time\nand context switches per RPC; ratio: median over rounds of"
        " ops/s over no auth's in the same round, with\nits 95% CI; CPU ovh: 1 - median of no"
        " auth's server CPU per RPC over the arm's; +µs/RPC: the difference. no auth 2 is an"
        " A/A control,\na second no-auth server identical to the first: its overhead is the"
        " measurement's bias, not a cost"
    )
    _THROUGHPUT.print_header()
    for workload in WORKLOADS:
        for arm in ARMS:
            row = report["results"][workload][arm]
            if arm == "plain":
                extra: tuple[object, ...] = ("—", "", "", "", "", "")
            else:
                interval = row["ratio_ci95"]
                cpu = row["cpu_overhead"]
                extra = (
                    row["ratio_median"],
                    _interval_text(interval),
                    f"{row['overhead']:.1%}",
                    "A/A control" if arm == CONTROL_ARM else row["verdict"],
                    "—" if cpu is None else f"{cpu:.1%}",
                    _dash(row["server_cpu_us_per_rpc_over_plain"]),
                )
            _THROUGHPUT.print_row(
                WORKLOAD_LABELS[workload],
                ARM_LABELS[arm],
                row["ops_per_s"],
                _dash(row["server_cpu_cores"]),
                _dash(row["server_cpu_us_per_rpc"]),
                _dash(row["server_switches_per_rpc"]),
                *extra,
            )
    print(
        "\nA/A control and the overhead against the mean of both no-auth arms (per round: ops/s"
        " over the mean\nof no auth's and no auth 2's in the same round; median over rounds,"
        " 95% CI)"
    )
    _ADJUSTED.print_header()
    for workload in WORKLOADS:
        control = report["results"][workload][CONTROL_ARM]
        _ADJUSTED.print_row(
            WORKLOAD_LABELS[workload],
            "A/A: no auth 2 / no auth",
            control["ratio_median"],
            _interval_text(control["ratio_ci95"]),
            f"{control['overhead']:.1%}",
            {True: "CI contains 1", False: "CI excludes 1"}.get(control["ci_contains_1"], "—"),
        )
        for arm in AUTH_ARMS:
            row = report["results"][workload][arm]
            _ADJUSTED.print_row(
                WORKLOAD_LABELS[workload],
                f"{ARM_LABELS[arm]} / mean no auth",
                row["ratio_vs_plain_mean_median"],
                _interval_text(row["ratio_vs_plain_mean_ci95"]),
                f"{row['overhead_vs_plain_mean']:.1%}",
                row["verdict_vs_plain_mean"],
            )
    others = [
        entry[workload][arm]["other_cpu_cores"]
        for entry in report["rounds"]
        for workload in WORKLOADS
        for arm in ARMS
        if entry[workload][arm]["other_cpu_cores"] is not None
    ]
    if others:
        print(
            f"other processes on the machine used {statistics.median(others):.2f} cores"
            f" (median; max {max(others):.2f}) during the windows"
        )
    print(f"target: authentication costs <= {TARGET_OVERHEAD:.0%} of throughput")
    print(
        f"\nhandshake latency (one client, idle server; argon2id m={argon2['memory_kib']} KiB"
        f" t={argon2['time_cost']} p={argon2['parallelism']})"
    )
    _LATENCY.print_header()
    for key, label in (
        ("pat_cold", "PAT, first use (store read)"),
        ("pat_cached", "PAT, cached"),
        ("password_cold", "password, first login (argon2)"),
        ("password_cached", "password, cached"),
    ):
        row = report["handshake"][key]
        _LATENCY.print_row(
            label, row["n"], row["median_us"], row["p90_us"], row["p99_us"], row["max_us"]
        )


def _interval_text(interval: list[float] | None) -> str:
    return "(too few rounds)" if interval is None else f"{interval[0]:.3f}..{interval[1]:.3f}"


def _dash(value: float | None) -> float | str:
    return "—" if value is None else value


if __name__ == "__main__":
    sys.exit(main())
