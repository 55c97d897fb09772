"""Several peppers: new digests use the newest, every known one verifies, rotation re-digests."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pytest

from e6auth.credentials.keys import Pepper
from e6auth.credentials.peppers import PepperRing, add_pepper_file, parse_peppers, pepper_files
from e6auth.errors import SettingsError, StoreUnavailable
from e6auth.settings import Settings
from e6auth.testing import FakeClock, memory_store
from e6auth.verify.authenticator import Authenticator

KEY_1 = "first-pepper-that-is-long-enough-0123"
KEY_2 = "second-pepper-that-is-long-enough-456"


@pytest.fixture
def home() -> Path:
    return Path(os.environ["E6AUTH_HOME"])


def test_parse_peppers_reads_ids_and_keys() -> None:
    peppers = parse_peppers(f"2:{KEY_2}, 1:{KEY_1}")

    assert [(pepper.id, pepper.key) for pepper in peppers] == [
        (2, KEY_2.encode()),
        (1, KEY_1.encode()),
    ]
    assert KEY_1 not in repr(PepperRing(peppers))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (KEY_1, "not <id>:<key>"),
        (f"x:{KEY_1}", "not <id>:<key>"),
        (f"0:{KEY_1}", "from 1 to"),
        (f"40000:{KEY_1}", "from 1 to"),
        ("1:short-secret-key", "at least 32 bytes"),
    ],
)
def test_bad_pepper_lists_are_refused_without_quoting_a_key(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_peppers(text)
    assert "short-secret-key" not in str(refused.value)
    assert KEY_1 not in str(refused.value)


def test_settings_take_several_peppers_and_the_single_one_as_id_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E6AUTH_PEPPERS", f"3:{KEY_2}")
    monkeypatch.setenv("E6AUTH_PEPPER", KEY_1)

    ring = Settings().load_peppers()

    assert ring.ids == (1, 3)
    assert ring.current.id == 3
    assert Settings().load_peppers().current.key == KEY_2.encode()


def test_a_pepper_id_given_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E6AUTH_PEPPERS", f"1:{KEY_2}")
    monkeypatch.setenv("E6AUTH_PEPPER", KEY_1)

    with pytest.raises(ValueError, match="given twice"):
        Settings().load_peppers()


def test_a_short_pepper_in_the_list_is_refused_by_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("E6AUTH_PEPPERS", "1:short-secret-key")

    with pytest.raises(SettingsError) as refused:
        Settings()
    assert "short-secret-key" not in str(refused.value)


def test_pepper_files_in_home_add_private_newer_peppers(home: Path) -> None:
    first = Settings().load_peppers()  # generates `pepper`, id 1, as before
    assert first.ids == (1,)

    assert add_pepper_file(home) == 2
    assert add_pepper_file(home) == 3

    files = pepper_files(home)
    assert sorted(files) == [1, 2, 3]
    assert files[3].name == "pepper.3"
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in files.values())
    ring = Settings().load_peppers()
    assert ring.current.id == 3
    assert ring.get(1) is not None
    assert ring.get(1).key == first.current.key  # type: ignore[union-attr]


def test_add_pepper_on_an_empty_home_makes_id_1_first(home: Path) -> None:
    assert add_pepper_file(home) == 2
    assert sorted(pepper_files(home)) == [1, 2]


def test_old_tokens_verify_new_ones_use_the_newest_and_rotation_moves_them(
    store_url: str, clock: FakeClock
) -> None:
    one = Pepper(secrets.token_bytes(32), id=1)
    two = Pepper(secrets.token_bytes(32), id=2)
    before = memory_store(clock=clock, url=store_url, peppers=[one])
    before.create_user("alice")
    old = before.create_token("alice")
    before.close()

    store = memory_store(clock=clock, url=store_url, peppers=[one, two])
    try:
        new = store.create_token("alice")
        assert store.pepper_ids == (1, 2)
        assert [store.find_token(token.id).pepper_id for token in (old, new)] == [1, 2]  # type: ignore[union-attr]
        assert store.pepper_usage() == {1: 1, 2: 1}
        with Authenticator(store, clock=clock) as auth:
            assert auth.verify_token(old.token).token_id == old.id
            assert auth.verify_token(new.token).token_id == new.id

            rotated = store.rotate_token(old.id)
            assert store.find_token(old.id).pepper_id == 2  # type: ignore[union-attr]
            # The previous secret (pepper 1) still counts while it is in its grace window.
            assert store.pepper_usage() == {1: 1, 2: 2}
            auth.verify_token(rotated.token)
            auth.verify_token(old.token)
    finally:
        store.close()


def test_a_token_whose_pepper_is_gone_is_a_store_problem_not_a_bad_secret(
    store_url: str, clock: FakeClock
) -> None:
    one = Pepper(secrets.token_bytes(32), id=1)
    before = memory_store(clock=clock, url=store_url, peppers=[one])
    before.create_user("alice")
    token = before.create_token("alice")
    before.close()

    store = memory_store(
        clock=clock, url=store_url, peppers=[Pepper(secrets.token_bytes(32), id=2)]
    )
    try:
        with Authenticator(store, clock=clock) as auth, pytest.raises(StoreUnavailable):
            auth.verify_token(token.token)
        assert store.pepper_usage() == {1: 1, 2: 0}
    finally:
        store.close()
