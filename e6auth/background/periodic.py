"""A daemon thread that runs one task every few seconds, and once more when stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["PeriodicTask"]

log = logging.getLogger("e6auth")


class PeriodicTask:
    """Runs ``task`` every ``interval`` seconds on a daemon thread.

    A failing run is logged and the next one happens on schedule: the task itself decides what
    to keep for a retry. ``stop()`` runs the task a last time (with ``final=True`` semantics left
    to the owner) only if ``run_on_stop`` is set.
    """

    def __init__(
        self, name: str, interval: float, task: Callable[[], object], *, run_on_stop: bool = False
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.name = name
        self.interval = interval
        self._task = task
        self._run_on_stop = run_on_stop
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(timeout)
        if self._run_on_stop:
            self._run_once()

    def _loop(self) -> None:
        while not self._stopping.wait(self.interval):
            self._run_once()

    def _run_once(self) -> None:
        try:
            self._task()
        except Exception:
            log.exception("%s failed; trying again in %.1f s", self.name, self.interval)
