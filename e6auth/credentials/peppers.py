"""Several token-digest peppers, each with an id: new digests use the newest, every one verifies.

Peppers come from the settings (``pepper`` is id 1; ``peppers`` lists ``id:key`` pairs) or, when
none is configured, from key files in the state folder: ``pepper`` is id 1, ``pepper.<id>`` the
others. ``e6auth pepper add`` writes the next file; tokens move to the newest pepper when they are
rotated (their row names the pepper its digest was made with).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from e6auth.credentials.keys import MIN_KEY_BYTES, Pepper, load_or_create_key

__all__ = [
    "MAX_PEPPER_ID",
    "PEPPER_FILE",
    "PepperRing",
    "add_pepper_file",
    "load_pepper_files",
    "parse_peppers",
    "pepper_file",
    "pepper_files",
]

PEPPER_FILE = "pepper"
MAX_PEPPER_ID = 32_767  # tokens.pepper_id is a SMALLINT
_FILE_NAME = re.compile(rf"{PEPPER_FILE}(?:\.([1-9][0-9]{{0,4}}))?")


class PepperRing:
    """The known peppers by id; ``current`` (the newest, highest id) makes new digests."""

    __slots__ = ("_by_id", "current")

    def __init__(self, peppers: Iterable[Pepper]) -> None:
        by_id: dict[int, Pepper] = {}
        for pepper in peppers:
            if pepper.id in by_id:
                raise ValueError(f"pepper id {pepper.id} is given twice")
            by_id[pepper.id] = pepper
        if not by_id:
            raise ValueError("no pepper")
        self._by_id = by_id
        self.current = by_id[max(by_id)]

    def get(self, pepper_id: int) -> Pepper | None:
        return self._by_id.get(pepper_id)

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._by_id))

    def __iter__(self) -> Iterator[Pepper]:
        return iter(self._by_id[pepper_id] for pepper_id in self.ids)

    def __repr__(self) -> str:
        return f"PepperRing(ids={list(self.ids)}, current={self.current.id})"


def parse_peppers(text: str) -> list[Pepper]:
    """``"2:<key>,1:<key>"`` as peppers. Errors never quote a key."""
    peppers = []
    for position, item in enumerate(text.split(","), start=1):
        number, separator, key = item.strip().partition(":")
        if not separator or not number.strip().isdigit():
            raise ValueError(f"item {position} is not <id>:<key>")
        pepper_id = int(number)
        if not 1 <= pepper_id <= MAX_PEPPER_ID:
            raise ValueError(f"item {position}: a pepper id is from 1 to {MAX_PEPPER_ID}")
        encoded = key.strip().encode()
        if len(encoded) < MIN_KEY_BYTES:
            raise ValueError(f"item {position}: a pepper must be at least {MIN_KEY_BYTES} bytes")
        peppers.append(Pepper(encoded, id=pepper_id))
    return peppers


def pepper_file(home: Path, pepper_id: int) -> Path:
    return home / (PEPPER_FILE if pepper_id == 1 else f"{PEPPER_FILE}.{pepper_id}")


def pepper_files(home: Path) -> dict[int, Path]:
    """The pepper key files in ``home``, by id."""
    found: dict[int, Path] = {}
    if not home.is_dir():
        return found
    for path in home.iterdir():
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            continue
        pepper_id = int(match[1]) if match[1] else 1
        if pepper_id <= MAX_PEPPER_ID and pepper_file(home, pepper_id).name == path.name:
            found[pepper_id] = path
    return found


def load_pepper_files(home: Path) -> PepperRing:
    """The peppers in ``home``; with none there, a new ``pepper`` file (id 1), as ever."""
    files = pepper_files(home) or {1: home / PEPPER_FILE}
    return PepperRing(
        Pepper(load_or_create_key(path, purpose="pepper"), id=pepper_id)
        for pepper_id, path in files.items()
    )


def add_pepper_file(home: Path) -> int:
    """Generate the next pepper file (0600, atomically) and return its id.

    The existing peppers stay: tokens made with them keep verifying until they are rotated.
    """
    files = pepper_files(home)
    if not files:
        load_pepper_files(home)  # id 1 first, so that the new one is really the newest
        files = pepper_files(home)
    new_id = max(files) + 1
    if new_id > MAX_PEPPER_ID:
        raise ValueError(f"pepper ids end at {MAX_PEPPER_ID}")
    path = pepper_file(home, new_id)
    if path.exists():  # another `pepper add` won the race
        raise FileExistsError(f"{path} appeared meanwhile; run the command again")
    load_or_create_key(path, purpose=f"pepper {new_id}")
    return new_id
