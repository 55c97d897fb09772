"""The invalidation log as the store writes it: an entry with each change that ends a credential,
in the change's transaction, told to this process's listeners after the commit; nothing for a
change that was refused or ends nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from e6auth.errors import PolicyError, UserNotFound
from e6auth.store import Invalidation, TokenStore

PASSWORD = "correct horse battery staple"


class Heard:
    """A listener that keeps what it was told, and what the log held when it was told."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store
        self.told: list[list[Invalidation]] = []
        self.logged_when_told: list[int] = []

    def __call__(self, events: Sequence[Invalidation]) -> None:
        self.told.append(list(events))
        self.logged_when_told.append(self.store.latest_invalidation_id())


@pytest.fixture
def heard(store: TokenStore) -> Heard:
    listener = Heard(store)
    store.add_invalidation_listener(listener)
    return listener


def _logged(store: TokenStore) -> list[tuple[str | None, int | None]]:
    return [(entry.token_id, entry.user_id) for entry in store.invalidations_after(0)]


def test_a_revocation_is_logged_and_told_once_committed(store: TokenStore, heard: Heard) -> None:
    store.create_user("alice")
    token = store.create_token("alice")
    store.delete_tokens([token.id])
    assert _logged(store) == [(token.id, None)]
    assert heard.told == [[Invalidation(token_id=token.id)]]
    # Told after the commit: a listener reading the log then finds the entry.
    assert heard.logged_when_told == [store.latest_invalidation_id()]


def test_a_user_change_that_ends_credentials_is_logged_by_user(
    store: TokenStore, heard: Heard
) -> None:
    store.create_user("alice", PASSWORD)
    user_id = store.create_user("bob").id
    store.disable_user("bob")
    store.set_password("bob", PASSWORD)
    assert _logged(store) == [(None, user_id), (None, user_id)]
    assert heard.told == [[Invalidation(user_id=user_id)]] * 2


def test_changes_that_end_no_credential_log_nothing(store: TokenStore, heard: Heard) -> None:
    store.create_user("alice", PASSWORD)
    store.create_token("alice")
    store.enable_user("alice")
    store.set_admin("alice", True)
    store.sign_out_everywhere("alice")
    assert _logged(store) == []
    assert heard.told == []


def test_a_refused_change_logs_and_tells_nothing(store: TokenStore, heard: Heard) -> None:
    store.create_user("alice")
    token = store.create_token("alice")
    store.delete_tokens([token.id])
    logged = _logged(store)
    with pytest.raises(PolicyError):
        store.rotate_token(token.id)
    with pytest.raises(UserNotFound):
        store.disable_user("nobody")
    assert _logged(store) == logged
    assert len(heard.told) == 1


def test_a_failing_listener_keeps_the_others_told(store: TokenStore, heard: Heard) -> None:
    def failing(events: Sequence[Invalidation]) -> None:
        raise RuntimeError("listener down")

    store.add_invalidation_listener(failing)
    store.create_user("alice")
    token = store.create_token("alice")
    store.rotate_token(token.id, grace=dt.timedelta(0))
    store.remove_invalidation_listener(failing)
    store.rotate_token(token.id, grace=dt.timedelta(0))
    assert heard.told == [[Invalidation(token_id=token.id)]] * 2
