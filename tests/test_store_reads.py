"""The verify path's reads (e6auth.store.reads): prepared SQL on the pool's DBAPI connection.

They must return what SQLAlchemy returned (aware UTC datetimes, booleans, bytes), give every
connection back to the pool as it was found, survive a connection that died under the pool, and
step aside for anyone listening to the engine's statements.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import QueuePool

from e6auth.clock import to_datetime
from e6auth.credentials.keys import Pepper
from e6auth.errors import StoreUnavailable
from e6auth.store import Invalidation, TokenRecord, TokenStore, UserRecord
from e6auth.store.database import create_store_engine
from e6auth.store.reads import PreparedReads
from e6auth.testing import FakeClock, count_queries, memory_store


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[TokenStore]:
    made = memory_store(clock=clock, url=store_url)
    try:
        yield made
    finally:
        made.close()


def _fill(store: TokenStore, clock: FakeClock) -> tuple[str, str]:
    """A user with a password, an expiring, rotated, restricted token, and a log entry."""
    store.create_user("alice", "correct horse battery staple", admin=True)
    made = store.create_token("alice", expires_days=3, allow_from=["10.0.0.0/8"], read_only=True)
    clock.advance(1.5)
    store.rotate_token(made.id, grace=dt.timedelta(hours=1))
    plain = store.create_token("alice")
    store.disable_user("alice")
    return made.id, plain.id


def test_reads_return_what_sqlalchemy_returns(store: TokenStore, clock: FakeClock) -> None:
    rotated, plain = _fill(store, clock)

    def everything() -> tuple[Any, ...]:
        return (
            store.find_token(rotated),
            store.find_token(plain),
            store.find_token("000000000000"),
            store.find_user("ALICE"),
            store.find_user("nobody"),
            store.latest_invalidation_id(),
            store.invalidations_after(0),
            store.invalidations_after(0, limit=1),
        )

    fast = everything()
    with count_queries(store.engine) as counter:
        slow = everything()
    assert counter.count == 8  # every one of them went through SQLAlchemy
    assert fast == slow

    record = fast[0]
    assert isinstance(record, TokenRecord)
    assert record.user == "alice"
    assert record.user_disabled is True
    assert record.scope == "read_only"
    assert record.allow_from == '["10.0.0.0/8"]'
    assert isinstance(record.digest, bytes)
    assert isinstance(record.previous_digest, bytes)
    for moment in (record.expires_at, record.rotated_at, record.previous_valid_until):
        assert moment is not None
        assert moment.tzinfo == dt.UTC
    assert record.rotated_at == to_datetime(clock())
    user = fast[3]
    assert isinstance(user, UserRecord)
    assert (user.name, user.disabled, user.admin) == ("alice", True, True)
    assert fast[5] == 2  # the rotation and the disabling
    entries = fast[6]
    assert [type(entry) for entry in entries] == [Invalidation, Invalidation]
    assert entries[0].token_id == rotated
    assert entries[1].user_id == user.id
    assert all(entry.created_at is not None for entry in entries)
    assert fast[7] == entries[:1]


def test_every_read_hands_its_connection_back(store: TokenStore, clock: FakeClock) -> None:
    rotated, _plain = _fill(store, clock)
    pool = store.engine.pool
    for _ in range(50):
        store.find_token(rotated)
        store.invalidations_after(0)
    if isinstance(pool, QueuePool):
        assert pool.checkedout() == 0


@pytest.mark.postgres
def test_reads_run_outside_transactions_and_leave_connections_as_writes_expect(
    postgres_url: str, clock: FakeClock
) -> None:
    """On PostgreSQL a read is one round trip (no BEGIN, no ROLLBACK), and the connection goes
    back to the pool out of autocommit: a write that fails is still rolled back whole."""
    store = memory_store(clock=clock, url=postgres_url)
    try:
        store.create_user("alice")
        token = store.create_token("alice")
        assert store.find_token(token.id) is not None
        raw = store.engine.raw_connection()
        try:
            assert raw.dbapi_connection.autocommit is False  # type: ignore[union-attr]
        finally:
            raw.close()
        # Two users in one transaction, the second a duplicate: neither is left behind.
        with pytest.raises(IntegrityError):
            _insert_users(store, ["bob", "alice"])
        assert store.find_user("bob") is None
    finally:
        store.close()


def _insert_users(store: TokenStore, names: list[str]) -> None:
    with store.engine.begin() as connection:
        for name in names:
            connection.execute(
                text(
                    "INSERT INTO e6auth_users (name, password_generation, disabled, admin,"
                    " created_at, updated_at) VALUES (:name, 0, false, false, now(), now())"
                ),
                {"name": name},
            )


def _kill_pooled_connections(admin_url: str) -> int:
    """Kill the connections of this test's pools, as a database restart does."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                    " AND application_name = :name"
                ),
                {"name": APPLICATION_NAME},
            ).scalar_one()
    finally:
        admin.dispose()
    return int(killed)


APPLICATION_NAME = "e6auth-reads-test"


# PostgreSQL only: a server restart is what leaves dead connections in a pool (a SQLite file
# has no server to lose).
@pytest.mark.postgres
@pytest.mark.parametrize("observed", [False, True], ids=["prepared", "through-sqlalchemy"])
def test_a_read_on_a_dead_pooled_connection_is_retried_on_a_fresh_one(
    observed: bool,
    postgres_admin_url: str,
    postgres_url: str,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    retried: list[str] = []
    through_sqlalchemy = PreparedReads._through_sqlalchemy

    def spy(self: PreparedReads, read: Any, values: Any, fetch: Any) -> Any:
        retried.append(read.sql)
        return through_sqlalchemy(self, read, values, fetch)

    monkeypatch.setattr(PreparedReads, "_through_sqlalchemy", spy)
    store = memory_store(clock=clock, url=f"{postgres_url}&application_name={APPLICATION_NAME}")
    try:
        store.create_user("alice")
        token = store.create_token("alice")
        # Several pooled connections, all of which will be dead.
        held = [store.engine.connect() for _ in range(3)]
        for connection in held:
            connection.close()
        assert _kill_pooled_connections(postgres_admin_url) >= 3

        watching = count_queries(store.engine) if observed else contextlib.nullcontext()
        with watching:
            found = store.find_token(token.id)
            assert found is not None
            assert found.id == token.id
            assert store.find_user("alice") is not None
            assert store.invalidations_after(0) == []
        if not observed:
            # The prepared read met the dead connection itself, and went on through SQLAlchemy.
            assert retried
        assert store.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        store.close()


def test_an_unreachable_database_is_store_unavailable() -> None:
    engine = create_store_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    broken = TokenStore(engine, pepper=Pepper(secrets.token_bytes(32)))
    try:
        with pytest.raises(StoreUnavailable):
            broken.find_token("000000000000")
        with pytest.raises(StoreUnavailable):
            broken.find_user("alice")
        with pytest.raises(StoreUnavailable):
            broken.invalidations_after(0)
    finally:
        broken.close()
