"""LastUsedRecorder and TokenStore.record_token_uses: uses collected in memory, written in one
batch, never backwards, kept when a write fails; and no write on the request path."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from e6auth import Authenticator, StoreUnavailable, TokenStore
from e6auth.background.lastused import LastUsedRecorder
from e6auth.cli import main
from e6auth.clock import to_datetime
from e6auth.store import NewToken, TokenInfo, TokenUse
from e6auth.testing import FakeClock, count_queries


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    # cli.main() points the root logger at capsys's stderr, which is closed after the test.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _tokens(store: TokenStore, count: int) -> list[NewToken]:
    store.create_user("alice")
    return [store.create_token("alice") for _ in range(count)]


def _listed(store: TokenStore) -> dict[str, TokenInfo]:
    return {info.id: info for info in store.list_tokens()}


def _statements(statements: list[str], verb: str) -> list[str]:
    return [statement for statement in statements if statement.lstrip().upper().startswith(verb)]


class FailOnce:
    """Stands in for store.record_token_uses: the first call fails as an unreachable store would,
    after running ``meanwhile`` (what requests do while the write is under way)."""

    def __init__(self, store: TokenStore, meanwhile: Callable[[], None] | None = None) -> None:
        self._real = store.record_token_uses
        self._meanwhile = meanwhile
        self.calls = 0

    def __call__(self, uses: Mapping[str, TokenUse], *, max_peers: int = 5) -> int:
        self.calls += 1
        if self.calls == 1:
            if self._meanwhile is not None:
                self._meanwhile()
            raise StoreUnavailable("token store unreachable (OperationalError)")
        return self._real(uses, max_peers=max_peers)


# -- batching ----------------------------------------------------------------------------------


def test_many_uses_of_few_tokens_become_one_batched_update(
    store: TokenStore, clock: FakeClock
) -> None:
    *used, unused = _tokens(store, 11)
    recorder = LastUsedRecorder(store, clock=clock)
    base = clock()
    for n in range(100_000):
        recorder.record(used[n % 10].id, at=base + n + 0.5)
    assert recorder.pending == 10

    with count_queries(store.engine) as queries:
        written = recorder.flush()

    assert written == 10
    # The write transaction's opening ping (store.engine.write_transaction), then the work.
    ping, *work = queries.statements
    assert ping == "SELECT 1", queries.statements
    assert len(_statements(work, "UPDATE")) == 1, queries.statements
    assert len(_statements(work, "SELECT")) == 1, queries.statements
    assert len(work) == 2, queries.statements
    assert recorder.pending == 0
    listed = _listed(store)
    for k, token in enumerate(used):
        # The newest use of token k is n = 99_990 + k; stored times are exact to the second.
        assert listed[token.id].last_used_at == to_datetime(base + 99_990 + k + 0.5)
    assert listed[unused.id].last_used_at is None


def test_a_flush_with_nothing_recorded_touches_nothing(store: TokenStore) -> None:
    recorder = LastUsedRecorder(store)
    with count_queries(store.engine) as queries:
        assert recorder.flush() == 0
    assert queries.count == 0


def test_uses_of_a_token_deleted_from_the_table_are_skipped(
    store: TokenStore, clock: FakeClock
) -> None:
    (token,) = _tokens(store, 1)
    recorder = LastUsedRecorder(store, clock=clock)
    recorder.record(token.id)
    recorder.record("NoSuchToken0")

    assert recorder.flush() == 1
    assert _listed(store)[token.id].last_used_at == to_datetime(clock())


# -- time never moves backwards ----------------------------------------------------------------


def test_last_used_at_never_moves_backwards(store: TokenStore, clock: FakeClock) -> None:
    (token,) = _tokens(store, 1)
    base = clock()
    newer = LastUsedRecorder(store, clock=clock)
    newer.record(token.id, at=base + 100)
    newer.flush()

    # Another process, slower to flush, saw an older use.
    older = LastUsedRecorder(store, clock=clock)
    older.record(token.id, at=base + 50)
    assert older.flush() == 1

    assert _listed(store)[token.id].last_used_at == to_datetime(base + 100)
    newer.record(token.id, at=base + 200)
    newer.flush()
    assert _listed(store)[token.id].last_used_at == to_datetime(base + 200)


def test_an_older_record_in_memory_does_not_replace_a_newer_one(
    store: TokenStore, clock: FakeClock
) -> None:
    (token,) = _tokens(store, 1)
    recorder = LastUsedRecorder(store, clock=clock)
    base = clock()
    recorder.record(token.id, at=base + 100)
    recorder.record(token.id, at=base + 10)

    recorder.flush()

    assert _listed(store)[token.id].last_used_at == to_datetime(base + 100)


# -- peers -------------------------------------------------------------------------------------


def _token_list_json(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, dict[str, Any]]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    capsys.readouterr()
    code = main(["--database-url", store_url, "token", "list", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return {item["id"]: item for item in json.loads(captured.out)}


def test_the_last_five_distinct_peers_are_kept_newest_first_and_listed(
    store: TokenStore,
    store_url: str,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token, unused = _tokens(store, 2)
    recorder = LastUsedRecorder(store, clock=clock)
    for n in range(1, 8):
        recorder.record(token.id, peer=f"10.0.0.{n}")
        recorder.record(token.id, peer=f"10.0.0.{n}")  # a repeat is not a new peer
    recorder.flush()
    assert _listed(store)[token.id].last_used_peers == (
        "10.0.0.7",
        "10.0.0.6",
        "10.0.0.5",
        "10.0.0.4",
        "10.0.0.3",
    )

    # Another process's uses merge with what is stored: its own newest first, no repeats.
    other = LastUsedRecorder(store, clock=clock)
    other.record(token.id, peer="10.0.0.8")
    other.record(token.id, peer="10.0.0.3")
    other.flush()
    expected = ("10.0.0.3", "10.0.0.8", "10.0.0.7", "10.0.0.6", "10.0.0.5")
    assert _listed(store)[token.id].last_used_peers == expected

    listed = _token_list_json(store_url, capsys, monkeypatch)
    assert listed[token.id]["last_used_peers"] == list(expected)
    assert listed[unused.id]["last_used_peers"] == []


def test_a_use_without_a_peer_keeps_the_stored_peers(store: TokenStore, clock: FakeClock) -> None:
    (token,) = _tokens(store, 1)
    recorder = LastUsedRecorder(store, clock=clock)
    recorder.record(token.id, peer="10.0.0.1")
    recorder.flush()

    clock.advance(10)
    recorder.record(token.id)
    recorder.flush()

    listed = _listed(store)[token.id]
    assert listed.last_used_peers == ("10.0.0.1",)
    assert listed.last_used_at == to_datetime(clock())


# -- failures ----------------------------------------------------------------------------------


def test_a_failed_flush_keeps_its_uses_for_the_next_one(
    store: TokenStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _tokens(store, 2)
    recorder = LastUsedRecorder(store, clock=clock)
    recorder.record(first.id, peer="10.0.0.1")
    recorder.record(second.id, at=clock() + 5, peer="10.0.0.2")
    flaky = FailOnce(store)
    monkeypatch.setattr(store, "record_token_uses", flaky)

    with pytest.raises(StoreUnavailable):
        recorder.flush()
    assert recorder.failures == 1
    assert recorder.pending == 2
    assert all(info.last_used_at is None for info in store.list_tokens())

    assert recorder.flush() == 2
    listed = _listed(store)
    assert listed[first.id].last_used_at == to_datetime(clock())
    assert listed[first.id].last_used_peers == ("10.0.0.1",)
    assert listed[second.id].last_used_at == to_datetime(clock() + 5)
    assert listed[second.id].last_used_peers == ("10.0.0.2",)
    assert recorder.pending == 0


def test_uses_kept_after_a_failure_merge_with_uses_made_during_the_write(
    store: TokenStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    (token,) = _tokens(store, 1)
    recorder = LastUsedRecorder(store, clock=clock)
    base = clock()
    for n in range(1, 6):
        recorder.record(token.id, at=base + n, peer=f"10.0.0.{n}")

    # Requests go on while the failing write is under way: their uses are newer than the ones
    # the flush took, and the two must merge as if nothing had failed.
    def request_meanwhile() -> None:
        recorder.record(token.id, at=base + 10, peer="10.0.0.6")

    monkeypatch.setattr(store, "record_token_uses", FailOnce(store, request_meanwhile))
    with pytest.raises(StoreUnavailable):
        recorder.flush()
    recorder.flush()

    listed = _listed(store)[token.id]
    assert listed.last_used_at == to_datetime(base + 10)
    assert listed.last_used_peers == ("10.0.0.6", "10.0.0.5", "10.0.0.4", "10.0.0.3", "10.0.0.2")


def test_a_kept_newer_time_wins_over_an_older_one_recorded_later(
    store: TokenStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    (token,) = _tokens(store, 1)
    recorder = LastUsedRecorder(store, clock=clock)
    base = clock()
    recorder.record(token.id, at=base + 100)

    def request_meanwhile() -> None:
        # A request stamped earlier (a slow caller) lands while the write is failing.
        recorder.record(token.id, at=base + 50)

    monkeypatch.setattr(store, "record_token_uses", FailOnce(store, request_meanwhile))
    with pytest.raises(StoreUnavailable):
        recorder.flush()
    recorder.flush()

    assert _listed(store)[token.id].last_used_at == to_datetime(base + 100)


# -- bounds and shutdown -----------------------------------------------------------------------


def test_max_pending_bounds_memory_and_counts_what_it_drops(
    store: TokenStore, clock: FakeClock
) -> None:
    tokens = _tokens(store, 5)
    recorder = LastUsedRecorder(store, max_pending=3, clock=clock)

    for token in tokens:
        recorder.record(token.id)
    assert recorder.pending == 3
    assert recorder.dropped == 2

    # More uses of a token already held cost no room.
    recorder.record(tokens[0].id, peer="10.0.0.1")
    assert recorder.dropped == 2

    assert recorder.flush() == 3
    recorder.record(tokens[4].id)
    assert recorder.pending == 1
    assert recorder.dropped == 2
    listed = _listed(store)
    assert [listed[token.id].last_used_at is not None for token in tokens] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_no_room_at_all_keeps_nothing_and_counts_every_use(store: TokenStore) -> None:
    # The benchmarks measure the cache alone this way.
    recorder = LastUsedRecorder(store, max_pending=0)
    recorder.record("AAAAAAAAAAAA")
    recorder.record("AAAAAAAAAAAA")
    assert (recorder.pending, recorder.dropped) == (0, 2)


def test_uses_kept_after_a_failure_give_way_to_uses_made_during_the_write_when_full(
    store: TokenStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second, third = _tokens(store, 3)
    recorder = LastUsedRecorder(store, max_pending=2, clock=clock)
    recorder.record(first.id)
    recorder.record(second.id)

    def request_meanwhile() -> None:
        recorder.record(third.id)

    monkeypatch.setattr(store, "record_token_uses", FailOnce(store, request_meanwhile))
    with caplog.at_level(logging.DEBUG, logger="e6auth"):
        with pytest.raises(StoreUnavailable):
            recorder.flush()
        assert (recorder.pending, recorder.dropped, recorder.failures) == (2, 1, 1)
        assert recorder.flush() == 2
    listed = _listed(store)
    assert [listed[token.id].last_used_at is not None for token in (first, second, third)] == [
        True,
        False,
        True,
    ]
    # Dropped uses are counted (a metric), never logged.
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_flush_lag_restarts_on_a_write_or_an_empty_flush_not_on_a_failure(
    store: TokenStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    (token,) = _tokens(store, 1)
    recorder = LastUsedRecorder(store, clock=clock)
    made = clock()
    clock.advance(10)
    recorder.flush()
    assert recorder.last_flush_at == made + 10

    recorder.record(token.id)
    clock.advance(10)
    monkeypatch.setattr(store, "record_token_uses", FailOnce(store))
    with pytest.raises(StoreUnavailable):
        recorder.flush()
    assert recorder.last_flush_at == made + 10

    clock.advance(10)
    assert recorder.flush() == 1
    assert recorder.last_flush_at == made + 30
    assert recorder.writes == 1


class _Unreachable:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, uses: Mapping[str, TokenUse], *, max_peers: int = 5) -> int:
        self.calls += 1
        raise StoreUnavailable("token store unreachable (OperationalError)")


def test_close_logs_a_failed_last_write_without_raising(
    store: TokenStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = LastUsedRecorder(store, flush_seconds=3600, clock=clock)
    unreachable = _Unreachable()
    monkeypatch.setattr(store, "record_token_uses", unreachable)
    recorder.record("AAAAAAAAAAAA")

    with caplog.at_level(logging.DEBUG, logger="e6auth"):
        recorder.close()

    assert unreachable.calls == 1
    assert (recorder.pending, recorder.failures) == (1, 1)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            "e6auth.lastused",
            logging.ERROR,
            "could not write last-used times of 1 tokens at shutdown (StoreUnavailable)",
        )
    ]


def test_a_started_recorder_tries_its_last_write_as_the_thread_stops_and_again_in_close(
    store: TokenStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Unlike the audit's writer, the last-used thread runs its task once more when stopped; then
    # close() finds the uses still pending and tries again.
    recorder = LastUsedRecorder(store, flush_seconds=3600, clock=clock)
    unreachable = _Unreachable()
    monkeypatch.setattr(store, "record_token_uses", unreachable)
    recorder.start()
    recorder.record("AAAAAAAAAAAA")

    with caplog.at_level(logging.DEBUG, logger="e6auth"):
        recorder.close()

    assert unreachable.calls == 2
    assert (recorder.pending, recorder.failures) == (1, 2)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("e6auth", logging.ERROR, "e6auth-last-used failed; trying again in 3600.0 s"),
        (
            "e6auth.lastused",
            logging.ERROR,
            "could not write last-used times of 1 tokens at shutdown (StoreUnavailable)",
        ),
    ]


def test_close_writes_what_is_pending(store: TokenStore, clock: FakeClock) -> None:
    (token,) = _tokens(store, 1)
    recorder = LastUsedRecorder(store, clock=clock)
    recorder.record(token.id, peer="10.0.0.1")

    recorder.close()

    assert _listed(store)[token.id].last_used_at == to_datetime(clock())
    assert recorder.pending == 0


def test_close_stops_the_background_flusher_and_writes_what_is_pending(
    store: TokenStore, clock: FakeClock
) -> None:
    (token,) = _tokens(store, 1)
    # An interval that never comes during the test: only close() can write.
    recorder = LastUsedRecorder(store, flush_seconds=3600, clock=clock)
    recorder.start()
    recorder.record(token.id)

    recorder.close()

    assert _listed(store)[token.id].last_used_at == to_datetime(clock())
    assert recorder._task._thread is None


# -- through the authenticator -----------------------------------------------------------------


def test_a_verified_token_use_is_stored_on_flush(store: TokenStore, clock: FakeClock) -> None:
    (token,) = _tokens(store, 1)
    with Authenticator(store, clock=clock) as auth:
        auth.verify_token(token.token, peer="10.0.0.1")
        assert _listed(store)[token.id].last_used_at is None

        assert auth.flush_last_used() == 1

        listed = _listed(store)[token.id]
        assert listed.last_used_at == to_datetime(clock())
        assert listed.last_used_peers == ("10.0.0.1",)


def test_verify_never_writes_to_the_database(store: TokenStore, clock: FakeClock) -> None:
    (token,) = _tokens(store, 1)
    with Authenticator(store, clock=clock) as auth:
        with count_queries(store.engine) as first:
            auth.verify_token(token.token, peer="10.0.0.1")
        assert first.statements, "the first verify should have read the store"
        assert all(s.lstrip().upper().startswith("SELECT") for s in first.statements)

        with count_queries(store.engine) as cached:
            for n in range(1000):
                clock.advance(0.01)
                auth.verify_token(token.token, peer=f"10.0.{n % 7}.1")
        assert cached.count == 0, cached.statements[:5]
        assert auth.last_used.pending == 1

        auth.flush_last_used()
        assert _listed(store)[token.id].last_used_at == to_datetime(clock())


def test_a_lazy_peer_is_asked_on_first_use_and_then_sampled() -> None:
    from e6auth.background.lastused import PEER_SAMPLE_EVERY
    from e6auth.testing import memory_store

    store = memory_store()
    try:
        recorder = LastUsedRecorder(store, flush_seconds=3600)
        asked: list[int] = []

        def peer() -> str:
            asked.append(1)
            return "10.0.0.9"

        for _ in range(PEER_SAMPLE_EVERY * 3):
            recorder.record("AAAAAAAAAAAA", peer=peer)
        assert len(asked) == 3, "asked on uses 1, 17 and 33 only"
        recorder.record("AAAAAAAAAAAA", peer="10.0.0.10")  # a plain string is always kept
        assert recorder._pending["AAAAAAAAAAAA"].peers == ["10.0.0.10", "10.0.0.9"]
    finally:
        store.close()
