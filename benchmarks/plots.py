"""PNG plots of the benchmarks' JSONs: latency distributions, throughput with and without
authentication, revocation propagation.

The latency JSONs hold summaries (min, p50, p90, p99, max), not samples: the plots draw them as
percentile curves on a logarithmic axis, which is what a reader compares (the median and the
tail). Revocation keeps every delay, so its plot is an empirical CDF. matplotlib runs headless
(``Agg``) so that the runner works on a server or in CI.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: must precede pyplot's import

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

__all__ = ["LATENCY", "REVOCATION", "THROUGHPUT", "write_plots"]

LATENCY = "latency.png"
THROUGHPUT = "throughput.png"
REVOCATION = "revocation.png"

_PERCENTILES = (
    ("min_us", 0.0),
    ("median_us", 50.0),
    ("p90_us", 90.0),
    ("p99_us", 99.0),
    ("max_us", 100.0),
)


def _tail(percentile: float) -> float:
    """-log10 of the share of calls slower: p50 -> 0.3, p90 -> 1, p99 -> 2, p99.9 -> 3."""
    return -math.log10(1 - percentile / 100) if percentile < 100 else math.inf


_ARMS = (
    ("plain", "no auth"),
    ("plain2", "no auth 2 (A/A)"),
    ("session", "session id"),
    ("bearer", "bearer PAT"),
)


def write_plots(reports: dict[str, dict[str, Any]], folder: Path, *, label: str) -> list[Path]:
    """The plots that ``reports`` (benchmark name -> its JSON) have data for, written in
    ``folder``; ``label`` (date, machine, quick or full) goes under every title."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, draw in ((LATENCY, _latency), (THROUGHPUT, _throughput), (REVOCATION, _revocation)):
        figure = draw(reports, label)
        if figure is None:
            continue
        path = folder / name
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written


_VERIFY_KINDS = (
    ("hit_bearer", "bearer token", "verify: cache hits"),
    ("hit", "user + token (handshake)", "verify: cache hits"),
    ("password_warm", "password", "verify: cache hits"),
    ("miss", "token miss (one store read)", "verify: misses and cold passwords"),
    ("password_cold", "password cold (argon2id)", "verify: misses and cold passwords"),
)
_HANDSHAKE = "gRPC handshake (authenticate RPC)"


def _latency_series(
    reports: dict[str, dict[str, Any]],
) -> Iterable[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(panel, label, summary, line style) for every latency summary worth a curve: one colour
    per kind, solid for SQLite and dashed for PostgreSQL."""
    verify = reports.get("verify", {})
    for backend, figures in verify.get("backends", {}).items():
        if not isinstance(figures, dict) or "skipped" in figures:
            continue
        for index, (key, what, panel) in enumerate(_VERIFY_KINDS):
            if key in figures:
                style = {"color": f"C{index}", "linestyle": "-" if backend == "sqlite" else "--"}
                yield panel, f"{what}, {backend}", figures[key], style
    for index, (kind, figures) in enumerate(reports.get("grpc", {}).get("handshake", {}).items()):
        yield _HANDSHAKE, kind.replace("_", " "), figures, {"color": f"C{index}"}


def _latency(reports: dict[str, dict[str, Any]], label: str) -> Any:
    panels: dict[str, list[tuple[str, dict[str, Any], dict[str, Any]]]] = {}
    for panel, name, summary, style in _latency_series(reports):
        panels.setdefault(panel, []).append((name, summary, style))
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    for axis, (title, curves) in zip(axes[0], panels.items(), strict=True):
        for name, summary, style in curves:
            xs, ys, highest = _tail_curve(summary)
            (line,) = axis.plot(
                xs,
                ys,
                marker="o" if len(xs) < len(_PERCENTILES) else None,
                markersize=4,
                label=f"{name} (n={summary.get('n', 0):,})",
                **style,
            )
            if highest is not None:
                axis.plot(*highest, marker="x", markersize=7, color=line.get_color())
        axis.set_yscale("log")
        right = max(axis.get_xlim()[1], 2.2)
        ticks = {name: x for name, x in _TAIL_TICKS.items() if x <= right}
        axis.set_xticks(list(ticks.values()), list(ticks))
        axis.set_xlim(-0.1, right)
        axis.set_xlabel("percentile (tail scale; leftmost point: min; cross: max of the n calls)")
        axis.set_ylabel("latency (µs, log scale)")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    figure.suptitle(f"Latency distributions\n{label}")
    figure.tight_layout()
    return figure


_TAIL_TICKS = {
    "p50": _tail(50.0),
    "p90": 1.0,
    "p99": 2.0,
    "p99.9": 3.0,
    "p99.99": 4.0,
    "p99.999": 5.0,
}


def _tail_curve(
    summary: dict[str, Any],
) -> tuple[list[float], list[float], tuple[float, float] | None]:
    """The distribution on the tail axis: the saved percentile curve where the run has one,
    else its summary points (min, p50, p90, p99); and apart, the max, placed where the rarest
    of n calls would be (1/n of the calls slower)."""
    curve = summary.get("percentiles_us") or []
    points = [(float(p), float(us)) for p, us in curve]
    if not points:
        points = [(p, summary[key]) for key, p in _PERCENTILES[:-1] if key in summary]
    elif "min_us" in summary:
        points.insert(0, (0.0, summary["min_us"]))
    points = [(_tail(p), us) for p, us in points]
    highest: tuple[float, float] | None = None
    if "max_us" in summary and summary.get("n", 0) > 1:
        # Past the last percentile even when n is small and that one is interpolated.
        last = points[-1][0] if points else 0.0
        highest = (max(math.log10(summary["n"]), last + 0.2), summary["max_us"])
    return [x for x, _ in points], [y for _, y in points], highest


def _throughput(reports: dict[str, dict[str, Any]], label: str) -> Any:
    results = reports.get("grpc", {}).get("results", {})
    if not results:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    ops, ratios = axes
    workloads = list(results)
    width = 0.8 / len(_ARMS)
    for index, (arm, name) in enumerate(_ARMS):
        xs = [w + (index - (len(_ARMS) - 1) / 2) * width for w in range(len(workloads))]
        ops.bar(
            xs, [results[w].get(arm, {}).get("ops_per_s", 0) for w in workloads], width, label=name
        )
    ops.set_xticks(range(len(workloads)), [_workload(w) for w in workloads])
    ops.set_ylabel("operations per second (mean over rounds)")
    ops.set_title("Saturated throughput per arm")
    ops.legend(fontsize=8)
    ops.grid(True, axis="y", alpha=0.3)
    _ratios(
        ratios, results, workloads, reports["grpc"].get("settings", {}).get("target_overhead", 0.02)
    )
    figure.suptitle(f"gRPC gateway throughput with and without authentication\n{label}")
    figure.tight_layout()
    return figure


def _ratios(axis: Axes, results: dict[str, Any], workloads: list[str], target: float) -> None:
    """Each arm's median ratio to no auth (per round), with its 95 % interval."""
    arms = [(arm, name) for arm, name in _ARMS if arm != "plain"]
    width = 0.8 / len(arms)
    intervals = False
    for index, (arm, name) in enumerate(arms):
        for w, workload in enumerate(workloads):
            figures = results[workload].get(arm, {})
            # Against the mean of the two no-auth twins where the run has it; the control arm
            # (plain2) only has its ratio to plain.
            ratio = figures.get("ratio_vs_plain_mean_median", figures.get("ratio_median"))
            interval = figures.get("ratio_vs_plain_mean_ci95", figures.get("ratio_ci95"))
            if ratio is None:
                continue
            x = w + (index - (len(arms) - 1) / 2) * width
            error = None if not interval else [[ratio - interval[0]], [interval[1] - ratio]]
            intervals = intervals or bool(interval)
            axis.errorbar(
                x,
                ratio,
                yerr=error,
                fmt="o",
                capsize=5,
                color=f"C{index + 1}",
                label=name if w == 0 else None,
            )
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.axhline(
        1 - target,
        color="red",
        linestyle="--",
        linewidth=0.8,
        label=f"target: at most {target:.0%} slower",
    )
    axis.set_xticks(range(len(workloads)), [_workload(w) for w in workloads])
    axis.set_xlim(-0.6, len(workloads) - 0.4)
    axis.set_ylabel("throughput ratio to no auth (median over rounds, 95 % CI)")
    axis.annotate(
        "session id, bearer PAT: to the mean of the two no-auth servers in each round;\n"
        "A/A control: no auth 2 / no auth",
        xy=(0.5, -0.13),
        xycoords="axes fraction",
        ha="center",
        va="top",
        fontsize=8,
    )
    axis.set_title(
        "Median ratio over rounds (A/A control: the noise floor)"
        + ("" if intervals else "\nno 95 % interval: too few rounds (quick run)")
    )
    axis.legend(fontsize=8)
    axis.grid(True, axis="y", alpha=0.3)


def _workload(name: str) -> str:
    return {"query": "SELECT 1 round trip (6 RPCs)", "metadata": "getSchemaNamesV2 (1 RPC)"}.get(
        name, name
    )


def _revocation(reports: dict[str, dict[str, Any]], label: str) -> Any:
    modes = reports.get("revocation", {}).get("modes", {})
    if not modes:
        return None
    figure, axis = plt.subplots(figsize=(9, 5.5))
    for mode, figures in modes.items():
        delays = sorted(delay for replica in figures.get("delays_ms", []) for delay in replica)
        if not delays:
            continue
        shares = [(index + 1) / len(delays) for index in range(len(delays))]
        poll = figures.get("settings", {}).get("invalidation_poll_seconds")
        every = f", polls every {poll:g} s" if isinstance(poll, int | float) else ""
        what = f"LISTEN/NOTIFY{every}" if mode == "notify" else f"polling alone{every}"
        axis.step(delays, shares, where="post", label=f"{what} ({len(delays)} refusals)")
    for target in reports["revocation"].get("targets", []):
        # "p99 with NOTIFY <= 250 ms": the limit is the number after "<=".
        limit = re.search(r"<=\s*([\d.]+)\s*ms", target.get("what", ""))
        if limit:
            axis.axvline(
                float(limit[1]),
                color="red",
                linestyle="--",
                linewidth=0.8,
                label=f"target: {target['what']}",
            )
    axis.set_xscale("log")
    axis.set_xlabel("delay from the delete returning to the first refused call (ms, log scale)")
    axis.set_ylabel("share of (deletion, replica) pairs refused")
    axis.set_title(f"Revocation propagation on 3 replicas: NOTIFY vs polling\n{label}")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure
