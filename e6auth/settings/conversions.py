"""The value types settings are declared with, and how each is made from what a keyword, a TOML
file or an ``E6AUTH_*`` variable (always text) gives: ``bool``, ``int``, ``float``, ``str``,
``Path``, :class:`SecretStr`, ``Literal`` choices, ``tuple[str, ...]`` and ``X | None``.

What is refused raises ValueError with a message that never quotes the value: it may be a
secret given to the wrong setting.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable
from pathlib import Path

__all__ = ["SecretStr", "converter"]

Convert = Callable[[object], object]

_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


class SecretStr:
    """Text that never shows: its repr and str are stars; ``get_secret_value()`` gives it."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def get_secret_value(self) -> str:
        return self._secret

    def __repr__(self) -> str:
        return "SecretStr('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretStr):
            return NotImplemented
        return self._secret == other._secret

    def __hash__(self) -> int:
        return hash(self._secret)

    def __len__(self) -> int:
        return len(self._secret)


def to_bool(value: object) -> bool:
    # What pydantic took before, and TOML booleans; 0 and 1 too, as numbers or text.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError("must be true or false (also yes/no, on/off, 1/0)")


def to_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
        try:
            value = float(value)
        except ValueError:
            raise ValueError("must be an integer") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError("must be an integer")


def to_float(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError("must be a number")


def to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError("must be text")


def to_path(value: object) -> Path:
    if isinstance(value, str | os.PathLike):
        return Path(value)
    raise ValueError("must be a path")


def to_secret(value: object) -> SecretStr:
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str):
        return SecretStr(value)
    raise ValueError("must be text")


def to_texts(value: object) -> tuple[str, ...]:
    # Text is refused rather than read as its characters: a list is written as one.
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("must be a list of text")


def one_of(choices: tuple[object, ...]) -> Convert:
    shown = ", ".join(repr(choice) for choice in choices)

    def convert(value: object) -> object:
        for choice in choices:
            if type(value) is type(choice) and value == choice:
                return choice
        raise ValueError(f"must be one of {shown}")

    return convert


def or_none(convert: Convert) -> Convert:
    return lambda value: None if value is None else convert(value)


_SIMPLE: dict[object, Convert] = {
    bool: to_bool,
    int: to_int,
    float: to_float,
    str: to_str,
    Path: to_path,
    SecretStr: to_secret,
    tuple[str, ...]: to_texts,
}


def converter(annotation: object) -> Convert:
    """The conversion to ``annotation``; TypeError, when the class is made, for a type there
    is none for."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return one_of(typing.get_args(annotation))
    if origin in (types.UnionType, typing.Union):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        if len(members) == 1 and len(typing.get_args(annotation)) == 2:
            return or_none(converter(members[0]))
    try:
        return _SIMPLE[annotation]
    except (KeyError, TypeError):
        raise TypeError(f"settings have no conversion to {annotation!r}") from None
