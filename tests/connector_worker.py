"""Drives the real e6data connector for ``tests/test_connector.py``, in a process of its own.

The connector registers unpackaged protobuf messages (``QueryEngineService``,
``AuthenticateRequest`` …) under the same names as e6auth's own stubs, so it must never be imported
into the pytest process.
Run this file with ``sys.executable``: it reads one JSON command per line on stdin and answers each
with one JSON line on stdout::

    {"op": "connect", "id": "c1", "host": "127.0.0.1", "port": 50051, "username": "alice", ...}
    {"op": "execute", "conn": "c1", "sql": "SELECT 1"}
      -> {"ok": true, "rows": [[1]], "description": [["1", "LONG"]], "query_id": "…", ...}
      -> {"ok": false, "error": {"type": "_InactiveRpcError", "code": "UNAUTHENTICATED",
                                 "details": "invalid credentials"}}

Cells are tagged where JSON would lose something (floats, decimals, dates, bytes), so the test sees
exactly what the connector returned; :func:`decode_value` undoes :func:`encode_value`. Importing
this module is safe anywhere: only :func:`main` imports the connector.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# -- the value codec (stdlib only: the test process imports it) -------------------------------


def encode_value(value: object) -> object:
    """One cell as JSON, exactly: ``bool``, ``int``, ``str`` and ``None`` as themselves, the rest
    tagged (``{"float": "0.1"}`` holds the ``repr``, which round-trips every double)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, list | tuple):
        return {"list": [encode_value(item) for item in value]}
    return {"other": repr(value), "type": type(value).__name__}


def decode_value(value: object) -> object:
    """The Python value :func:`encode_value` encoded (``other`` stays a tagged dict)."""
    if not isinstance(value, dict):
        return value
    [(tag, payload), *_] = value.items()
    decoders: dict[str, Callable[[Any], object]] = {
        "float": float,
        "decimal": Decimal,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "time": dt.time.fromisoformat,
        "timedelta": lambda parts: dt.timedelta(parts[0], parts[1], parts[2]),
        "bytes": base64.b64decode,
        "list": lambda items: [decode_value(item) for item in items],
    }
    decoder = decoders.get(tag)
    return value if decoder is None else decoder(payload)


def encode_rows(rows: Any) -> list[list[object]]:
    return [[encode_value(cell) for cell in row] for row in rows or []]


def decode_rows(rows: list[list[object]]) -> list[list[object]]:
    return [[decode_value(cell) for cell in row] for row in rows]


# -- the worker --------------------------------------------------------------------------------


def describe_error(exc: BaseException) -> dict[str, object]:
    """What the connector raised: a gRPC error's code and details, else the exception's text."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    if callable(code) and callable(details):
        status = code()
        return {
            "type": type(exc).__name__,
            "code": getattr(status, "name", str(status)),
            "details": details(),
        }
    return {"type": type(exc).__name__, "message": str(exc)}


CONNECT_OPTIONS = (
    "username",
    "password",
    "database",
    "catalog",
    "access_token",
    "secure",
    "ssl_cert",
    "grpc_options",
    "client_id",
    "client_secret",
    "token_url",
)


class Worker:
    """The commands. Each returns the answer's fields; an exception becomes ``ok: false``."""

    def __init__(self) -> None:
        self.connections: dict[str, Any] = {}
        self.cursors: dict[str, Any] = {}

    def connect(self, command: dict[str, Any]) -> dict[str, object]:
        self.connections[command["id"]] = self._connection(command)
        return {}

    @staticmethod
    def _connection(command: dict[str, Any]) -> Any:
        from e6data_python_connector import Connection  # type: ignore[import-untyped]

        options = {name: command[name] for name in CONNECT_OPTIONS if name in command}
        return Connection(host=command["host"], port=command["port"], **options)

    def execute(self, command: dict[str, Any]) -> dict[str, object]:
        """Run one statement on a fresh cursor (the connector keeps a cursor's description from
        its first statement) and read it out; with ``keep``, leave it unread under that name.
        ``parameters`` are the connector's own (pyformat, inlined on the client)."""
        cursor = self.connections[command["conn"]].cursor()
        kept = False
        try:
            query_id = cursor.execute(command["sql"], command.get("parameters"))
            answer: dict[str, object] = {
                "query_id": query_id,
                "engine_ip": cursor._engine_ip,
                "description": [[column[0], column[1]] for column in cursor.description or []],
            }
            if command.get("keep"):
                self.cursors[command["keep"]] = cursor
                kept = True
            else:
                answer["rows"] = encode_rows(cursor.fetchall())
            return answer
        finally:
            if not kept:
                cursor.close()

    def fetch(self, command: dict[str, Any]) -> dict[str, object]:
        """Read out a cursor kept by ``execute``."""
        cursor = self.cursors.pop(command["cursor"])
        try:
            return {"rows": encode_rows(cursor.fetchall())}
        finally:
            cursor.close()

    def read_query(self, command: dict[str, Any]) -> dict[str, object]:
        """Ask for another query's metadata and rows with this connection's own session: what a
        client that learned someone else's query id could try."""
        from e6data_python_connector.server import (  # type: ignore[import-untyped]
            e6x_engine_pb2 as pb,
        )

        connection = self.connections[command["conn"]]
        fields = {
            "engineIP": command["engine_ip"],
            "sessionId": connection.get_session_id,
            "queryId": command["query_id"],
        }
        answers: dict[str, object] = {}
        for name, call, request in (
            ("metadata", "getResultMetadata", pb.GetResultMetadataRequest(**fields)),
            ("batch", "getNextResultBatch", pb.GetNextResultBatchRequest(**fields)),
        ):
            try:
                getattr(connection.client, call)(request, metadata=connection._call_metadata())
                answers[name] = {"ok": True}
            except Exception as exc:
                answers[name] = {"ok": False, "error": describe_error(exc)}
        return answers

    def browse(self, command: dict[str, Any]) -> dict[str, object]:
        """The connection's catalog browsing: catalogs, schemas, tables, one table's columns."""
        connection = self.connections[command["conn"]]
        catalog, database = command["catalog"], command["database"]
        columns = connection.get_columns(catalog, database, command["table"])
        return {
            "catalogs": [
                [found["name"], found["isDefault"]] for found in connection.get_catalogs()
            ],
            "schemas": list(connection.get_schema_names(catalog)),
            "tables": list(connection.get_tables(catalog, database)),
            "columns": [[column["fieldName"], column["fieldType"]] for column in columns],
        }

    def close(self, command: dict[str, Any]) -> dict[str, object]:
        self.connections.pop(command["conn"]).close()
        return {}

    def sqlalchemy(self, command: dict[str, Any]) -> dict[str, object]:
        """Through the connector's SQLAlchemy dialect: a text statement, and/or a table's
        reflected columns and its first rows selected through the reflected table."""
        from sqlalchemy import MetaData, Table, create_engine, inspect, select, text

        engine = create_engine(command["url"], connect_args=command.get("connect_args", {}))
        answer: dict[str, object] = {}
        try:
            with engine.connect() as connection:
                if "sql" in command:
                    answer["rows"] = encode_rows(connection.execute(text(command["sql"])).all())
                table_name = command.get("reflect_table")
                if table_name:
                    schema = command.get("schema")
                    found = inspect(connection).get_columns(table_name, schema=schema)
                    answer["columns"] = [
                        [column["name"], type(column["type"]).__name__] for column in found
                    ]
                    table = Table(table_name, MetaData(), autoload_with=connection, schema=schema)
                    statement = select(table).order_by(*table.columns[:1])
                    statement = statement.limit(command.get("limit", 3))
                    answer["table_rows"] = encode_rows(connection.execute(statement).all())
        finally:
            engine.dispose()
        return answer

    def concurrent(self, command: dict[str, Any]) -> dict[str, object]:
        """``n`` connections at once, each in its own thread, each running ``queries`` in order;
        ``{i}`` in a query is the connection's number. Every connection starts together."""
        count: int = command["n"]
        queries: list[str] = command["queries"]
        start = threading.Barrier(count)
        results: list[dict[str, object]] = [{} for _ in range(count)]

        def run(number: int) -> None:
            try:
                connection = self._connection(command["connect"])
                try:
                    start.wait(timeout=60)
                    answers = []
                    for query in queries:
                        cursor = connection.cursor()
                        try:
                            cursor.execute(query.format(i=number))
                            answers.append(encode_rows(cursor.fetchall()))
                        finally:
                            cursor.close()
                    results[number] = {"ok": True, "rows": answers}
                finally:
                    connection.close()
            except Exception as exc:
                results[number] = {"ok": False, "error": describe_error(exc)}

        threads = [threading.Thread(target=run, args=(number,)) for number in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {"results": results}

    def rolling(self, command: dict[str, Any]) -> dict[str, object]:
        """Load while gateways come and go: ``threads`` threads run ``sql`` over and over, each
        query on a fresh cursor of a connection to one of the addresses listed in
        ``targets_file`` (re-read before every query: the test is the balancer), until
        ``stop_file`` exists. A query whose prepare was answered has started; one that started
        and then failed is lost. A refusal before that (a draining gateway's login or prepare,
        or a gateway already gone) is retried elsewhere, as a client behind a balancer would."""
        from pathlib import Path

        targets_file, stop_file = Path(command["targets_file"]), Path(command["stop_file"])
        expected = command["expect"]
        lock = threading.Lock()
        totals = {"answered": 0, "refused_before_start": 0, "wrong": 0}
        lost: list[dict[str, object]] = []

        def run(number: int) -> None:
            connections: dict[str, Any] = {}
            turn = number
            while not stop_file.exists():
                targets = targets_file.read_text().split()
                if not targets:
                    time.sleep(0.01)
                    continue
                turn += 1
                target = targets[turn % len(targets)]
                for gone in set(connections) - set(targets):
                    with contextlib.suppress(Exception):
                        connections.pop(gone).close()
                if target not in connections:
                    host, port = target.rsplit(":", 1)
                    options = dict(command["connect"], host=host, port=int(port))
                    connections[target] = self._connection(options)
                cursor = connections[target].cursor()
                try:
                    cursor.execute(command["sql"])
                    rows = encode_rows(cursor.fetchall())
                    with lock:
                        totals["answered" if rows == expected else "wrong"] += 1
                except Exception as exc:
                    with lock:
                        if getattr(cursor, "_query_id", None):
                            lost.append({**describe_error(exc), "target": target})
                        else:
                            totals["refused_before_start"] += 1
                    with contextlib.suppress(Exception):
                        connections.pop(target).close()
                finally:
                    with contextlib.suppress(Exception):
                        cursor.close()
            for connection in connections.values():
                with contextlib.suppress(Exception):
                    connection.close()

        threads = [
            threading.Thread(target=run, args=(number,)) for number in range(command["threads"])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {**totals, "lost": lost}


OPERATIONS: dict[str, Callable[[Worker, dict[str, Any]], dict[str, object]]] = {
    "connect": Worker.connect,
    "execute": Worker.execute,
    "fetch": Worker.fetch,
    "read_query": Worker.read_query,
    "browse": Worker.browse,
    "close": Worker.close,
    "sqlalchemy": Worker.sqlalchemy,
    "concurrent": Worker.concurrent,
    "rolling": Worker.rolling,
}


def main() -> None:
    # Answers go to the real stdout only: anything the connector prints lands on stderr.
    answers = sys.stdout
    sys.stdout = sys.stderr
    worker = Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        started = time.monotonic()
        try:
            operation = OPERATIONS[command["op"]]
            answer: dict[str, object] = {"ok": True, **operation(worker, command)}
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            answer = {"ok": False, "error": describe_error(exc)}
        answer["seconds"] = time.monotonic() - started
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    for connection in worker.connections.values():
        with contextlib.suppress(Exception):
            connection.close()


if __name__ == "__main__":
    main()
