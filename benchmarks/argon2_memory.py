"""What bursts of password handshakes do to a gateway's memory, with the argon2 gate and without.

A real `e6auth serve` (production argon2: 19 MiB per hash) on loopback, with a temporary home and
throttling off (the handshakes all come from one address). Five bursts of 32 concurrent
handshakes, each on its own channel and for a made-up user name: unknown users are hashed too, so
this is what a password spray, or a BI tool opening a pool of connections, costs. The server's
RSS (``VmRSS`` of ``/proc/<pid>/status``) is sampled before, during, and for up to a minute after.

Two arms, each on a fresh gateway: ``gated`` (the defaults: as many hashes at once as there are
CPUs) and ``ungated`` (``E6AUTH_ARGON2_MAX_CONCURRENT`` far above the gRPC worker count: as
before the gate existed).

Run ``python -m benchmarks.argon2_memory [--quick]``. The table goes to stdout, the figures to
``benchmarks/results/argon2_memory.json``. Targets: gated growth <= 150 MiB at peak, and back
within a minute to at most what the gate's slots may keep between bursts (each slot's thread
can keep one freed hash buffer in its malloc arena, out of ``malloc_trim``'s reach): the usable
CPUs x the argon2 memory. Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc

from e6auth.credentials.hashgate import default_max_concurrent
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub

if __package__ in (None, ""):
    # Run as a file (python benchmarks/argon2_memory.py): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    RESULTS,
    Column,
    Table,
    cpu_model,
    machine_info,
    production_argon2,
    write_report,
)

DEFAULT_OUTPUT = RESULTS / "argon2_memory.json"
BURSTS = 5
CONCURRENT = 32
SETTLE_SECONDS = 60.0
QUICK_SETTLE_SECONDS = 15.0
PAUSE_SECONDS = 0.5
SAMPLE_SECONDS = 0.02
START_SECONDS = 60.0
CALL_SECONDS = 120.0
TARGET_PEAK_GROWTH_MIB = 150.0
UNGATED = "1024"
"""Far above the gRPC worker count (64): no handshake ever waits for the gate."""

ARMS: dict[str, Mapping[str, str]] = {
    "gated": {},
    "ungated": {"E6AUTH_ARGON2_MAX_CONCURRENT": UNGATED},
}
GATEWAY_ENV = {
    # Every handshake comes from 127.0.0.1 and fails: the throttle would block the address after
    # 30 and the rest would never reach argon2.
    "E6AUTH_THROTTLE_ADDRESS_FAILURES": "0",
    "E6AUTH_THROTTLE_USER_FAILURES": "0",
}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Gateway:
    """A real `e6auth serve --port 0` on a temporary home, its log drained on a thread."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        base = {name: value for name, value in os.environ.items() if not name.startswith("E6AUTH_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "e6auth.cli", "serve", "--port", "0"],
            env={**base, "E6AUTH_HOME": str(home), **GATEWAY_ENV, **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        assert self.process.stderr is not None
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()
        self.address = self._wait_until_serving()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.log.append(line.rstrip("\n"))

    def _wait_until_serving(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_SECONDS
        for line in self.process.stdout:
            if line.startswith("e6auth serving on "):
                return line.split()[3].rstrip(";")
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError("e6auth serve did not start:\n" + "\n".join(self.log))

    @property
    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Sampler:
    """The gateway's RSS every ``SAMPLE_SECONDS`` on a thread, with the time of each sample."""

    pid: int
    started: float = field(default_factory=time.monotonic)
    samples: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.started, rss_mib(self.pid)))
            self._stop.wait(SAMPLE_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return max(rss for _at, rss in self.samples)


def handshake(address: str, user: str) -> str:
    """One `authenticate` on a channel of its own (as each connection of a pool has); its status
    code's name."""
    with grpc.insecure_channel(address) as channel:
        stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.authenticate(
                pb.AuthenticateRequest(user=user, password=secrets.token_urlsafe(12)),
                timeout=CALL_SECONDS,
            )
        except grpc.RpcError as error:
            return str(error.code().name)
        return "OK"


def burst(pool: ThreadPoolExecutor, address: str, index: int) -> dict[str, Any]:
    users = [f"nobody-{index}-{n}-{secrets.token_hex(3)}" for n in range(CONCURRENT)]
    started = time.perf_counter()
    statuses = Counter(pool.map(lambda user: handshake(address, user), users))
    return {"seconds": round(time.perf_counter() - started, 3), "statuses": dict(statuses)}


def run_arm(
    name: str, env: Mapping[str, str], settle_seconds: float, settled_mib: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="e6auth-bench-") as folder:
        gateway = Gateway(Path(folder), env)
        try:
            with ThreadPoolExecutor(CONCURRENT) as pool:
                handshake(gateway.address, "warm-up")  # lazy imports, the first channel
                time.sleep(1.0)
                baseline = gateway.rss_mib
                sampler = Sampler(gateway.process.pid)
                bursts = []
                for index in range(BURSTS):
                    bursts.append(burst(pool, gateway.address, index))
                    time.sleep(PAUSE_SECONDS)
            after_bursts = gateway.rss_mib
            settled_after = _settle(gateway, baseline, settle_seconds, settled_mib)
            settled = gateway.rss_mib
            sampler.stop()
        finally:
            gateway.stop()
    peak = sampler.peak_mib
    result = {
        "env": dict(env),
        "baseline_mib": round(baseline, 1),
        "peak_mib": round(peak, 1),
        "peak_growth_mib": round(peak - baseline, 1),
        "after_bursts_growth_mib": round(after_bursts - baseline, 1),
        "settled_growth_mib": round(settled - baseline, 1),
        "settled_after_seconds": settled_after,
        "bursts": bursts,
        # One sample in ten: enough to draw the curve, short enough to commit.
        "rss_samples": [[round(at, 2), round(rss, 1)] for at, rss in sampler.samples[::10]],
    }
    print(f"{name}: {result['peak_growth_mib']} MiB at peak, {result['settled_growth_mib']} after")
    return result


def _settle(
    gateway: Gateway, baseline: float, settle_seconds: float, settled_mib: float
) -> float | None:
    """Seconds until the RSS is within ``settled_mib`` of ``baseline``; None if it never is
    within ``settle_seconds``."""
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        if gateway.rss_mib - baseline <= settled_mib:
            return round(waited, 1)
        if waited >= settle_seconds:
            return None
        time.sleep(0.25)


TABLE = Table(
    Column("arm", 10, align="<"),
    Column("baseline MiB", 14, ",.1f"),
    Column("peak MiB", 10, ",.1f"),
    Column("peak growth", 13, ",.1f"),
    Column("settled growth", 16, ",.1f"),
    Column("settled after s", 17),
    Column("burst s (max)", 15, ",.2f"),
)


def _print_table(report: dict[str, Any]) -> None:
    print()
    TABLE.print_header()
    for name, arm in report["arms"].items():
        TABLE.print_row(
            name,
            arm["baseline_mib"],
            arm["peak_mib"],
            arm["peak_growth_mib"],
            arm["settled_growth_mib"],
            "-" if arm["settled_after_seconds"] is None else arm["settled_after_seconds"],
            max(burst["seconds"] for burst in arm["bursts"]),
        )
    for target in report["targets"]:
        print(f"target {target['what']}: {target['value']}, {'met' if target['met'] else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settle = QUICK_SETTLE_SECONDS if args.quick else SETTLE_SECONDS
    argon2 = production_argon2()
    # What the gate's slots may keep between bursts: one freed hash buffer each.
    slots = default_max_concurrent()
    settled_mib = round(slots * argon2["memory_kib"] / 1024, 1)
    report: dict[str, Any] = {
        "benchmark": "argon2_memory",
        **machine_info(),
        "cpu_model": cpu_model(),
        "quick": args.quick,
        "argon2": argon2,
        "gate_slots": slots,
        "settled_bound_mib": settled_mib,
        "bursts": BURSTS,
        "concurrent_handshakes": CONCURRENT,
        "settle_seconds": settle,
        "gateway_env": GATEWAY_ENV,
        "arms": {name: run_arm(name, env, settle, settled_mib) for name, env in ARMS.items()},
    }
    gated, ungated = report["arms"]["gated"], report["arms"]["ungated"]
    report["peak_growth_ratio"] = _ratio(ungated["peak_growth_mib"], gated["peak_growth_mib"])
    report["settled_growth_ratio"] = _ratio(
        ungated["settled_growth_mib"], gated["settled_growth_mib"]
    )
    report["targets"] = [
        {
            "what": f"gated peak growth <= {TARGET_PEAK_GROWTH_MIB:.0f} MiB",
            "value": gated["peak_growth_mib"],
            "met": gated["peak_growth_mib"] <= TARGET_PEAK_GROWTH_MIB,
        },
        {
            "what": f"gated growth back under {settled_mib:g} MiB within {settle:.0f} s",
            "value": gated["settled_after_seconds"],
            "met": gated["settled_after_seconds"] is not None,
        },
    ]
    _print_table(report)
    print(
        f"ungated / gated: {report['peak_growth_ratio']}x at peak, "
        f"{report['settled_growth_ratio']}x settled"
    )
    write_report(report, args.output)
    return 0


def _ratio(numerator: float, denominator: float) -> float | None:
    # A growth within the noise (or below the baseline) makes no meaningful ratio.
    return round(numerator / denominator, 1) if denominator >= 1 else None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"sample for {QUICK_SETTLE_SECONDS:.0f} s after the bursts, not {SETTLE_SECONDS:.0f}",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser


if __name__ == "__main__":
    sys.exit(main())
