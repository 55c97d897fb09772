"""What the interceptor adds to one call, measured alone: no network, no other work in the way.

The gateway benchmark (``benchmarks/grpc.py``) measures throughput, which a shared machine moves
by more than the cost in question. This one times the one thing authentication adds to a call:
the interceptor's wrapped handler around an empty handler, for a session id and for a bearer
token (both cached, as on every call after the first), against the no-auth twin's wrapper
(``FixedPrincipalInterceptor``, which only sets the principal). One process, a real
Authenticator on a SQLite store, a context object that answers like grpcio's; the arms alternate
in every round, so the machine's drift hits them alike, and the figure is the median over rounds
of each arm's best-of-three mean per call.

The same calls are then timed one by one with the CPU caches cold: before each, 8 MiB are
written, as the rest of a busy server's work evicts what one call touched from the last. In the
gateway, an RPC's own work (about 400 µs of CPU) runs between two authentications on a thread,
so this, not the warm loop, is what authentication costs there.

Run ``python -m benchmarks.interceptor [--quick]``; the table goes to stdout, the figures to
``benchmarks/results/interceptor.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import argparse
import secrets
import statistics
import tempfile
import time
import timeit
from collections.abc import Callable
from typing import Any

import grpc

from benchmarks._common import (
    EVICT_BYTES,
    RESULTS,
    Column,
    Table,
    evict_caches,
    machine_info,
    write_report,
)
from benchmarks._no_auth import FixedPrincipalInterceptor
from e6auth import Authenticator, Settings
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.interceptor import AuthInterceptor
from e6auth.settings import SecretStr
from e6auth.store import TokenStore
from e6auth.testing import FAST_ARGON2_SETTINGS

DEFAULT_OUTPUT = RESULTS / "interceptor.json"
METHOD = "/QueryEngineService/executeStatement"
METADATA = (("cluster-name", "default"), ("plannerip", "127.0.0.1"))
PEER = "ipv4:127.0.0.1:50123"


class Context:
    """What the wrapped handler asks of grpcio's ServicerContext on a call it lets through."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return PEER

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.trailing = metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(f"refused: {code} {details}")


class Details(grpc.HandlerCallDetails):
    method = METHOD
    invocation_metadata: Any = METADATA


def _empty(_request: Any, _context: Any) -> None:
    return None


def _cold_ns(call: Callable[[], object], calls: int) -> float:
    """The median time of one call made right after the caches were flushed."""
    times = []
    for _ in range(calls):
        evict_caches()
        start = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times)


def _wrapped(interceptor: grpc.ServerInterceptor) -> Callable[[Any, Any], Any]:
    handler: Any = grpc.unary_unary_rpc_method_handler(_empty)
    wrapped: Any = interceptor.intercept_service(lambda _details: handler, Details())
    behaviour: Callable[[Any, Any], Any] = wrapped.unary_unary
    return behaviour


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    rounds, number, cold_calls = (5, 2000, 200) if args.quick else (21, 5000, 1000)
    with tempfile.TemporaryDirectory(prefix="e6auth-bench-interceptor-") as home:
        settings = Settings(
            home=Path(home),
            pepper=SecretStr(secrets.token_urlsafe(48)),
            session_key=SecretStr(secrets.token_urlsafe(48)),
            audit=False,
            **FAST_ARGON2_SETTINGS,
        )
        store = TokenStore.from_settings(settings)
        try:
            store.create_user("bench")
            token = store.create_token("bench").token
        finally:
            store.close()
        with Authenticator.from_settings(settings) as authenticator:
            principal = authenticator.verify("bench", token)
            session_id = authenticator.create_session(principal)
            plain = _wrapped(FixedPrincipalInterceptor(principal))
            auth = _wrapped(AuthInterceptor(authenticator))
            with_session = pb.ExecuteStatementRequest(sessionId=session_id, queryId="q")
            bare = pb.ExecuteStatementRequest(queryId="q")
            bearer = Context((*METADATA, ("authorization", f"Bearer {token}")))
            arms: dict[str, Callable[[], object]] = {
                "no auth": lambda: plain(with_session, Context(METADATA)),
                "session id": lambda: auth(with_session, Context(METADATA)),
                "bearer PAT": lambda: auth(bare, bearer),
            }
            for call in arms.values():  # warm the cache and every code path
                for _ in range(1000):
                    call()
            timings: dict[str, list[float]] = {name: [] for name in arms}
            cold: dict[str, list[float]] = {name: [] for name in arms}
            for _ in range(rounds):
                for name, call in arms.items():
                    best = min(timeit.repeat(call, number=number, repeat=3))
                    timings[name].append(best / number * 1e9)
                for name, call in arms.items():
                    cold[name].append(_cold_ns(call, cold_calls))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    cold_medians = {name: statistics.median(values) for name, values in cold.items()}
    report: dict[str, Any] = {"benchmark": "interceptor", **machine_info(), "quick": args.quick}
    report["settings"] = {
        "rounds": rounds,
        "calls_per_timing": number,
        "best_of": 3,
        "cold_calls_per_round": cold_calls,
        "evicted_bytes_before_each_cold_call": EVICT_BYTES,
    }
    report["results"] = {
        name: {
            "median_ns": round(medians[name]),
            "per_round_ns": [round(value) for value in timings[name]],
            "over_no_auth_ns": round(medians[name] - medians["no auth"]),
            "cold_median_ns": round(cold_medians[name]),
            "cold_over_no_auth_ns": round(cold_medians[name] - cold_medians["no auth"]),
        }
        for name in arms
    }
    table = Table(
        Column("arm", 14, align="<"),
        Column("ns/call", 10, ",.0f"),
        Column("+ns", 10, ",.0f"),
        Column("cold ns", 10, ",.0f"),
        Column("cold +ns", 10, ",.0f"),
    )
    print(
        "\none call through the wrapped handler (empty handler, cached credential), median;"
        "\ncold: each call right after 8 MiB were written (caches flushed), as in a busy server"
    )
    table.print_header()
    for name in arms:
        table.print_row(
            name,
            medians[name],
            medians[name] - medians["no auth"],
            cold_medians[name],
            cold_medians[name] - cold_medians["no auth"],
        )
    write_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
