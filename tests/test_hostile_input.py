"""Hostile input: the token parser, and a real gateway's handshake, credentials and catalog calls.

Every answer must be a proper status: a code the gateway means to send (never UNKNOWN), a message
with no traceback, exception name, file path or database internals, and never the secret that
was sent. Meanwhile a well-behaved client on a channel of its own keeps getting answers.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

# The interceptor tests' own small service, served sync and with grpc.aio.
from test_interceptor import PING, WHOAMI, _AioServer, _SyncServer

from e6auth import Authenticator, Settings, TokenStore
from e6auth.credentials.tokens import (
    ID_LENGTH,
    PREFIX,
    ParsedToken,
    check_token,
    generate_token,
    looks_like_token,
    parse_token,
)
from e6auth.errors import MalformedCredential
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.server import Gateway, build_gateway
from e6auth.query import create_demo_database
from e6auth.testing import FAST_ARGON2_SETTINGS, memory_store
from e6auth.verify.parameters import SessionParameters

PASSWORD = "correct horse battery staple"
CATALOG = "default"
SCHEMA = "main"
MEGABYTE = 1_000_000

# Bounded: the file runs in well under a minute on a shared machine.
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# What no status message may contain: tracebacks, exception names, file paths, driver names.
INTERNALS = re.compile(
    r"Traceback|Exception|Error\b|File \"|\.py\b|/(?:tmp|home|work|usr|root)/|sqlalchemy|psycopg"
    r"|sqlite3|pragma|\bcursor\b|0x[0-9a-f]{6,}",
    re.IGNORECASE,
)
EXPECTED_CODES = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    # The connector protocol's "log in again" answer for sessions.
    grpc.StatusCode.INTERNAL,
}

QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
KNOWN_IDENTIFIER_ANSWER = re.compile(r"unknown (?:table|schema|catalog) ")

# Text that protobuf can carry: any code point but lone surrogates (not UTF-8 at all; those go
# through the raw-bytes tests below).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=300)
NASTY = st.sampled_from(
    [
        "",
        "\x00",
        "alice\x00",
        "\x00" * 1000,
        "a" * MEGABYTE,
        "é" * (MEGABYTE // 2),
        "'; DROP TABLE users; --",
        '"; DROP TABLE e6auth_tokens; --',
        'main"; SELECT * FROM sqlite_master; --',
        "x' OR '1'='1",
        "%s%s%s%n",
        "../../../../etc/passwd",
        "\u202e\u0000\ufeff\U0001f600",
        "alice@example.com" + "\x00" + "admin",
        "A" * 10_240,
    ]
)
HOSTILE = st.one_of(NASTY, TEXT)


def assert_proper(error: grpc.RpcError, *sent_secrets: str) -> None:
    """A status e6auth meant to send, saying nothing internal and echoing no secret."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    details: str = error.details() or ""  # type: ignore[attr-defined]
    assert code in EXPECTED_CODES, (code, details[:300])
    assert details, code
    assert len(details) <= 5000, len(details)
    # Quoted parts echo what the client sent (an unknown table's name): judged are e6auth's words.
    assert INTERNALS.search(QUOTED.sub("''", details)) is None, details[:300]
    if code == grpc.StatusCode.INTERNAL:
        assert details.startswith("Access denied"), details[:300]
    for secret in sent_secrets:
        # Short strings occur in any message by chance; a real secret is long.
        if len(secret) >= 8:
            assert secret not in details, details[:300]


# -- the token parser ----------------------------------------------------------------------------


def _mutated_tokens() -> st.SearchStrategy[str]:
    """Real tokens with one character replaced, inserted or removed."""

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        _parsed, token = generate_token()
        position = draw(st.integers(0, len(token) - 1))
        character = draw(st.characters())
        kind = draw(st.sampled_from(["replace", "insert", "delete"]))
        if kind == "replace":
            return token[:position] + character + token[position + 1 :]
        if kind == "insert":
            return token[:position] + character + token[position:]
        return token[:position] + token[position + 1 :]

    return mutate()


@given(text=st.one_of(st.text(), _mutated_tokens(), st.binary().map(lambda b: b.decode("latin-1"))))
@settings(max_examples=400, deadline=None)
@example(text=PREFIX + "0" * 100)
@example(text="\x00" * 57)
@example(text="e6pat_" + "é" * 51)
def test_the_token_parser_raises_only_malformed_credential(text: str) -> None:
    outcome = _parse(text)
    if isinstance(outcome, MalformedCredential):
        assert not looks_like_token(text) or "checksum" in str(outcome)
        # A message may name the public id, never the secret part.
        if len(text) > len(PREFIX) + ID_LENGTH + 8:
            assert text[len(PREFIX) + ID_LENGTH + 1 :] not in str(outcome)
            assert text[len(PREFIX) + ID_LENGTH + 1 :] not in repr(outcome)
        with pytest.raises(MalformedCredential):
            check_token(text)
        return
    assert text == f"{PREFIX}{outcome.id}_{outcome.secret}{text[-6:]}"
    assert outcome.secret not in repr(outcome)


def _parse(text: str) -> ParsedToken | MalformedCredential:
    """The parsed token, or the one exception the parser may raise (anything else propagates)."""
    try:
        return parse_token(text)
    except MalformedCredential as error:
        return error


def test_a_real_token_survives_the_parser() -> None:
    parsed, token = generate_token()
    assert parse_token(token) == parsed


# -- a real gateway ------------------------------------------------------------------------------


@dataclass
class Served:
    gateway: Gateway
    token: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A gateway with the throttle off (every attempt here fails on purpose: what is tested is
    the answer to each one), querying the demo data on SQLite or a one-table PostgreSQL schema."""
    home = tmp_path / "home"
    home.mkdir()
    if request.param == "sqlite":
        query_url = create_demo_database(home / "demo.db")
    else:
        query_url = request.getfixturevalue("postgres_url")
        engine = create_engine(query_url)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE customers (id integer, name text)"))
        engine.dispose()
    config = Settings(
        home=home,
        port=0,
        query_url=query_url,
        throttle_address_failures=0,
        throttle_user_failures=0,
        **FAST_ARGON2_SETTINGS,
    )
    store = TokenStore.from_settings(config)
    try:
        store.create_user("alice", PASSWORD)
        token = store.create_token("alice").token
    finally:
        store.close()
    gateway = build_gateway(config)
    try:
        yield Served(gateway, token)
    finally:
        gateway.stop()


@dataclass
class Bystander:
    """A well-behaved client on its own channel: logs in and lists schemas, over and over."""

    target: str
    token: str
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bystander", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
            while not self._stop.is_set():
                self.round(stub)
                self._stop.wait(0.02)

    def round(self, stub: QueryEngineServiceStub) -> None:
        try:
            session = stub.authenticate(
                pb.AuthenticateRequest(user="alice", password=self.token), timeout=10
            ).sessionId
            answer = stub.getSchemaNamesV2(
                pb.GetSchemaNamesV2Request(catalog=CATALOG, sessionId=session), timeout=10
            )
            assert list(answer.schemas)
            self.answered += 1
        except Exception as exc:
            self.failures.append(repr(exc)[:300])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


@pytest.fixture
def bystander(served: Served) -> Iterator[Bystander]:
    """Runs during the test; afterwards it must have been answered throughout, and still be."""
    client = Bystander(served.target, served.token)
    client.start()
    yield client
    client.stop()
    assert client.failures == []
    assert client.answered > 0
    with grpc.insecure_channel(served.target) as channel:
        client.round(QueryEngineServiceStub(channel))  # type: ignore[no-untyped-call]
    assert client.failures == []


@pytest.fixture
def stub(served: Served) -> Iterator[QueryEngineServiceStub]:
    with grpc.insecure_channel(served.target) as channel:
        yield QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]


def _status_of(call: Callable[[], Any]) -> grpc.RpcError | None:
    """The error status of a call, or None if it was answered."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    return None


def _refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


@FUZZ
@given(user=HOSTILE, password=HOSTILE)
@example(user="alice", password="a" * MEGABYTE)
@example(user="a" * MEGABYTE, password=PASSWORD)
@example(user="alice\x00", password=PASSWORD)
@example(user="alice", password=PASSWORD + "\x00")
def test_hostile_handshakes_get_a_proper_refusal(
    stub: QueryEngineServiceStub, bystander: Bystander, user: str, password: str
) -> None:
    error = _refused(
        lambda: stub.authenticate(pb.AuthenticateRequest(user=user, password=password))
    )
    assert_proper(error, password)


def _field(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand so that it may hold any bytes."""
    length, varint = len(data), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(varint) + data


@FUZZ
@given(user=st.binary(max_size=300), password=st.binary(max_size=300))
@example(user=b"alice", password=b"\xff\xfe" + PASSWORD.encode())
@example(user=b"\xc3\x28", password=b"\x00")
@example(user=b"ali\xedce", password=b"\xed\xa0\x80")  # an encoded surrogate: not UTF-8
def test_non_utf8_user_and_password_bytes_get_a_proper_refusal(
    served: Served, bystander: Bystander, user: bytes, password: bytes
) -> None:
    with grpc.insecure_channel(served.target) as channel:
        raw = channel.unary_unary(
            "/QueryEngineService/authenticate",
            request_serializer=lambda body: body,
            response_deserializer=lambda body: body,
        )
        error = _refused(lambda: raw(_field(1, user) + _field(2, password)))
    assert_proper(error, password.decode("latin-1"))


@FUZZ
@given(body=st.binary(max_size=2000))
@example(body=b"\xff" * 16)
@example(body=_field(2, b"\xff\xfe\xfd"))
def test_garbage_request_bodies_get_a_proper_status(
    served: Served, bystander: Bystander, body: bytes
) -> None:
    metadata = (("authorization", f"Bearer {served.token}"),)
    with grpc.insecure_channel(served.target) as channel:
        for method in ("authenticate", "getTablesV2", "getColumnsV2", "prepareStatementV2"):
            raw = channel.unary_unary(
                f"/QueryEngineService/{method}",
                request_serializer=lambda body: body,
                response_deserializer=lambda body: body,
            )
            error = _status_of(lambda raw=raw: raw(body, metadata=metadata))
            if error is not None:
                assert_proper(error, served.token)


PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=3000)


@FUZZ
@given(
    authorization=st.one_of(PRINTABLE, PRINTABLE.map(lambda text: "Bearer " + text)),
    binary=st.binary(max_size=3000),
)
# Over gRPC's metadata limit: refused by the transport, which costs 0.1 to 1 s a call. Once, as
# an example: drawn from the strategy it took about 23 of the 60 examples and 11 of 12 seconds.
@example(authorization="Bearer " + "e6pat_" + "A" * 20_000, binary=b"\x00" * 3000)
@example(authorization="Bearer ", binary=b"\xff\x00\xfe")
@example(authorization="bearer e6pat_x", binary=b"Bearer e6pat_")
def test_hostile_authorization_metadata_gets_a_proper_refusal(
    stub: QueryEngineServiceStub, bystander: Bystander, authorization: str, binary: bytes
) -> None:
    request = pb.GetSchemaNamesV2Request(catalog=CATALOG)
    for metadata in (
        (("authorization", authorization),),
        # Non-UTF-8 metadata: gRPC carries arbitrary bytes only under a -bin key.
        (("authorization-bin", binary),),
        (("authorization-bin", binary), ("authorization", authorization)),
    ):
        error = _refused(
            lambda metadata=metadata: stub.getSchemaNamesV2(request, metadata=metadata)
        )
        assert_proper(error, authorization.removeprefix("Bearer "))


@FUZZ
@given(session_id=st.one_of(HOSTILE, st.binary(max_size=500).map(lambda b: b.hex())))
@example(session_id="x" * MEGABYTE)
@example(session_id="eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.")  # alg=none
@example(session_id="a.b.c")
def test_hostile_session_ids_get_a_proper_refusal(
    stub: QueryEngineServiceStub, bystander: Bystander, session_id: str
) -> None:
    for call in (
        lambda: stub.getTablesV2(
            pb.GetTablesV2Request(catalog=CATALOG, schema=SCHEMA, sessionId=session_id)
        ),
        lambda: stub.getSchemaNamesV2(pb.GetSchemaNamesV2Request(sessionId=session_id)),
        lambda: stub.executeStatementV2(
            pb.ExecuteStatementV2Request(queryId="q", sessionId=session_id)
        ),
    ):
        assert_proper(_refused(call), session_id)


@FUZZ
@given(catalog=st.one_of(st.just(CATALOG), st.just(""), HOSTILE), schema=HOSTILE, table=HOSTILE)
@example(catalog=CATALOG, schema=SCHEMA, table='customers"; DROP TABLE customers; --')
@example(catalog=CATALOG, schema=SCHEMA, table="customers\x00")
@example(catalog=CATALOG, schema="", table="customers\x00")
@example(catalog=CATALOG, schema="main\x00", table="customers")
@example(catalog="default'; --", schema="", table="")
@example(catalog=CATALOG, schema=SCHEMA, table="x" * 10_240)
@example(catalog=CATALOG, schema="public", table="pg_catalog.pg_authid")
def test_hostile_identifiers_in_the_catalog_calls_get_answers_or_proper_statuses(
    stub: QueryEngineServiceStub,
    served: Served,
    bystander: Bystander,
    catalog: str,
    schema: str,
    table: str,
) -> None:
    metadata = (("authorization", f"Bearer {served.token}"),)
    for call in (
        lambda: stub.getSchemaNamesV2(
            pb.GetSchemaNamesV2Request(catalog=catalog), metadata=metadata
        ),
        lambda: stub.getTablesV2(
            pb.GetTablesV2Request(catalog=catalog, schema=schema), metadata=metadata
        ),
        lambda: stub.getColumnsV2(
            pb.GetColumnsV2Request(catalog=catalog, schema=schema, table=table), metadata=metadata
        ),
    ):
        error = _status_of(call)
        if error is not None:
            assert_proper(error, served.token)
            # A name the database does not know is named as such, in e6auth's words, never a
            # driver's (about the statement it ran, or the bytes it refused).
            details: str = error.details()  # type: ignore[attr-defined]
            assert KNOWN_IDENTIFIER_ANSWER.match(details), details[:300]
    # The table is still there: nothing above ran as SQL.
    answer = stub.getTablesV2(pb.GetTablesV2Request(catalog=CATALOG), metadata=metadata)
    assert "customers" in answer.tables


@pytest.fixture(params=[False, True], ids=["sync", "aio"])
def own_service(request: pytest.FixtureRequest) -> Iterator[grpc.Channel]:
    """The interceptor in front of a small service of the interceptor tests, sync and grpc.aio."""
    store = memory_store()
    auth = Authenticator(store, sessions=SessionParameters(secrets.token_bytes(32)))
    server = _AioServer(auth) if request.param else _SyncServer(auth)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield channel
    finally:
        channel.close()
        server.stop()
        auth.close()


@pytest.mark.parametrize("method", [WHOAMI, PING], ids=["authenticated", "public"])
def test_both_interceptors_refuse_an_undecodable_body_as_malformed(
    own_service: grpc.Channel, method: str
) -> None:
    raw = own_service.unary_unary(method, request_serializer=lambda body: body)
    error: Any = _refused(lambda: raw(_field(1, b"\xff\xfe")))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "malformed request",
    )


def test_the_bystander_notices_a_gateway_that_stops_answering(served: Served) -> None:
    """The liveness check above can fail: with the gateway gone, the bystander's calls fail."""
    client = Bystander(served.target, served.token)
    served.gateway.stop()
    with grpc.insecure_channel(served.target) as channel:
        client.round(QueryEngineServiceStub(channel))  # type: ignore[no-untyped-call]
    assert client.failures
