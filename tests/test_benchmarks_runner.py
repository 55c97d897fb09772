"""`python -m benchmarks`: children run, JSONs merged into latest.json, one table, PNG plots, and
a crashing benchmark fails the run without losing the others.

The full benchmarks take many minutes, so the runner is given its benchmark list: the real
``interceptor`` benchmark in its quick mode (a few seconds; a real child process writing a real
JSON), stand-ins that replay the committed full results of ``verify``, ``grpc`` and
``revocation`` (the JSON shapes the plots read), and one that crashes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

REPLAY = """\
import argparse, shutil, sys
parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true")
parser.add_argument("--output", required=True)
args = parser.parse_args()
print("replaying {source}")
shutil.copyfile({source!r}, args.output)
"""

CRASH = """\
import sys
print("about to crash", file=sys.stderr)
sys.exit(3)
"""


@pytest.fixture
def fake_benchmarks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Benchmark name -> module: stand-ins in a package on the children's PYTHONPATH."""
    package = tmp_path / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("verify", "grpc", "revocation"):
        source = RESULTS / f"{name}.json"
        assert source.exists(), f"the committed full results lack {source.name}"
        (package / f"replay_{name}.py").write_text(REPLAY.format(source=str(source)))
    (package / "crash.py").write_text(CRASH)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT))
    return {
        "interceptor": "benchmarks.interceptor",
        "verify": "fakebench.replay_verify",
        "crash": "fakebench.crash",
        "grpc": "fakebench.replay_grpc",
        "revocation": "fakebench.replay_revocation",
    }


def _run(argv: list[str], benchmarks: dict[str, str]) -> int:
    from benchmarks.__main__ import main

    return main(argv, benchmarks=benchmarks)


def test_runner_merges_tables_and_plots_and_a_crash_fails_the_run_only(
    tmp_path: Path, fake_benchmarks: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    code = _run(["--quick", "--output-dir", str(output)], fake_benchmarks)

    assert code == 1
    latest: dict[str, Any] = json.loads((output / "latest.json").read_text())
    assert latest["quick"] is True
    assert latest["failed"] == ["crash"]
    assert {"date", "finished", "machine", "source", "benchmarks", "plots"} <= set(latest)
    assert latest["machine"]["cpu_count"] >= 1
    assert len(latest["source"]["commit"]) == 40
    assert list(latest["benchmarks"]) == list(fake_benchmarks)  # in the order they ran

    crash = latest["benchmarks"]["crash"]
    assert crash["status"] == "failed"
    assert crash["exit_code"] == 3
    assert crash["figures"] == []
    for name in ("interceptor", "verify", "grpc", "revocation"):
        entry = latest["benchmarks"][name]
        assert entry["status"] == "ok", name
        assert entry["exit_code"] == 0
        assert entry["figures"], name
        assert (output / entry["json"]).exists()
        for figure in entry["figures"]:
            assert set(figure) == {"benchmark", "figure", "value", "unit", "target", "met"}
    # The real benchmark ran in its quick mode and its settings came along.
    assert latest["benchmarks"]["interceptor"]["settings"]["quick"] is True
    assert latest["benchmarks"]["interceptor"]["settings"]["settings"]["rounds"] == 5
    modes = latest["benchmarks"]["revocation"]["settings"]["modes"]
    assert modes["polling"]["invalidation_notify"] is False
    # Targets come with their verdicts.
    revocation = latest["benchmarks"]["revocation"]["figures"]
    assert any(row["target"] == "<= 250 ms" and row["met"] in {"yes", "no"} for row in revocation)

    assert sorted(latest["plots"]) == [
        "plots/latency.png",
        "plots/revocation.png",
        "plots/throughput.png",
    ]
    for plot in latest["plots"]:
        content = (output / plot).read_bytes()
        assert content.startswith(PNG_MAGIC), plot
        assert len(content) > 10_000, plot  # axes, labels and data, not an empty canvas

    out, err = capsys.readouterr()
    assert out.count("benchmark        figure") == 1  # one summary table
    assert "session id, over no auth" in out
    assert re.search(r"^crash +FAILED", out, re.MULTILINE)
    assert "FAILED: crash" in err


def test_runner_succeeds_when_every_benchmark_does_and_only_runs_what_is_asked(
    tmp_path: Path, fake_benchmarks: dict[str, str]
) -> None:
    output = tmp_path / "out"
    output.mkdir()
    # A JSON left by an earlier run must not pass for this run's result.
    (output / "crash.json").write_text("{}")

    assert _run(["--only", "revocation", "--output-dir", str(output)], fake_benchmarks) == 0
    latest = json.loads((output / "latest.json").read_text())
    assert list(latest["benchmarks"]) == ["revocation"]
    assert latest["failed"] == []
    assert latest["quick"] is False
    assert latest["plots"] == ["plots/revocation.png"]  # no data, no empty plot for the others

    assert _run(["--only", "crash", "--output-dir", str(output)], fake_benchmarks) == 1
    assert not (output / "crash.json").exists()


def test_quick_results_go_to_their_own_folder_by_default(
    tmp_path: Path, fake_benchmarks: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmarks.__main__ as runner

    full, quick = tmp_path / "results", tmp_path / "results" / "quick"
    monkeypatch.setattr(runner, "RESULTS", full)
    monkeypatch.setattr(runner, "QUICK_RESULTS", quick)

    assert _run(["--quick", "--only", "revocation"], fake_benchmarks) == 0
    assert (quick / "latest.json").exists()
    assert (quick / "revocation.json").exists()
    assert not (full / "latest.json").exists()


def test_the_command_line_lists_every_benchmark() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for name in (
        "verify_uncached",
        "cold",
        "verify",
        "interceptor",
        "grpc",
        "revocation",
        "--quick",
    ):
        assert name in completed.stdout


def test_latency_curves_are_bounded_and_plotted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks._common import percentile_curve, summary
    from benchmarks.plots import LATENCY, write_plots

    timings = [micros * 1000 for micros in range(1, 100_001)]  # 1 µs .. 100 ms, evenly
    curve = percentile_curve(timings)
    assert len(curve) == 101  # p1..p99, p99.5, p99.9, whatever the number of calls
    assert curve[49] == [50.0, pytest.approx(50_000.5, abs=1)]
    assert curve[-1] == [99.9, pytest.approx(99_900, abs=1)]
    assert [us for _, us in curve] == sorted(us for _, us in curve)
    assert len(percentile_curve(timings[:100])) == 99  # too few calls for p99.5 and p99.9

    distribution = {**summary(timings), "percentiles_us": curve}
    report = {"backends": {"sqlite": {"hit": distribution, "miss": distribution}}}
    (written,) = write_plots({"verify": report}, tmp_path, label="test")
    assert written == tmp_path / LATENCY
    assert written.read_bytes().startswith(PNG_MAGIC)


def test_pooled_runs_pool_every_round_and_show_each_runs_median(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m benchmarks.pooled` on the kept runs: the rounds of all of them in one median,
    each run's own beside it."""
    from benchmarks.grpc import _results
    from benchmarks.pooled import main

    files = sorted((RESULTS / "grpc-runs").glob("*.json"))
    assert len(files) >= 2
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in files]
    rounds = sum(len(run["rounds"]) for run in runs)

    assert main([str(path) for path in files]) == 0

    out = capsys.readouterr().out
    lines = out.splitlines()
    session = next(line for line in lines if line.startswith("SELECT 1 round trip session"))
    assert f" {rounds} " in session
    first = _results(runs[0]["rounds"])["query"]["session"]["overhead_vs_plain_mean"]
    assert session.endswith(" %")
    assert f"{100 * first:.1f}," in session


def test_the_benchmarks_page_is_generated_from_the_results() -> None:
    """benchmarks/README.md quotes no figure by hand: it is what the results render to."""
    from benchmarks import readme

    assert readme.README.read_text(encoding="utf-8") == readme.render(), (
        "benchmarks/README.md is out of date: python -m benchmarks.readme --write"
    )
    front = readme.FRONT_PAGE.read_text(encoding="utf-8")
    assert readme.with_headlines(front) == front, "README.md's figures are out of date"
    assert "| a verify that misses the cache" in front
    assert readme.main(["--check"]) == 0
