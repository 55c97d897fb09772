"""The verify path's reads (e6auth.store.reads): prepared SQL on the pool's DBAPI connection.

They must return what SQLAlchemy returned (aware UTC datetimes, booleans, bytes), hold no more
than a few connections between reads and give them back to the pool as they were found (all of
them on close), see every commit of other processes although they keep their connections,
survive a connection that died under them, and step aside for anyone listening to the engine's
statements.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
import secrets
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import QueuePool

from e6auth.clock import to_datetime
from e6auth.credentials.keys import Pepper
from e6auth.errors import StoreUnavailable
from e6auth.store import Invalidation, TokenRecord, TokenStore, UserRecord, reads
from e6auth.store.database import create_store_engine
from e6auth.store.reads import HELD_CONNECTIONS, HOLD_SECONDS, PreparedReads
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
            store.session_ended("a session id"),
        )

    fast = everything()
    with count_queries(store.engine) as counter:
        slow = everything()
    assert counter.count == 9  # every one of them went through SQLAlchemy
    assert fast == slow

    record = fast[0]
    assert isinstance(record, TokenRecord)
    # Made from the row without _make's check: the read gives exactly the record's fields.
    assert len(record) == len(TokenRecord._fields)
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


def test_reads_go_back_to_the_driver_once_nobody_listens(store: TokenStore) -> None:
    # SQLAlchemy's has-listeners flag stays set after a listener is removed: the reads must not
    # take SQLAlchemy's slower path (a checkout per read) for the rest of the process.
    store.create_user("alice")
    made = store.create_token("alice")
    with count_queries(store.engine) as counter:
        store.find_token(made.id)
    assert counter.count == 1
    store.find_token(made.id)  # a connection is held from here on
    checkouts: list[object] = []
    event.listen(store.engine, "checkout", lambda *_args: checkouts.append(None))

    for _ in range(3):
        assert store.find_token(made.id) is not None

    assert checkouts == []


def test_a_listener_on_every_engine_sees_the_reads_too(tmp_path: Any) -> None:
    # A tracer may listen on the Engine class rather than on one engine. Run in a process of its
    # own: SQLAlchemy never lowers the flag a class-level listener raises.
    script = textwrap.dedent(
        """
        import sys
        from sqlalchemy import Engine, event
        from e6auth.testing import memory_store

        seen = []
        store = memory_store(url=sys.argv[1])
        store.create_user("alice")
        made = store.create_token("alice")
        store.find_token(made.id)  # a connection is held from here on
        event.listen(Engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
        assert store.find_token(made.id) is not None
        assert store.find_user("alice") is not None
        print(len(seen))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'store.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


def test_reads_hold_a_few_connections_and_close_gives_every_one_back(
    store_url: str, clock: FakeClock
) -> None:
    """Reads from many threads at once (a gateway's thread pool) keep at most HELD_CONNECTIONS
    checked out between them; TokenStore.close() closes every connection the store opened."""
    store = memory_store(clock=clock, url=store_url)
    opened, closed = _watch_connections(store.engine)
    try:
        rotated, plain = _fill(store, clock)
        pool = store.engine.pool
        assert isinstance(pool, QueuePool)

        def read(index: int) -> bool:
            record = store.find_token(rotated if index % 2 else plain)
            assert store.find_user("alice") is not None
            assert store.invalidations_after(0)
            return record is not None

        with ThreadPoolExecutor(max_workers=8) as threads:
            assert all(threads.map(read, range(400)))
        assert pool.checkedout() <= HELD_CONNECTIONS
        assert store.find_token(rotated) is not None
        assert pool.checkedout() >= 1  # held for the next read
    finally:
        store.close()
    assert pool.checkedout() == 0
    assert opened
    assert {id(connection) for connection in opened} <= {id(connection) for connection in closed}


def _watch_connections(engine: Engine) -> tuple[list[Any], list[Any]]:
    """The DBAPI connections ``engine``'s pool opens from now on, and those it closes (kept, so
    that their ids are not reused)."""
    opened: list[Any] = []
    closed: list[Any] = []
    event.listen(engine, "connect", lambda connection, _record: opened.append(connection))
    event.listen(engine, "close", lambda connection, _record: closed.append(connection))
    return opened, closed


def test_a_store_dropped_unclosed_gives_its_held_connections_back(
    store_url: str, clock: FakeClock
) -> None:
    """As they were found: on PostgreSQL out of autocommit, or a write transaction on that
    connection would commit statement by statement."""
    store = memory_store(clock=clock, url=store_url)
    engine = store.engine
    try:
        store.create_user("alice")
        assert store.find_user("alice") is not None
        pool = engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedout() == 1
        del store
        gc.collect()
        assert pool.checkedout() == 0
        raw = engine.raw_connection()
        try:
            if engine.dialect.name == "postgresql":
                assert raw.dbapi_connection.autocommit is False  # type: ignore[union-attr]
        finally:
            raw.close()
    finally:
        engine.dispose()


def test_a_connection_held_past_its_time_goes_back_before_the_next_read(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A held connection is used for HOLD_SECONDS at most, however long the reads pause: after
    that the pool's recycling and disconnect handling see it again before it serves a read."""
    store.create_user("alice")
    assert store.find_user("alice") is not None  # the connection is held now
    later = time.monotonic() + HOLD_SECONDS + 1
    monkeypatch.setattr(reads, "monotonic", lambda: later)
    pool_events: list[str] = []
    event.listen(store.engine, "checkin", lambda *_args: pool_events.append("checkin"))
    event.listen(store.engine, "checkout", lambda *_args: pool_events.append("checkout"))
    assert store.find_user("alice") is not None
    assert pool_events == ["checkin", "checkout"]


def test_disposing_of_the_engine_drops_the_held_connections(
    store: TokenStore,
) -> None:
    """``engine.dispose()`` (to drop every connection, or in a forked child) is obeyed by the
    connections the reads hold too: the next read needs a new one."""
    store.create_user("alice")
    assert store.find_user("alice") is not None
    driver_error = store.engine.dialect.loaded_dbapi.OperationalError

    def refuse_connections(*_args: object) -> None:
        raise driver_error("connection refused")

    event.listen(store.engine, "do_connect", refuse_connections)
    store.engine.dispose()
    try:
        with pytest.raises(StoreUnavailable):
            store.find_user("alice")
    finally:
        event.remove(store.engine, "do_connect", refuse_connections)
    assert store.find_user("alice") is not None


def test_a_held_connection_sees_what_another_process_commits(
    store_url: str, clock: FakeClock
) -> None:
    """Each read sees the database as of its own start, never a snapshot its connection kept:
    a revocation or a disabled user committed elsewhere shows at the next read."""
    name = f"e6auth-held-{secrets.token_hex(4)}"
    postgres = store_url.startswith("postgresql")
    store = memory_store(
        clock=clock, url=f"{store_url}&application_name={name}" if postgres else store_url
    )
    try:
        store.create_user("alice")
        token = store.create_token("alice")
        for _ in range(3):  # the connection is now held between reads
            found = store.find_token(token.id)
            assert found is not None
            assert found.revoked_at is None
            assert not found.user_disabled
        _commit_elsewhere(store_url, token.id)
        found = store.find_token(token.id)
        assert found is not None
        assert found.revoked_at is not None
        assert found.user_disabled
        user = store.find_user("alice")
        assert user is not None
        assert user.disabled
        if postgres:
            # And no held connection waits inside a transaction (holding locks, bloating).
            with store.engine.connect() as connection:
                states = connection.execute(
                    text(
                        "SELECT state FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                        " AND application_name = :name"
                    ),
                    {"name": name},
                ).scalars()
                assert set(states) == {"idle"}
    finally:
        store.close()


def _commit_elsewhere(url: str, token_id: str) -> None:
    """Revoke the token and disable its user from another process."""
    script = textwrap.dedent(
        """
        import datetime as dt, sys
        from sqlalchemy import update
        from e6auth.store.database import create_store_engine
        from e6auth.store.schema import tokens, users
        engine = create_store_engine(sys.argv[1])
        with engine.begin() as connection:
            connection.execute(
                update(tokens).where(tokens.c.id == sys.argv[2])
                .values(revoked_at=dt.datetime.now(dt.UTC))
            )
            connection.execute(update(users).values(disabled=True))
        engine.dispose()
        """
    )
    subprocess.run(
        [sys.executable, "-c", script, url, token_id],
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


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
        # Held by the reads, and several pooled connections: all of which will be dead.
        assert store.find_token(token.id) is not None
        pooled = [store.engine.connect() for _ in range(3)]
        for connection in pooled:
            connection.close()
        assert _kill_pooled_connections(postgres_admin_url) >= 4

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
        # Only what the reads hold now, on fresh connections.
        assert store.engine.pool.checkedout() <= HELD_CONNECTIONS  # type: ignore[attr-defined]
        assert store.find_token(token.id) is not None
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
