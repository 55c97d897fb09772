"""A short, seeded atheris run of ``fuzz/fuzz_tokens.py`` (the token parser and the reading of a
call's credentials), when atheris is installed (``pip install atheris``; it is not in the test
extra, having wheels for fewer platforms than the rest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_SCRIPT = Path(__file__).parents[1] / "fuzz" / "fuzz_tokens.py"
RUNS = 5000


@pytest.mark.timeout(180)
def test_a_bounded_atheris_run_finds_no_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZ_SCRIPT),
            f"-runs={RUNS}",
            "-seed=1",
            "-max_len=400",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Done {RUNS} runs" in done.stderr, done.stderr[-3000:]
    assert not list(tmp_path.glob("crash-*"))
