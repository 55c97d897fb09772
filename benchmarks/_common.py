"""What the benchmarks share: the machine's description, timing loops and their percentiles,
stores on a temporary SQLite file and in a private PostgreSQL schema, the JSON and the table."""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from e6auth import Settings
from e6auth.credentials.keys import Pepper
from e6auth.credentials.passwords import Passwords
from e6auth.store import TokenStore
from e6auth.store.database import create_store_engine, safe_url
from e6auth.store.migrate import ensure_schema

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "RESULTS",
    "Column",
    "PostgresUnreachable",
    "Table",
    "Timings",
    "add_backend_arguments",
    "cpu_model",
    "machine_info",
    "make_store",
    "on_each_backend",
    "percentile_curve",
    "private_schema",
    "production_argon2",
    "quiet_gc",
    "server_version",
    "summary",
    "time_calls",
    "time_interleaved",
    "utc_now",
    "write_report",
]

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
RESULTS = Path(__file__).resolve().parent / "results"

Timings = list[int]
"""Nanoseconds, one per timed call."""

Bench = Callable[[str, str], dict[str, Any]]
"""Runs a benchmark on (backend name, database URL) and returns its figures."""


# -- the command line ---------------------------------------------------------------------------


def add_backend_arguments(parser: argparse.ArgumentParser, *, quick_help: str) -> None:
    """The options every benchmark has: where PostgreSQL is, whether it must be, --quick."""
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--require-postgres",
        action="store_true",
        help="exit non-zero when PostgreSQL cannot be reached (default: skip it)",
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)


# -- the machine --------------------------------------------------------------------------------


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def machine_info() -> dict[str, Any]:
    """When and on what a benchmark ran, so that figures from two runs can be told apart."""
    return {
        "date": utc_now(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "sqlalchemy": sqlalchemy.__version__,
        "argon2_cffi": importlib.metadata.version("argon2-cffi"),
        "e6auth": importlib.metadata.version("e6auth"),
    }


def cpu_model() -> str:
    # platform.processor() is empty or just "x86_64" on Linux; /proc/cpuinfo names the part.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def production_argon2() -> dict[str, int]:
    """The Settings defaults, read from the model so that the environment cannot change them."""
    defaults: dict[str, int] = {}
    for name in ("memory_kib", "time_cost", "parallelism"):
        default = Settings.setting_fields[f"argon2_{name}"].default
        if not isinstance(default, int):
            raise SystemExit(f"the setting argon2_{name} has no integer default")
        defaults[name] = default
    built = Passwords().parameters
    # The stores are built with Passwords(); it must agree with the settings, or a benchmark
    # would time something production does not run.
    if defaults != {
        "memory_kib": built.memory_kib,
        "time_cost": built.time_cost,
        "parallelism": built.parallelism,
    }:
        raise SystemExit(f"Passwords() defaults {built} differ from the Settings defaults")
    return defaults


# -- the databases ------------------------------------------------------------------------------


class PostgresUnreachable(Exception):
    pass


@contextmanager
def private_schema(admin_url: str) -> Iterator[str]:
    """A URL whose connections live in a fresh schema, dropped afterwards (as the tests do)."""
    schema = f"e6auth_bench_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        except OperationalError as exc:
            raise PostgresUnreachable(type(exc.orig).__name__) from exc
        url = make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def on_each_backend(bench: Bench, postgres_url: str) -> tuple[dict[str, dict[str, Any]], bool]:
    """``bench`` on a temporary SQLite file, then in a private PostgreSQL schema.

    Returns the figures by backend, and whether PostgreSQL was reached; when it was not, its
    entry says why and the reason goes to stderr.
    """
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="e6auth-bench-") as folder:
        results["sqlite"] = bench("sqlite", f"sqlite:///{Path(folder) / 'bench.db'}")
    try:
        with private_schema(postgres_url) as url:
            results["postgresql"] = bench("postgresql", url)
    except PostgresUnreachable as exc:
        reason = f"PostgreSQL unreachable at {safe_url(postgres_url)} ({exc})"
        print(f"skipped postgresql: {reason}", file=sys.stderr)
        results["postgresql"] = {"skipped": reason}
        return results, False
    return results, True


def make_store(url: str, *, passwords: Passwords | None = None) -> TokenStore:
    """A migrated store on ``url`` with a throwaway pepper and, by default, production argon2."""
    engine = create_store_engine(url)
    ensure_schema(engine, migrate=True)
    return TokenStore(
        engine, pepper=Pepper(secrets.token_bytes(32)), passwords=passwords or Passwords()
    )


def server_version(engine: Engine) -> str:
    query = "select sqlite_version()" if engine.dialect.name == "sqlite" else "show server_version"
    with engine.connect() as connection:
        return str(connection.execute(text(query)).scalar_one())


# -- timing -------------------------------------------------------------------------------------


@contextmanager
def quiet_gc() -> Iterator[None]:
    # As timeit does: a collection landing in one call would show as a tail no verify has.
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


EVICT_BYTES = 8 * 1024 * 1024
"""What :func:`evict_caches` writes: more than this machine's L2 and a quarter of its L3."""
_EVICTED = bytearray(EVICT_BYTES)
_LINE = 64


def evict_caches() -> None:
    """Write one byte per cache line of ``EVICT_BYTES``: what the last call touched is no longer
    in the CPU caches, as after the rest of a busy server's work."""
    _EVICTED[::_LINE] = bytes(EVICT_BYTES // _LINE)


def time_calls(call: Callable[[], object], n: int) -> Timings:
    timings: Timings = []
    with quiet_gc():
        for _ in range(n):
            start = time.perf_counter_ns()
            call()
            timings.append(time.perf_counter_ns() - start)
    return timings


def time_interleaved(calls: list[Callable[[], object]], n: int) -> list[Timings]:
    """One round of every call, ``n`` times: a drift in CPU speed then biases none of them."""
    timings: list[Timings] = [[] for _ in calls]
    with quiet_gc():
        for _ in range(n):
            for call, times in zip(calls, timings, strict=True):
                start = time.perf_counter_ns()
                call()
                times.append(time.perf_counter_ns() - start)
    return timings


def summary(timings_ns: Timings, *, digits: int = 1) -> dict[str, float | int]:
    """Median (p50), p90, p99, mean, min and max in microseconds."""
    micros = [ns / 1000 for ns in timings_ns]
    cuts = statistics.quantiles(micros, n=100, method="inclusive")
    return {
        "n": len(micros),
        "median_us": round(statistics.median(micros), digits),
        "p90_us": round(cuts[89], digits),
        "p99_us": round(cuts[98], digits),
        "mean_us": round(statistics.fmean(micros), digits),
        "min_us": round(min(micros), digits),
        "max_us": round(max(micros), digits),
    }


def percentile_curve(timings_ns: Timings, *, digits: int = 1) -> list[list[float]]:
    """[percentile, microseconds] pairs from p1 to p99, then p99.5 and p99.9 where there are
    enough calls to tell them apart: the whole distribution for a plot, in at most 101 points
    whatever the number of calls (the raw timings of a 200,000-call run would not fit a JSON
    worth committing)."""
    micros = [ns / 1000 for ns in timings_ns]
    if len(micros) < 2:
        return []
    cuts = statistics.quantiles(micros, n=1000, method="inclusive")  # p0.1 .. p99.9
    grid = [*range(10, 1000, 10)]
    grid += [cut for cut, needed in ((995, 200), (999, 1000)) if len(micros) >= needed]
    return [[cut / 10, round(cuts[cut - 1], digits)] for cut in grid]


# -- output -------------------------------------------------------------------------------------


def write_report(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    width: int
    spec: str = ""
    """Format spec for numbers (``",.1f"``); text is only padded."""
    align: Literal["<", ">"] = ">"


class Table:
    """Fixed-width rows under a header and a rule, one print per line."""

    def __init__(self, *columns: Column) -> None:
        self.columns = columns

    def header(self) -> str:
        return "".join(f"{column.title:{column.align}{column.width}}" for column in self.columns)

    def print_header(self) -> None:
        header = self.header()
        print(header)
        print("-" * len(header))

    def row(self, *values: object) -> str:
        return "".join(
            format(value, f"{column.align}{column.width}{_spec(column, value)}")
            for column, value in zip(self.columns, values, strict=True)
        )

    def print_row(self, *values: object) -> None:
        print(self.row(*values))


def _spec(column: Column, value: object) -> str:
    # A number column may hold a dash or a note where there is no figure.
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return column.spec if number else ""
