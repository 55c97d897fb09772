"""QueryManager: the lifecycle the connector drives, blocking, backpressure, owners, cancel and
idle collection; end to end on SQLite (and PostgreSQL) and through the connector's decoder."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from e6auth.errors import (
    QueryCancelled,
    QueryError,
    QueryLimit,
    QueryNotFound,
    ShuttingDown,
    TooManyQueries,
)
from e6auth.query import QueryManager, SQLAlchemyBackend, create_demo_database, encode_metadata
from e6auth.query.demo import DEMO_CUSTOMERS, DEMO_ORDERS
from e6auth.testing import FakeClock

WAIT = 5.0  # seconds a test waits for another thread before calling it a hang
ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"


# --- a backend whose every step the test controls -------------------------------------------


class ScriptedRun:
    """Runs a script: column names, then batches of rows (or an exception to raise instead)."""

    def __init__(self, names: list[str], batches: list[Any], gate: threading.Event) -> None:
        self.names = names
        self.batches = list(batches)
        self.gate = gate
        self.fetches = 0
        self.cancelled = threading.Event()
        self.closed = threading.Event()
        self.committed = False

    @property
    def affected_rows(self) -> int:
        return 3

    def execute(self) -> list[str]:
        self.gate.wait(WAIT)
        if self.cancelled.is_set():
            raise QueryCancelled()
        return self.names

    def fetch(self, max_rows: int) -> Sequence[Sequence[object]]:
        self.fetches += 1
        if self.cancelled.is_set():
            raise QueryCancelled()
        if not self.batches:
            return []
        batch = self.batches[0]
        if isinstance(batch, Exception):
            self.batches.pop(0)
            raise batch
        # Like a driver: at most max_rows, the rest of the scripted batch stays for next time.
        taken, rest = list(batch[:max_rows]), list(batch[max_rows:])
        if rest:
            self.batches[0] = rest
        else:
            self.batches.pop(0)
        return taken

    def cancel(self) -> None:
        self.cancelled.set()
        self.gate.set()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.committed = exc_type is None
        self.closed.set()


class ScriptedBackend:
    def __init__(self, names: list[str], batches: list[Any]) -> None:
        self.names = names
        self.batches = batches
        self.gate = threading.Event()
        self.gate.set()
        self.runs: list[ScriptedRun] = []

    def catalogs(self) -> list[tuple[str, bool]]:
        return [("default", True)]

    def schemas(self, catalog: str | None) -> list[str]:
        return ["main"]

    def tables(self, catalog: str | None, schema: str | None) -> list[str]:
        return []

    def columns(self, catalog: str | None, schema: str | None, table: str) -> list[tuple[str, str]]:
        return []

    def run(self, sql: str, *, catalog: str | None, schema: str | None) -> ScriptedRun:
        run = ScriptedRun(self.names, self.batches, self.gate)
        self.runs.append(run)
        return run

    def explain(self, sql: str, *, catalog: str | None, schema: str | None) -> str:
        return f"plan of {sql}"

    def dry_run(self, sql: str, *, catalog: str | None, schema: str | None) -> str:
        return json.dumps({"valid": True})


def rows_of(*values: int) -> list[tuple[int]]:
    return [(value,) for value in values]


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``call`` on a thread; the list receives its result or exception."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture
def managers() -> Iterator[Callable[..., QueryManager]]:
    """Makes QueryManagers and closes them after the test."""
    made: list[QueryManager] = []

    def make(backend: Any, **options: Any) -> QueryManager:
        manager = QueryManager(backend, **options)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[SQLAlchemyBackend]:
    backend = SQLAlchemyBackend(f"sqlite:///{tmp_path}/data.db")
    try:
        yield backend
    finally:
        backend.close()


def start(manager: QueryManager, sql: str, owner: str = "alice") -> str:
    query_id = manager.prepare(owner, sql, catalog="", schema="")
    manager.execute(owner, query_id)
    return query_id


def drain(manager: QueryManager, query_id: str, owner: str = "alice") -> list[bytes]:
    batches = []
    while batch := manager.next_batch(owner, query_id):
        batches.append(batch)
    return batches


# --- the connector's sequence ---------------------------------------------------------------


def test_query_ids_are_unguessable_and_distinct(managers: Callable[..., QueryManager]) -> None:
    manager = managers(ScriptedBackend(["a"], []))
    ids = {manager.prepare("alice", "SELECT 1", catalog="", schema="") for _ in range(20)}
    assert len(ids) == 20
    assert all(len(query_id) >= 22 for query_id in ids)  # 16 random bytes


def test_small_result_has_exact_row_count_and_ends_with_empty_batches(
    managers: Callable[..., QueryManager],
) -> None:
    manager = managers(ScriptedBackend(["n"], [rows_of(1, 2, 3)]), batch_rows=10)
    query_id = start(manager, "SELECT n")
    metadata = manager.metadata("alice", query_id)
    assert metadata == encode_metadata(3, [("n", "LONG")])
    assert manager.metadata("alice", query_id) == metadata  # idempotent
    assert len(drain(manager, query_id)) == 1
    for _ in range(3):
        assert manager.next_batch("alice", query_id) == b""
    assert manager.status("alice", query_id) == (True, 3)


def test_large_result_comes_in_batches_with_unknown_row_count(
    managers: Callable[..., QueryManager],
) -> None:
    backend = ScriptedBackend(["n"], [rows_of(1, 2), rows_of(3, 4), rows_of(5)])
    manager = managers(backend, batch_rows=2)
    query_id = start(manager, "SELECT n")
    assert manager.metadata("alice", query_id) == encode_metadata(-1, [("n", "LONG")])
    assert len(drain(manager, query_id)) == 3
    assert manager.status("alice", query_id) == (True, 5)
    assert backend.runs[0].committed


def test_empty_result_ends_at_once(managers: Callable[..., QueryManager]) -> None:
    manager = managers(ScriptedBackend(["n"], []))
    query_id = start(manager, "SELECT n WHERE false")
    assert manager.metadata("alice", query_id) == encode_metadata(0, [("n", "NULL")])
    assert manager.next_batch("alice", query_id) == b""


def test_statement_without_rows_has_no_columns_and_no_batches(
    managers: Callable[..., QueryManager],
) -> None:
    manager = managers(ScriptedBackend([], []))
    query_id = start(manager, "INSERT INTO t VALUES (1)")
    assert manager.metadata("alice", query_id) == encode_metadata(3, [])  # 3 rows affected
    assert manager.next_batch("alice", query_id) == b""


def test_execute_twice_runs_once(managers: Callable[..., QueryManager]) -> None:
    backend = ScriptedBackend(["n"], [rows_of(1)])
    manager = managers(backend)
    query_id = start(manager, "SELECT n")
    manager.execute("alice", query_id)
    drain(manager, query_id)
    assert len(backend.runs) == 1


def test_reading_a_query_that_was_not_executed_is_an_error(
    managers: Callable[..., QueryManager],
) -> None:
    manager = managers(ScriptedBackend(["n"], []))
    query_id = manager.prepare("alice", "SELECT n", catalog="", schema="")
    with pytest.raises(QueryError, match="not executed"):
        manager.metadata("alice", query_id)
    with pytest.raises(QueryError, match="not executed"):
        manager.next_batch("alice", query_id)


def test_empty_statement_is_refused(managers: Callable[..., QueryManager]) -> None:
    with pytest.raises(QueryError, match="empty"):
        managers(ScriptedBackend([], [])).prepare("alice", "  \n", catalog="", schema="")


def test_explain_and_dry_run_reach_the_backend(managers: Callable[..., QueryManager]) -> None:
    manager = managers(ScriptedBackend(["n"], []))
    query_id = manager.prepare("alice", "SELECT n", catalog="", schema="")
    assert manager.explain("alice", query_id) == "plan of SELECT n"
    assert json.loads(manager.start_dry_run("SELECT n", catalog=None, schema=None).result()) == {
        "valid": True
    }


# --- blocking and backpressure --------------------------------------------------------------


def test_metadata_and_first_batch_wait_for_the_statement(
    managers: Callable[..., QueryManager],
) -> None:
    backend = ScriptedBackend(["n"], [rows_of(1)])
    backend.gate.clear()  # the statement is "running"
    manager = managers(backend)
    query_id = start(manager, "SELECT n")
    metadata_reader, metadata = in_thread(lambda: manager.metadata("alice", query_id))
    batch_reader, batch = in_thread(lambda: manager.next_batch("alice", query_id))
    metadata_reader.join(0.1)
    assert metadata_reader.is_alive()
    assert batch_reader.is_alive()
    backend.gate.set()
    metadata_reader.join(WAIT)
    batch_reader.join(WAIT)
    assert metadata == [encode_metadata(1, [("n", "LONG")])]
    assert isinstance(batch[0], bytes)
    assert batch[0]


def test_worker_stays_at_most_about_two_batches_ahead_of_the_reader(
    managers: Callable[..., QueryManager],
) -> None:
    backend = ScriptedBackend(["n"], [rows_of(i, i + 1) for i in range(0, 200, 2)])
    manager = managers(backend, batch_rows=2)
    query_id = start(manager, "SELECT n")
    manager.metadata("alice", query_id)
    run = backend.runs[0]
    # The first batch takes two fetches (one row to learn how large rows are, then the rest).
    wait_until(lambda: run.fetches >= 3)
    time.sleep(0.1)  # a worker that ignored backpressure would fetch everything meanwhile
    assert run.fetches == 3  # one batch buffered, one encoded and waiting for room
    manager.next_batch("alice", query_id)
    wait_until(lambda: run.fetches >= 4)
    time.sleep(0.05)
    assert run.fetches == 4
    assert len(drain(manager, query_id)) == 99


# --- failures -------------------------------------------------------------------------------


def test_error_mid_way_comes_after_the_rows_before_it(
    managers: Callable[..., QueryManager],
) -> None:
    failure = QueryError("disk on fire")
    backend = ScriptedBackend(["n"], [rows_of(1, 2), failure])
    manager = managers(backend, batch_rows=2)
    query_id = start(manager, "SELECT n")
    manager.metadata("alice", query_id)
    assert manager.next_batch("alice", query_id)
    for _ in range(2):  # and again on every later call
        with pytest.raises(QueryError, match="disk on fire"):
            manager.next_batch("alice", query_id)
    assert manager.status("alice", query_id) == (False, 2)
    assert not backend.runs[0].committed


def test_unexpected_exception_in_a_backend_is_not_shown_to_the_client(
    managers: Callable[..., QueryManager],
) -> None:
    backend = ScriptedBackend(["n"], [RuntimeError("postgresql://app:hunter2@db/prod")])
    manager = managers(backend)
    query_id = start(manager, "SELECT n")
    with pytest.raises(QueryError) as raised:
        manager.metadata("alice", query_id)
    assert "hunter2" not in raised.value.detail
    assert raised.value.detail == "query failed (RuntimeError)"


def test_sql_error_carries_the_databases_message(
    managers: Callable[..., QueryManager], sqlite_backend: SQLAlchemyBackend
) -> None:
    manager = managers(sqlite_backend)
    query_id = start(manager, "SELECT * FROM no_such_table")
    with pytest.raises(QueryError, match="no such table: no_such_table"):
        manager.metadata("alice", query_id)
    with pytest.raises(QueryError, match="no such table"):
        manager.next_batch("alice", query_id)


def test_message_that_would_make_the_connector_log_in_again_is_sanitized(
    managers: Callable[..., QueryManager], sqlite_backend: SQLAlchemyBackend
) -> None:
    manager = managers(sqlite_backend)
    query_id = start(manager, 'SELECT * FROM "Access denied"')
    with pytest.raises(QueryError) as raised:
        manager.metadata("alice", query_id)
    assert "Access denied" in raised.value.detail  # operators see the real text
    assert raised.value.client_message() == "no such table: [Access_denied]"


# --- owners ---------------------------------------------------------------------------------


def test_another_owners_query_is_like_an_unknown_one(
    managers: Callable[..., QueryManager],
) -> None:
    manager = managers(ScriptedBackend(["n"], [rows_of(1)]))
    query_id = start(manager, "SELECT n")
    for call in (
        lambda qid: manager.execute("mallory", qid),
        lambda qid: manager.metadata("mallory", qid),
        lambda qid: manager.next_batch("mallory", qid),
        lambda qid: manager.status("mallory", qid),
        lambda qid: manager.cancel("mallory", qid),
        lambda qid: manager.explain("mallory", qid),
    ):
        for qid in (query_id, "no-such-id"):
            with pytest.raises(QueryNotFound):
                call(qid)
    manager.clear("mallory", query_id)  # quietly nothing
    assert len(drain(manager, query_id)) == 1


def test_clear_of_unknown_or_empty_id_is_fine(managers: Callable[..., QueryManager]) -> None:
    manager = managers(ScriptedBackend([], []))
    manager.clear("alice", "")
    manager.clear("alice", "never-existed")


def test_cleared_query_is_gone(managers: Callable[..., QueryManager]) -> None:
    manager = managers(ScriptedBackend(["n"], [rows_of(1)]))
    query_id = start(manager, "SELECT n")
    manager.clear("alice", query_id)
    with pytest.raises(QueryNotFound):
        manager.next_batch("alice", query_id)
    assert manager.open_queries() == 0


def test_an_owner_may_hold_only_so_many_queries(managers: Callable[..., QueryManager]) -> None:
    manager = managers(ScriptedBackend(["n"], []), max_queries_per_owner=2)
    first = manager.prepare("alice", "SELECT 1", catalog="", schema="")
    manager.prepare("alice", "SELECT 2", catalog="", schema="")
    with pytest.raises(TooManyQueries):
        manager.prepare("alice", "SELECT 3", catalog="", schema="")
    manager.prepare("bob", "SELECT 1", catalog="", schema="")  # others are not affected
    manager.clear("alice", first)
    manager.prepare("alice", "SELECT 3", catalog="", schema="")


def test_read_out_queries_make_room_for_new_ones(managers: Callable[..., QueryManager]) -> None:
    # The connector's `for ...: cursor.execute(q); cursor.fetchall()` never clears.
    clock = FakeClock()
    manager = managers(ScriptedBackend(["n"], []), max_queries_per_owner=2, clock=clock)
    ids = []
    for _ in range(5):
        clock.advance(1)
        ids.append(start(manager, "SELECT n"))
        manager.metadata("alice", ids[-1])
        drain(manager, ids[-1])
    assert manager.open_queries("alice") == 2
    with pytest.raises(QueryNotFound):
        manager.metadata("alice", ids[0])  # the least recently used went first
    assert manager.metadata("alice", ids[-2])


# --- cancel, idle collection, close ---------------------------------------------------------


def test_cancel_wakes_a_blocked_reader_and_stops_the_worker(
    managers: Callable[..., QueryManager],
) -> None:
    backend = ScriptedBackend(["n"], [rows_of(1)])
    backend.gate.clear()
    manager = managers(backend)
    query_id = start(manager, "SELECT n")
    reader, outcome = in_thread(lambda: manager.metadata("alice", query_id))
    wait_until(lambda: bool(backend.runs))
    manager.cancel("alice", query_id)
    reader.join(WAIT)
    assert isinstance(outcome[0], QueryCancelled)
    assert backend.runs[0].closed.wait(WAIT)
    assert not backend.runs[0].committed
    with pytest.raises(QueryCancelled):
        manager.next_batch("alice", query_id)
    manager.clear("alice", query_id)  # the connector clears after cancelling


def test_cancel_stops_a_long_sqlite_query(
    managers: Callable[..., QueryManager], sqlite_backend: SQLAlchemyBackend
) -> None:
    manager = managers(sqlite_backend)
    query_id = start(manager, ENDLESS)
    threading.Timer(0.2, manager.cancel, ("alice", query_id)).start()
    started = time.monotonic()
    with pytest.raises(QueryCancelled):
        manager.metadata("alice", query_id)
    assert time.monotonic() - started < WAIT
    # The worker and its connection are free again.
    assert drain(manager, start(manager, "SELECT 1"))


@pytest.mark.postgres
def test_cancel_stops_a_long_postgres_query(
    managers: Callable[..., QueryManager], postgres_url: str
) -> None:
    backend = SQLAlchemyBackend(postgres_url)
    manager = managers(backend)
    query_id = start(manager, "SELECT pg_sleep(30)")
    threading.Timer(0.3, manager.cancel, ("alice", query_id)).start()
    started = time.monotonic()
    with pytest.raises(QueryCancelled):
        manager.metadata("alice", query_id)
    assert time.monotonic() - started < WAIT
    assert drain(manager, start(manager, "SELECT 1"))
    backend.close()


def test_idle_queries_are_collected(managers: Callable[..., QueryManager]) -> None:
    clock = FakeClock()
    backend = ScriptedBackend(["n"], [rows_of(i) for i in range(5)])
    manager = managers(backend, idle_seconds=600, clock=clock, batch_rows=1)
    orphan = start(manager, "SELECT n")
    manager.metadata("alice", orphan)
    clock.advance(300)
    active = start(manager, "SELECT n")
    clock.advance(301)
    assert manager.collect_idle() == 1
    with pytest.raises(QueryNotFound):
        manager.next_batch("alice", orphan)
    assert backend.runs[0].closed.wait(WAIT)  # its worker, blocked on the reader, was released
    manager.metadata("alice", active)
    clock.advance(599)
    assert manager.collect_idle() == 0  # touched 599 s ago


def test_a_users_queries_past_the_running_limit_wait_behind_them_then_run(
    managers: Callable[..., QueryManager],
) -> None:
    backend = ScriptedBackend(["n"], [rows_of(1)] * 8)
    backend.gate.clear()  # every statement runs until the gate opens
    manager = managers(backend, max_running_per_user=2)
    running = [start(manager, "SELECT n") for _ in range(2)]
    queued = [start(manager, "SELECT n") for _ in range(8)]  # 4 x 2 may wait
    with pytest.raises(QueryLimit, match="at most 2 running and 8 waiting"):
        start(manager, "SELECT n")
    start(manager, "SELECT n", owner="bob")  # another user is not held up
    wait_until(lambda: len(backend.runs) == 3)  # alice's two, and bob's: no queued one started
    assert manager.running_queries("alice") == 2
    manager.cancel("alice", queued[0])  # a cancelled waiter is skipped, and told it ended
    backend.gate.set()
    for query_id in running + queued[1:]:
        manager.metadata("alice", query_id)
        drain(manager, query_id)
    assert len(backend.runs) == 3 + 7
    with pytest.raises(QueryCancelled):
        manager.next_batch("alice", queued[0])
    wait_until(lambda: manager.running_queries("alice") == 0)


def test_a_waiting_read_does_not_keep_an_abandoned_query_past_idle_seconds(
    managers: Callable[..., QueryManager],
) -> None:
    clock = FakeClock()
    reads = []

    def counting_clock() -> float:
        reads.append(threading.current_thread())
        return clock()

    backend = ScriptedBackend(["n"], [rows_of(1)])
    backend.gate.clear()  # an endless statement
    manager = managers(backend, idle_seconds=600, clock=counting_clock)
    query_id = start(manager, "SELECT n")
    reader, outcome = in_thread(lambda: manager.metadata("alice", query_id))
    wait_until(lambda: reader in reads)  # the reader has registered and is waiting
    clock.advance(599)
    assert manager.collect_idle() == 0
    clock.advance(2)
    assert manager.collect_idle() == 1
    reader.join(WAIT)
    assert isinstance(outcome[0], QueryCancelled)
    assert backend.runs[0].cancelled.is_set()  # cancelled in the database, not only forgotten


def test_a_read_stops_waiting_after_idle_seconds_and_cancels_the_query(
    managers: Callable[..., QueryManager],
) -> None:
    clock = FakeClock()
    backend = ScriptedBackend(["n"], [rows_of(1)])
    backend.gate.clear()
    manager = managers(backend, idle_seconds=600, clock=clock)
    query_id = start(manager, "SELECT n")
    reader, outcome = in_thread(lambda: manager.metadata("alice", query_id))
    wait_until(lambda: manager.waiting_calls == 1)
    clock.advance(600)
    reader.join(WAIT)
    assert isinstance(outcome[0], QueryError)
    assert "no result within 600 s" in str(outcome[0])
    assert backend.runs[0].cancelled.is_set()


def test_close_cancels_everything_and_refuses_new_queries(
    managers: Callable[..., QueryManager],
) -> None:
    backend = ScriptedBackend(["n"], [rows_of(1)])
    backend.gate.clear()
    manager = managers(backend)
    query_id = start(manager, "SELECT n")
    reader, outcome = in_thread(lambda: manager.metadata("alice", query_id))
    wait_until(lambda: bool(backend.runs))
    manager.close()
    reader.join(WAIT)
    assert isinstance(outcome[0], QueryCancelled)
    with pytest.raises(ShuttingDown):
        manager.prepare("alice", "SELECT 1", catalog="", schema="")


# --- end to end on SQLite, through the connector's decoder ----------------------------------

_DECODE = r"""
import json, sys
from io import BytesIO
from e6data_python_connector.datainputstream import get_query_columns_info, read_rows_from_chunk
case = json.load(sys.stdin)
rowcount, fields = get_query_columns_info(BytesIO(bytes.fromhex(case["metadata"])))
rows = []
for chunk in case["chunks"]:
    rows.extend(read_rows_from_chunk(fields, bytes.fromhex(chunk)))
print(json.dumps({"rowcount": rowcount, "types": [f.get_field_type() for f in fields],
                  "names": [f.get_name() for f in fields], "rows": rows}))
"""


def decode_with_connector(metadata: bytes, chunks: list[bytes]) -> dict[str, Any]:
    """What the e6data connector makes of a result; in a subprocess, as its protobuf
    registrations clash with ours."""
    done = subprocess.run(
        [sys.executable, "-c", _DECODE],
        input=json.dumps({"metadata": metadata.hex(), "chunks": [chunk.hex() for chunk in chunks]}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    decoded: dict[str, Any] = json.loads(done.stdout)
    return decoded


def _dump(path: Path) -> list[str]:
    connection = sqlite3.connect(path)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def test_demo_database_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    url = create_demo_database(tmp_path / "demo.db")
    assert url == f"sqlite:///{tmp_path / 'demo.db'}"
    assert create_demo_database(tmp_path / "demo.db") == url
    create_demo_database(tmp_path / "again.db")
    assert _dump(tmp_path / "demo.db") == _dump(tmp_path / "again.db")
    connection = sqlite3.connect(tmp_path / "demo.db")
    try:
        customers, orders, no_email, no_note = connection.execute(
            "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders),"
            " (SELECT count(*) FROM customers WHERE email IS NULL),"
            " (SELECT count(*) FROM orders WHERE note IS NULL)"
        ).fetchone()
    finally:
        connection.close()
    assert (customers, orders) == (DEMO_CUSTOMERS, DEMO_ORDERS)
    assert no_email > 0
    assert no_note > 0


def test_demo_query_round_trips_through_the_connector(
    managers: Callable[..., QueryManager], tmp_path: Path
) -> None:
    backend = SQLAlchemyBackend(create_demo_database(tmp_path / "demo.db"))
    manager = managers(backend, batch_rows=150)
    query_id = start(
        manager,
        "SELECT o.id, c.name, c.email, o.ordered_at, o.unit_price, o.discount, o.note"
        " FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.id",
    )
    metadata = manager.metadata("alice", query_id)
    chunks = drain(manager, query_id)
    assert len(chunks) == 3  # 150 + 150 + 100
    decoded = decode_with_connector(metadata, chunks)
    expected = sqlite3.connect(tmp_path / "demo.db")
    try:
        rows = expected.execute(
            "SELECT o.id, c.name, c.email, o.ordered_at, o.unit_price, o.discount, o.note"
            " FROM orders o JOIN customers c ON c.id = o.customer_id ORDER BY o.id"
        ).fetchall()
    finally:
        expected.close()
    assert decoded["names"] == [
        "id",
        "name",
        "email",
        "ordered_at",
        "unit_price",
        "discount",
        "note",
    ]
    assert decoded["types"] == ["LONG", "STRING", "STRING", "STRING", "DOUBLE", "DOUBLE", "STRING"]
    assert decoded["rowcount"] == -1
    assert [tuple(row) for row in decoded["rows"]] == rows
    assert any(not name.isascii() for _, name, *_ in rows)
    backend.close()
