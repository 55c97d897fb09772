"""Shared fixtures: a fake clock, and token stores on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import os
import secrets
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
