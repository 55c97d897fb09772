"""Shared fixtures: a fake clock, and token stores on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from e6auth.store import TokenStore
from e6auth.testing import FakeClock, memory_store

POSTGRES_URL = os.environ.get(
    "E6AUTH_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# CI sets this so that a missing PostgreSQL fails the run instead of skipping its tests.
REQUIRE_POSTGRES = os.environ.get("E6AUTH_REQUIRE_POSTGRES") == "1"


# The order in which files are handed to the two workers. --dist loadfile runs each file whole on
# one worker; --no-loadscope-reorder (pyproject) keeps this order instead of xdist's own (most
# tests first), which handed out test_keepalive.py near the end, so that the other worker idled
# for over two minutes. Seconds are one worker's on the 2-core CI machine.
FIRST = (
    # 150 s in pg_sleep: its worker idles throughout, so it starts at once.
    "test_keepalive.py",
    # Beside it, on the other worker, the files that load both cores or time a refusal to the
    # second: they have the idle core to themselves instead of meeting each other at the end.
    "test_rolling_restart.py",  # 20: six connector threads through two gateway restarts
    # xdist starts each worker with two files: this one follows the keepalive on its worker.
    "test_connector.py",  # 145: gateway and connector processes per test
    "test_benchmarks_runner.py",  # 25: runs real benchmarks in their quick mode
    "test_web_sso_browser.py",  # 20: refusal within a second of a click
    "test_web_browser.py",  # 20: the same
    "test_concurrency.py",  # 7: verifier, creator and deleter threads
    "test_replicas.py",  # 60: refusal by every replica within 250 ms
    # The other long files, longest first; after them the rest by number of tests.
    "test_shared_gateway.py",  # 80
    "test_web_sso.py",  # 45
    "test_hostile_input.py",  # 40
    "test_web.py",  # 40
    "test_authenticator.py",  # 40
    "test_audit.py",  # 30
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files in the order of FIRST, then the others by number of tests (xdist's own order);
    within a file the order is unchanged. Every worker sorts alike, as xdist requires."""
    counts = Counter(item.path.name for item in items)

    def rank(item: pytest.Item) -> tuple[int, int, str]:
        name = item.path.name
        first = FIRST.index(name) if name in FIRST else len(FIRST)
        return first, -counts[name], str(item.path)

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads or writes the developer's ~/.e6auth or inherits their E6AUTH_* variables."""
    for name in list(os.environ):
        if (
            name.startswith("E6AUTH_")
            and not name.startswith("E6AUTH_TEST_")
            and name not in ("E6AUTH_REQUIRE_POSTGRES", "E6AUTH_REQUIRE_BROWSER")
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("E6AUTH_HOME", str(tmp_path_factory.mktemp("e6auth-home")))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except OperationalError as exc:
        message = f"PostgreSQL not reachable at {POSTGRES_URL} ({type(exc.orig).__name__})"
        if REQUIRE_POSTGRES:
            pytest.fail(message + " and E6AUTH_REQUIRE_POSTGRES=1", pytrace=False)
        pytest.skip(message)
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A URL whose connections work in a fresh, private schema, dropped afterwards."""
    schema = f"e6auth_test_{secrets.token_hex(6)}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_admin_url else "?"
    try:
        yield f"{postgres_admin_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def postgres_query_url(postgres_admin_url: str) -> Iterator[str]:
    """A URL of a fresh database of its own, dropped afterwards: a query database beside a token
    store at ``postgres_url``, which the gateway refuses to query (it would be the same one)."""
    name = f"e6auth_query_{secrets.token_hex(6)}"
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[TokenStore]:
    """A migrated token store with cheap password hashing and a fake clock, on each backend."""
    token_store = memory_store(clock=clock, url=store_url)
    try:
        yield token_store
    finally:
        token_store.close()
