"""The hot path under contention, on each backend and in real time: verifiers, a creator and a
deleter share one Authenticator. Whatever the interleaving, a verify that starts after a delete
has returned is refused, and a token nobody deleted is never refused."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import pytest

from e6auth import Authenticator, E6AuthError, TokenStore
from e6auth.clock import Clock
from e6auth.store import NewToken

RUN_SECONDS = 3.0
VERIFIERS = 8
INITIAL_TOKENS = 20
MIN_VERIFIES = 2000
MIN_DELETES = 20


@pytest.fixture
def clock() -> Clock:
    # Overrides the fake clock for the `store` fixture: this test runs in real time throughout.
    return time.time


@dataclass
class Shared:
    """What the threads share. Lists are only appended to; readers take snapshots."""

    tokens: list[NewToken]
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    delete_started: set[str] = field(default_factory=set)
    delete_returned: dict[str, float] = field(default_factory=dict)
    # The token the deleter is about to delete: verifiers hammer it across the deletion.
    doomed: NewToken | None = None
    failures: list[BaseException] = field(default_factory=list)


Verify = tuple[str, float, str]  # token id, monotonic time before the call, outcome


def _verifier(auth: Authenticator, shared: Shared, verifies: list[Verify]) -> None:
    rng = random.Random()
    while not shared.stop.is_set():
        doomed = shared.doomed
        new = doomed if doomed is not None and rng.random() < 0.5 else rng.choice(shared.tokens)
        started = time.monotonic()  # before the call: the verify began no earlier than this
        try:
            auth.verify_token(new.token)
            outcome = "ok"
        except E6AuthError as exc:
            outcome = exc.reason
        verifies.append((new.id, started, outcome))


def _creator(store: TokenStore, shared: Shared) -> None:
    while not shared.stop.wait(0.01):
        shared.tokens.append(store.create_token("alice"))


def _deleter(store: TokenStore, shared: Shared) -> None:
    rng = random.Random()
    while not shared.stop.wait(0.005):
        with shared.lock:
            live = [new for new in shared.tokens if new.id not in shared.delete_started]
        if len(live) < 5:
            continue
        # Half the time a token cached for a while, so the deletion must evict it; half the time
        # the newest token, whose first loads race with the deletion itself.
        fresh = rng.random() < 0.5
        target = live[-1] if fresh else rng.choice(live)
        shared.doomed = target
        if not fresh:
            time.sleep(0.01)  # long enough for the verifiers to have it cached
        with shared.lock:
            shared.delete_started.add(target.id)
        store.delete_tokens([target.id])
        shared.delete_returned[target.id] = time.monotonic()  # after it returned


def _guarded(shared: Shared, work: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except BaseException as exc:
            shared.failures.append(exc)
            shared.stop.set()

    return run


@pytest.mark.timeout(60)
def test_verifies_agree_with_deletions_under_contention(store: TokenStore) -> None:
    store.create_user("alice")
    shared = Shared([store.create_token("alice") for _ in range(INITIAL_TOKENS)])
    per_thread: list[list[Verify]] = [[] for _ in range(VERIFIERS)]

    with Authenticator(store) as auth:
        threads = [
            threading.Thread(target=_guarded(shared, partial(_verifier, auth, shared, verifies)))
            for verifies in per_thread
        ]
        threads.append(threading.Thread(target=_guarded(shared, lambda: _creator(store, shared))))
        threads.append(threading.Thread(target=_guarded(shared, lambda: _deleter(store, shared))))
        for thread in threads:
            thread.start()
        time.sleep(RUN_SECONDS)  # the length of the run, not a wait for expiry
        shared.stop.set()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads), "a worker hung"

    assert shared.failures == []
    verifies = [verify for batch in per_thread for verify in batch]
    deleted = shared.delete_returned
    accepted_after_delete = [
        (token_id, started - deleted[token_id])
        for token_id, started, outcome in verifies
        if token_id in deleted and started > deleted[token_id] and outcome == "ok"
    ]
    refused_live = [
        (token_id, outcome)
        for token_id, _, outcome in verifies
        if token_id not in shared.delete_started and outcome != "ok"
    ]
    unexpected = {outcome for _, _, outcome in verifies} - {"ok", "revoked"}
    after_delete = sum(
        1
        for token_id, started, _ in verifies
        if token_id in deleted and started > deleted[token_id]
    )

    assert accepted_after_delete == [], f"{len(accepted_after_delete)} stale accepts"
    assert refused_live == [], f"{len(refused_live)} live tokens refused"
    assert unexpected == set()
    assert len(verifies) > MIN_VERIFIES
    assert len(deleted) >= MIN_DELETES
    assert after_delete > 0, "no verify ever followed a deletion: the invariant went untested"
