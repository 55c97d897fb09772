"""A fair, bounded gate for password hashes: a few at once, the others waiting in order.

Each argon2id hash holds its memory cost (19 MiB by default) of C heap while it runs. Unbounded,
every gRPC worker thread (64) could hash at once, and glibc keeps what it freed: five bursts of 32
concurrent logins took a gateway from 100 to 940 MiB, never given back (issue 15). So:

- At most ``max_concurrent`` hashes run at once (default: the usable CPUs; more would not finish
  sooner, they would only hold more memory). The others wait first come, first served, at most
  ``max_waiting`` of them and each at most ``max_wait_seconds``; beyond either, the login is
  refused with :class:`~e6auth.errors.HashingBusy` (a :class:`~e6auth.errors.Throttled`).
- Each slot runs its hashes on one thread of its own. glibc gives every thread a malloc arena and
  keeps a freed hash buffer at the top of that arena, where ``malloc_trim`` cannot reach (it trims
  the top of the main arena only): hashed on the 64 gRPC threads, the buffers piled up in up to
  8 x CPUs arenas, gate or no gate (measured). On ``max_concurrent`` threads they stay in as many:
  at rest, at most about one buffer each.
- When the last running hash ends, ``malloc_trim(0)`` (glibc only) gives the other free pages
  back, on a slot's thread rather than the caller's.

Making glibc map every hash buffer afresh (``mallopt(M_MMAP_THRESHOLD)``) would return all of it,
but each hash then faults its 19 MiB in again: 22 ms became 34 ms a hash (measured), which every
login would pay, busy or not. ``MALLOC_ARENA_MAX=1`` with the trim returns all of it too, but it
must be in the environment before the process starts, and puts every thread on one arena.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from e6auth.defaults import DEFAULT_MAX_WAIT_SECONDS, DEFAULT_MAX_WAITING
from e6auth.errors import HashingBusy

__all__ = [
    "DEFAULT_MAX_WAITING",
    "DEFAULT_MAX_WAIT_SECONDS",
    "HashGate",
    "default_max_concurrent",
]

T = TypeVar("T")


def default_max_concurrent() -> int:
    """The CPUs this process may run on (at least 1): hashes beyond that only queue in the OS."""
    counter: Callable[[], int | None] | None = getattr(os, "process_cpu_count", None)  # 3.13+
    if counter is not None:
        count = counter()
    elif hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count()
    return max(1, count or 1)


@dataclass(slots=True)
class _Waiter:
    ready: threading.Event = field(default_factory=threading.Event)
    slot: int = -1


class HashGate:
    """At most ``max_concurrent`` calls of :meth:`run` at once, the others served in arrival order.

    One gate per :class:`~e6auth.credentials.passwords.Passwords`, and the gateway has one of those:
    every argon2 hash and verify of the process (handshakes, unknown users' dummy checks, web
    sign-ins, password changes) passes through it. Thread-safe.
    """

    def __init__(
        self,
        max_concurrent: int | None = None,
        *,
        max_waiting: int = DEFAULT_MAX_WAITING,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        trim_when_idle: bool = True,
    ) -> None:
        """``max_concurrent`` defaults to :func:`default_max_concurrent`. ``trim_when_idle``
        returns free heap pages to the OS each time the gate becomes idle (glibc only)."""
        max_concurrent = default_max_concurrent() if max_concurrent is None else max_concurrent
        if max_concurrent < 1 or max_waiting < 0 or max_wait_seconds < 0:
            raise ValueError("a hash gate needs max_concurrent >= 1 and no negative bound")
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.max_wait_seconds = max_wait_seconds
        self._trim = _malloc_trim() if trim_when_idle else None
        self._lock = threading.Lock()
        # Free slots, the last freed on top: a light load keeps to the first slot's thread.
        self._free: list[int] = []
        self._opened = 0
        self._workers: list[ThreadPoolExecutor] = []
        self._waiting: deque[_Waiter] = deque()

    @property
    def running(self) -> int:
        """Calls holding a slot now."""
        with self._lock:
            return self._opened - len(self._free)

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now."""
        with self._lock:
            return len(self._waiting)

    def run(self, work: Callable[[], T]) -> T:
        """``work()``'s result (or exception), computed on a slot's thread once a slot is free.

        Raises :class:`~e6auth.errors.HashingBusy` without running it when ``max_waiting`` calls
        are waiting already, or when no slot came free within ``max_wait_seconds``."""
        slot = self._acquire()
        try:
            worker = self._workers[slot]
            return worker.submit(work).result()
        finally:
            self._release(slot)

    def _acquire(self) -> int:
        with self._lock:
            if not self._waiting:
                if self._free:
                    return self._free.pop()
                if self._opened < self.max_concurrent:
                    return self._open_slot()
            if len(self._waiting) >= self.max_waiting:
                raise HashingBusy(f"{len(self._waiting)} password checks waiting already")
            waiter = _Waiter()
            self._waiting.append(waiter)
        try:
            waiter.ready.wait(self.max_wait_seconds)
        except BaseException:  # interrupted: a slot handed over meanwhile must not be lost
            if self._leave(waiter):
                self._release(waiter.slot)
            raise
        if self._leave(waiter):
            return waiter.slot
        raise HashingBusy(f"no password check slot within {self.max_wait_seconds:g} s")

    def _leave(self, waiter: _Waiter) -> bool:
        """Whether ``waiter`` was handed a slot; if not, it leaves the queue."""
        with self._lock:
            # Handed over under the lock: a slot given just as the wait ran out is seen here.
            if waiter.ready.is_set():
                return True
            self._waiting.remove(waiter)
            return False

    def _open_slot(self) -> int:
        slot = self._opened
        # The thread starts with its first task: a slot never used costs nothing.
        self._workers.append(
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"e6auth-argon2-{slot}")
        )
        self._opened += 1
        return slot

    def _release(self, slot: int) -> None:
        with self._lock:
            if self._waiting:
                # Handed over, never put back: a newcomer cannot take it ahead of the queue.
                waiter = self._waiting.popleft()
                waiter.slot = slot
                waiter.ready.set()
                return
            self._free.append(slot)
            idle = len(self._free) == self._opened
        if idle and self._trim is not None:
            # On the slot's thread: the caller has its answer to send, and the next hash on this
            # slot waits for the trim (a few ms at most) rather than a login.
            with contextlib.suppress(RuntimeError):  # the interpreter is exiting: nothing to trim
                self._workers[slot].submit(self._trim)


@functools.cache
def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, looked up once per process; None on other C libraries."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return functools.partial(trim, 0)
