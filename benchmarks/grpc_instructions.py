"""What authentication costs the gateway in instructions: a figure machine noise cannot move.

Throughput on a shared two-core machine moves by several percent from one second to the next,
which is more than the cost being measured (``benchmarks/grpc.py`` reports that honestly with an
A/A control). Instructions executed are another matter: under callgrind, the same work executes
the same instructions whatever else the machine does. So this script runs the very server process
of ``benchmarks/grpc.py`` (the gateway, and two identical twins without authentication, ``no auth``
and its A/A control ``no auth 2``) under ``valgrind --tool=callgrind``, drives each arm with real
gRPC clients from this process, and reads the server's instruction count around each window with
``callgrind_control`` (zero, run, dump).

What this counts: every instruction of the server process in user space, all its threads (grpc's
C core, Python, SQLite), per RPC. What it does not: the kernel's share (system calls, scheduling),
and time spent waiting. Background work that runs per second rather than per request (the
invalidation poll, the last-used and audit flushes, cache expiry) is set far apart, because under
valgrind a second of wall time holds about fifty times fewer requests than it would natively, and
such work would be counted fifty times too heavily. Valgrind may take other code paths than the
native CPU for hashing (no SHA extensions), so hashing weighs more here than it does natively.

Run ``python -m benchmarks.grpc_instructions [--quick]``; valgrind must be installed. The table
goes to stdout, the figures to ``benchmarks/results/grpc_instructions.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

from benchmarks._common import RESULTS, Column, Table, machine_info, write_report
from benchmarks.grpc import (
    ARM_LABELS,
    ARMS,
    AUTH_ARMS,
    CONTROL_ARM,
    DEFAULT_SEED,
    REPO_ROOT,
    WORKLOAD_LABELS,
    WORKLOADS,
    Arm,
    Client,
    Server,
    Workload,
)

DEFAULT_OUTPUT = RESULTS / "grpc_instructions.json"
TARGET_OVERHEAD = 0.02
CLIENTS = 4
# Per-second background work, spread far apart (see the module's docstring).
QUIET_BACKGROUND = {
    "E6AUTH_CACHE_TTL_SECONDS": "86400",
    "E6AUTH_INVALIDATION_POLL_SECONDS": "3600",
    "E6AUTH_LAST_USED_FLUSH_SECONDS": "3600",
    "E6AUTH_AUDIT_FLUSH_SECONDS": "3600",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round of fewer operations")
    parser.add_argument("--rounds", type=int, default=None, metavar="N")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is needed: apt-get install valgrind")
    rounds = args.rounds or (1 if args.quick else 3)
    per_window = 60 if args.quick else 120
    operations: dict[Workload, int] = {"query": per_window, "metadata": per_window}
    report = {"benchmark": "grpc_instructions", **machine_info(), "quick": args.quick}
    report["settings"] = {
        "rounds": rounds,
        "operations_per_window": operations,
        "clients": CLIENTS,
        "seed": DEFAULT_SEED,
        "server": "benchmarks.grpc --serve under valgrind --tool=callgrind",
        "server_environment": QUIET_BACKGROUND,
        "target_overhead": TARGET_OVERHEAD,
    }
    with _server_under_callgrind() as (server, dumps):
        samples = _measure(server, dumps, rounds, operations)
    report["results"] = _results(samples)
    _print_table(report)
    write_report(report, args.output)
    return 0


@contextmanager
def _server_under_callgrind() -> Iterator[tuple[Server, Path]]:
    with tempfile.TemporaryDirectory(prefix="e6auth-bench-cg-") as folder:
        home, dumps = Path(folder) / "home", Path(folder) / "dumps"
        dumps.mkdir()
        env = {key: value for key, value in os.environ.items() if not key.startswith("E6AUTH_")}
        env.update(QUIET_BACKGROUND)
        env["E6AUTH_HOME"] = str(home)
        env["E6AUTH_PEPPER"] = secrets.token_urlsafe(48)
        env["E6AUTH_SESSION_KEY"] = secrets.token_urlsafe(48)
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={dumps}/cg.out",
            "--dump-line=no",
            sys.executable,
            "-m",
            "benchmarks.grpc",
            "--serve",
        ]
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            line = process.stdout.readline()
            if not line:
                raise SystemExit(f"the server exited ({process.wait()}) before serving")
            ready = json.loads(line)
            ready.pop("token_id")
            ready["cold_users"] = [tuple(pair) for pair in ready["cold_users"]]
            yield Server(pid=process.pid, **ready), dumps
        finally:
            process.stdin.close()
            try:
                process.wait(timeout=300)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _measure(
    server: Server, dumps: Path, rounds: int, operations: dict[Workload, int]
) -> dict[tuple[Workload, Arm], list[float]]:
    clients = [Client(server) for _ in range(CLIENTS)]
    pool = futures.ThreadPoolExecutor(CLIENTS)
    order = random.Random(DEFAULT_SEED)
    samples: dict[tuple[Workload, Arm], list[float]] = {}

    def drive(arm: Arm, workload: Workload, total: int) -> int:
        def one_client(client: Client) -> int:
            operation = client.arms[arm].operation(workload)
            return sum(operation() for _ in range(total // CLIENTS))

        return sum(pool.map(one_client, clients))

    try:
        for arm in ARMS:  # warm every path before anything is counted
            for workload in WORKLOADS:
                drive(arm, workload, 4 * CLIENTS)
        for number in range(1, rounds + 1):
            for workload in WORKLOADS:
                arms = list(ARMS)
                order.shuffle(arms)
                for arm in arms:
                    _callgrind(server.pid, "-z")
                    rpcs = drive(arm, workload, operations[workload])
                    instructions = _dump_total(server.pid, dumps, f"{arm}-{workload}-{number}")
                    samples.setdefault((workload, arm), []).append(instructions / rpcs)
            print(f"  round {number} of {rounds} counted", flush=True)
    finally:
        for client in clients:
            client.close()
        pool.shutdown()
    return samples


def _callgrind(pid: int, *options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True)


def _dump_total(pid: int, dumps: Path, label: str) -> int:
    before = set(dumps.iterdir())
    _callgrind(pid, "-d", label)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for path in sorted(set(dumps.iterdir()) - before):
            total = _total(path)
            if total is not None:
                return total
        time.sleep(0.2)
    raise SystemExit(f"callgrind wrote no dump for {label}")


def _total(path: Path) -> int | None:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return None


def _results(samples: dict[tuple[Workload, Arm], list[float]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for workload in WORKLOADS:
        per_arm = {arm: statistics.median(samples[(workload, arm)]) for arm in ARMS}
        plain_mean = (per_arm["plain"] + per_arm[CONTROL_ARM]) / 2
        results[workload] = {
            arm: {
                "instructions_per_rpc": round(per_arm[arm]),
                "per_round": [round(value) for value in samples[(workload, arm)]],
                "over_plain": round(per_arm[arm] / per_arm["plain"] - 1, 4),
                "over_plain_mean": round(per_arm[arm] / plain_mean - 1, 4),
                "extra_per_rpc": round(per_arm[arm] - plain_mean),
            }
            for arm in ARMS
        }
        for arm in AUTH_ARMS:
            over = results[workload][arm]["over_plain_mean"]
            results[workload][arm]["target_met"] = over <= TARGET_OVERHEAD
    return results


def _print_table(report: dict[str, Any]) -> None:
    table = Table(
        Column("workload", 22, align="<"),
        Column("arm", 12, align="<"),
        Column("instr/RPC", 12, ",.0f"),
        Column("vs no auth", 12, "+.2%"),
        Column("vs mean", 10, "+.2%"),
        Column("extra/RPC", 11, ",.0f"),
    )
    print("\nserver instructions per RPC under callgrind (medians over rounds)")
    table.print_header()
    for workload in WORKLOADS:
        for arm in ARMS:
            row = report["results"][workload][arm]
            table.print_row(
                WORKLOAD_LABELS[workload],
                ARM_LABELS[arm],
                row["instructions_per_rpc"],
                row["over_plain"],
                row["over_plain_mean"],
                row["extra_per_rpc"],
            )
    print(f"'vs mean': against the mean of the two no-auth twins; target {TARGET_OVERHEAD:.0%}")


if __name__ == "__main__":
    raise SystemExit(main())
