"""The declarative layer under :class:`~e6auth.settings.Settings`: settings declared as typed class
attributes with defaults and bounds, values converted from what a keyword, the environment or a
TOML file gives, frozen instances, and every refusal of one construction in one
:class:`~e6auth.errors.SettingsError`.

Our own rather than pydantic's: loading pydantic and building the model cost every ``e6auth``
command about 180 ms, for the few value types the settings use (see :mod:`.conversions`).
``dataclass_transform`` makes mypy check a ``Settings(...)`` call's keyword names and types, and
that no setting is assigned, as it would a frozen dataclass's.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Self, TypeVar, dataclass_transform, overload

from e6auth.errors import SettingsError
from e6auth.settings.conversions import SecretStr, converter

__all__ = ["MISSING", "SecretStr", "SettingField", "SettingsBase", "setting"]

T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""The default of a setting that has none (it must be given)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SettingField:
    """One setting's declaration: its type (``annotation``, outside any ``Annotated``, whose
    markers are ``metadata``), its default, its bounds, and the functions that read it:
    ``parse`` the value as given before its conversion (text to a list, a name to upper case),
    ``check`` it after, ``shown`` makes what a repr shows of it."""

    name: str = ""
    annotation: Any = None
    metadata: tuple[object, ...] = ()
    default: object = MISSING
    default_factory: Callable[[], object] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    parse: Callable[[object], object] | None = None
    check: Callable[[Any], object] | None = None
    shown: Callable[[str], str] | None = None
    convert: Callable[[object], object] = dataclasses.field(default=lambda value: value, repr=False)

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is None

    def default_value(self) -> object:
        return self.default if self.default_factory is None else self.default_factory()

    def value(self, given: object) -> object:
        """``given`` as this setting's value, or ValueError with a message that never quotes
        it."""
        value = self.convert(given if self.parse is None else self.parse(given))
        if value is not None:
            self._within_bounds(value)
        return value if self.check is None else self.check(value)

    def _within_bounds(self, value: Any) -> None:
        # Negated, so that NaN (no comparison is true) is refused.
        if self.ge is not None and not value >= self.ge:
            raise ValueError(f"must be at least {self.ge}")
        if self.gt is not None and not value > self.gt:
            raise ValueError(f"must be greater than {self.gt}")
        if self.le is not None and not value <= self.le:
            raise ValueError(f"must be at most {self.le}")


@overload
def setting(
    *,
    default: T,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    parse: Callable[[object], object] | None = None,
    check: Callable[[T], T] | None = None,
    shown: Callable[[str], str] | None = None,
) -> T: ...
@overload
def setting(
    *,
    default_factory: Callable[[], T],
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    parse: Callable[[object], object] | None = None,
    check: Callable[[T], T] | None = None,
    shown: Callable[[str], str] | None = None,
) -> T: ...
def setting(
    *,
    default: object = MISSING,
    default_factory: Callable[[], object] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    parse: Callable[[object], object] | None = None,
    check: Callable[[Any], object] | None = None,
    shown: Callable[[str], str] | None = None,
) -> Any:
    """A setting's declaration beyond its type and plain default (see :class:`SettingField`)."""
    return SettingField(
        default=default,
        default_factory=default_factory,
        ge=ge,
        gt=gt,
        le=le,
        parse=parse,
        check=check,
        shown=shown,
    )


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(setting,))
class SettingsBase:
    """Declared settings: each annotated class attribute is one, converted and checked when an
    instance is made. Unknown names are refused, so that a typo shows. The class keeps no default
    of its own: ``setting_fields`` holds the declarations."""

    setting_fields: ClassVar[Mapping[str, SettingField]] = {}
    _given: frozenset[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls, include_extras=True)
        fields: dict[str, SettingField] = {}
        for name in inspect.get_annotations(cls):
            hint = hints[name]
            if name.startswith("_") or typing.get_origin(hint) is ClassVar:
                continue
            declared = cls.__dict__.get(name, MISSING)
            if not isinstance(declared, SettingField):
                declared = SettingField(default=declared)
            annotation, metadata = hint, ()
            if typing.get_origin(hint) is typing.Annotated:
                annotation, *extras = typing.get_args(hint)
                metadata = tuple(extras)
            fields[name] = dataclasses.replace(
                declared,
                name=name,
                annotation=annotation,
                metadata=metadata,
                convert=converter(annotation),
            )
            if name in cls.__dict__:
                delattr(cls, name)
        cls.setting_fields = {**cls.setting_fields, **fields}

    def __init__(self, **values: object) -> None:
        given, errors = self._sources(values)
        self._build(given, errors, unchanged=None)

    @classmethod
    def _sources(cls, keywords: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """The values given, from wherever they come (here: the keywords only), and the
        refusals of sources that could not be read."""
        return dict(keywords), []

    def _check_together(self) -> None:
        """Checks that need several settings, after each passed its own; ValueError refuses."""

    def replace(self, **changes: object) -> Self:
        """A copy with ``changes``, checked as a new instance's values are; the sources are not
        read again, and the changed names count as given."""
        copy = object.__new__(type(self))
        copy._build(changes, [], unchanged=self)
        return copy

    @property
    def given(self) -> frozenset[str]:
        """The names of the settings some source gave, rather than left at their default."""
        return self._given

    def _build(
        self,
        given: Mapping[str, object],
        errors: list[tuple[str, str]],
        *,
        unchanged: SettingsBase | None,
    ) -> None:
        fields = type(self).setting_fields
        values: dict[str, object] = {}
        for name, field in fields.items():
            if name in given:
                try:
                    values[name] = field.value(given[name])
                except (ValueError, TypeError) as exc:
                    errors.append((name, str(exc)))
            elif unchanged is not None:
                values[name] = getattr(unchanged, name)
            elif field.required:
                errors.append((name, "is required"))
            else:
                # Not converted nor checked: a default is as declared, and checking it could load
                # what its check needs (a test checks every default passes).
                values[name] = field.default_value()
        errors.extend((name, "is no setting") for name in given if name not in fields)
        if not errors:
            self.__dict__.update(values)
            previous = frozenset() if unchanged is None else unchanged.given
            self.__dict__["_given"] = previous | {name for name in given if name in fields}
            try:
                self._check_together()
            except ValueError as exc:
                errors.append(("", str(exc)))
        if errors:
            raise SettingsError(errors)

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to {name}: settings are frozen")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete {name}: settings are frozen")

    def _values(self) -> Iterator[object]:
        return (getattr(self, name) for name in type(self).setting_fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SettingsBase) or type(other) is not type(self):
            return NotImplemented
        return tuple(self._values()) == tuple(other._values())

    def __hash__(self) -> int:
        return hash(tuple(self._values()))

    def __repr__(self) -> str:
        shown = []
        for name, field in type(self).setting_fields.items():
            value = getattr(self, name)
            if field.shown is not None and isinstance(value, str):
                value = field.shown(value)
            shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"
