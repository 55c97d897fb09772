"""Lazy exports (PEP 562) for a package whose names live in heavier modules.

``import e6auth``, ``e6auth.store`` or ``e6auth.query`` must not load SQLAlchemy, gRPC or the web
stack; a name is imported from its defining module the first time it is read, then cached in the
package so that later reads are plain attribute lookups.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str,
    exports: Mapping[str, str],
    public: Iterable[str],
    *,
    computed: Mapping[str, Callable[[], Any]] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__``: ``exports`` maps each name to the module
    that defines it; ``computed`` names are made by a function instead (``__version__``)."""
    namespace = importlib.import_module(package).__dict__
    computed = computed or {}
    listed = sorted({*public, *computed})

    def getattr_(name: str) -> Any:
        make = computed.get(name)
        if make is not None:
            value = make()
        else:
            module = exports.get(name)
            if module is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later lookups are plain attribute reads
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *listed})

    return getattr_, dir_
