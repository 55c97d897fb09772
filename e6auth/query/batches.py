"""A result cut into batches by rows and by bytes, and each batch encoded for the wire.

The workers are shared by every user, so a batch is bounded in bytes as well as rows: one user's
wide rows must not make a worker hold hundreds of megabytes. A row's size is estimated quickly
from its values (never less than it takes on the wire); a row that the estimate puts over the
limit is measured exactly before it is refused.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator, Sequence

from e6auth.errors import QueryLimit
from e6auth.query.backend import QueryRun
from e6auth.query.wire import VectorType, encode_chunk_with_types

__all__ = ["encode_rows", "row_batches"]

_FIXED_VALUE_BYTES = 16


def row_batches(
    run: QueryRun, names: Sequence[str], *, batch_rows: int, max_batch_bytes: int
) -> Iterator[list[Sequence[object]]]:
    """The result's rows cut into batches of at most ``batch_rows`` rows and about
    ``max_batch_bytes`` bytes. Each fetch asks for as many rows as the largest row seen so
    far leaves room for, so that the driver never holds much more than a batch either."""
    pending: collections.deque[Sequence[object]] = collections.deque()
    largest = 0  # bytes of the largest row seen: 0 until the first fetch, which takes one
    number = 0
    exhausted = False
    while True:
        batch: list[Sequence[object]] = []
        size = 0
        while len(batch) < batch_rows:
            if not pending:
                if exhausted:
                    break
                room = max_batch_bytes - size
                wanted = 1 if largest == 0 else max(1, room // largest)
                fetched = run.fetch(min(wanted, batch_rows - len(batch)))
                if not fetched:
                    exhausted = True
                    break
                pending.extend(fetched)
            row_bytes = _row_bytes(pending[0])
            if row_bytes > max_batch_bytes:
                limit = max_batch_bytes
                row_bytes = sum(_exact_value_bytes(value, limit) for value in pending[0])
                if row_bytes > limit:
                    raise QueryLimit(_too_large(pending[0], names, number + 1, limit))
            largest = max(largest, row_bytes)
            if batch and size + row_bytes > max_batch_bytes:
                break
            batch.append(pending.popleft())
            size += row_bytes
            number += 1
        if not batch:
            return
        yield batch


def encode_rows(rows: Sequence[Sequence[object]]) -> tuple[bytes, tuple[VectorType, ...]]:
    """Row-major rows as one encoded batch (column-major on the wire), with each column's type."""
    return encode_chunk_with_types(list(zip(*rows, strict=True)))


def _value_bytes(value: object) -> int:
    """At least what a value takes in a batch, quickly: text and bytes by their length, times
    the most UTF-8 can make of a character (4) or the wire's decoding of a byte that is not
    UTF-8 (3: U+FFFD) unless they are ASCII; containers by their JSON; a fixed few bytes for
    everything else."""
    if isinstance(value, str):
        return len(value) * (1 if value.isascii() else 4) + 4
    if isinstance(value, bytes | bytearray):
        return len(value) * (1 if value.isascii() else 3) + 4
    if isinstance(value, memoryview):
        return value.nbytes * 3 + 4
    if isinstance(value, dict | list):
        return len(json.dumps(value, default=str).encode()) + 4
    return _FIXED_VALUE_BYTES


def _exact_value_bytes(value: object, limit: int) -> int:
    """What a value takes in a batch, exactly for text and bytes up to ``limit``: for a row
    that the quick bound puts over the limit. Text and bytes take at least their length, so a
    value longer than the limit is not copied to be measured."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        size = value.nbytes if isinstance(value, memoryview) else len(value)
        if size > limit:
            return size + 4
        if isinstance(value, str):
            return len(value.encode("utf-8", "replace")) + 4
        return len(bytes(value).decode("utf-8", "replace").encode()) + 4
    return _value_bytes(value)


def _row_bytes(row: Sequence[object]) -> int:
    return sum(map(_value_bytes, row))


def _too_large(row: Sequence[object], names: Sequence[str], number: int, limit: int) -> str:
    sizes = [_exact_value_bytes(value, limit) for value in row]
    column = max(range(len(sizes)), key=sizes.__getitem__)
    return (
        f"row {number} is too large: its value in column {names[column][:64]!r} takes at "
        f"least {sizes[column]:,} bytes, over the gateway's limit of {limit:,} bytes per batch "
        "(max_batch_bytes)"
    )
