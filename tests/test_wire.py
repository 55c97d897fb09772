"""The result encodings, checked byte for byte against the protocol reference and value for value
against the real connector's decoder.

The connector is never imported here: its generated protobuf messages clash with ours in one
process. One subprocess decodes every case at once.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from e6auth.query.wire import (
    I64_MAX,
    I64_MIN,
    VectorType,
    encode_chunk,
    encode_chunk_with_types,
    encode_metadata,
    vector_type,
    vector_type_name,
)

V = VectorType
UTC = dt.UTC


def tz(hours: int, minutes: int = 0) -> dt.timezone:
    sign = -1 if hours < 0 else 1
    return dt.timezone(sign * dt.timedelta(hours=abs(hours), minutes=minutes))


# name: (one column's values, the vector type, what the connector returns for each value)
COLUMNS: dict[str, tuple[list[Any], VectorType, list[Any]]] = {
    "ints": (
        [0, 1, -1, I64_MIN, I64_MAX, None, 42],
        V.LONG,
        [0, 1, -1, I64_MIN, I64_MAX, None, 42],
    ),
    "ints_beyond_i64": (
        [2**63, -(2**63) - 1, None, 7, 10**30],
        V.DECIMAL128,
        [
            Decimal(2**63),
            Decimal(-(2**63) - 1),
            None,
            Decimal(7),
            Decimal(10**30),
        ],
    ),
    "floats": (
        [0.0, -0.0, 1.5, 1e308, -1e-308, 5e-324, math.inf, -math.inf, math.nan, None],
        V.DOUBLE,
        [0.0, -0.0, 1.5, 1e308, -1e-308, 5e-324, math.inf, -math.inf, math.nan, None],
    ),
    "ints_and_floats": ([1, 2.5, None, -3], V.DOUBLE, [1.0, 2.5, None, -3.0]),
    "huge_int_beside_float": ([10**400, 1.5], V.STRING, [str(10**400), "1.5"]),
    "strings": (
        [
            "",
            "plain",
            "é",
            "李雷",
            "🎉 party",
            "nul\x00inside",
            "tab\tnew\nline",
            None,
            "ω" * 20000,
        ],
        V.STRING,
        [
            "",
            "plain",
            "é",
            "李雷",
            "🎉 party",
            "nul\x00inside",
            "tab\tnew\nline",
            None,
            "ω" * 20000,
        ],
    ),
    "lone_surrogate": (["a\ud800b"], V.STRING, ["a?b"]),
    "booleans": ([True, False, None, True], V.BOOLEAN, [True, False, None, True]),
    "dates": (
        [
            dt.date(1970, 1, 1),
            dt.date(2024, 2, 29),
            dt.date(1, 1, 1),
            dt.date(9999, 12, 31),
            dt.date(1969, 12, 31),
            None,
        ],
        V.DATE,
        ["1970-01-01", "2024-02-29", "0001-01-01", "9999-12-31", "1969-12-31", None],
    ),
    "timestamps": (
        [
            dt.datetime(2024, 1, 15, 10, 20, 30, 123456),
            dt.datetime(1969, 12, 31, 23, 59, 59, 999999),
            dt.datetime(1, 1, 1),
            dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
            None,
        ],
        V.DATETIME,
        [
            "2024-01-15T10:20:30.123+00:00",
            "1969-12-31T23:59:59.999+00:00",
            "0001-01-01T00:00:00.000+00:00",
            "9999-12-31T23:59:59.999+00:00",
            None,
        ],
    ),
    "aware_timestamps": (
        [
            dt.datetime(2024, 1, 15, 10, 20, 30, tzinfo=tz(5, 30)),
            dt.datetime(2024, 1, 15, 10, 20, 30, 500000, tzinfo=tz(-8)),
            dt.datetime(2024, 1, 15, 10, 20, 30, tzinfo=UTC),
            dt.datetime(2024, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")),
            dt.datetime(2024, 1, 1, 0, 0, tzinfo=tz(-3, 30)),
            None,
        ],
        V.TIMESTAMP_TZ,
        [
            "2024-01-15T10:20:30.000+05:30",
            "2024-01-15T10:20:30.500-08:00",
            "2024-01-15T10:20:30.000+00:00",
            "2024-07-01T12:00:00.000+02:00",
            "2024-01-01T00:00:00.000-03:30",
            None,
        ],
    ),
    "naive_beside_aware": (
        [dt.datetime(2024, 1, 1, 12, 0), dt.datetime(2024, 1, 1, 12, 0, tzinfo=tz(1))],
        V.TIMESTAMP_TZ,
        ["2024-01-01T12:00:00.000+00:00", "2024-01-01T12:00:00.000+01:00"],
    ),
    "decimals": (
        [
            Decimal("12345678901234567890123456789012.345678"),
            Decimal("99999999999999999999999999999999999999"),
            Decimal("-0.001"),
            Decimal("0"),
            Decimal("1E+5"),
            Decimal("NaN"),
            Decimal("Infinity"),
            Decimal("-Infinity"),
            None,
        ],
        V.DECIMAL128,
        [
            Decimal("12345678901234567890123456789012.345678"),
            Decimal("99999999999999999999999999999999999999"),
            Decimal("-0.001"),
            Decimal("0"),
            Decimal("1E+5"),
            Decimal("NaN"),
            Decimal("Infinity"),
            Decimal("-Infinity"),
            None,
        ],
    ),
    "ints_and_decimals": (
        [1, Decimal("2.5"), None],
        V.DECIMAL128,
        [Decimal(1), Decimal("2.5"), None],
    ),
    "binary": (
        [b"abc", b"\xff", memoryview(b"xy"), bytearray(b"z"), b"", None],
        V.BINARY,
        ["abc", "\ufffd", "xy", "z", "", None],
    ),
    "times": (
        [dt.time(1, 2, 3), dt.time(23, 59, 59, 4500), dt.time(12, 0, tzinfo=UTC), None],
        V.STRING,
        ["01:02:03", "23:59:59.004500", "12:00:00+00:00", None],
    ),
    "intervals": (
        [
            dt.timedelta(days=1, seconds=5, microseconds=7),
            dt.timedelta(microseconds=-1),
            dt.timedelta(0),
            dt.timedelta(days=-3),
            None,
        ],
        V.INTERVAL_DAY_SECOND,
        [
            dt.timedelta(days=1, seconds=5, microseconds=7),
            dt.timedelta(microseconds=-1),
            dt.timedelta(0),
            dt.timedelta(days=-3),
            None,
        ],
    ),
    "json": (
        [{"a": [1, "é"], "b": None}, [1, 2], None],
        V.STRING,
        ['{"a": [1, "é"], "b": null}', "[1, 2]", None],
    ),
    "uuids": (
        [uuid.UUID("12345678-1234-5678-1234-567812345678"), None],
        V.STRING,
        ["12345678-1234-5678-1234-567812345678", None],
    ),
    "mixed": ([1, "a", None, 2.5], V.STRING, ["1", "a", None, "2.5"]),
    "bools_and_ints": ([True, 1], V.STRING, ["True", "1"]),
    "all_null": ([None, None, None], V.NULL, [None, None, None]),
}

LONG_NAME = "x" * 70_000
ACCENTED_NAME = "é" * 40_000  # 80,000 bytes: truncated to 32,767 whole characters
METADATA_COLUMNS = [
    ("", "LONG"),
    ("nul\x00", "STRING"),
    ("🎉é", "DOUBLE"),
    (LONG_NAME, "STRING"),
    (ACCENTED_NAME, "STRING"),
]

# Several columns in one chunk, and one column changing type between batches.
TABLE: list[list[Any]] = [
    [1, 2, None],
    ["a", None, "c"],
    [None, None, None],
    [Decimal("1.1"), None, Decimal("-2")],
    [True, None, False],
    [dt.date(2024, 1, 1), None, dt.date(2024, 1, 2)],
    [dt.datetime(2024, 1, 1, 0, 0, 0, 1000), None, dt.datetime(2024, 1, 1)],
]
TABLE_ROWS = [
    [1, "a", None, Decimal("1.1"), True, "2024-01-01", "2024-01-01T00:00:00.001+00:00"],
    [2, None, None, None, None, None, None],
    [None, "c", None, Decimal("-2"), False, "2024-01-02", "2024-01-01T00:00:00.000+00:00"],
]
BATCHES_OF_ONE_COLUMN: list[list[list[Any]]] = [[[1, 2]], [[1.5, None]], [["text"]]]


_DECODER = r"""
import json, sys
from io import BytesIO
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport
from e6data_python_connector.datainputstream import get_query_columns_info, read_rows_from_chunk
from e6data_python_connector.e6x_vector.ttypes import Chunk

def vectors(payload):
    chunk = Chunk()
    chunk.read(TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(payload)))
    return [[v.size, v.vectorType, None if v.nullSet is None else len(v.nullSet),
             v.isConstantVector] for v in chunk.vectors]

out = {}
for name, case in json.load(sys.stdin).items():
    rowcount, fields = get_query_columns_info(BytesIO(bytes.fromhex(case["metadata"])))
    chunks = [bytes.fromhex(chunk) for chunk in case["chunks"]]
    result = {
        "rowcount": rowcount,
        "columns": [[f.name, f.field_type, f.zone, f.date_format] for f in fields],
        "vectors": [vectors(chunk) for chunk in chunks],
    }
    for strict in (False, True):
        rows = []
        for chunk in chunks:
            rows.extend(read_rows_from_chunk(fields, chunk, strict=strict) or [])
        result["strict" if strict else "rows"] = repr(rows)
    out[name] = result
json.dump(out, sys.stdout)
"""


def decode_with_connector(cases: dict[str, tuple[bytes, Sequence[bytes]]]) -> dict[str, Any]:
    """What the e6data connector makes of each (metadata, chunks) case, in a subprocess."""
    payload = {
        name: {"metadata": metadata.hex(), "chunks": [chunk.hex() for chunk in chunks]}
        for name, (metadata, chunks) in cases.items()
    }
    done = subprocess.run(
        [sys.executable, "-c", _DECODER],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    decoded: dict[str, Any] = json.loads(done.stdout)
    return decoded


def _single_column_case(values: list[Any]) -> tuple[bytes, list[bytes]]:
    chunk, types = encode_chunk_with_types([values])
    return encode_metadata(len(values), [("c", types[0].name)]), [chunk]


@pytest.fixture(scope="module")
def decoded() -> dict[str, Any]:
    cases: dict[str, tuple[bytes, Sequence[bytes]]] = {
        name: _single_column_case(values) for name, (values, _, _) in COLUMNS.items()
    }
    cases["metadata"] = (encode_metadata(2**40, METADATA_COLUMNS), [])
    table_metadata = encode_metadata(-1, [(f"c{i}", "X") for i in range(len(TABLE))])
    cases["table"] = (table_metadata, [encode_chunk(TABLE)])
    cases["batches"] = (
        encode_metadata(-1, [("c", "LONG")]),
        [encode_chunk(batch) for batch in BATCHES_OF_ONE_COLUMN],
    )
    return decode_with_connector(cases)


# --- byte-exact layouts ---------------------------------------------------------------------


def test_chunk_matches_the_references_worked_example_byte_for_byte() -> None:
    expected = bytes.fromhex(
        "08 0001 00000002"
        "0f 0002 0c 00000002"
        "08 0001 00000002  08 0002 00000006  0f 0003 02 00000002 00 01"
        "0c 0004 0c 0003 0f 0001 0a 00000002 0000000000000007 0000000000000000 00 00"
        "02 0005 00 00"
        "08 0001 00000002  08 0002 00000007  0f 0003 02 00000002 00 01"
        "0c 0004 0c 0007 0f 0001 0b 00000002 00000002 6162 00000000 00 00"
        "02 0005 00 00"
        "00"
    )
    assert len(expected) == 132
    assert encode_chunk([[7, None], ["ab", None]]) == expected


def test_metadata_matches_the_references_example_byte_for_byte() -> None:
    expected = bytes.fromhex(
        "00 00 00 00 00 00 00 02  00 00 00 02"
        "00 02 69 64  00 04 4c 4f 4e 47  00 00  00 00"
        "00 04 6e 61 6d 65  00 06 53 54 52 49 4e 47  00 00  00 00"
    )
    assert encode_metadata(2, [("id", "LONG"), ("name", "STRING")]) == expected


def test_metadata_of_a_statement_without_columns() -> None:
    assert encode_metadata(-1, []) == bytes.fromhex("ffffffffffffffff 00000000")


# --- choosing vector types ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(COLUMNS))
def test_each_column_gets_its_vector_type(name: str) -> None:
    values, expected, _ = COLUMNS[name]
    assert vector_type(values) is expected
    assert vector_type_name(values) == expected.name
    assert encode_chunk_with_types([values])[1] == (expected,)


def test_types_the_connector_cannot_decode_are_never_sent() -> None:
    sent = {encode_chunk_with_types([values])[1][0] for values, _, _ in COLUMNS.values()}
    assert not sent & {V.TIMESTAMP, V.INT96}


def test_type_is_chosen_per_batch() -> None:
    assert [encode_chunk_with_types(batch)[1] for batch in BATCHES_OF_ONE_COLUMN] == [
        (V.LONG,),
        (V.DOUBLE,),
        (V.STRING,),
    ]


@pytest.mark.parametrize(
    "columns",
    [[], [[]], [[1, 2], [1]]],
    ids=["no columns", "no rows (would read as the end)", "ragged"],
)
def test_malformed_chunks_are_refused(columns: list[list[object]]) -> None:
    with pytest.raises(ValueError, match="chunk"):
        encode_chunk(columns)


# --- what the real connector decodes --------------------------------------------------------


@pytest.mark.parametrize("name", list(COLUMNS))
def test_connector_decodes_each_type_exactly(name: str, decoded: dict[str, Any]) -> None:
    values, kind, expected = COLUMNS[name]
    result = decoded[name]
    expected_rows = repr([[value] for value in expected])
    assert result["rows"] == expected_rows
    assert result["strict"] == expected_rows  # the V2/OAuth decoder checks more
    assert result["rowcount"] == len(values)
    assert result["columns"] == [["c", kind.name, "", ""]]


@pytest.mark.parametrize("name", list(COLUMNS))
def test_every_vector_carries_a_full_null_set(name: str, decoded: dict[str, Any]) -> None:
    values, kind, _ = COLUMNS[name]
    assert decoded[name]["vectors"] == [[[len(values), int(kind), len(values), False]]]


def test_connector_decodes_a_chunk_of_many_columns(decoded: dict[str, Any]) -> None:
    assert decoded["table"]["rows"] == repr(TABLE_ROWS)
    assert decoded["table"]["strict"] == repr(TABLE_ROWS)


def test_connector_decodes_batches_whose_types_differ(decoded: dict[str, Any]) -> None:
    assert decoded["batches"]["rows"] == repr([[1], [2], [1.5], [None], ["text"]])


def test_connector_reads_metadata_names_exactly_or_truncated_at_a_character(
    decoded: dict[str, Any],
) -> None:
    result = decoded["metadata"]
    assert result["rowcount"] == 2**40
    assert result["columns"] == [
        ["", "LONG", "", ""],
        ["nul\x00", "STRING", "", ""],
        ["🎉é", "DOUBLE", "", ""],
        ["x" * 65535, "STRING", "", ""],
        ["é" * 32767, "STRING", "", ""],
    ]
