"""Imports follow use: what each entry point loads, checked in fresh interpreters.

``import e6auth`` and the pure modules load no store, gRPC, web stack or metrics; a library user
who imports the interceptor pays for gRPC and the store only; ``e6auth --help`` loads no
SQLAlchemy; building the settings loads no library and none of the parts they configure; nothing
loads pydantic; opening a store whose schema is current loads no Alembic.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import e6auth
import e6auth.store
from e6auth.store.migrate import SCHEMA_REVISION, head_revision

ROOT = Path(__file__).resolve().parent.parent
WATCHED = (
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
WEB_METRICS_MIGRATIONS = {"starlette", "uvicorn", "jinja2", "prometheus_client", "alembic"}
# What the settings configure but need not load to be read: argon2 and the hash gate, the
# throttle, the OIDC verifier, the trusted proxies, the query roles.
SETTINGS_PARTS = (
    "argon2",
    "e6auth.credentials.hashgate",
    "e6auth.credentials.passwords",
    "e6auth.query.roles",
    "e6auth.verify.oidc",
    "e6auth.verify.proxies",
    "e6auth.verify.throttle",
)


def _loaded_after(code: str, *args: str, watched: tuple[str, ...] = WATCHED) -> set[str]:
    """The ``watched`` modules in sys.modules after running ``code`` in a fresh interpreter (this
    checkout first on its path)."""
    report = (
        f"\nimport json, sys\nprint(json.dumps([m for m in {list(watched)!r} if m in sys.modules]))"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    completed = subprocess.run(
        [sys.executable, "-c", code + report, *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return set(json.loads(completed.stdout.splitlines()[-1]))


@pytest.mark.parametrize(
    "module", ["e6auth", "e6auth.credentials.tokens", "e6auth.errors", "e6auth.store"]
)
def test_the_package_and_its_pure_modules_load_nothing_heavy(module: str) -> None:
    assert _loaded_after(f"import {module}") == set()


def test_the_settings_load_no_library_nor_the_parts_they_configure() -> None:
    build = "from e6auth.settings import Settings\nSettings()"
    assert _loaded_after(build) == set()
    assert _loaded_after(build, watched=SETTINGS_PARTS) == set()
    # The store's file name and safe_url come from the package without the model.
    assert _loaded_after("from e6auth.settings import DATABASE_FILE, safe_url") == set()


def test_a_library_user_importing_the_interceptor_pays_for_grpc_and_the_store_only() -> None:
    loaded = _loaded_after(
        "from e6auth.grpc.interceptor import AuthInterceptor\n"
        "import sys\n"
        "assert 'e6auth.store.token_store' in sys.modules"
    )
    assert {"grpc", "sqlalchemy"} <= loaded
    assert not loaded & WEB_METRICS_MIGRATIONS
    assert "jwt" not in loaded  # sessions and OIDC load it when they are used
    assert "pydantic" not in loaded


def test_the_help_of_the_command_works_and_loads_no_store_grpc_or_web() -> None:
    loaded = _loaded_after(
        "import contextlib, io, sys\n"
        "from e6auth.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert 'token' in out.getvalue() and 'serve' in out.getvalue(), out.getvalue()\n"
    )
    assert loaded == set()


def test_a_command_on_a_current_store_loads_no_alembic_nor_grpc(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = "from e6auth.cli import main\nassert main(['--home', sys.argv[1], 'token', 'list']) == 0"
    first = _loaded_after(f"import sys\n{run}", str(home))  # creates and migrates the store
    assert "alembic" in first
    again = _loaded_after(f"import sys\n{run}", str(home))
    assert "sqlalchemy" in again
    assert not again & (WEB_METRICS_MIGRATIONS | {"grpc", "jwt", "pydantic"})


def test_every_exported_name_is_importable() -> None:
    for package in (e6auth, e6auth.store):
        for name in package.__all__:
            assert getattr(package, name) is not None, name
            assert name in dir(package)
        exec(f"from {package.__name__} import {', '.join(package.__all__)}", {})  # noqa: S102


def test_the_exports_come_from_the_modules_that_define_them() -> None:
    from e6auth.store.records import TokenInfo
    from e6auth.store.token_store import TokenStore
    from e6auth.verify.authenticator import Authenticator

    assert e6auth.Authenticator is Authenticator
    assert e6auth.TokenStore is TokenStore
    assert e6auth.TokenInfo is TokenInfo
    assert e6auth.store.TokenInfo is TokenInfo


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        e6auth.no_such_thing  # noqa: B018
    with pytest.raises(AttributeError):
        e6auth.store.no_such_thing  # noqa: B018


def test_the_version_is_the_installed_distributions() -> None:
    assert e6auth.__version__ == importlib.metadata.version("e6auth")


def test_the_schema_revision_is_alembics_head() -> None:
    """The store recognises a current schema without Alembic by this constant: a new migration
    must move it."""
    assert head_revision() == SCHEMA_REVISION
