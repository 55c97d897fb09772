"""Child processes in tests: reading their output without stalling them."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
from typing import IO


class Lines:
    """A child's output stream, read line by line off the main thread."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for raw in stream:
            line = raw.rstrip("\n")
            self.seen.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def next(self, timeout: float) -> str | None:
        """The next line; None at the end of the stream. Raises TimeoutError."""
        try:
            return self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError(f"no line within {timeout} s") from None

    @property
    def text(self) -> str:
        return "\n".join(self.seen)

    def has(self, fragment: str, timeout: float = 2.0) -> bool:
        """Whether a line with ``fragment`` comes within ``timeout`` (the reader may lag)."""
        deadline = time.monotonic() + timeout
        while not any(fragment in line for line in self.seen):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def stop_process(process: subprocess.Popen[str], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode
