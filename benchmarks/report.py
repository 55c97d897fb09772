"""The headline figures of each benchmark's JSON, merged into one report and one table.

Each benchmark writes its own detailed JSON; this module reads them back and picks the few
figures a reader wants first (what the design sets targets for, and the comparisons the issue
asks about), so that ``latest.json`` and the summary table stay short. A benchmark whose JSON
lacks a figure (an older run, a skipped PostgreSQL) simply has fewer rows.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import Column, Table

__all__ = ["SETTINGS_KEYS", "Figure", "commit", "figures", "print_summary", "settings_of"]

SETTINGS_KEYS = ("quick", "settings", "n", "argon2", "replicas", "deletions_per_mode")
"""The keys of a benchmark's JSON that say how it ran (the rest are its measurements)."""


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of the summary: a measured value and, where the design sets one, its target."""

    benchmark: str
    figure: str
    value: float | int | None
    unit: str
    target: str = ""
    met: str = ""
    """"yes", "no", or a verdict with a nuance (grpc's "met (median)"); empty without target."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _yes_no(met: object) -> str:
    return "yes" if met is True else "no" if met is False else ""


def _backends(report: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for backend, figures in report.get("backends", {}).items():
        if isinstance(figures, dict) and "skipped" not in figures:
            yield backend, figures


def _verify_uncached(report: dict[str, Any]) -> Iterator[Figure]:
    for backend, figures in _backends(report):
        for key, label in (("pat", "PAT verify, no cache"), ("password_right", "password verify")):
            if key in figures:
                yield Figure(
                    "verify_uncached", f"{label}, p50 ({backend})", _median(figures[key]), "us"
                )


def _cold(report: dict[str, Any]) -> Iterator[Figure]:
    for backend, figures in _backends(report):
        for section, arm, label in (
            ("find_token", "e6auth", "find_token, p50"),
            ("find_token", "driver", "find_token floor (driver cursor), p50"),
            ("miss", "e6auth", "cache miss, p50"),
            ("miss", "driver_read_and_hmac", "cache miss floor (read + HMAC), p50"),
            ("miss", "peer", "peer's verify (drf-api-key), p50"),
            ("miss_caches_cold", "e6auth", "cache miss, caches cold, p50"),
            ("miss_caches_cold", "driver_read_and_hmac", "cache miss floor, caches cold, p50"),
            ("miss_caches_cold", "peer", "peer's verify, caches cold, p50"),
        ):
            if arm in figures.get(section, {}):
                yield Figure("cold", f"{label} ({backend})", _median(figures[section][arm]), "us")
    for command, median in report.get("processes", {}).get("median_ms", {}).items():
        yield Figure("cold", f"{command}, p50", median, "ms")
    for target in report.get("targets", []):
        unit = target.get("unit", "")
        limit = target.get("limit")
        yield Figure(
            "cold",
            f"{target['target']} ({target.get('backend', 'any')})",
            target.get("measured"),
            unit,
            f"<= {limit:g} {unit}".rstrip() if isinstance(limit, int | float) else "",
            _yes_no(target.get("met")),
        )


def _verify(report: dict[str, Any]) -> Iterator[Figure]:
    for backend, figures in _backends(report):
        if "hit_bearer" in figures:
            yield Figure(
                "verify",
                f"bearer verify, cache hit, p50 ({backend})",
                _median(figures["hit_bearer"]),
                "us",
            )
    for target in report.get("targets", []):
        unit = target.get("unit", "")
        limit = target.get("limit")
        yield Figure(
            "verify",
            f"{target['target']} ({target.get('backend', 'any')})",
            target.get("measured"),
            unit,
            f"<= {limit:g} {unit}".rstrip() if isinstance(limit, int | float) else "",
            _yes_no(target.get("met")),
        )


def _interceptor(report: dict[str, Any]) -> Iterator[Figure]:
    for arm, figures in report.get("results", {}).items():
        if arm != "no auth":
            yield Figure(
                "interceptor", f"{arm}, over no auth", figures.get("over_no_auth_ns"), "ns"
            )
            yield Figure(
                "interceptor",
                f"{arm}, over no auth, caches cold",
                figures.get("cold_over_no_auth_ns"),
                "ns",
            )


def _grpc(report: dict[str, Any]) -> Iterator[Figure]:
    target = report.get("settings", {}).get("target_overhead", 0.02)
    for workload, arms in report.get("results", {}).items():
        for arm, figures in arms.items():
            if "ratio_vs_plain_mean_median" in figures:
                ratio, interval = (
                    figures["ratio_vs_plain_mean_median"],
                    figures.get("ratio_vs_plain_mean_ci95"),
                )
                verdict = figures.get("verdict_vs_plain_mean", "")
            elif "ratio_median" in figures:
                ratio, interval = figures["ratio_median"], figures.get("ratio_ci95")
                verdict = figures.get("verdict", "")
            else:
                continue
            span = f" (95% CI {1 - interval[1]:.1%}..{1 - interval[0]:.1%})" if interval else ""
            name = "A/A control" if arm == "plain2" else arm
            yield Figure(
                "grpc",
                f"throughput cost, {name}, {workload}{span}",
                round(100 * (1 - ratio), 1),
                "%",
                "" if arm == "plain2" else f"<= {100 * target:g} %",
                ""
                if arm == "plain2"
                else verdict.replace("met", "yes", 1).replace("missed", "no", 1),
            )
    for kind, figures in report.get("handshake", {}).items():
        yield Figure(
            "grpc", f"handshake {kind.replace('_', ' ')}, p50", _ms(_median(figures)), "ms"
        )


def _revocation(report: dict[str, Any]) -> Iterator[Figure]:
    for mode, figures in report.get("modes", {}).items():
        every = figures.get("all", {})
        for key in ("median_us", "p99_us"):
            if key in every:
                label = "p50" if key == "median_us" else "p99"
                yield Figure(
                    "revocation", f"refused on 3 replicas, {mode}, {label}", _ms(every[key]), "ms"
                )
    for target in report.get("targets", []):
        yield Figure(
            "revocation",
            target.get("what", "target"),
            target.get("value_ms"),
            "ms",
            _limit(target.get("what", "")),
            _yes_no(target.get("met")),
        )


def _argon2_memory(report: dict[str, Any]) -> Iterator[Figure]:
    arms = report.get("arms", {})
    targets = {target.get("what", ""): target for target in report.get("targets", [])}
    empty: dict[str, Any] = {}
    peak = next((t for what, t in targets.items() if "peak" in what), empty)
    settled = next((t for what, t in targets.items() if "within" in what), empty)
    for arm, label in (("gated", "gated"), ("ungated", "gate off")):
        figures = arms.get(arm)
        if not isinstance(figures, dict):
            continue
        gated = arm == "gated"
        yield Figure(
            "argon2_memory",
            f"RSS growth at peak, 5 bursts of 32 unknown-user handshakes, {label}",
            figures.get("peak_growth_mib"),
            "MiB",
            _limit(peak.get("what", "")) if gated else "",
            _yes_no(peak.get("met")) if gated else "",
        )
        yield Figure(
            "argon2_memory",
            f"RSS growth once settled, {label}",
            figures.get("settled_growth_mib"),
            "MiB",
            "",
            "",
        )
        if gated and settled:
            yield Figure(
                "argon2_memory",
                f"seconds to settle ({settled.get('what', '')})",
                figures.get("settled_after_seconds"),
                "s",
                "<= 60 s",
                _yes_no(settled.get("met")),
            )


def _isolation(report: dict[str, Any]) -> Iterator[Figure]:
    latency = report.get("victim_latency", {})
    if latency:
        yield Figure(
            "isolation", "victim's SELECT round trip, alone", latency["alone_ms"]["median"], "ms"
        )
        beside = latency["beside_ms"]["median"]
        yield Figure(
            "isolation",
            f"the same beside {latency['abandoned_endless_queries']} abandoned endless queries "
            f"of another user ({latency['accepted']} accepted, {latency['refused']} refused)",
            beside,
            "ms",
            "< 1000 ms",
            _yes_no(beside < 1000),
        )
    memory = report.get("result_memory", {})
    for key, label in (
        ("default_max_batch_bytes", "default max_batch_bytes (row refused)"),
        ("max_batch_bytes_32MiB", "max_batch_bytes 32 MiB (streamed)"),
    ):
        figures = memory.get(key)
        if isinstance(figures, dict):
            growth = figures.get("peak_growth_mib")
            default = key.startswith("default")
            yield Figure(
                "isolation",
                f"peak RSS growth, 20 rows of 20 MB, {label}",
                growth,
                "MiB",
                "<= 256 MiB" if default else "",
                _yes_no(growth is not None and growth <= 256) if default else "",
            )
    timeout = report.get("after_timeout", {})
    if timeout:
        yield Figure(
            "isolation",
            f"endless statement ended by a {timeout['statement_timeout_s']} s statement timeout",
            timeout.get("error_after_s"),
            "s",
        )
        yield Figure(
            "isolation",
            "gateway CPU in the 3 s after that timeout",
            timeout.get("gateway_cpu_percent_3s_later"),
            "%",
        )


def _limit(what: str) -> str:
    # "p99 with NOTIFY <= 250 ms" -> "<= 250 ms"
    return what[what.index("<=") :] if "<=" in what else ""


def _median(summary: dict[str, Any]) -> float | None:
    value = summary.get("median_us")
    return value if isinstance(value, int | float) else None


def _ms(micros: float | None) -> float | None:
    return None if micros is None else round(micros / 1000, 2)


_PICKERS: dict[str, Callable[[dict[str, Any]], Iterator[Figure]]] = {
    "verify_uncached": _verify_uncached,
    "cold": _cold,
    "verify": _verify,
    "interceptor": _interceptor,
    "grpc": _grpc,
    "revocation": _revocation,
    "argon2_memory": _argon2_memory,
    "isolation": _isolation,
}


def figures(name: str, report: dict[str, Any]) -> list[Figure]:
    """The headline figures of benchmark ``name``'s report (none for an unknown benchmark)."""
    picker = _PICKERS.get(name)
    return [] if picker is None else list(picker(report))


def settings_of(report: dict[str, Any]) -> dict[str, Any]:
    settings = {key: report[key] for key in SETTINGS_KEYS if key in report}
    # Revocation's settings are per mode (NOTIFY on or off, the poll interval).
    modes = {
        mode: figures["settings"]
        for mode, figures in report.get("modes", {}).items()
        if isinstance(figures, dict) and "settings" in figures
    }
    if modes:
        settings["modes"] = modes
    return settings


def commit(root: Path) -> dict[str, Any]:
    """The source the figures came from: HEAD and whether the tree differed from it (the
    results folder aside: a run rewrites it)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)benchmarks/results",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": None}
    return {"commit": head, "modified": bool(status.strip())}


def print_summary(rows: list[Figure], failed: list[str]) -> None:
    table = Table(
        Column("benchmark", 17, align="<"),
        Column("figure", 66, align="<"),
        Column("value", 12),
        Column(" unit", 7, align="<"),
        Column("target", 14, align="<"),
        Column("met", 16, align="<"),
    )
    print()
    table.print_header()
    for row in rows:
        value = "-" if row.value is None else f"{row.value:,}"
        table.print_row(
            row.benchmark, f" {row.figure}", value, f" {row.unit}", f" {row.target}", f" {row.met}"
        )
    for name in failed:
        table.print_row(name, " FAILED: no figures (see its output above)", "-", "", "", "")
