"""Column types as the Hive/SQL names the connector's SQLAlchemy dialect understands.

The dialect lower-cases a ``getColumnsV2`` type, cuts it at the first ``(`` or ``<`` and maps
``bigint``, ``int``, ``double``, ``varchar``, ``boolean``, ``date``, ``timestamp``, ``decimal``…
(protocol reference §3.4); anything else becomes a string with a warning.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import types as sqltypes

__all__ = ["hive_type_name"]


def hive_type_name(type_: sqltypes.TypeEngine[Any]) -> str:
    """The Hive/SQL type name the connector's SQLAlchemy dialect maps for a column's type."""
    if isinstance(type_, sqltypes.Boolean):
        return "boolean"
    if isinstance(type_, sqltypes.SmallInteger):
        return "smallint"
    if isinstance(type_, sqltypes.BigInteger):
        return "bigint"
    if isinstance(type_, sqltypes.Integer):
        return "int"
    if isinstance(type_, sqltypes.Float):
        return "double"  # sent as DOUBLE vectors whatever the width; SQLite's REAL is a double
    if isinstance(type_, sqltypes.Numeric):
        if type_.precision is None:
            return "decimal"
        return f"decimal({type_.precision},{type_.scale or 0})"
    if isinstance(type_, sqltypes.DateTime):
        return "timestamp"
    if isinstance(type_, sqltypes.Date):
        return "date"
    if isinstance(type_, sqltypes.ARRAY):
        return f"array<{hive_type_name(type_.item_type)}>"
    if isinstance(type_, sqltypes.Text):
        return "string"
    if isinstance(type_, sqltypes.CHAR):
        return f"char({type_.length})" if type_.length else "char"
    if isinstance(type_, sqltypes.String) and type_.length:
        return f"varchar({type_.length})"
    return _name_of_python_type(type_)


_NAMES_OF_PYTHON_TYPES: dict[type, str] = {
    bool: "boolean",
    int: "bigint",
    float: "double",
    Decimal: "decimal",
    dt.datetime: "timestamp",
    dt.date: "date",
    dt.timedelta: "interval day to second",
    bytes: "binary",
}


def _name_of_python_type(type_: sqltypes.TypeEngine[Any]) -> str:
    """Dialect-specific types (PostgreSQL's INTERVAL, MONEY…) by the Python values they hold;
    text, JSON, UUID, TIME, enums and untyped columns are sent as strings."""
    try:
        python_type = type_.python_type
    except NotImplementedError:
        return "string"
    return _NAMES_OF_PYTHON_TYPES.get(python_type, "string")
