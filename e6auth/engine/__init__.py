"""The gateway's query endpoint: statements on a SQLAlchemy database (or any
:class:`QueryBackend`), results in the e6data connector's wire format."""

from __future__ import annotations

from e6auth.engine.backend import DryRun, QueryBackend, QueryRun, SQLAlchemyBackend
from e6auth.engine.demo import create_demo_database
from e6auth.engine.queries import QueryManager
from e6auth.engine.wire import VectorType, encode_chunk, encode_metadata

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
