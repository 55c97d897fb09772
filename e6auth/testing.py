"""Helpers for tests, ours and those of services that embed e6auth."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypedDict

from sqlalchemy import Engine, event

from e6auth.clock import Clock
from e6auth.credentials.keys import Pepper
from e6auth.credentials.passwords import Argon2Parameters, Passwords
from e6auth.store import TokenStore
from e6auth.store.database import create_store_engine
from e6auth.store.migrate import ensure_schema
from e6auth.verify.policy import Policy

__all__ = [
    "FAST_ARGON2",
    "FAST_ARGON2_SETTINGS",
    "FakeClock",
    "QueryCounter",
    "count_queries",
    "memory_store",
]

FAST_ARGON2 = Argon2Parameters(memory_kib=64, time_cost=1, parallelism=1)
"""Cheap hashing for tests. Never use it in production."""


class Argon2Settings(TypedDict):
    argon2_memory_kib: int
    argon2_time_cost: int
    argon2_parallelism: int


FAST_ARGON2_SETTINGS = Argon2Settings(
    argon2_memory_kib=FAST_ARGON2.memory_kib,
    argon2_time_cost=FAST_ARGON2.time_cost,
    argon2_parallelism=FAST_ARGON2.parallelism,
)
"""``FAST_ARGON2`` as ``Settings`` keywords: ``Settings(home=..., **FAST_ARGON2_SETTINGS)``."""


class FakeClock:
    """A clock that moves only when told to; pass it as ``clock=``."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def memory_store(
    *,
    clock: Clock | None = None,
    passwords: Passwords | None = None,
    url: str = "sqlite://",
    policy: Policy | None = None,
    peppers: Sequence[Pepper] = (),
) -> TokenStore:
    """A migrated store on ``url`` (default: a private in-memory SQLite) with cheap hashing."""
    engine = create_store_engine(url)
    ensure_schema(engine, migrate=True)
    return TokenStore(
        engine,
        pepper=max(peppers, key=lambda pepper: pepper.id, default=None)
        or Pepper(secrets.token_bytes(32)),
        passwords=passwords or Passwords(FAST_ARGON2),
        clock=clock if clock is not None else time.time,
        peppers=peppers,
        policy=policy,
    )


class QueryCounter:
    """Counts the SQL statements an engine executes while it is attached."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    @property
    def count(self) -> int:
        return len(self.statements)

    def _record(self, *args: Any) -> None:
        self.statements.append(str(args[2]))


@contextmanager
def count_queries(engine: Engine) -> Iterator[QueryCounter]:
    counter = QueryCounter()
    event.listen(engine, "before_cursor_execute", counter._record)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", counter._record)
