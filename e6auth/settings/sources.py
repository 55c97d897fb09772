"""Where a Settings' values come from besides its constructor keywords: the ``E6AUTH_*``
environment variables and the TOML config file (``E6AUTH_CONFIG``, else ``<home>/config.toml``).

Plain functions over the model's field table, apart from the model so that it reads as its
declarations; they run once, when a Settings is built, never on the request path. A source that
cannot be read is a refusal like a refused value, reported with the others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

if TYPE_CHECKING:
    from e6auth.settings.fields import SettingField

__all__ = [
    "DATABASE_FILE",
    "ENV_PREFIX",
    "QUERY_DATABASE_FILE",
    "NoDecode",
    "default_home",
    "source_values",
]

ENV_PREFIX = "E6AUTH_"
# The embedded databases, in the home folder, when no URL is given. Here rather than beside the
# model so that the store finds its file without loading the model.
DATABASE_FILE = "e6auth.db"
QUERY_DATABASE_FILE = "query.db"


class NoDecode:
    """Marks a list setting whose environment variable is plain text that the setting's own
    validator splits, not JSON (as every other list setting's is)."""


def default_home() -> Path:
    return Path(os.environ.get("E6AUTH_HOME") or Path.home() / ".e6auth")


Refusals = list[tuple[str, str]]
"""(setting name, message) pairs; the name is empty when the refusal concerns no one setting."""


def source_values(
    keywords: dict[str, Any], fields: Mapping[str, SettingField]
) -> tuple[dict[str, Any], Refusals]:
    """Constructor keywords over ``E6AUTH_*`` variables over the config file, merged: every value
    given, whichever source gave it; and the refusals of what could not be read."""
    refusals: Refusals = []
    try:
        from_file = _config_file_values(keywords)
    except ValueError as exc:
        from_file = {}
        refusals.append(("", str(exc)))
    return {**from_file, **_environment_values(fields, refusals), **keywords}, refusals


def _config_file(keywords: dict[str, Any]) -> Path:
    """``E6AUTH_CONFIG``, else ``config.toml`` in the home given as a keyword or the default one."""
    explicit = os.environ.get("E6AUTH_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    home = keywords.get("home")
    return (Path(home) if home else default_home()).expanduser() / "config.toml"


def _config_file_values(keywords: dict[str, Any]) -> dict[str, Any]:
    path = _config_file(keywords)
    if not path.is_file():
        return {}
    import tomllib

    with path.open("rb") as file:
        try:
            return tomllib.load(file)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not TOML: {exc}") from None


def _environment_values(fields: Mapping[str, SettingField], refusals: Refusals) -> dict[str, Any]:
    """The settings ``E6AUTH_*`` variables give (names in any case; other variables ignored).
    A list setting's value is JSON unless the setting is marked :class:`NoDecode`; one that is
    not is refused, by its variable's name."""
    variables = {name.upper(): value for name, value in os.environ.items()}
    values: dict[str, Any] = {}
    for name, field in fields.items():
        variable = f"{ENV_PREFIX}{name.upper()}"
        text = variables.get(variable)
        if text is None:
            continue
        values[name] = text
        if _is_list(field.annotation) and NoDecode not in field.metadata:
            try:
                values[name] = json.loads(text)
            except ValueError:
                del values[name]
                refusals.append((name, f"{variable} is not a JSON list"))
    return values


def _is_list(annotation: Any) -> bool:
    """A tuple, or a union with one (``tuple[str, ...] | None``)."""
    return get_origin(annotation) is tuple or any(
        get_origin(member) is tuple for member in get_args(annotation)
    )
