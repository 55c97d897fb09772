"""Every benchmark in one command: ``python -m benchmarks [--quick] [--only NAME ...]
[--output-dir DIR]``.

Each benchmark runs in a child process of its own (``python -m benchmarks.NAME [--quick]
--output DIR/NAME.json``), one after the other so that they do not measure each other, and so
that one that crashes loses only its own figures. Then the runner merges their JSONs into
``DIR/latest.json`` (date, machine, commit, each benchmark's settings and headline figures),
prints one summary table and draws the PNG plots in ``DIR/plots/``. It exits non-zero, after
doing all of that for the others, when any benchmark failed.

The full run writes to ``benchmarks/results/`` (committed: benchmarks/README.md shows it).
``--quick`` writes to ``benchmarks/results/quick/`` by default, so that a quick look never
overwrites the full figures; pass ``--output-dir benchmarks/results`` to do so on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, cpu_model, machine_info, utc_now

__all__ = ["BENCHMARKS", "main"]

BENCHMARKS: dict[str, str] = {
    "verify_uncached": "benchmarks.verify_uncached",
    "cold": "benchmarks.cold",
    "verify": "benchmarks.verify",
    "interceptor": "benchmarks.interceptor",
    "grpc": "benchmarks.grpc",
    "revocation": "benchmarks.revocation",
}
"""Benchmark name -> the module run as ``python -m``; in the order they run."""

QUICK_RESULTS = RESULTS / "quick"
ROOT = Path(__file__).resolve().parent.parent


def main(argv: Sequence[str] | None = None, *, benchmarks: dict[str, str] | None = None) -> int:
    """Run ``benchmarks`` (default: every one), then merge, tabulate and plot; 1 if any failed."""
    # Imported here: matplotlib is optional (the "bench" extra), and --help should not need it.
    from benchmarks import plots, readme, report

    available = dict(BENCHMARKS if benchmarks is None else benchmarks)
    args = _parse(argv, available)
    chosen = {name: available[name] for name in (args.only or available)}
    output: Path = args.output_dir or (QUICK_RESULTS if args.quick else RESULTS)
    output.mkdir(parents=True, exist_ok=True)

    started = utc_now()
    source = report.commit(ROOT)  # before the runs: what they measure, not what changed meanwhile
    runs: dict[str, dict[str, Any]] = {}
    reports: dict[str, dict[str, Any]] = {}
    for name, module in chosen.items():
        runs[name], loaded = _run(name, module, output, quick=args.quick)
        if loaded is not None:
            reports[name] = loaded
    failed = [name for name, run in runs.items() if run["status"] != "ok"]

    machine = {**machine_info(), "cpu_model": cpu_model()}
    label = (
        f"{'quick run' if args.quick else 'full run'}, {started[:16].replace('T', ' ')} UTC, "
        f"{machine['usable_cpus']} CPUs {machine['cpu_model']}, Python {machine['python']}"
    )
    rows = [row for name in chosen for row in report.figures(name, reports.get(name, {}))]
    try:
        written = plots.write_plots(reports, output / "plots", label=label)
    except Exception as exc:  # a plot must not cost the merged figures
        print(f"\n!! plotting failed: {exc!r}", file=sys.stderr)
        written, failed = [], [*failed, "plots"]
    latest: dict[str, Any] = {
        "date": started,
        "finished": utc_now(),
        "quick": args.quick,
        "machine": machine,
        "source": source,
        "benchmarks": {
            name: {
                **runs[name],
                "settings": report.settings_of(reports.get(name, {})),
                "figures": [row.as_dict() for row in report.figures(name, reports.get(name, {}))],
            }
            for name in chosen
        },
        "failed": failed,
        "plots": [_relative(path, output) for path in written],
    }
    path = output / "latest.json"
    path.write_text(json.dumps(latest, indent=2) + "\n")

    if output == RESULTS:  # a full run into the committed results: the page shows them
        readme.main(["--write"])
    print(f"\n== summary ({label})")
    report.print_summary(rows, failed)
    print(f"\nwrote {path}")
    for plot in written:
        print(f"wrote {plot}")
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _parse(argv: Sequence[str] | None, available: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run every benchmark, merge the figures into latest.json, plot them.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="each benchmark's quick mode (the whole run under 2 minutes); "
        f"results go to {_relative(QUICK_RESULTS, ROOT)}/ unless --output-dir says otherwise",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(available),
        metavar="NAME",
        help=f"run only these benchmarks (of: {', '.join(available)})",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help=f"where the JSONs, latest.json and plots/ go (default {_relative(RESULTS, ROOT)}/, "
        f"or {_relative(QUICK_RESULTS, ROOT)}/ with --quick)",
    )
    return parser.parse_args(argv)


def _run(
    name: str, module: str, output: Path, *, quick: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One benchmark in a child process; what happened, and its JSON if it wrote one."""
    target = output / f"{name}.json"
    # A stale JSON from an earlier run must not pass for this run's figures.
    target.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        module,
        *(["--quick"] if quick else []),
        "--output",
        str(target),
    ]
    print(f"\n== {name}: {' '.join(command[1:])}", flush=True)
    start = time.monotonic()
    # The child prints its own table straight to this terminal; its working directory is the
    # project root so that ``-m benchmarks.NAME`` resolves wherever the runner was started from.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(_pythonpath())}
    completed = subprocess.run(command, cwd=ROOT, env=environment, check=False)
    seconds = round(time.monotonic() - start, 1)
    run: dict[str, Any] = {
        "module": module,
        "exit_code": completed.returncode,
        "seconds": seconds,
        "json": _relative(target, output),
    }
    loaded: dict[str, Any] | None = None
    if target.exists():
        try:
            loaded = json.loads(target.read_text())
        except ValueError:
            loaded = None
    if completed.returncode != 0 or loaded is None:
        why = f"exit code {completed.returncode}" if completed.returncode else "wrote no JSON"
        print(f"\n!! {name} failed ({why}) after {seconds} s", file=sys.stderr, flush=True)
        run["status"] = "failed"
        run["error"] = why
    else:
        run["status"] = "ok"
    return run, loaded


def _pythonpath() -> list[str]:
    existing = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return [str(ROOT), *existing]


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
