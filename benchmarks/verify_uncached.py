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
import dataclasses
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e6auth import Authenticator, InvalidPassword, UnknownUser
from e6auth.store.database import safe_url
from e6auth.testing import count_queries
from e6auth.verify.parameters import CacheParameters

if __package__ in (None, ""):
    # Run as a file (python benchmarks/verify_uncached.py): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import (
    RESULTS,
    Column,
    Table,
    add_backend_arguments,
    machine_info,
    make_store,
    on_each_backend,
    production_argon2,
    server_version,
    summary,
    time_calls,
    time_interleaved,
    write_report,
)

DEFAULT_OUTPUT = RESULTS / "verify_uncached.json"
PAT_VERIFIES = 2000
PASSWORD_VERIFIES = 50
USER = "bench"
PASSWORD = secrets.token_urlsafe(24)  # a throwaway user in a throwaway database


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    divisor = 10 if args.quick else 1
    n_pat = max(args.pat_verifies // divisor, 10)
    n_password = max(args.password_verifies // divisor, 5)
    parameters = production_argon2()

    report: dict[str, Any] = {
        "benchmark": "verify_uncached",
        **machine_info(),
        "argon2": parameters,
        "quick": args.quick,
        "n": {"pat": n_pat, "password": n_password},
    }
    report["backends"], reached = on_each_backend(
        lambda name, url: _bench_backend(name, url, n_pat, n_password), args.postgres_url
    )
    failed = args.require_postgres and not reached

    _print_table(report)
    write_report(report, args.output)
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
    add_backend_arguments(parser, quick_help="a tenth of the verifies")
    parser.add_argument("--pat-verifies", type=int, default=PAT_VERIFIES, metavar="N")
    parser.add_argument("--password-verifies", type=int, default=PASSWORD_VERIFIES, metavar="N")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser


def _make_authenticator(url: str) -> Authenticator:
    store = make_store(url)
    # Every cache off (a TTL of 0 disables each): this benchmark is about the store and argon2.
    # Found by name so that a cache added later is switched off too; _queries_per_call checks
    # that every verify still reaches the database.
    ttls: dict[str, Any] = {
        field.name: 0
        for field in dataclasses.fields(CacheParameters)
        if field.name.endswith("ttl_seconds")
    }
    return Authenticator(store, cache=CacheParameters(**ttls))


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
        time_calls(pat, max(n_pat // 10, 20))
        time_interleaved([right, wrong, unknown], max(n_password // 10, 3))

        pat_times = time_calls(pat, n_pat)
        # Interleaved, so that a drift in CPU speed does not bias the ratios between the three.
        right_times, wrong_times, unknown_times = time_interleaved(
            [right, wrong, unknown], n_password
        )
        result: dict[str, Any] = {
            "url": safe_url(url),
            "server_version": server_version(store.engine),
            "queries_per_verify": queries,
            "pat": summary(pat_times),
            "password_right": summary(right_times),
            "password_wrong": summary(wrong_times),
            "password_unknown_user": summary(unknown_times),
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


_ROWS = [
    ("pat", "PAT verify"),
    ("password_right", "password, right"),
    ("password_wrong", "password, wrong"),
    ("password_unknown_user", "password, unknown user"),
]

_TABLE = Table(
    Column("backend", 11, align="<"),
    Column("operation", 24, align="<"),
    Column("n", 6),
    Column("median µs", 12, ",.1f"),
    Column("p90 µs", 12, ",.1f"),
    Column("p99 µs", 12, ",.1f"),
)


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
    _TABLE.print_header()
    for backend, result in report["backends"].items():
        if "skipped" in result:
            print(f"{backend:<11}skipped: {result['skipped']}")
            continue
        for key, label in _ROWS:
            row = result[key]
            _TABLE.print_row(
                backend, label, row["n"], row["median_us"], row["p90_us"], row["p99_us"]
            )
        ratios = result["ratios"]
        print(
            f"{'':<11}password / PAT (median) = {ratios['password_over_pat']:,.0f}x;"
            f" wrong / right = {ratios['wrong_over_right_password']:.2f};"
            f" unknown user / right = {ratios['unknown_user_over_right_password']:.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())
