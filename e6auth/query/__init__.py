"""The query engine behind the gateway: statements on a SQLAlchemy database (or any
:class:`QueryBackend`), with per-user limits and isolation, and results in the e6data
connector's wire format.

Exported lazily (PEP 562): ``e6auth.query.roles`` is read by the settings, which must not load
SQLAlchemy to check a role template; the backends and the manager load it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from e6auth._exports import lazy_exports

if TYPE_CHECKING:
    from e6auth.query.backend import DryRun, QueryBackend, QueryRun
    from e6auth.query.demo import create_demo_database
    from e6auth.query.queries import QueryManager
    from e6auth.query.sqlalchemy_backend import SQLAlchemyBackend
    from e6auth.query.wire import VectorType, encode_chunk, encode_metadata

__all__ = [
    "DryRun",
    "QueryBackend",
    "QueryManager",
    "QueryRun",
    "SQLAlchemyBackend",
    "VectorType",
    "create_demo_database",
    "encode_chunk",
    "encode_metadata",
]

_EXPORTS = {
    "DryRun": "e6auth.query.backend",
    "QueryBackend": "e6auth.query.backend",
    "QueryRun": "e6auth.query.backend",
    "SQLAlchemyBackend": "e6auth.query.sqlalchemy_backend",
    "create_demo_database": "e6auth.query.demo",
    "QueryManager": "e6auth.query.queries",
    "VectorType": "e6auth.query.wire",
    "encode_chunk": "e6auth.query.wire",
    "encode_metadata": "e6auth.query.wire",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
