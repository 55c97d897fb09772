"""WriteBehindBuffer, the discipline the audit trail and the last-used times share: bounded in
memory, written in batches outside the lock, a failed batch kept for the next flush, drained by the
periodic thread and once more on close; a failure at shutdown logged, not raised."""

from __future__ import annotations

import logging
import threading
from typing import ClassVar

import pytest

from e6auth.background.buffer import WriteBehindBuffer
from e6auth.errors import StoreUnavailable
from e6auth.testing import FakeClock

log = logging.getLogger("e6auth.test_buffer")


class Notes(WriteBehindBuffer[list[str]]):
    """A buffer of strings that keeps the newest: the smallest owner of a policy."""

    _thread_name = "e6auth-test-notes"
    _log = log
    _shutdown_error = "could not write %d notes at shutdown (%s)"
    _full_warning: ClassVar[str | None] = "notes full (%d): dropped %d so far"

    def __init__(
        self, *, max_pending: int = 3, clock: FakeClock | None = None, flush_seconds: float = 3600
    ) -> None:
        super().__init__(
            flush_seconds=flush_seconds, max_pending=max_pending, clock=clock or FakeClock()
        )
        self.batches: list[list[str]] = []
        self.unreachable = False
        self.attempts = 0
        self.written = threading.Event()
        self.during_write: list[str] = []

    def note(self, text: str) -> None:
        with self._lock:
            if self._full:
                self._pending.pop(0)
                self.dropped += 1
            self._pending.append(text)

    def _empty(self) -> list[str]:
        return []

    def _write(self, batch: list[str]) -> int:
        self.attempts += 1
        for text in self.during_write:  # the request path goes on while the store works
            self.note(text)
        self.during_write = []
        if self.unreachable:
            raise StoreUnavailable("notes unreachable (OperationalError)")
        self.batches.append(list(batch))
        self.written.set()
        return len(batch)

    def _put_back(self, batch: list[str]) -> None:
        batch.extend(self._pending)
        excess = max(len(batch) - self._max_pending, 0)
        del batch[:excess]
        self.dropped += excess
        self._pending = batch


def _logged(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [(r.name, r.levelno, r.getMessage()) for r in caplog.records]


# -- bounds ------------------------------------------------------------------------------------


def test_the_buffer_holds_at_most_max_pending_and_counts_what_gives_way() -> None:
    notes = Notes(max_pending=3)
    for n in range(5):
        notes.note(f"n{n}")
    assert (notes.pending, notes.dropped) == (3, 2)
    assert notes.flush() == 3
    assert notes.batches == [["n2", "n3", "n4"]]


def test_a_buffer_of_no_room_is_always_full() -> None:
    notes = Notes(max_pending=0)
    with notes._lock:
        assert notes._full


# -- batches -----------------------------------------------------------------------------------


def test_one_flush_writes_everything_pending_in_one_batch() -> None:
    notes = Notes(max_pending=100)
    for n in range(50):
        notes.note(f"n{n}")
    assert notes.flush() == 50
    assert notes.batches == [[f"n{n}" for n in range(50)]]
    assert (notes.pending, notes.writes, notes.failures) == (0, 1, 0)


def test_a_flush_with_nothing_pending_writes_nothing_and_restarts_the_lag() -> None:
    clock = FakeClock()
    notes = Notes(clock=clock)
    clock.advance(5)
    assert notes.flush() == 0
    assert (notes.attempts, notes.writes) == (0, 0)
    assert notes.last_flush_at == clock()


def test_what_is_recorded_during_a_write_waits_for_the_next_batch() -> None:
    notes = Notes()
    notes.note("before")
    notes.during_write = ["during"]
    assert notes.flush() == 1
    assert (notes.batches, notes.pending) == ([["before"]], 1)
    assert notes.flush() == 1
    assert notes.batches == [["before"], ["during"]]


# -- failures ----------------------------------------------------------------------------------


def test_a_failed_write_raises_is_counted_and_its_batch_is_kept_for_the_next_flush() -> None:
    clock = FakeClock()
    notes = Notes(clock=clock)
    made = clock()
    notes.note("a")
    notes.note("b")
    notes.unreachable = True
    clock.advance(5)
    with pytest.raises(StoreUnavailable):
        notes.flush()
    assert (notes.pending, notes.failures, notes.writes) == (2, 1, 0)
    assert notes.last_flush_at == made

    notes.unreachable = False
    assert notes.flush() == 2
    assert notes.batches == [["a", "b"]]
    assert (notes.failures, notes.writes, notes.last_flush_at) == (1, 1, clock())


def test_the_owner_decides_how_a_kept_batch_meets_what_came_during_the_write() -> None:
    notes = Notes(max_pending=3)
    notes.note("a")
    notes.note("b")
    notes.unreachable = True
    notes.during_write = ["c", "d"]
    with pytest.raises(StoreUnavailable):
        notes.flush()
    # This owner keeps the newest: the oldest kept note gives way.
    assert (notes.pending, notes.dropped) == (3, 1)
    notes.unreachable = False
    notes.flush()
    assert notes.batches == [["b", "c", "d"]]


def test_drops_are_warned_about_once_per_outage_and_again_after_a_good_write(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notes = Notes(max_pending=2)
    notes.unreachable = True
    with caplog.at_level(logging.WARNING, logger="e6auth.test_buffer"):
        for n in range(3):
            notes.note(f"n{n}")
        for _ in range(3):
            notes.note("more")
            with pytest.raises(StoreUnavailable):
                notes.flush()
        notes.unreachable = False
        notes.flush()
        notes.note("x")
        notes.flush()  # nothing dropped since: no warning
        for n in range(3):
            notes.note(f"y{n}")
        notes.flush()
    assert [message for _, _, message in _logged(caplog)] == [
        "notes full (2): dropped 2 so far",
        "notes full (2): dropped 5 so far",
    ]


class QuietNotes(Notes):
    _full_warning = None


class LastRunNotes(Notes):
    _run_on_stop = True


def test_without_a_warning_drops_are_only_counted(caplog: pytest.LogCaptureFixture) -> None:
    notes = QuietNotes(max_pending=1)
    with caplog.at_level(logging.DEBUG, logger="e6auth"):
        notes.note("a")
        notes.note("b")
        notes.flush()
    assert notes.dropped == 1
    assert _logged(caplog) == []


# -- the periodic thread and close -------------------------------------------------------------


def test_the_periodic_thread_drains_the_buffer_and_close_writes_the_rest() -> None:
    notes = Notes(flush_seconds=0.05)
    notes.note("a")
    notes.start()
    try:
        assert notes.written.wait(10), "the thread never wrote"
    finally:
        notes.note("last")
        notes.close()
    assert notes.batches[0] == ["a"]
    assert notes.batches[-1] == ["last"]
    assert notes.pending == 0
    assert notes._task._thread is None


def test_close_with_nothing_pending_writes_nothing() -> None:
    notes = Notes()
    notes.start()
    notes.close()
    assert notes.attempts == 0


def test_a_failed_last_write_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    notes = Notes()
    notes.note("a")
    notes.note("b")
    notes.unreachable = True
    notes.start()
    with caplog.at_level(logging.DEBUG, logger="e6auth"):
        notes.close()
    assert notes.attempts == 1
    assert (notes.pending, notes.failures) == (2, 1)
    assert _logged(caplog) == [
        (
            "e6auth.test_buffer",
            logging.ERROR,
            "could not write 2 notes at shutdown (StoreUnavailable)",
        )
    ]


def test_run_on_stop_writes_as_the_thread_stops_then_close_tries_what_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notes = LastRunNotes()
    notes.note("a")
    notes.unreachable = True
    notes.start()
    with caplog.at_level(logging.DEBUG, logger="e6auth"):
        notes.close()
    assert notes.attempts == 2
    assert [(name, level) for name, level, _ in _logged(caplog)] == [
        ("e6auth", logging.ERROR),  # the periodic thread's last run
        ("e6auth.test_buffer", logging.ERROR),  # close()
    ]

    written = LastRunNotes()
    written.note("a")
    written.start()
    written.close()
    assert (written.attempts, written.batches) == (1, [["a"]])
