"""What a verify costs on the hot path, against the targets the design sets.

- Latency of ``Authenticator.verify(username, token)`` on a cache hit (one token, verified over
  and over) and on a cache miss (each call a different token that is in the store, so every one
  runs the whole pipeline: parse, cache miss, single-flight, store read, HMAC compare, fill).
- Password logins cold (argon2id at the production parameters) and warm (the password cache).
- Database statements for last-used times: none while verifying, one batched UPDATE per flush.
- Memory per cached entry, with tracemalloc, the cache's indexes included.

The authenticator is the default one (``background=False``, so the flushes happen when this
script says); latencies are timed per call with ``perf_counter_ns``, the garbage collector off.

Run ``python -m benchmarks.verify [--quick] [--postgres-url URL] [--require-postgres]`` or
``python benchmarks/verify.py``. The table goes to stdout, the figures to
``benchmarks/results/verify.json``. The exit status is 1 when PostgreSQL is required and
unreachable or when a measurement did not measure what it claims (a "hit" that ran a query, a
"miss" that did not); a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib.metadata
import os
import random
import secrets
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from e6auth import Authenticator
from e6auth.credentials.tokens import parse_token
from e6auth.store import TokenStore
from e6auth.store.database import safe_url
from e6auth.testing import count_queries
from e6auth.verify.cache import CacheStats
from e6auth.verify.parameters import CacheParameters, TaskParameters

if __package__ in (None, ""):
    # Run as a file (python benchmarks/verify.py): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    RESULTS,
    Column,
    Table,
    add_backend_arguments,
    cpu_model,
    machine_info,
    make_store,
    on_each_backend,
    percentile_curve,
    production_argon2,
    server_version,
    summary,
    time_calls,
    write_report,
)

DEFAULT_OUTPUT = RESULTS / "verify.json"
HIT_VERIFIES = 200_000
MISS_TOKENS = 2_000
COLD_LOGINS = 30
COLD_WARMUP = 2
WARM_LOGINS = 20_000
LAST_USED_VERIFIES = 100_000
LAST_USED_TOKENS = 10
MEMORY_ENTRIES = 20_000
# Filling the cache through real verifies under tracemalloc is the slowest part of a quick run
# (15 s for 2,000 entries on the development machine); 500 entries measure the same bytes per
# entry within a few percent, and keep `python -m benchmarks --quick` under two minutes.
QUICK_MEMORY_ENTRIES = 500
USER = "bench"
PASSWORD = secrets.token_urlsafe(24)  # throwaway users in a throwaway database
DIGITS = 2  # a hit takes a few microseconds: one decimal would hide a 5 % change

HIT_P50_US = 3.0
MISS_P50_US = {"sqlite": 300.0, "postgresql": 1000.0}
WRITES_PER_TOKEN_PER_FLUSH = 1
BYTES_PER_ENTRY = 1024


@dataclass(frozen=True, slots=True)
class _Counts:
    hit: int
    miss: int
    password_cold: int
    password_warm: int
    last_used_verifies: int
    last_used_tokens: int
    memory_entries: int

    @property
    def miss_warmup(self) -> int:
        return max(self.miss // 20, 20)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    divisor = 10 if args.quick else 1
    counts = _Counts(
        hit=max(args.hit_verifies // divisor, 100),
        miss=max(args.miss_tokens // divisor, 20),
        password_cold=max(args.cold_logins // divisor, 5),
        password_warm=max(args.warm_logins // divisor, 100),
        last_used_verifies=max(args.last_used_verifies // divisor, 100),
        last_used_tokens=LAST_USED_TOKENS,
        memory_entries=(
            min(args.memory_entries, QUICK_MEMORY_ENTRIES) if args.quick else args.memory_entries
        ),
    )
    report: dict[str, Any] = {
        "benchmark": "verify",
        **machine_info(),
        "cpu_model": cpu_model(),
        "cachetools": importlib.metadata.version("cachetools"),
        "e6auth_source": _source_revision(),
        # Other work on the machine shows in every figure: say how busy it was.
        "load_average_at_start": _load_average(),
        "argon2": production_argon2(),
        "quick": args.quick,
        "n": dataclasses.asdict(counts),
        "timer_overhead_us": _timer_overhead_us(counts.hit),
    }
    report["backends"], reached = on_each_backend(
        lambda name, url: _bench_backend(name, url, counts), args.postgres_url
    )
    report["memory"] = _bench_memory(counts.memory_entries)
    report["load_average_at_end"] = _load_average()
    report["targets"] = _targets(report)
    report["targets_met"] = sum(target["met"] for target in report["targets"])
    problems = [
        f"{backend}: {problem}"
        for backend, result in report["backends"].items()
        for problem in result.get("problems", [])
    ] + report["memory"]["problems"]

    _print_tables(report)
    write_report(report, args.output)
    for problem in problems:
        print(f"not measured as intended: {problem}")
    return 1 if problems or (args.require_postgres and not reached) else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_backend_arguments(
        parser,
        quick_help=f"a tenth of every count ({QUICK_MEMORY_ENTRIES} entries for the memory figure)",
    )
    parser.add_argument("--hit-verifies", type=int, default=HIT_VERIFIES, metavar="N")
    parser.add_argument("--miss-tokens", type=int, default=MISS_TOKENS, metavar="N")
    parser.add_argument("--cold-logins", type=int, default=COLD_LOGINS, metavar="N")
    parser.add_argument("--warm-logins", type=int, default=WARM_LOGINS, metavar="N")
    parser.add_argument("--last-used-verifies", type=int, default=LAST_USED_VERIFIES, metavar="N")
    parser.add_argument("--memory-entries", type=int, default=MEMORY_ENTRIES, metavar="N")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser


def _source_revision() -> dict[str, Any] | None:
    """The commit of the e6auth measured, and whether its files differ from it: the library
    changes under these figures, and the version number does not say how."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return None
        changed = git("diff", "--quiet", "HEAD", "--", "e6auth").returncode != 0
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "e6auth").stdout
    except OSError:  # no git
        return None
    return {"commit": head.stdout.strip(), "modified": changed or bool(untracked.strip())}


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, where the system has them."""
    return [round(load, 2) for load in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _nothing() -> None:
    pass


def _timer_overhead_us(n: int) -> float:
    """What the timing loop adds to every figure: two clock reads and a call of a no-op."""
    time_calls(_nothing, n // 10)
    return summary(time_calls(_nothing, n), digits=3)["median_us"]


# -- one backend --------------------------------------------------------------------------------


def _bench_backend(name: str, url: str, counts: _Counts) -> dict[str, Any]:
    print(f"benchmarking {name}: creating users and tokens…", flush=True)
    store = make_store(url)
    run = _Run(Authenticator(store, background=False))
    try:
        result: dict[str, Any] = {
            "url": safe_url(url),
            "server_version": server_version(store.engine),
        }
        # Everything is created before anything is timed, so that no write competes with a read.
        store.create_user(USER, PASSWORD)
        hit_token = store.create_token(USER, comment="hit").token
        miss_tokens = _create_tokens(store, counts.miss_warmup + counts.miss)
        last_used_tokens = _create_tokens(store, counts.last_used_tokens)
        cold_users = [f"cold-{index}" for index in range(COLD_WARMUP + counts.password_cold)]
        for user in cold_users:
            store.create_user(user, PASSWORD)

        print(f"benchmarking {name}: latency…", flush=True)
        result |= _bench_hit(run, hit_token, counts.hit)
        result |= _bench_miss(run, miss_tokens, counts.miss_warmup)
        result |= _bench_passwords(run, cold_users, counts.password_warm)
        result["queries_per_verify"] = run.queries

        print(f"benchmarking {name}: last-used writes…", flush=True)
        result["last_used"] = _bench_last_used(run, last_used_tokens, counts.last_used_verifies)
        result["problems"] = run.problems
        return result
    finally:
        run.auth.close()


def _create_tokens(store: TokenStore, n: int) -> list[str]:
    return [store.create_token(USER, comment="benchmark").token for _ in range(n)]


@dataclass
class _Run:
    """One backend's authenticator, and what its measurements found out about themselves."""

    auth: Authenticator
    queries: dict[str, float] = field(default_factory=dict)
    """SQL statements per verify of each kind."""
    problems: list[str] = field(default_factory=list)
    """Measurements that did not measure what they claim."""

    def count_queries(self, kind: str, calls: Sequence[Callable[[], object]]) -> float:
        """SQL statements per call, counted on calls like the timed ones but not among them."""
        with count_queries(self.auth.store.engine) as counter:
            for call in calls:
                call()
        self.queries[kind] = counter.count / len(calls)
        return self.queries[kind]

    def stats(self) -> CacheStats:
        cache = self.auth.cache
        if cache is None:
            raise SystemExit("the default Authenticator has no cache: nothing to benchmark")
        return cache.stats()

    def check_cache(self, what: str, before: CacheStats, *, hits: int, loads: int) -> None:
        """The cache's own counters must agree with what a timed loop claims to have measured."""
        after = self.stats()
        seen = (after.hits - before.hits, after.loads - before.loads)
        if seen != (hits, loads):
            self.problems.append(
                f"{what}: expected {hits} hits and {loads} loads, the cache counted"
                f" {seen[0]} hits and {seen[1]} loads"
            )


def _bench_hit(run: _Run, token: str, n: int) -> dict[str, Any]:
    # partial, not a lambda: one Python frame less between the clock reads.
    verify = functools.partial(run.auth.verify, USER, token)
    bearer = functools.partial(run.auth.verify_token, token)
    verify()  # the miss that fills the cache
    if run.count_queries("hit", [verify] * 100):
        run.problems.append("a cache hit ran SQL")
    time_calls(verify, n // 10)
    before = run.stats()
    verify_times = time_calls(verify, n)
    bearer_times = time_calls(bearer, n)
    run.check_cache("cache hit", before, hits=2 * n, loads=0)
    return {
        "hit": _distribution(verify_times),
        "hit_bearer": _distribution(bearer_times),
    }


def _distribution(times: list[int]) -> dict[str, Any]:
    """The summary, and the percentile curve that ``python -m benchmarks`` plots."""
    return {
        **summary(times, digits=DIGITS),
        "percentiles_us": percentile_curve(times, digits=DIGITS),
    }


def _bench_miss(run: _Run, tokens: list[str], warmup: int) -> dict[str, Any]:
    verify = run.auth.verify
    # The first verifies open connections and compile the statement: not what a miss costs.
    if run.count_queries("miss", [functools.partial(verify, USER, t) for t in tokens[:warmup]]) < 1:
        run.problems.append("a cache miss ran no SQL")
    timed = tokens[warmup:]
    random.shuffle(timed)  # no help from the order the rows were inserted in
    pending = iter(timed)

    def verify_next() -> None:
        verify(USER, next(pending))

    before = run.stats()
    times = time_calls(verify_next, len(timed))
    run.check_cache("cache miss", before, hits=0, loads=len(timed))
    return {"miss": _distribution(times)}


def _bench_passwords(run: _Run, cold_users: list[str], n_warm: int) -> dict[str, Any]:
    verify = run.auth.verify
    # Cold: each user's first login, so argon2 runs. The first few open connections and compile
    # the statement, untimed.
    warmup = [functools.partial(verify, user, PASSWORD) for user in cold_users[:COLD_WARMUP]]
    if run.count_queries("password_cold", warmup) < 1:
        run.problems.append("a cold login ran no SQL")
    timed_users = cold_users[COLD_WARMUP:]
    pending = iter(timed_users)

    def first_login() -> None:
        verify(next(pending), PASSWORD)

    before = run.stats()
    cold_times = time_calls(first_login, len(timed_users))
    run.check_cache("cold login", before, hits=0, loads=len(timed_users))

    warm = functools.partial(verify, USER, PASSWORD)
    warm()  # the login that fills the password cache
    if run.count_queries("password_warm", [warm] * 100):
        run.problems.append("a warm login ran SQL")
    time_calls(warm, n_warm // 10)
    before = run.stats()
    warm_times = time_calls(warm, n_warm)
    run.check_cache("warm login", before, hits=n_warm, loads=0)

    cold = summary(cold_times, digits=DIGITS)
    warm_summary = summary(warm_times, digits=DIGITS)
    return {
        "password_cold": {**cold, "percentiles_us": percentile_curve(cold_times, digits=DIGITS)},
        "password_warm": _distribution(warm_times),
        "password_cold_over_warm": round(cold["median_us"] / warm_summary["median_us"]),
    }


@contextmanager
def _update_rows(engine: Engine, token_ids: set[str]) -> Iterator[Counter[str]]:
    """Rows each UPDATE statement writes, by token id, while attached.

    A batched UPDATE is one statement with a parameter set per row; the token is recognised by
    value among the parameters, so the count does not depend on the store's bind names.
    """
    writes: Counter[str] = Counter()

    def record(*args: Any) -> None:
        statement: str = args[2]
        context: Any = args[4]
        if not statement.lstrip().upper().startswith("UPDATE"):
            return
        for parameters in context.compiled_parameters:
            for value in parameters.values():
                if isinstance(value, str) and value in token_ids:
                    writes[value] += 1

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield writes
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _bench_last_used(run: _Run, tokens: list[str], n: int) -> dict[str, Any]:
    auth = run.auth
    engine = auth.store.engine
    token_ids = {parse_token(token).id for token in tokens}
    for token in tokens:
        auth.verify(USER, token)  # into the cache, so that the counted verifies are hits
    # The interval starts empty: the uses of the earlier sections are written now, uncounted.
    auth.flush_last_used()

    with count_queries(engine) as during:
        started = time.perf_counter_ns()
        for index in range(n):
            auth.verify(USER, tokens[index % len(tokens)])
        elapsed = time.perf_counter_ns() - started
    pending = auth.last_used.pending
    with count_queries(engine) as flushing, _update_rows(engine, token_ids) as writes:
        written = auth.flush_last_used()

    kinds = Counter(statement.split(None, 1)[0].upper() for statement in flushing.statements)
    stored = {
        info.id: info.last_used_at for info in auth.store.list_tokens(USER) if info.id in token_ids
    }
    if pending != len(tokens) or written != len(tokens) or set(writes) != token_ids:
        run.problems.append(
            f"last used: {pending} pending, {written} written, {len(writes)} tokens in the"
            f" UPDATE; expected {len(tokens)} of each"
        )
    if any(at is None for at in stored.values()):
        run.problems.append("last used: a token has no last-used time after the flush")
    return {
        "verifies": n,
        "tokens": len(tokens),
        "mean_verify_us": round(elapsed / n / 1000, DIGITS),
        "statements_during_verifies": during.count,
        "pending_before_flush": pending,
        "statements_per_flush": flushing.count,
        "statement_kinds_per_flush": dict(kinds),
        "update_statements_per_flush": kinds.get("UPDATE", 0),
        "update_statements_per_token_per_flush": kinds.get("UPDATE", 0) / len(tokens),
        "update_rows_per_flush": sum(writes.values()),
        "tokens_written": written,
        "max_writes_per_token_per_flush": max(writes.values(), default=0),
    }


# -- memory -------------------------------------------------------------------------------------


def _bench_memory(n: int) -> dict[str, Any]:
    """Bytes per cached entry, filled through real verifies; the same whatever the database.

    Two shapes: every token of its own user, which costs the most (each entry then has its own
    set in the per-user index), and every token of one user.
    """
    print(f"measuring memory per cached entry ({n} entries, twice)…", flush=True)
    problems: list[str] = []
    return {
        "entries": n,
        "one_user_per_token": _memory_per_entry(n, users=n, problems=problems),
        "one_user": _memory_per_entry(n, users=1, problems=problems),
        "problems": problems,
    }


def _memory_per_entry(n: int, *, users: int, problems: list[str]) -> dict[str, Any]:
    # In memory, so that creating the rows is quick. The backend does not matter: tracemalloc
    # sees only Python objects, and a cached Principal is made of the same ones on any driver.
    store = make_store("sqlite://")
    # The recorder keeps nothing (max_pending=0), so the traced growth is the cache alone. An hour
    # of TTL: filling the cache under tracemalloc can take longer than the default minute on a
    # slow day, and entries that expire meanwhile would be missing from the count.
    auth = Authenticator(
        store,
        background=False,
        tasks=TaskParameters(last_used_max_pending=0),
        cache=CacheParameters(ttl_seconds=3600.0),
    )
    try:
        names = [f"{USER}-{index}" for index in range(users)]
        for name in names:
            store.create_user(name)
        tokens = [store.create_token(names[index % users]).token for index in range(n)]
        store.create_user(USER)
        for token in _create_tokens(store, 20):
            auth.verify_token(token)  # statements compiled, connection open: before tracing
        cache = auth.cache
        if cache is None:
            raise SystemExit("the default Authenticator has no cache: nothing to measure")
        entries_before = len(cache)

        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for token in tokens:
                auth.verify_token(token)
            gc.collect()  # only what the cache keeps, not garbage awaiting collection
            after = tracemalloc.get_traced_memory()[0]
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()

        added = len(cache) - entries_before
        if added != n:
            problems.append(f"memory: the cache grew by {added} entries, not {n}")
        return {
            "users": users,
            "bytes_per_entry": round((after - before) / n, 1),
            "largest_sites": _largest_sites(snapshot, n),
        }
    finally:
        auth.close()


def _largest_sites(snapshot: tracemalloc.Snapshot, n: int, count: int = 8) -> list[dict[str, Any]]:
    """Where the retained bytes were allocated, per entry: what to shrink first."""
    sites = []
    for statistic in snapshot.statistics("lineno")[:count]:
        frame = statistic.traceback[0]
        path = Path(frame.filename)
        sites.append(
            {
                "site": f"{path.parent.name}/{path.name}:{frame.lineno}",
                "bytes_per_entry": round(statistic.size / n, 1),
                "blocks_per_entry": round(statistic.count / n, 2),
            }
        )
    return sites


# -- targets ------------------------------------------------------------------------------------


def _target(name: str, backend: str, measured: float, limit: float, unit: str) -> dict[str, Any]:
    return {
        "target": name,
        "backend": backend,
        "measured": measured,
        "limit": limit,
        "unit": unit,
        "met": measured <= limit,
    }


def _targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    for backend, result in report["backends"].items():
        if "skipped" in result:
            continue
        last_used = result["last_used"]
        targets += [
            _target("verify p50, cache hit", backend, result["hit"]["median_us"], HIT_P50_US, "us"),
            _target(
                "verify p50, cache miss",
                backend,
                result["miss"]["median_us"],
                MISS_P50_US[backend],
                "us",
            ),
            _target(
                "SQL statements while verifying",
                backend,
                last_used["statements_during_verifies"],
                0,
                "",
            ),
            _target(
                "last-used writes per token per flush",
                backend,
                last_used["max_writes_per_token_per_flush"],
                WRITES_PER_TOKEN_PER_FLUSH,
                "",
            ),
        ]
    for shape in ("one_user_per_token", "one_user"):
        targets.append(
            _target(
                f"bytes per cached entry ({shape.replace('_', ' ')})",
                "any",
                report["memory"][shape]["bytes_per_entry"],
                BYTES_PER_ENTRY,
                "bytes",
            )
        )
    return targets


# -- the table ----------------------------------------------------------------------------------

_LATENCY_ROWS = [
    ("hit", "verify, cache hit"),
    ("hit_bearer", "verify_token, cache hit"),
    ("miss", "verify, cache miss"),
    ("password_cold", "password login, cold"),
    ("password_warm", "password login, warm"),
]

_LATENCY = Table(
    Column("backend", 11, align="<"),
    Column("operation", 26, align="<"),
    Column("n", 8),
    Column("p50 µs", 12, ",.2f"),
    Column("p90 µs", 12, ",.2f"),
    Column("p99 µs", 12, ",.2f"),
    Column("target p50", 12),
    Column("met", 5),
)

_LAST_USED = Table(
    Column("backend", 11, align="<"),
    Column("last used", 48, align="<"),
    Column("measured", 10),
    Column("target", 8),
    Column("met", 5),
)

_MEMORY = Table(
    Column("memory per cached entry", 59, align="<"),
    Column("bytes", 10, ",.0f"),
    Column("target", 8),
    Column("met", 5),
)


def _met(met: bool) -> str:
    return "yes" if met else "NO"


def _print_tables(report: dict[str, Any]) -> None:
    argon2 = report["argon2"]
    print(
        f"\ne6auth hot path — {report['date']} on {report['hostname']}"
        f" ({report['cpu_model']}, {report['usable_cpus']} CPUs, Python {report['python']},"
        f" SQLAlchemy {report['sqlalchemy']}, cachetools {report['cachetools']})"
    )
    source = report["e6auth_source"]
    revision = (
        f"e6auth {source['commit'][:10]}{' with local changes' if source['modified'] else ''}; "
        if source
        else ""
    )
    print(
        f"{revision}argon2id m={argon2['memory_kib']} KiB t={argon2['time_cost']}"
        f" p={argon2['parallelism']}; timing overhead {report['timer_overhead_us']:.3f} µs per"
        " call, included below"
    )
    print(
        f"load average (1, 5, 15 min) at start {report['load_average_at_start']},"
        f" at end {report['load_average_at_end']}\n"
    )
    targets = {(t["backend"], t["target"]): t for t in report["targets"]}

    _LATENCY.print_header()
    for backend, result in report["backends"].items():
        if "skipped" in result:
            print(f"{backend:<11}skipped: {result['skipped']}")
            continue
        for key, label in _LATENCY_ROWS:
            row = result[key]
            target = {
                "hit": targets[(backend, "verify p50, cache hit")],
                "miss": targets[(backend, "verify p50, cache miss")],
            }.get(key)
            _LATENCY.print_row(
                backend,
                label,
                row["n"],
                row["median_us"],
                row["p90_us"],
                row["p99_us"],
                f"≤ {target['limit']:,.0f} µs" if target else "",
                _met(target["met"]) if target else "",
            )
        queries = result["queries_per_verify"]
        print(
            f"{'':<11}cold / warm login (p50) = {result['password_cold_over_warm']:,}x;"
            f" SQL per verify: hit {queries['hit']:g}, miss {queries['miss']:g},"
            f" cold login {queries['password_cold']:g}, warm login {queries['password_warm']:g}"
        )

    print()
    _LAST_USED.print_header()
    for backend, result in report["backends"].items():
        if "skipped" in result:
            print(f"{backend:<11}skipped")
            continue
        last_used = result["last_used"]
        during = targets[(backend, "SQL statements while verifying")]
        per_token = targets[(backend, "last-used writes per token per flush")]
        kinds = last_used["statement_kinds_per_flush"]
        in_flush = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        rows: list[tuple[str, object, str, str]] = [
            (
                f"SQL statements during {last_used['verifies']:,} verifies",
                during["measured"],
                "0",
                _met(during["met"]),
            ),
            (
                f"SQL statements in one flush ({in_flush})",
                last_used["statements_per_flush"],
                "",
                "",
            ),
            (
                f"rows its UPDATE writes ({last_used['tokens']} tokens)",
                last_used["update_rows_per_flush"],
                "",
                "",
            ),
            (
                "UPDATE statements per token per flush",
                last_used["update_statements_per_token_per_flush"],
                "",
                "",
            ),
            (
                "writes per token per flush interval (most)",
                per_token["measured"],
                f"≤ {per_token['limit']}",
                _met(per_token["met"]),
            ),
        ]
        for label, measured, limit, met in rows:
            _LAST_USED.print_row(backend, label, measured, limit, met)

    print()
    _MEMORY.print_header()
    memory = report["memory"]
    for shape, label in (
        ("one_user_per_token", "every token of its own user (the most)"),
        ("one_user", "every token of one user"),
    ):
        target = targets[("any", f"bytes per cached entry ({shape.replace('_', ' ')})")]
        _MEMORY.print_row(
            f"{label}, {memory['entries']:,} entries",
            target["measured"],
            f"≤ {target['limit']:,}",
            _met(target["met"]),
        )
    print(f"\ntargets met: {report['targets_met']} of {len(report['targets'])}")


if __name__ == "__main__":
    sys.exit(main())
