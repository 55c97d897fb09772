"""Generated keys: created once, private, agreed on by concurrent starters, never shown."""

from __future__ import annotations

import base64
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from e6auth.credentials.keys import (
    KEY_BYTES,
    MIN_KEY_BYTES,
    Pepper,
    ensure_home,
    load_or_create_key,
)


def test_creates_a_private_key_file_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "home" / "pepper"

    with caplog.at_level(logging.WARNING, logger="e6auth"):
        first = load_or_create_key(path, purpose="pepper")
        second = load_or_create_key(path, purpose="pepper")

    assert len(first) == KEY_BYTES
    assert second == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert base64.urlsafe_b64decode(path.read_bytes().strip()) == first
    # Announced once, when it is made, so an operator knows to back it up; the key itself is not.
    announcements = [record for record in caplog.records if "pepper" in record.getMessage()]
    assert len(announcements) == 1
    assert base64.urlsafe_b64encode(first).decode() not in caplog.text
    # No temporary files are left beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["pepper"]


def test_key_file_is_private_even_under_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        load_or_create_key(tmp_path / "pepper", purpose="pepper")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "pepper").stat().st_mode) == 0o600


def test_reads_an_existing_key_instead_of_replacing_it(tmp_path: Path) -> None:
    path = tmp_path / "pepper"
    key = os.urandom(48)
    path.write_bytes(base64.urlsafe_b64encode(key) + b"\n")

    assert load_or_create_key(path, purpose="pepper") == key


def test_separate_paths_get_separate_keys(tmp_path: Path) -> None:
    assert load_or_create_key(tmp_path / "a", purpose="a") != load_or_create_key(
        tmp_path / "b", purpose="b"
    )


@pytest.mark.parametrize(
    "content",
    [b"", b"not base64 at all!!", base64.urlsafe_b64encode(b"short")],
    ids=["empty", "garbage", "short-key"],
)
def test_refuses_a_bad_key_file_rather_than_replacing_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pepper"
    path.write_bytes(content)

    with pytest.raises(ValueError, match=str(path)):
        load_or_create_key(path, purpose="pepper")
    # Overwriting would silently invalidate every token made with the old key.
    assert path.read_bytes() == content


def test_concurrent_creation_agrees_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "home" / "pepper"
    threads = 16
    barrier = threading.Barrier(threads)
    keys: list[bytes] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            keys.append(load_or_create_key(path, purpose="pepper"))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=start) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert errors == []
    assert len(keys) == threads
    assert len(set(keys)) == 1
    assert load_or_create_key(path, purpose="pepper") == keys[0]
    assert sorted(p.name for p in path.parent.iterdir()) == ["pepper"]


def test_a_starter_that_loses_the_race_adopts_the_winners_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Threads rarely interleave at exactly the link; force it: another process writes its key
    # between our read (file missing) and our link.
    path = tmp_path / "pepper"
    winner = os.urandom(KEY_BYTES)
    real_link = os.link

    def link_after_a_rival(source: Path, target: Path) -> None:
        Path(target).write_bytes(base64.urlsafe_b64encode(winner) + b"\n")
        real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_a_rival)

    assert load_or_create_key(path, purpose="pepper") == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pepper"]


def test_ensure_home_creates_a_private_folder(tmp_path: Path) -> None:
    home = ensure_home(tmp_path / "a" / "b")
    assert home.is_dir()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_pepper_repr_and_str_hide_the_key() -> None:
    key = b"k" * 40
    pepper = Pepper(key, id=3)

    for text in (repr(pepper), str(pepper), f"{pepper}", repr([pepper])):
        assert "kkkk" not in text
        assert base64.b64encode(key).decode()[:16] not in text
        assert key.hex()[:16] not in text
    assert "id=3" in repr(pepper)


def test_pepper_needs_enough_key_material() -> None:
    with pytest.raises(ValueError, match=str(MIN_KEY_BYTES)):
        Pepper(b"x" * (MIN_KEY_BYTES - 1))
    assert Pepper(b"x" * MIN_KEY_BYTES).key == b"x" * MIN_KEY_BYTES
