"""How long a deleted token keeps working on three replicas: with NOTIFY, and with polling alone.

Three real `e6auth serve` processes share a token store in a private schema of the local
PostgreSQL. For each deletion: a new token, accepted (and so cached) by every replica; one thread
per replica calling with it in a tight loop; the delete, through a TokenStore in this process; and
per replica the delay from the delete returning to the first refused call. A refusal that arrives
before the delete has returned counts as 0 (and is counted apart).

Run ``python -m benchmarks.revocation [--quick] [--deletions N] [--postgres-url URL]``. The table
goes to stdout, the figures to ``benchmarks/results/revocation.json``. Target: p99 <= 250 ms with
NOTIFY.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import grpc
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from e6auth.credentials.keys import Pepper
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.store import TokenStore
from e6auth.store.database import create_store_engine, safe_url
from e6auth.store.migrate import ensure_schema

if __package__ in (None, ""):
    # Run as a file (python benchmarks/revocation.py): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    RESULTS,
    Column,
    Table,
    add_backend_arguments,
    cpu_model,
    machine_info,
    private_schema,
    server_version,
    summary,
    write_report,
)

DEFAULT_OUTPUT = RESULTS / "revocation.json"
DELETIONS = 100
QUICK_DELETIONS = 10
WARMUP_DELETIONS = 3
REPLICAS = 3
TARGET_P99_MS = 250.0
START_SECONDS = 60.0
CALL_SECONDS = 5.0
GIVE_UP_SECONDS = 15.0
USER = "bench"
PEPPER = secrets.token_urlsafe(32)  # a throwaway store: a throwaway pepper
SESSION_KEY = secrets.token_urlsafe(32)
REFUSED = ("UNAUTHENTICATED", "token revoked")
OK = ("OK", "")

Outcome = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    env: Mapping[str, str]
    poll_seconds: float
    notify: bool
    jitter_seconds: float
    """Random pause before each delete. Polling ticks on its own clock, and a loop that deletes
    right after the previous refusal would always land at the same phase of it."""


MODES = (
    # The defaults: NOTIFY on, and the log still polled every second as the catch-up path.
    Mode("notify", {}, poll_seconds=1.0, notify=True, jitter_seconds=0.1),
    Mode(
        "polling",
        {"E6AUTH_INVALIDATION_NOTIFY": "false", "E6AUTH_INVALIDATION_POLL_SECONDS": "1"},
        poll_seconds=1.0,
        notify=False,
        jitter_seconds=1.0,
    ),
)


# -- the replicas ----------------------------------------------------------------------------


class Replica:
    """A real `e6auth serve --port 0`, its log drained on a thread."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        # `e6auth serve` on PostgreSQL with keys from the environment does not make its home,
        # where the default query database lives.
        home.mkdir(parents=True, exist_ok=True)
        base = {name: value for name, value in os.environ.items() if not name.startswith("E6AUTH_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "e6auth.cli", "serve", "--port", "0"],
            env={**base, "E6AUTH_HOME": str(home), **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        assert self.process.stderr is not None
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()
        self.address = ""

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.log.append(line.rstrip("\n"))

    def wait_until_serving(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_SECONDS
        # readline blocks, but the process prints this line or exits (EOF) soon after starting.
        for line in self.process.stdout:
            if line.startswith("e6auth serving on "):
                self.address = line.split()[3].rstrip(";")
                return self.address
            if time.monotonic() > deadline:
                break
        raise RuntimeError("e6auth serve did not start:\n" + "\n".join(self.log))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextmanager
def replicas(folder: Path, env: Mapping[str, str]) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    try:
        for index in range(REPLICAS):
            started.append(Replica(folder / f"replica{index}", env))
        for replica in started:
            replica.wait_until_serving()
        yield started
    finally:
        for replica in started:
            replica.stop()


def bearer_call(stub: QueryEngineServiceStub, token: str) -> Outcome:
    try:
        stub.getSchemaNamesV2(
            pb.GetSchemaNamesV2Request(),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=CALL_SECONDS,
        )
    except grpc.RpcError as exc:
        # What grpcio raises for a call is also a grpc.Call; its type stubs do not say so.
        call = cast(grpc.Call, exc)
        return call.code().name, call.details() or ""
    return OK


# -- one deletion ----------------------------------------------------------------------------


@dataclass
class _Watcher:
    """Calls one replica with the token until refused."""

    stub: QueryEngineServiceStub
    token: str
    stop_at: float
    watching: threading.Event = field(default_factory=threading.Event)
    refused_at: float | None = None
    outcome: Outcome | None = None
    calls: int = 0

    def run(self) -> None:
        while time.perf_counter() < self.stop_at:
            outcome = bearer_call(self.stub, self.token)
            now = time.perf_counter()
            self.calls += 1
            if outcome != OK:
                self.refused_at, self.outcome = now, outcome
                break
            self.watching.set()
        self.watching.set()


@dataclass(frozen=True, slots=True)
class Deletion:
    delays_ns: list[int | None]
    """Per replica; None if it never refused."""
    before_return: int
    calls: int


def accept_everywhere(stubs: Sequence[QueryEngineServiceStub], token: str) -> None:
    for index, stub in enumerate(stubs):
        deadline = time.monotonic() + GIVE_UP_SECONDS
        while (outcome := bearer_call(stub, token)) != OK:
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {index} never accepted a new token: {outcome}")
            time.sleep(0.01)


def delete_and_watch(
    store: TokenStore, stubs: Sequence[QueryEngineServiceStub], jitter: float
) -> Deletion:
    new = store.create_token(USER)
    accept_everywhere(stubs, new.token)
    time.sleep(random.uniform(0.0, jitter))
    stop_at = time.perf_counter() + GIVE_UP_SECONDS
    watchers = [_Watcher(stub, new.token, stop_at) for stub in stubs]
    threads = [threading.Thread(target=watcher.run, daemon=True) for watcher in watchers]
    for thread in threads:
        thread.start()
    for watcher in watchers:
        watcher.watching.wait(GIVE_UP_SECONDS)
    store.delete_tokens([new.id])
    returned = time.perf_counter()
    for thread in threads:
        thread.join(GIVE_UP_SECONDS + CALL_SECONDS)
    delays: list[int | None] = []
    before = 0
    for watcher in watchers:
        if watcher.refused_at is None or watcher.outcome != REFUSED:
            if watcher.outcome not in (None, REFUSED):
                raise RuntimeError(f"refused for another reason: {watcher.outcome}")
            delays.append(None)
            continue
        delay = watcher.refused_at - returned
        before += delay < 0
        delays.append(max(int(delay * 1e9), 0))
    return Deletion(delays, before, sum(watcher.calls for watcher in watchers))


# -- one mode --------------------------------------------------------------------------------


def listeners(admin_url: str, application_name: str) -> int:
    engine = create_engine(admin_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE application_name = :name AND query LIKE 'LISTEN%'"
                    ),
                    {"name": application_name},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def wait_for_listeners(admin_url: str, application_name: str, expected: int) -> int:
    """The replicas' LISTEN connections once they are all up (NOTIFY) or surely none (polling)."""
    deadline = time.monotonic() + 10.0
    while (count := listeners(admin_url, application_name)) != expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return count


def bench_mode(mode: Mode, admin_url: str, deletions: int) -> dict[str, Any]:
    application_name = f"e6auth_bench_{secrets.token_hex(4)}"
    with ExitStack() as stack:
        url = stack.enter_context(private_schema(admin_url))
        replica_url = (
            make_url(url)
            .update_query_dict({"application_name": application_name})
            .render_as_string(hide_password=False)
        )
        engine = create_store_engine(url)
        ensure_schema(engine, migrate=True)
        store = TokenStore(engine, pepper=Pepper(PEPPER.encode()))
        stack.callback(store.close)
        store.create_user(USER)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="e6auth-bench-")))
        env = {
            "E6AUTH_DATABASE_URL": replica_url,
            "E6AUTH_PEPPER": PEPPER,
            "E6AUTH_SESSION_KEY": SESSION_KEY,
            **mode.env,
        }
        started = stack.enter_context(replicas(folder, env))
        channels = [stack.enter_context(grpc.insecure_channel(r.address)) for r in started]
        # The generated stub carries no annotations.
        stubs = [QueryEngineServiceStub(channel) for channel in channels]  # type: ignore[no-untyped-call]
        listening = wait_for_listeners(admin_url, application_name, REPLICAS if mode.notify else 0)

        print(f"{mode.name}: {deletions} deletions on {REPLICAS} replicas", file=sys.stderr)
        for _ in range(WARMUP_DELETIONS):
            delete_and_watch(store, stubs, mode.jitter_seconds)
        results = []
        for index in range(deletions):
            results.append(delete_and_watch(store, stubs, mode.jitter_seconds))
            if (index + 1) % 10 == 0:
                print(f"  {index + 1}/{deletions}", file=sys.stderr)

    per_replica: list[list[int]] = [[] for _ in range(REPLICAS)]
    missed = 0
    for deletion in results:
        for replica, delay in enumerate(deletion.delays_ns):
            if delay is None:
                missed += 1
            else:
                per_replica[replica].append(delay)
    problems = []
    if missed:
        problems.append(f"{missed} refusals never came within {GIVE_UP_SECONDS} s")
    if listening != (REPLICAS if mode.notify else 0):
        problems.append(f"{listening} replicas listening for NOTIFY")
    return {
        "settings": {
            "invalidation_notify": mode.notify,
            "invalidation_poll_seconds": mode.poll_seconds,
            "environment": dict(mode.env),
        },
        "jitter_seconds": mode.jitter_seconds,
        "listening_replicas": listening,
        "deletions": deletions,
        "all": summary([delay for delays in per_replica for delay in delays]),
        "per_replica": [summary(delays) for delays in per_replica],
        "refused_before_delete_returned": sum(d.before_return for d in results),
        "calls_per_deletion_mean": round(sum(d.calls for d in results) / len(results), 1),
        "delays_ms": [[round(delay / 1e6, 2) for delay in delays] for delays in per_replica],
        "problems": problems,
    }


# -- the report ------------------------------------------------------------------------------


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _source_revision() -> dict[str, Any] | None:
    """Which e6auth was measured: the commit, and whether its source differed from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        changed = git("diff", "--quiet", "HEAD", "--", "e6auth").returncode != 0
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "e6auth").stdout
    except OSError:  # no git
        return None
    return {"commit": head.stdout.strip(), "modified": changed or bool(untracked.strip())}


def _ms(value_us: float) -> float:
    return value_us / 1000


TABLE = Table(
    Column("mode", 10, align="<"),
    Column("replica", 9, align="<"),
    Column("n", 6),
    Column("p50 ms", 10, ",.1f"),
    Column("p90 ms", 10, ",.1f"),
    Column("p99 ms", 10, ",.1f"),
    Column("max ms", 10, ",.1f"),
)


def _print_table(report: dict[str, Any]) -> None:
    print()
    TABLE.print_header()
    for name, result in report["modes"].items():
        rows = [("all", result["all"])] + [
            (f"r{index}", figures) for index, figures in enumerate(result["per_replica"])
        ]
        for label, figures in rows:
            TABLE.print_row(
                name,
                label,
                figures["n"],
                _ms(figures["median_us"]),
                _ms(figures["p90_us"]),
                _ms(figures["p99_us"]),
                _ms(figures["max_us"]),
            )
    for target in report["targets"]:
        verdict = "met" if target["met"] else "MISSED"
        print(f"target {target['what']}: {target['value_ms']} ms, {verdict}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    deletions = args.deletions or (QUICK_DELETIONS if args.quick else DELETIONS)
    report: dict[str, Any] = {
        "benchmark": "revocation",
        **machine_info(),
        "cpu_model": cpu_model(),
        "e6auth_source": _source_revision(),
        # Other work on the machine shows in every figure: say how busy it was.
        "load_average_at_start": _load_average(),
        "quick": args.quick,
        "replicas": REPLICAS,
        "deletions_per_mode": deletions,
        "warmup_deletions": WARMUP_DELETIONS,
        "delay": "from the delete returning to the first refused call, per replica",
        "postgresql": {"url": safe_url(args.postgres_url)},
    }
    engine = create_engine(args.postgres_url, poolclass=NullPool)
    try:
        report["postgresql"]["server_version"] = server_version(engine)
    except OperationalError as exc:
        reason = (
            f"PostgreSQL unreachable at {safe_url(args.postgres_url)} ({type(exc.orig).__name__})"
        )
        print(reason, file=sys.stderr)
        return 1 if args.require_postgres else 0
    finally:
        engine.dispose()
    report["modes"] = {mode.name: bench_mode(mode, args.postgres_url, deletions) for mode in MODES}
    report["load_average_at_end"] = _load_average()
    notify_p99 = round(_ms(report["modes"]["notify"]["all"]["p99_us"]), 1)
    report["targets"] = [
        {"what": "p99 with NOTIFY <= 250 ms", "value_ms": notify_p99, "met": notify_p99 <= 250}
    ]
    _print_table(report)
    write_report(report, args.output)
    problems = [
        f"{name}: {problem}"
        for name, result in report["modes"].items()
        for problem in result["problems"]
    ]
    for problem in problems:
        print(f"not measured as intended: {problem}")
    return 1 if problems else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_backend_arguments(parser, quick_help=f"{QUICK_DELETIONS} deletions per mode")
    parser.add_argument(
        "--deletions",
        type=int,
        metavar="N",
        help=f"deletions per mode (default {DELETIONS}; {QUICK_DELETIONS} with --quick)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser


if __name__ == "__main__":
    sys.exit(main())
