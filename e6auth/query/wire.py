"""The e6data connector's result encodings: the metadata stream and Thrift ``Chunk`` batches.

Hand-written rather than built with the thrift library: its writer makes a Python call per value,
while ``struct`` packs a whole column at once. The layouts are those of the connector protocol
reference (§3.1 metadata, §3.2 chunks); ``tests/test_wire.py`` checks them against the connector's
own decoder.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import struct
from collections.abc import Callable, Sequence
from decimal import Decimal

__all__ = [
    "VectorType",
    "encode_chunk",
    "encode_chunk_with_types",
    "encode_metadata",
    "vector_type",
    "vector_type_name",
]


class VectorType(enum.IntEnum):
    """The connector's ``VectorType``. ``INT96`` and ``TIMESTAMP`` exist but are never sent: the
    connector has no decoder for them."""

    BINARY = 0
    BOOLEAN = 1
    DOUBLE = 2
    FLOAT = 3
    INT96 = 4
    INTEGER = 5
    LONG = 6
    STRING = 7
    DATE = 8
    DATETIME = 9
    TIMESTAMP = 10
    STRUCT = 11
    MAP = 12
    ARRAY = 13
    NULL = 14
    TIMESTAMP_TZ = 15
    DECIMAL128 = 16
    INTERVAL_DAY_SECOND = 17


MAX_UTF_BYTES = 0xFFFF
I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_MICROS_PER_DAY = 86_400_000_000

# Thrift TBinaryProtocol type codes.
_T_BOOL = 2
_T_DOUBLE = 4
_T_I32 = 8
_T_I64 = 10
_T_STRING = 11
_T_STRUCT = 12
_T_LIST = 15

# Data union field ids (which member of the union carries the column).
_DATA_BOOL = 1
_DATA_INT64 = 3
_DATA_DATE = 4
_DATA_FLOAT64 = 6
_DATA_VARCHAR = 7
_DATA_TIME = 16
_DATA_DECIMAL128 = 17

_pack_i32 = struct.Struct(">i").pack
_pack_u16 = struct.Struct(">H").pack


def _field(thrift_type: int, field_id: int) -> bytes:
    return struct.pack(">bh", thrift_type, field_id)


_CHUNK_SIZE = _field(_T_I32, 1)
_CHUNK_VECTORS = _field(_T_LIST, 2) + bytes([_T_STRUCT])
_VECTOR_SIZE = _field(_T_I32, 1)
_VECTOR_TYPE = _field(_T_I32, 2)
_VECTOR_NULLS = _field(_T_LIST, 3) + bytes([_T_BOOL])
_VECTOR_DATA = _field(_T_STRUCT, 4)
_VECTOR_NOT_CONSTANT = _field(_T_BOOL, 5) + b"\x00"
_STOP = b"\x00"


# ---------------------------------------------------------------------------------------------
# Metadata


def encode_metadata(row_count: int, columns: Sequence[tuple[str, str]]) -> bytes:
    """``getResultMetadata``'s bytes: i64 row count (-1 if unknown), i32 column count, then per
    column the name, type, zone and format as u16-length-prefixed standard UTF-8."""
    parts = [struct.pack(">qi", row_count, len(columns))]
    for name, type_name in columns:
        parts.append(_utf(name))
        parts.append(_utf(type_name))
        parts.append(b"\x00\x00\x00\x00")  # zone and format: empty, the client ignores them
    return b"".join(parts)


def _utf(text: str) -> bytes:
    # Standard UTF-8, not Java's modified UTF-8: the client decodes strictly.
    data = text.encode("utf-8", "replace")
    if len(data) > MAX_UTF_BYTES:
        data = data[:MAX_UTF_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return _pack_u16(len(data)) + data


# ---------------------------------------------------------------------------------------------
# Choosing a vector type for one column of one batch


class _Kind(enum.Enum):
    """What a Python value is, for choosing its column's vector type."""

    NULL = enum.auto()
    BOOL = enum.auto()
    INT = enum.auto()
    FLOAT = enum.auto()
    DECIMAL = enum.auto()
    STR = enum.auto()
    BYTES = enum.auto()
    DATE = enum.auto()
    NAIVE = enum.auto()  # datetime without a UTC offset
    AWARE = enum.auto()
    TIME = enum.auto()
    DELTA = enum.auto()
    JSON = enum.auto()
    OTHER = enum.auto()


_KIND_OF_TYPE: dict[type, _Kind] = {
    type(None): _Kind.NULL,
    bool: _Kind.BOOL,
    int: _Kind.INT,
    float: _Kind.FLOAT,
    Decimal: _Kind.DECIMAL,
    str: _Kind.STR,
    bytes: _Kind.BYTES,
    bytearray: _Kind.BYTES,
    memoryview: _Kind.BYTES,
    dt.date: _Kind.DATE,
    dt.time: _Kind.TIME,
    dt.timedelta: _Kind.DELTA,
    dict: _Kind.JSON,
    list: _Kind.JSON,
}
# In subclass order: datetime before date.
_KIND_OF_BASE: tuple[tuple[type, _Kind], ...] = (
    (bool, _Kind.BOOL),
    (int, _Kind.INT),
    (float, _Kind.FLOAT),
    (Decimal, _Kind.DECIMAL),
    (str, _Kind.STR),
    (bytes, _Kind.BYTES),
    (dt.datetime, _Kind.NAIVE),  # naive or aware is decided per value
    (dt.date, _Kind.DATE),
    (dt.time, _Kind.TIME),
    (dt.timedelta, _Kind.DELTA),
    (dict, _Kind.JSON),
    (list, _Kind.JSON),
)


def _kind_of_type(cls: type) -> _Kind:
    """The kind of a class; subclasses (an IntEnum, a pendulum DateTime) count as their base."""
    kind = _KIND_OF_TYPE.get(cls)
    if kind is not None:
        return kind
    for base, base_kind in _KIND_OF_BASE:
        if issubclass(cls, base):
            return base_kind
    return _Kind.OTHER


def _kinds(values: Sequence[object]) -> set[_Kind]:
    kinds = {_kind_of_type(cls) for cls in {type(value) for value in values}}
    kinds.discard(_Kind.NULL)
    if _Kind.NAIVE in kinds:
        kinds.discard(_Kind.NAIVE)
        kinds.update(
            _Kind.AWARE if _is_aware(value) else _Kind.NAIVE
            for value in values
            if isinstance(value, dt.datetime)
        )
    return kinds


def _is_aware(value: dt.datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() is not None


_TYPE_OF_KIND = {
    _Kind.BOOL: VectorType.BOOLEAN,
    _Kind.FLOAT: VectorType.DOUBLE,
    _Kind.DECIMAL: VectorType.DECIMAL128,
    _Kind.STR: VectorType.STRING,
    _Kind.BYTES: VectorType.BINARY,
    _Kind.DATE: VectorType.DATE,
    _Kind.NAIVE: VectorType.DATETIME,
    _Kind.AWARE: VectorType.TIMESTAMP_TZ,
    _Kind.TIME: VectorType.STRING,
    _Kind.DELTA: VectorType.INTERVAL_DAY_SECOND,
    _Kind.JSON: VectorType.STRING,
    _Kind.OTHER: VectorType.STRING,
}


def vector_type(values: Sequence[object]) -> VectorType:
    """The vector type one batch of one column is sent as."""
    kinds = _kinds(values)
    if not kinds:
        return VectorType.NULL
    if kinds == {_Kind.INT}:
        return VectorType.LONG if _fits_i64(values) else VectorType.DECIMAL128
    if len(kinds) == 1:
        return _TYPE_OF_KIND[kinds.pop()]
    if kinds == {_Kind.INT, _Kind.FLOAT}:
        return VectorType.DOUBLE if _fits_double(values) else VectorType.STRING
    if kinds == {_Kind.INT, _Kind.DECIMAL}:
        return VectorType.DECIMAL128  # both exact: keep them exact
    if kinds == {_Kind.NAIVE, _Kind.AWARE}:
        return VectorType.TIMESTAMP_TZ  # naive values are taken as UTC either way
    return VectorType.STRING


def vector_type_name(values: Sequence[object]) -> str:
    """The metadata type name for one column of a batch, e.g. ``LONG`` or ``STRING``."""
    return vector_type(values).name


def _fits_double(values: Sequence[object]) -> bool:
    try:
        for value in values:
            if isinstance(value, int):
                float(value)
    except OverflowError:
        return False
    return True


def _fits_i64(values: Sequence[object]) -> bool:
    numbers = [value for value in values if isinstance(value, int)]
    return min(numbers) >= I64_MIN and max(numbers) <= I64_MAX


# ---------------------------------------------------------------------------------------------
# Chunks


def encode_chunk(columns: Sequence[Sequence[object]]) -> bytes:
    """One Thrift ``Chunk`` from column-major values (every column the same length, >= 1 row:
    a zero-row chunk means "end of results" to the client)."""
    return encode_chunk_with_types(columns)[0]


def encode_chunk_with_types(
    columns: Sequence[Sequence[object]],
) -> tuple[bytes, tuple[VectorType, ...]]:
    """Like :func:`encode_chunk`, also returning the vector type chosen for each column."""
    if not columns:
        raise ValueError("a chunk needs at least one column")
    size = len(columns[0])
    if size == 0:
        raise ValueError("a chunk needs at least one row: an empty chunk ends the results")
    if any(len(column) != size for column in columns):
        raise ValueError("all columns of a chunk must have the same length")
    parts = [_CHUNK_SIZE, _pack_i32(size), _CHUNK_VECTORS, _pack_i32(len(columns))]
    types = []
    for column in columns:
        chosen = vector_type(column)
        types.append(chosen)
        parts.append(_vector(chosen, column, _ENCODERS[chosen](column)))
    parts.append(_STOP)
    return b"".join(parts), tuple(types)


def _vector(kind: VectorType, values: Sequence[object], data: bytes) -> bytes:
    size = _pack_i32(len(values))
    nulls = bytes([value is None for value in values])
    head = b"".join((_VECTOR_SIZE, size, _VECTOR_TYPE, _pack_i32(kind), _VECTOR_NULLS, size, nulls))
    if data:
        head += _VECTOR_DATA + data
    return head + _VECTOR_NOT_CONSTANT + _STOP


def _data(member: int, element_type: int, count: int, elements: bytes, extra: bytes = b"") -> bytes:
    """A Data union holding one list-carrying struct: ``member`` { 1: list<element_type> }."""
    return b"".join(
        (
            _field(_T_STRUCT, member),
            _field(_T_LIST, 1),
            bytes([element_type]),
            _pack_i32(count),
            elements,
            extra,
            _STOP,  # end of the member struct
            _STOP,  # end of the Data union
        )
    )


def _i64_list(values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}q", *values)


def _strings(texts: Sequence[bytes]) -> bytes:
    parts: list[bytes] = [b""] * (2 * len(texts))
    parts[0::2] = map(_pack_i32, map(len, texts))
    parts[1::2] = texts
    return b"".join(parts)


def _encode_null(values: Sequence[object]) -> bytes:
    return b""  # a NULL vector carries no data


def _encode_bool(values: Sequence[object]) -> bytes:
    return _data(_DATA_BOOL, _T_BOOL, len(values), bytes([value is True for value in values]))


def _encode_long(values: Sequence[object]) -> bytes:
    numbers = [0 if value is None else value for value in values]
    return _data(_DATA_INT64, _T_I64, len(values), _i64_list(numbers))  # type: ignore[arg-type]


def _encode_double(values: Sequence[object]) -> bytes:
    numbers = [0.0 if value is None else float(value) for value in values]  # type: ignore[arg-type]
    return _data(_DATA_FLOAT64, _T_DOUBLE, len(values), struct.pack(f">{len(values)}d", *numbers))


def _decimal_text(value: object) -> bytes:
    if isinstance(value, Decimal) and not value.is_finite():
        # The client parses text only if it holds a digit or one of ".-+eE": "NaN" and
        # "Infinity" would silently come back as 0, "+NaN" and "+Infinity" come back exact.
        text = str(value)
        return (text if text.startswith("-") else "+" + text).encode("ascii")
    return str(value).encode("ascii")


def _encode_decimal(values: Sequence[object]) -> bytes:
    # ASCII decimal strings: exact at any precision (the 16-byte form is rounded to 28 digits).
    texts = [b"" if value is None else _decimal_text(value) for value in values]
    return _data(_DATA_DECIMAL128, _T_STRING, len(values), _strings(texts))


def _encode_varchar(values: Sequence[object], render: Callable[[object], str]) -> bytes:
    texts = [b"" if value is None else render(value).encode("utf-8", "replace") for value in values]
    return _data(_DATA_VARCHAR, _T_STRING, len(values), _strings(texts))


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _encode_string(values: Sequence[object]) -> bytes:
    return _encode_varchar(values, _text)


def _encode_date(values: Sequence[object]) -> bytes:
    micros = [
        0 if value is None else (value.toordinal() - _EPOCH_ORDINAL) * _MICROS_PER_DAY  # type: ignore[attr-defined]
        for value in values
    ]
    return _data(_DATA_DATE, _T_I64, len(values), _i64_list(micros))


def _micros(delta: dt.timedelta) -> int:
    return delta.days * _MICROS_PER_DAY + delta.seconds * 1_000_000 + delta.microseconds


def _epoch_micros(value: dt.datetime) -> int:
    if _is_aware(value):
        return _micros(value - _EPOCH_UTC)
    return _micros(value.replace(tzinfo=None) - _EPOCH)  # naive means UTC


def _encode_datetime(values: Sequence[object]) -> bytes:
    micros = [0 if value is None else _epoch_micros(value) for value in values]  # type: ignore[arg-type]
    return _data(_DATA_TIME, _T_I64, len(values), _i64_list(micros))


def _zone(value: object) -> bytes:
    offset = value.utcoffset() if isinstance(value, dt.datetime) else None
    seconds = 0 if offset is None else int(offset.total_seconds())
    # The client reads whole minutes only; a seconds part (old LMT offsets) is dropped.
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}".encode("ascii")


def _encode_timestamp_tz(values: Sequence[object]) -> bytes:
    micros = [0 if value is None else _epoch_micros(value) for value in values]  # type: ignore[arg-type]
    zones = [_zone(value) for value in values]
    zone_list = _field(_T_LIST, 2) + bytes([_T_STRING]) + _pack_i32(len(zones)) + _strings(zones)
    return _data(_DATA_TIME, _T_I64, len(values), _i64_list(micros), zone_list)


def _encode_interval(values: Sequence[object]) -> bytes:
    micros = [0 if value is None else _micros(value) for value in values]  # type: ignore[arg-type]
    return _data(_DATA_INT64, _T_I64, len(values), _i64_list(micros))


_ENCODERS: dict[VectorType, Callable[[Sequence[object]], bytes]] = {
    VectorType.NULL: _encode_null,
    VectorType.BOOLEAN: _encode_bool,
    VectorType.LONG: _encode_long,
    VectorType.DOUBLE: _encode_double,
    VectorType.DECIMAL128: _encode_decimal,
    VectorType.STRING: _encode_string,
    VectorType.BINARY: _encode_string,
    VectorType.DATE: _encode_date,
    VectorType.DATETIME: _encode_datetime,
    VectorType.TIMESTAMP_TZ: _encode_timestamp_tz,
    VectorType.INTERVAL_DAY_SECOND: _encode_interval,
}
