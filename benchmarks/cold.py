"""The cold paths beside their floors, measured in one run: the figures are ratios.

- ``find_token``, one indexed read: e6auth's store, beside the same SQL on the driver's own
  cursor (the floor), SQLAlchemy executing a statement built once, and SQLAlchemy building it
  on every call (what e6auth did before).
- A cache miss: ``Authenticator.verify_token`` of a token never verified before (each call a
  different one, the cache on, as in production), beside the driver-level read plus the
  HMAC-SHA256 (the floor), and, on SQLite, beside djangorestframework-api-key's
  ``APIKey.objects.is_valid`` (its verify: one ORM read and a SHA-512) on the same database file.
- Fresh interpreters: ``import e6auth``, ``import e6auth.credentials.tokens``, the interceptor's
  import, ``e6auth --help``, ``e6auth token list`` and ``token delete``, beside ``python -c pass``
  and ``import sqlalchemy`` plus one read; and which heavy libraries each import loads.

Calls are timed one by one with ``perf_counter_ns`` and the garbage collector off. The arms of a
comparison run in rounds, so that a drift of a shared machine hits them alike: in each round every
arm makes ``--block`` calls in a row (50), the arms in an order shuffled anew for every round.
Not one call of each in turn, as this did before: an arm's time depends on what ran just before
it, and the peer's 300 us of Django leave the CPU caches cold for whichever arm follows it, while
e6auth's miss and the floor leave the peer's about as warm as its own last call did. One call of
each in turn charged the faster arms for the peer's footprint. Measured, three runs of this
module's SQLite arms with ``--block 50`` and two with ``--block 1``: the peer 331 to 428 us and
409 to 432; the floor 14 to 17 us and 26 to 30; the miss 0.088 to 0.095 x the peer and 0.151 to
0.157 x. ``--block 1`` measures that way still.

The misses are also timed with the caches cold for every arm alike: each call right after 8 MiB
were written, as ``benchmarks.interceptor`` times its cold calls. Processes are timed in rounds,
one of each command in turn. Figures are medians.

Run ``python -m benchmarks.cold [--quick] [--block N] [--postgres-url URL]
[--require-postgres]``. The table goes to stdout, the figures to
``benchmarks/results/cold.json``. The peer needs the ``bench`` extra (djangorestframework-api-key);
without it, its arm is skipped and said so.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a file (python benchmarks/cold.py): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select
from sqlalchemy.engine import make_url

from benchmarks._common import (
    RESULTS,
    Column,
    Table,
    add_backend_arguments,
    evict_caches,
    machine_info,
    make_store,
    on_each_backend,
    quiet_gc,
    server_version,
    summary,
    write_report,
)
from benchmarks.report import commit
from e6auth import Authenticator, Settings
from e6auth.background.invalidation import listen_conninfo
from e6auth.credentials.passwords import Argon2Parameters, Passwords
from e6auth.credentials.tokens import split_token
from e6auth.store import TokenStore
from e6auth.store.database import create_store_engine, safe_url
from e6auth.store.reads import PreparedRead
from e6auth.store.schema import tokens, users

# The statement e6auth's find_token runs, so that every arm reads the very same SQL.
from e6auth.store.token_store import _FIND_TOKEN

DEFAULT_OUTPUT = RESULTS / "cold.json"
ROOT = Path(__file__).resolve().parent.parent
READS = 3000
MISSES = 2000
COLD_MISSES = 500
BLOCK = 50
ROUNDS = 20
USER = "bench"
HEAVY = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pydantic",
    "prometheus_client",
    "jwt",
    "starlette",
    "uvicorn",
    "jinja2",
    "grpc",
)
"""The libraries an import should load only when its caller uses them (the issue's list)."""
NEVER_FOR_LIBRARY_USERS = ("starlette", "uvicorn", "jinja2", "prometheus_client", "alembic")
# Cheap hashing for the many tokens this makes: no password is verified here.
FAST_PASSWORDS = Passwords(Argon2Parameters(memory_kib=8, time_cost=1, parallelism=1))

Call = Callable[[int], object]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    divisor = 10 if args.quick else 1
    n_reads = max(args.reads // divisor, 50)
    n_misses = max(args.misses // divisor, 50)
    n_cold = max(args.cold_misses // divisor, 20)
    rounds = max(args.rounds // 4, 5) if args.quick else args.rounds
    report: dict[str, Any] = {
        "benchmark": "cold",
        **machine_info(),
        "quick": args.quick,
        # The figures name the code they measured (the runner's latest.json does the same).
        "source": commit(ROOT),
        "n": {
            "reads": n_reads,
            "misses": n_misses,
            "cold_misses": n_cold,
            "block": args.block,
            "process_rounds": rounds,
        },
    }
    report["backends"], reached = on_each_backend(
        lambda name, url: _bench_backend(name, url, n_reads, n_misses, n_cold, args.block),
        args.postgres_url,
    )
    report["processes"] = _bench_processes(rounds)
    report["targets"] = _targets(report)
    _print_tables(report)
    write_report(report, args.output)
    return 1 if args.require_postgres and not reached else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_backend_arguments(parser, quick_help="a tenth of the calls, a quarter of the rounds")
    parser.add_argument("--reads", type=int, default=READS, metavar="N")
    parser.add_argument("--misses", type=int, default=MISSES, metavar="N")
    parser.add_argument(
        "--cold-misses",
        type=int,
        default=COLD_MISSES,
        metavar="N",
        help="misses timed with the CPU caches cold, per arm",
    )
    parser.add_argument(
        "--block",
        type=_positive,
        default=BLOCK,
        metavar="N",
        help="calls of one arm in a row in each round (1: one call of each arm in turn)",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, metavar="N")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {number}")
    return number


# -- one read and one miss ----------------------------------------------------------------------


def _rounds(
    calls: dict[str, Call], n: int, *, block: int, evict: bool = False
) -> dict[str, dict[str, float | int]]:
    """Calls ``0`` to ``n - 1`` of every arm, in rounds of ``block`` calls of each arm in a row,
    the arms' order shuffled anew for every round: medians and tails per arm. With ``evict``,
    every call comes right after the CPU caches were flushed (see the module's docstring)."""
    timings: dict[str, list[int]] = {name: [] for name in calls}
    names = list(calls)
    order = random.Random(0)  # the same orders in every run
    with quiet_gc():
        for first in range(0, n, block):
            order.shuffle(names)
            for name in names:
                call, times = calls[name], timings[name]
                for index in range(first, min(n, first + block)):
                    if evict:
                        evict_caches()
                    start = time.perf_counter_ns()
                    call(index)
                    times.append(time.perf_counter_ns() - start)
    return {name: summary(times) for name, times in timings.items()}


def _driver_connection(name: str, url: str) -> Any:
    """A connection of the driver itself, outside SQLAlchemy, reading outside a transaction."""
    if name == "sqlite":
        database = make_url(url).database
        assert database is not None
        return sqlite3.connect(database, check_same_thread=False)
    import psycopg

    return psycopg.connect(listen_conninfo(url), autocommit=True)


def _bench_backend(
    name: str, url: str, n_reads: int, n_misses: int, n_cold: int, block: int
) -> dict[str, Any]:
    print(
        f"benchmarking {name} ({n_reads} reads, {n_misses} misses, {n_cold} with the caches cold)…",
        flush=True,
    )
    store = make_store(url, passwords=FAST_PASSWORDS)
    auth = Authenticator(store)
    driver = _driver_connection(name, url)
    key = secrets.token_bytes(32)
    # SQLAlchemy's arms read as e6auth did before, on an engine of their own: on SQLite the
    # AUTOCOMMIT option runs a PRAGMA at every checkin that expires the statements the
    # connection has prepared, which would slow the other arms if they shared its pool.
    sqlalchemy_engine = create_store_engine(url)
    try:
        store.create_user(USER)
        # Every miss verifies a token never verified before: the warm and the cold misses each
        # take their own.
        issued = [store.create_token(USER) for _ in range(n_misses + n_cold + n_reads)]
        fresh = issued[: n_misses + n_cold]
        read_ids = [new.id for new in issued[n_misses + n_cold :]]
        statement = PreparedRead(_FIND_TOKEN, store.engine)
        reader = sqlalchemy_engine.execution_options(isolation_level="AUTOCOMMIT")

        def driver_read(token_id: str) -> Any:
            cursor = driver.cursor()
            cursor.execute(statement.sql, statement.parameters({"id": token_id}))
            row = cursor.fetchone()
            cursor.close()
            return row

        def built_once(index: int) -> object:
            with reader.connect() as connection:
                return connection.execute(_FIND_TOKEN, {"id": read_ids[index]}).one_or_none()

        def built_per_call(index: int) -> object:
            query = (
                select(*_FIND_TOKEN.selected_columns)
                .join(users, users.c.id == tokens.c.user_id)
                .where(tokens.c.id == read_ids[index])
            )
            with reader.connect() as connection:
                return connection.execute(query).one_or_none()

        secrets_of_fresh = [split_token(new.token).secret.encode("ascii") for new in fresh]

        def floor_miss(index: int) -> object:
            row = driver_read(fresh[index].id)
            digest = hmac.new(key, secrets_of_fresh[index], hashlib.sha256).digest()
            return hmac.compare_digest(digest, bytes(row[4]))

        # Every arm's first calls (connections, statement caches) before any is timed.
        for index in range(min(20, n_reads)):
            store.find_token(read_ids[index])
            driver_read(read_ids[index])
            built_once(index)
            built_per_call(index)
        reads = _rounds(
            {
                "e6auth": lambda index: store.find_token(read_ids[index]),
                "driver": lambda index: driver_read(read_ids[index]),
                "sqlalchemy_built_once": built_once,
                "sqlalchemy_built_per_call": built_per_call,
            },
            n_reads,
            block=block,
        )
        misses: dict[str, Call] = {
            "e6auth": lambda index: auth.verify_token(fresh[index].token),
            "driver_read_and_hmac": floor_miss,
        }
        peer = _peer(url, n_misses + n_cold) if name == "sqlite" else None
        if isinstance(peer, dict):
            misses["peer"] = peer.pop("call")
        verified = _rounds(misses, n_misses, block=block)
        # The cold misses take the tokens (and the peer's keys) after the warm ones'.
        cold = _rounds(
            {arm: _shifted(call, n_misses) for arm, call in misses.items()},
            n_cold,
            block=1,
            evict=True,
        )
        result: dict[str, Any] = {
            "url": safe_url(url),
            "server_version": server_version(store.engine),
            "find_token": reads,
            "miss": verified,
            "miss_caches_cold": cold,
        }
        if isinstance(peer, dict):
            result["peer"] = peer
        elif isinstance(peer, str):
            result["peer"] = {"skipped": peer}
        result["ratios"] = _ratios(result)
        return result
    finally:
        driver.close()
        auth.close()
        sqlalchemy_engine.dispose()


def _shifted(call: Call, offset: int) -> Call:
    return lambda index: call(index + offset)


def _ratios(result: dict[str, Any]) -> dict[str, float]:
    reads = {arm: figures["median_us"] for arm, figures in result["find_token"].items()}
    misses = {arm: figures["median_us"] for arm, figures in result["miss"].items()}
    cold = {arm: figures["median_us"] for arm, figures in result["miss_caches_cold"].items()}
    ratios = {
        "find_token_over_driver": reads["e6auth"] / reads["driver"],
        "built_once_over_driver": reads["sqlalchemy_built_once"] / reads["driver"],
        "built_per_call_over_driver": reads["sqlalchemy_built_per_call"] / reads["driver"],
        "miss_over_floor": misses["e6auth"] / misses["driver_read_and_hmac"],
        "miss_over_floor_caches_cold": cold["e6auth"] / cold["driver_read_and_hmac"],
    }
    if "peer" in misses:
        ratios["miss_over_peer"] = misses["e6auth"] / misses["peer"]
        ratios["floor_over_peer"] = misses["driver_read_and_hmac"] / misses["peer"]
        ratios["miss_over_peer_caches_cold"] = cold["e6auth"] / cold["peer"]
        ratios["floor_over_peer_caches_cold"] = cold["driver_read_and_hmac"] / cold["peer"]
    return {name: round(value, 3) for name, value in ratios.items()}


def _peer(url: str, n: int) -> dict[str, Any] | str:
    """djangorestframework-api-key's verify on the same SQLite file: its own tables beside
    e6auth's, Django configured in this process. A reason instead when it is not installed."""
    try:
        import django
        from django.conf import settings
    except ImportError:
        return "djangorestframework-api-key is not installed (pip install -e '.[bench]')"
    database = make_url(url).database
    if not settings.configured:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}},
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "rest_framework",
                "rest_framework_api_key",
            ],
            USE_TZ=True,
        )
        django.setup()
    from django.core.management import call_command
    from rest_framework_api_key.models import APIKey

    call_command("migrate", verbosity=0, interactive=False)
    keys = [APIKey.objects.create_key(name=f"bench-{index}")[1] for index in range(n)]
    for index in range(min(20, n)):
        APIKey.objects.is_valid(keys[index])  # the first calls open its connection

    def verify(index: int) -> object:
        if not APIKey.objects.is_valid(keys[index]):
            raise AssertionError("the peer refused its own key")
        return True

    return {
        "call": verify,
        "package": "djangorestframework-api-key",
        "version": _version("djangorestframework-api-key"),
        "django": django.get_version(),
        "what": "APIKey.objects.is_valid(key): one ORM read by prefix, SHA-512, expiry check",
    }


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


# -- fresh interpreters ---------------------------------------------------------------------------

_CLI = "import sys; from e6auth.cli import main; sys.exit(main())"
"""What the ``e6auth`` console script runs."""
_READ_FLOOR = (
    "import sys; import sqlalchemy as sa\n"
    "engine = sa.create_engine(sys.argv[1])\n"
    "with engine.connect() as connection:\n"
    "    rows = connection.execute(sa.text('SELECT t.id, u.name, t.comment, t.created_at,"
    " t.expires_at, t.last_used_at, t.revoked_at FROM e6auth_tokens t JOIN e6auth_users u"
    " ON u.id = t.user_id ORDER BY t.created_at, t.id')).all()\n"
    "print(len(rows))\n"
)
_LOADED = (
    "import importlib, json, sys\n"
    "importlib.import_module(sys.argv[1])\n"
    f"print(json.dumps([name for name in {list(HEAVY)!r} if name in sys.modules]))\n"
)


def _bench_processes(rounds: int) -> dict[str, Any]:
    print(f"timing fresh interpreters ({rounds} rounds)…", flush=True)
    with tempfile.TemporaryDirectory(prefix="e6auth-bench-") as folder:
        home = Path(folder) / "home"
        environment = {
            **{
                key: value
                for key, value in os.environ.items()
                # Bytecode is written (by the untimed first run) and read, as for an installed
                # package: compiling e6auth's sources anew in every process, against libraries
                # whose bytecode pip wrote, would charge e6auth for what no install pays.
                if not key.startswith("E6AUTH_") and key != "PYTHONDONTWRITEBYTECODE"
            },
            "E6AUTH_HOME": str(home),
            "E6AUTH_AUDIT": "false",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *_pythonpath()]),
        }
        settings = Settings(home=home, audit=False)
        store = TokenStore.from_settings(settings)
        try:
            store.create_user(USER)
            listed = [store.create_token(USER, comment=f"listed {index}") for index in range(20)]
            doomed = [store.create_token(USER).id for _ in range(rounds + 3)]
            url = settings.resolved_database_url
        finally:
            store.close()
        python = [sys.executable, "-c"]
        commands: dict[str, Callable[[int], list[str]]] = {
            "python -c pass": lambda _: [*python, "pass"],
            "import sqlalchemy + one read": lambda _: [*python, _READ_FLOOR, url],
            "import e6auth": lambda _: [*python, "import e6auth"],
            "import e6auth.credentials.tokens": lambda _: [
                *python,
                "import e6auth.credentials.tokens",
            ],
            "import the interceptor": lambda _: [
                *python,
                "from e6auth.grpc.interceptor import AuthInterceptor",
            ],
            "e6auth --help": lambda _: [*python, _CLI, "--help"],
            "e6auth token list": lambda _: [*python, _CLI, "token", "list"],
            "e6auth token delete": lambda index: [
                *python,
                _CLI,
                "token",
                "delete",
                "--yes",
                doomed[index],
            ],
        }
        for name, command in commands.items():  # once each untimed: the files in the OS cache
            _run(command(rounds + 1 if "delete" in name else 0), environment, name)
        timings: dict[str, list[int]] = {name: [] for name in commands}
        for index in range(rounds):
            for name, command in commands.items():
                start = time.perf_counter_ns()
                _run(command(index), environment, name)
                timings[name].append(time.perf_counter_ns() - start)
        loaded = {
            module: json.loads(_run([*python, _LOADED, module], environment, module))
            for module in (
                "e6auth",
                "e6auth.credentials.tokens",
                "e6auth.errors",
                "e6auth.grpc.interceptor",
            )
        }
        loaded["e6auth --help"] = json.loads(
            _run(
                [*python, _HELP_LOADED],
                environment,
                "help",
            ).splitlines()[-1]
        )
    medians = {name: _ms(statistics.median(times)) for name, times in timings.items()}
    return {
        "bytecode": "written by the first, untimed run of each command, then read",
        "listed_tokens": len(listed),
        "median_ms": medians,
        "min_ms": {name: _ms(min(times)) for name, times in timings.items()},
        "heavy_modules_loaded": loaded,
    }


_HELP_LOADED = (
    "import json, sys\n"
    "sys.argv = ['e6auth', '--help']\n"
    "try:\n"
    "    from e6auth.cli import main; main()\n"
    "except SystemExit:\n"
    "    pass\n"
    f"print(json.dumps([name for name in {list(HEAVY)!r} if name in sys.modules]))\n"
)


def _run(command: list[str], environment: dict[str, str], name: str) -> str:
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"{name} failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return completed.stdout


def _pythonpath() -> list[str]:
    return [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]


def _ms(nanoseconds: float) -> float:
    return round(nanoseconds / 1e6, 1)


# -- targets ------------------------------------------------------------------------------------


def _target(name: str, backend: str, measured: float, limit: float, unit: str) -> dict[str, Any]:
    return {
        "target": name,
        "backend": backend,
        "measured": round(measured, 3),
        "limit": limit,
        "unit": unit,
        "met": measured <= limit,
    }


def _targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []
    sqlite = report["backends"].get("sqlite", {})
    ratios = sqlite.get("ratios", {})
    if "miss_over_peer" in ratios:
        targets.append(
            _target("cache miss / peer's verify", "sqlite", ratios["miss_over_peer"], 0.1, "x")
        )
    if "miss_over_floor" in ratios:
        targets.append(
            _target(
                "cache miss / (driver read + HMAC)", "sqlite", ratios["miss_over_floor"], 3, "x"
            )
        )
    postgres = report["backends"].get("postgresql", {}).get("ratios", {})
    if "miss_over_floor" in postgres:
        targets.append(
            _target(
                "cache miss / (driver round trip + HMAC)",
                "postgresql",
                postgres["miss_over_floor"],
                2,
                "x",
            )
        )
    processes = report["processes"]
    medians = processes["median_ms"]
    targets.append(
        _target(
            "e6auth --help / python -c pass",
            "any",
            medians["e6auth --help"] / medians["python -c pass"],
            3,
            "x",
        )
    )
    targets.append(
        _target(
            "e6auth token list / (import sqlalchemy + one read)",
            "sqlite",
            medians["e6auth token list"] / medians["import sqlalchemy + one read"],
            1.5,
            "x",
        )
    )
    loaded = processes["heavy_modules_loaded"]
    targets.append(
        _target("heavy libraries loaded by import e6auth", "any", len(loaded["e6auth"]), 0, "")
    )
    targets.append(
        _target(
            "web, metrics or Alembic loaded by the interceptor's import",
            "any",
            len(set(loaded["e6auth.grpc.interceptor"]) & set(NEVER_FOR_LIBRARY_USERS)),
            0,
            "",
        )
    )
    return targets


# -- the table ----------------------------------------------------------------------------------

_TABLE = Table(
    Column("backend", 11, align="<"),
    Column("path", 38, align="<"),
    Column("median µs", 12, ",.1f"),
    Column("p90 µs", 12, ",.1f"),
    Column("over floor", 12, ",.2f"),
)


def _print_tables(report: dict[str, Any]) -> None:
    print(
        f"\ne6auth cold paths — {report['date']} on {report['hostname']}"
        f" (Python {report['python']}, {report['cpu_count']} CPUs,"
        f" SQLAlchemy {report['sqlalchemy']})\n"
    )
    _TABLE.print_header()
    for backend, result in report["backends"].items():
        if "skipped" in result:
            print(f"{backend:<11}skipped: {result['skipped']}")
            continue
        for section, floor in (
            ("find_token", "driver"),
            ("miss", "driver_read_and_hmac"),
            ("miss_caches_cold", "driver_read_and_hmac"),
        ):
            arms = result[section]
            for arm, figures in arms.items():
                _TABLE.print_row(
                    backend,
                    f"{section}: {arm}",
                    figures["median_us"],
                    figures["p90_us"],
                    figures["median_us"] / arms[floor]["median_us"],
                )
        if "skipped" in result.get("peer", {}):
            print(f"{'':<11}peer skipped: {result['peer']['skipped']}")
    processes = report["processes"]
    base = processes["median_ms"]["python -c pass"]
    print(f"\n{'process':<50}{'median ms':>12}{'over pass':>12}")
    for name, median in processes["median_ms"].items():
        print(f"{name:<50}{median:>12,.1f}{median / base:>12,.2f}")
    for module, loaded in processes["heavy_modules_loaded"].items():
        print(f"{module} loads: {', '.join(loaded) or 'none of ' + ', '.join(HEAVY)}")
    print()
    for backend, result in report["backends"].items():
        ratios = result.get("ratios", {})
        if "miss_over_peer" in ratios:
            print(
                f"{backend}: against the peer, the miss {ratios['miss_over_peer']:g} x and the"
                f" floor {ratios['floor_over_peer']:g} x; with the caches cold,"
                f" {ratios['miss_over_peer_caches_cold']:g} x and"
                f" {ratios['floor_over_peer_caches_cold']:g} x"
            )
    for target in report["targets"]:
        verdict = "met" if target["met"] else "MISSED"
        print(
            f"{target['target']} ({target['backend']}): {target['measured']:g}"
            f" (<= {target['limit']:g}) {verdict}"
        )


if __name__ == "__main__":
    sys.exit(main())
