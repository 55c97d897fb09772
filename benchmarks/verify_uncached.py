"""What one verify costs with no cache in front of the store: a PAT, and a password.

Every timed call goes through ``Authenticator.verify(username, secret)``, the connector handshake,
so the PAT and password figures are comparable. Passwords use the production argon2id parameters
(the ``Settings`` defaults). Wrong passwords and unknown users are timed too: they must cost what
a right password costs, or the time would tell an attacker which users exist.

Run ``python -m benchmarks.verify_uncached [--quick] [--postgres-url URL] [--require-postgres]``.
The table goes to stdout, the figures to ``benchmarks/results/verify_uncached.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import inspect
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
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from e6auth import Authenticator, InvalidPassword, Settings, UnknownUser
from e6auth.keys import Pepper
from e6auth.passwords import Passwords
from e6auth.store import TokenStore
from e6auth.store.engine import create_store_engine, safe_url
from e6auth.store.migrate import ensure_schema
from e6auth.testing import count_queries

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "verify_uncached.json"
PAT_VERIFIES = 2000
PASSWORD_VERIFIES = 50
USER = "bench"
PASSWORD = secrets.token_urlsafe(24)  # a throwaway user in a throwaway database

Timings = list[int]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    divisor = 10 if args.quick else 1
    n_pat = max(args.pat_verifies // divisor, 10)
    n_password = max(args.password_verifies // divisor, 5)
    parameters = _production_argon2()

    report: dict[str, Any] = {
        "benchmark": "verify_uncached",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "sqlalchemy": sqlalchemy.__version__,
        "argon2_cffi": importlib.metadata.version("argon2-cffi"),
        "e6auth": importlib.metadata.version("e6auth"),
        "argon2": parameters,
        "quick": args.quick,
        "n": {"pat": n_pat, "password": n_password},
        "backends": {},
    }
    failed = False

    with tempfile.TemporaryDirectory(prefix="e6auth-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        report["backends"]["sqlite"] = _bench_backend("sqlite", url, n_pat, n_password)

    try:
        with _private_schema(args.postgres_url) as url:
            report["backends"]["postgresql"] = _bench_backend("postgresql", url, n_pat, n_password)
    except _Unreachable as exc:
        reason = f"PostgreSQL unreachable at {safe_url(args.postgres_url)} ({exc})"
        print(f"skipped postgresql: {reason}", file=sys.stderr)
        report["backends"]["postgresql"] = {"skipped": reason}
        failed = args.require_postgres

    _print_table(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    uncached = all(
        result.get("queries_per_verify", {}).get(kind, 1) >= 1
        for result in report["backends"].values()
        for kind in ("pat", "password")
    )
    if not uncached:
        print("a verify ran no query: something cached it; the figures are not uncached")
    return 1 if failed or not uncached else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument(
        "--require-postgres",
        action="store_true",
        help="exit non-zero when PostgreSQL cannot be reached (default: skip it)",
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the verifies")
    parser.add_argument("--pat-verifies", type=int, default=PAT_VERIFIES, metavar="N")
    parser.add_argument("--password-verifies", type=int, default=PASSWORD_VERIFIES, metavar="N")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser


def _production_argon2() -> dict[str, int]:
    """The Settings defaults, read from the model so that the environment cannot change them."""
    fields = Settings.model_fields
    defaults = {
        "memory_kib": fields["argon2_memory_kib"].default,
        "time_cost": fields["argon2_time_cost"].default,
        "parallelism": fields["argon2_parallelism"].default,
    }
    built = Passwords().parameters
    # Passwords() is what the brief asks for; it must agree with the settings, or this
    # benchmark would time something production does not run.
    if defaults != {
        "memory_kib": built.memory_kib,
        "time_cost": built.time_cost,
        "parallelism": built.parallelism,
    }:
        raise SystemExit(f"Passwords() defaults {built} differ from the Settings defaults")
    return defaults


class _Unreachable(Exception):
    pass


@contextmanager
def _private_schema(admin_url: str) -> Iterator[str]:
    """A URL whose connections live in a fresh schema, dropped afterwards (as the tests do)."""
    schema = f"e6auth_bench_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        try:
            with admin.connect() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        except OperationalError as exc:
            raise _Unreachable(type(exc.orig).__name__) from exc
        url = make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def _make_authenticator(url: str) -> Authenticator:
    engine = create_store_engine(url)
    ensure_schema(engine, migrate=True)
    store = TokenStore(engine, pepper=Pepper(secrets.token_bytes(32)), passwords=Passwords())
    # Every cache off (a TTL of 0 disables each): this benchmark is about the store and argon2.
    # Found by name so that a cache added later is switched off too; _queries_per_call checks
    # that every verify still reaches the database.
    options: dict[str, Any] = {
        name: 0 for name in inspect.signature(Authenticator).parameters if "cache_ttl" in name
    }
    return Authenticator(store, **options)


def _bench_backend(name: str, url: str, n_pat: int, n_password: int) -> dict[str, Any]:
    print(f"benchmarking {name} ({n_pat} PAT, {n_password} x3 password verifies)…", flush=True)
    auth = _make_authenticator(url)
    try:
        store = auth.store
        store.create_user(USER, PASSWORD)
        token = store.create_token(USER, comment="benchmark").token

        def pat() -> None:
            auth.verify(USER, token)

        def right() -> None:
            auth.verify(USER, PASSWORD)

        def wrong() -> None:
            try:
                auth.verify(USER, PASSWORD + "x")
            except InvalidPassword:
                return
            raise AssertionError("a wrong password was accepted")

        def unknown() -> None:
            try:
                auth.verify("nobody-" + USER, PASSWORD)
            except UnknownUser:
                return
            raise AssertionError("an unknown user was accepted")

        queries = {"pat": _queries_per_call(auth, pat), "password": _queries_per_call(auth, right)}
        _run(pat, max(n_pat // 10, 20))
        _run_interleaved([right, wrong, unknown], max(n_password // 10, 3))

        pat_times = _run(pat, n_pat)
        # Interleaved, so that a drift in CPU speed does not bias the ratios between the three.
        right_times, wrong_times, unknown_times = _run_interleaved(
            [right, wrong, unknown], n_password
        )
        result: dict[str, Any] = {
            "url": safe_url(url),
            "server_version": _server_version(auth),
            "queries_per_verify": queries,
            "pat": _summary(pat_times),
            "password_right": _summary(right_times),
            "password_wrong": _summary(wrong_times),
            "password_unknown_user": _summary(unknown_times),
        }
        median = {key: result[key]["median_us"] for key, _label in _ROWS}
        result["ratios"] = {
            "password_over_pat": median["password_right"] / median["pat"],
            "wrong_over_right_password": median["password_wrong"] / median["password_right"],
            "unknown_user_over_right_password": (
                median["password_unknown_user"] / median["password_right"]
            ),
        }
        return result
    finally:
        auth.close()


def _queries_per_call(auth: Authenticator, call: Callable[[], None], calls: int = 5) -> float:
    """SQL statements per verify: zero would mean a cache answered and nothing was measured."""
    with count_queries(auth.store.engine) as counter:
        for _ in range(calls):
            call()
    return counter.count / calls


@contextmanager
def _quiet_gc() -> Iterator[None]:
    # As timeit does: a collection landing in one call would show as a tail no verify has.
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _run(call: Callable[[], None], n: int) -> Timings:
    timings: Timings = []
    with _quiet_gc():
        for _ in range(n):
            start = time.perf_counter_ns()
            call()
            timings.append(time.perf_counter_ns() - start)
    return timings


def _run_interleaved(calls: list[Callable[[], None]], n: int) -> list[Timings]:
    timings: list[Timings] = [[] for _ in calls]
    with _quiet_gc():
        for _ in range(n):
            for call, times in zip(calls, timings, strict=True):
                start = time.perf_counter_ns()
                call()
                times.append(time.perf_counter_ns() - start)
    return timings


def _summary(timings_ns: Timings) -> dict[str, float | int]:
    micros = [ns / 1000 for ns in timings_ns]
    cuts = statistics.quantiles(micros, n=100, method="inclusive")
    return {
        "n": len(micros),
        "median_us": round(statistics.median(micros), 1),
        "p90_us": round(cuts[89], 1),
        "p99_us": round(cuts[98], 1),
        "mean_us": round(statistics.fmean(micros), 1),
        "min_us": round(min(micros), 1),
        "max_us": round(max(micros), 1),
    }


def _server_version(auth: Authenticator) -> str:
    engine = auth.store.engine
    query = "select sqlite_version()" if engine.dialect.name == "sqlite" else "show server_version"
    with engine.connect() as connection:
        return str(connection.execute(text(query)).scalar_one())


_ROWS = [
    ("pat", "PAT verify"),
    ("password_right", "password, right"),
    ("password_wrong", "password, wrong"),
    ("password_unknown_user", "password, unknown user"),
]


def _print_table(report: dict[str, Any]) -> None:
    argon2 = report["argon2"]
    print(
        f"\ne6auth verify without cache — {report['date']} on {report['hostname']}"
        f" (Python {report['python']}, {report['cpu_count']} CPUs,"
        f" SQLAlchemy {report['sqlalchemy']})"
    )
    print(
        f"argon2id m={argon2['memory_kib']} KiB t={argon2['time_cost']} p={argon2['parallelism']}\n"
    )
    header = (
        f"{'backend':<11}{'operation':<24}{'n':>6}{'median µs':>12}{'p90 µs':>12}{'p99 µs':>12}"
    )
    print(header)
    print("-" * len(header))
    for backend, result in report["backends"].items():
        if "skipped" in result:
            print(f"{backend:<11}skipped: {result['skipped']}")
            continue
        for key, label in _ROWS:
            row = result[key]
            print(
                f"{backend:<11}{label:<24}{row['n']:>6}{row['median_us']:>12,.1f}"
                f"{row['p90_us']:>12,.1f}{row['p99_us']:>12,.1f}"
            )
        ratios = result["ratios"]
        print(
            f"{'':<11}password / PAT (median) = {ratios['password_over_pat']:,.0f}x;"
            f" wrong / right = {ratios['wrong_over_right_password']:.2f};"
            f" unknown user / right = {ratios['unknown_user_over_right_password']:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
