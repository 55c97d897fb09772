"""The built wheel carries what runs outside the checkout: the Alembic migrations above all."""

from __future__ import annotations

import fnmatch
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from e6auth.store.migrate import head_revision

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(180)

# Build outputs and caches stay behind: setuptools would put a stale build/lib into the wheel,
# which could hide a file that the package data no longer lists.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".*cache", ".venv", ".benchmarks"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy, so the checkout gets no build/ or egg-info from this test.
    source = tmp_path_factory.mktemp("source") / "e6auth"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCES)
    out = tmp_path_factory.mktemp("wheelhouse")
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [path] = out.glob("e6auth-*.whl")
    return path


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_wheel_holds_the_migrations_and_the_typing_marker(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(
            archive.read(name).decode() for name in names if name.endswith("entry_points.txt")
        )
    for expected in (
        "e6auth/py.typed",
        "e6auth/store/migrations/env.py",
        "e6auth/store/migrations/script.py.mako",
        "e6auth/web/templates/tokens.html",
        "e6auth/web/static/e6auth.css",
        "e6auth/web/static/e6auth.js",
    ):
        assert expected in names
    assert fnmatch.filter(names, "e6auth/store/migrations/versions/0001_*.py")
    assert "e6auth = e6auth.cli:main" in entry_points


def _run_outside_checkout(
    code: str, *, site: Path, home: Path, cwd: Path
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)  # E6AUTH_* already cleared by the autouse fixture
    env.update(PYTHONPATH=str(site), E6AUTH_HOME=str(home))
    env.pop("PYTHONSAFEPATH", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_migrations_run_from_the_unpacked_wheel(unpacked: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()

    located = _run_outside_checkout(
        "import e6auth, e6auth.store.migrations as m; print(e6auth.__file__); print(m.__file__)",
        site=unpacked,
        home=home,
        cwd=elsewhere,
    )
    assert located.returncode == 0, located.stderr
    # If the editable install or the cwd won, this test would prove nothing about the wheel.
    for module_file in located.stdout.split():
        assert Path(module_file).resolve().is_relative_to(unpacked.resolve()), module_file

    upgraded = _run_outside_checkout(
        "from e6auth.cli import main; raise SystemExit(main(['db','upgrade']))",
        site=unpacked,
        home=home,
        cwd=elsewhere,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"schema upgraded from empty to {head_revision()}"

    current = _run_outside_checkout(
        "from e6auth.cli import main; raise SystemExit(main(['db','current']))",
        site=unpacked,
        home=home,
        cwd=elsewhere,
    )
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == f"{head_revision()} (up to date)"

    database = sqlite3.connect(home / "e6auth.db")
    try:
        [(revision,)] = database.execute(
            "SELECT version_num FROM e6auth_alembic_version"
        ).fetchall()
        objects = {
            name for (name,) in database.execute("SELECT name FROM sqlite_master").fetchall()
        }
    finally:
        database.close()
    assert revision == head_revision()
    assert {"e6auth_users", "e6auth_tokens", "ix_e6auth_tokens_user_id"} <= objects
