"""The declarative layer under Settings (e6auth.settings.fields), on classes of its own: what a
declaration gives, and what it refuses when the class is made."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from e6auth.errors import SettingsError
from e6auth.settings.fields import MISSING, SecretStr, SettingsBase, setting


class Example(SettingsBase):
    name: str
    count: int = setting(default=1, ge=1, le=10)
    ratio: float | None = setting(default=None, gt=0)
    mode: Literal["a", "b"] = "a"
    tags: tuple[str, ...] = ()
    key: SecretStr | None = None
    where: Path = setting(default_factory=lambda: Path("/tmp"))  # noqa: S108


def test_a_declaration_is_its_fields_table() -> None:
    fields = Example.setting_fields
    assert list(fields) == ["name", "count", "ratio", "mode", "tags", "key", "where"]
    assert fields["name"].required
    assert fields["name"].default is MISSING
    assert (fields["count"].default, fields["count"].ge, fields["count"].le) == (1, 1, 10)
    assert fields["ratio"].annotation == float | None
    assert fields["where"].default_factory is not None
    # The class keeps no defaults of its own: values live on instances only.
    assert not hasattr(Example, "count")


def test_values_are_converted_and_given_names_remembered() -> None:
    example = Example(name="x", count="3", tags=["p", "q"], key="k", where="/srv")  # type: ignore[arg-type]
    assert (example.count, example.tags, example.where) == (3, ("p", "q"), Path("/srv"))
    assert example.key == SecretStr("k")
    assert example.given == {"name", "count", "tags", "key", "where"}
    assert example.ratio is None
    assert example.where == Path("/srv")


def test_a_required_setting_and_an_unknown_one_are_refused_together() -> None:
    with pytest.raises(SettingsError) as caught:
        Example(nmae="x", count=0)  # type: ignore[call-arg]
    assert caught.value.errors == (
        ("name", "is required"),
        ("count", "must be at least 1"),
        ("nmae", "is no setting"),
    )


def test_the_default_factory_runs_per_instance() -> None:
    assert Example(name="a").where == Path("/tmp")  # noqa: S108


def test_instances_are_frozen() -> None:
    example = Example(name="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.name = "b"  # type: ignore[misc]


def test_a_secret_never_shows() -> None:
    secret = SecretStr("hunter2-hunter2")
    assert "hunter2" not in repr(secret) + str(secret) + repr(Example(name="a", key=secret))
    assert secret.get_secret_value() == "hunter2-hunter2"
    assert secret == SecretStr("hunter2-hunter2")
    assert secret != "hunter2-hunter2"
    assert len(secret) == 15


def test_a_type_the_layer_cannot_convert_is_refused_when_the_class_is_made() -> None:
    with pytest.raises(TypeError, match="bytes"):

        class Unsupported(SettingsBase):
            blob: bytes = b""
