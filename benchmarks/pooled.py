"""The gateway's throughput cost over several runs of ``benchmarks.grpc``, their rounds pooled.

One full run puts each cost within an interval about two points wide, and runs of the same code an
hour apart scatter by about as much (on 2026-11-28, four full runs on the same hot path measured
the session arm's cost on the ``SELECT 1`` round trip at 0.7 to 2.2 %). Every round of every run
compares the arms within the same few seconds, so rounds from several runs can be pooled: the
median over all of them, with its distribution-free 95 % interval, is the better estimate, and
each run's own median shows the scatter.

Run ``python -m benchmarks.pooled FILE [FILE ...]`` with the ``grpc.json`` of each run (the
default output of ``benchmarks.grpc``; earlier runs are kept in ``benchmarks/results/grpc-runs/``).
Pool only runs of the same code on the request path: the table names each run's commit.
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
from typing import Any

from benchmarks._common import Column, Table
from benchmarks.grpc import (
    ARM_LABELS,
    AUTH_ARMS,
    CONTROL_ARM,
    WORKLOAD_LABELS,
    WORKLOADS,
    _results,
)

ARM_NAMES = {**ARM_LABELS, CONTROL_ARM: "A/A control"}

_TABLE = Table(
    Column("workload", 20, align="<"),
    Column("arm", 12, align="<"),
    Column("rounds", 7, ",d"),
    Column("overhead", 9, align=">"),
    Column("95% CI", 14, align=">"),
    Column("verdict", 16, align=">"),
    Column("per run", 30, align=">"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", type=Path, help="grpc.json files of full runs")
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in args.files]
    for path, run in zip(args.files, runs, strict=True):
        source = run.get("e6auth_source") or {}
        print(
            f"{path}: {run['date']}, commit {str(source.get('commit'))[:7]}"
            f"{' (modified)' if source.get('modified') else ''}, {len(run['rounds'])} rounds,"
            f" {run.get('cpu_model')}"
        )
    pooled = _results([entry for run in runs for entry in run["rounds"]])
    each = [_results(run["rounds"]) for run in runs]
    print(
        "\noverhead: 1 - the median over the pooled rounds of the arm's ops/s over the mean of the"
        "\ntwo no-auth servers' in the same round (the A/A control: no auth 2 over no auth);"
        "\nper run: each run's own median, in the order given"
    )
    _TABLE.print_header()
    for workload in WORKLOADS:
        for arm in (*AUTH_ARMS, CONTROL_ARM):
            overhead, interval, verdict = _figures(pooled[workload][arm], arm)
            per_run = ", ".join(
                f"{100 * _figures(results[workload][arm], arm)[0]:.1f}" for results in each
            )
            _TABLE.print_row(
                WORKLOAD_LABELS[workload],
                ARM_NAMES[arm],
                len(pooled[workload][arm]["ratio_per_round"]),
                f"{100 * overhead:.2f}%",
                f"{100 * interval[0]:.1f}..{100 * interval[1]:.1f}%" if interval else "—",
                verdict,
                per_run + " %",
            )
    return 0


def _figures(figures: dict[str, Any], arm: str) -> tuple[float, tuple[float, float] | None, str]:
    """Overhead, its interval (as overheads, low to high) and the verdict of one arm."""
    if arm == CONTROL_ARM:
        ratio, interval, verdict = figures["ratio_median"], figures["ratio_ci95"], "A/A control"
    else:
        ratio = figures["ratio_vs_plain_mean_median"]
        interval = figures["ratio_vs_plain_mean_ci95"]
        verdict = figures["verdict_vs_plain_mean"]
    bounds = None if interval is None else (1 - interval[1], 1 - interval[0])
    return 1 - ratio, bounds, verdict


if __name__ == "__main__":
    raise SystemExit(main())
