"""The interceptor, added to a small gRPC service of this test's own, sync and grpc.aio alike."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import pytest

from e6auth import Authenticator, QueryError, TokenStore
from e6auth.background.audit import AuditLog
from e6auth.grpc import (
    AioAuthInterceptor,
    AuthInterceptor,
    current_principal,
    peer_address,
)
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.store import AuditStore
from e6auth.testing import FakeClock, memory_store
from e6auth.verify.parameters import SessionParameters

WHOAMI = "/demo.Whoami/Get"
FAIL = "/demo.Whoami/Fail"
PING = "/demo.Whoami/Ping"
# The other kinds of method: a streamed response, streamed requests, both.
EACH = "/demo.Whoami/Each"
FAIL_EACH = "/demo.Whoami/FailEach"
PING_EACH = "/demo.Whoami/PingEach"
COLLECT = "/demo.Whoami/Collect"
ECHO = "/demo.Whoami/Echo"
PUBLIC = frozenset({PING, PING_EACH})


def _whoami(_request: pb.GetSchemaNamesV2Request, _context: Any) -> bytes:
    principal = current_principal()
    return f"{principal.username}|{principal.method}|{principal.token_id}".encode()


def _fail(_request: pb.GetSchemaNamesV2Request, _context: Any) -> bytes:
    raise QueryError('relation "x" does not exist; Access denied for reasons')


def _ping(_request: pb.GetSchemaNamesV2Request, _context: Any) -> bytes:
    return b"pong"


def _each(request: pb.GetSchemaNamesV2Request, context: Any) -> Iterator[bytes]:
    # The principal is read while the response streams, after the handler has returned.
    yield _whoami(request, context)
    yield _whoami(request, context)


def _fail_each(request: pb.GetSchemaNamesV2Request, context: Any) -> Iterator[bytes]:
    yield b"first"
    _fail(request, context)


def _ping_each(_request: pb.GetSchemaNamesV2Request, _context: Any) -> Iterator[bytes]:
    yield b"pong"
    yield b"pong"


def _collect(requests: Iterator[pb.GetSchemaNamesV2Request], context: Any) -> bytes:
    return b"%d|" % len(list(requests)) + _whoami(pb.GetSchemaNamesV2Request(), context)


def _echo(requests: Iterator[pb.GetSchemaNamesV2Request], context: Any) -> Iterator[bytes]:
    for request in requests:
        yield _whoami(request, context)


Kind = str  # the grpc.*_rpc_method_handler a behaviour is registered with


def _handlers(wrap: Callable[[Any, Kind], Any]) -> grpc.GenericRpcHandler:
    """The demo service; ``wrap`` adapts a sync behaviour of a kind to the server."""
    factories: dict[Kind, Any] = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }

    def handler(behavior: Any, kind: Kind = "unary_unary") -> Any:
        return factories[kind](
            wrap(behavior, kind), request_deserializer=pb.GetSchemaNamesV2Request.FromString
        )

    return grpc.method_handlers_generic_handler(
        "demo.Whoami",
        {
            "Get": handler(_whoami),
            "Fail": handler(_fail),
            "Ping": handler(_ping),
            "Each": handler(_each, "unary_stream"),
            "FailEach": handler(_fail_each, "unary_stream"),
            "PingEach": handler(_ping_each, "unary_stream"),
            "Collect": handler(_collect, "stream_unary"),
            "Echo": handler(_echo, "stream_stream"),
        },
    )


class _SyncServer:
    def __init__(self, authenticator: Authenticator) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[AuthInterceptor(authenticator, public_methods=PUBLIC)],
        )
        self.server.add_generic_rpc_handlers((_handlers(lambda behavior, _kind: behavior),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(None).wait()


def _to_async(behavior: Any, kind: Kind) -> Any:
    """A sync demo behaviour as grpc.aio wants it: a coroutine or an async generator, taking
    an async iterator of requests where the kind streams them."""

    async def unary(request: Any, context: Any) -> Any:
        if kind == "stream_unary":
            request = iter([item async for item in request])
        return behavior(request, context)

    async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
        if kind == "stream_stream":
            request = iter([item async for item in request])
        for item in behavior(request, context):
            yield item

    return streamed if kind.endswith("_stream") else unary


class _AioServer:
    """A grpc.aio server on its own event loop thread."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(authenticator), self.loop).result(
            10
        )

    async def _start(self, authenticator: Authenticator) -> int:
        self.server = grpc.aio.server(
            interceptors=[AioAuthInterceptor(authenticator, public_methods=PUBLIC)]
        )
        self.server.add_generic_rpc_handlers((_handlers(_to_async),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def store(clock: FakeClock) -> Iterator[TokenStore]:
    token_store = memory_store(clock=clock)
    token_store.create_user("alice@example.com", "alice's password")
    token_store.create_user("bob")
    yield token_store
    token_store.close()


@pytest.fixture
def authenticator(store: TokenStore, clock: FakeClock) -> Authenticator:
    return Authenticator(store, clock=clock, sessions=SessionParameters(secrets.token_bytes(32)))


@pytest.fixture(params=[False, True], ids=["sync", "aio"])
def call(
    request: pytest.FixtureRequest, authenticator: Authenticator
) -> Iterator[Callable[..., bytes]]:
    server: _SyncServer | _AioServer = (
        _AioServer(authenticator) if request.param else _SyncServer(authenticator)
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")

    def invoke(method: str, *, session: str = "", bearer: str | None = None) -> bytes:
        metadata = [("authorization", f"Bearer {bearer}")] if bearer is not None else None
        stub = channel.unary_unary(
            method, request_serializer=pb.GetSchemaNamesV2Request.SerializeToString
        )
        response: bytes = stub(pb.GetSchemaNamesV2Request(sessionId=session), metadata=metadata)
        return response

    yield invoke
    channel.close()
    server.stop()


def _refusal(function: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        function()
    return caught.value


def test_a_bearer_token_reaches_the_handler_as_its_principal(
    call: Callable[..., bytes], store: TokenStore
) -> None:
    new = store.create_token("alice@example.com")
    assert call(WHOAMI, bearer=new.token) == f"alice@example.com|token|{new.id}".encode()


def test_a_session_id_in_the_request_authenticates(
    call: Callable[..., bytes], authenticator: Authenticator
) -> None:
    principal = authenticator.verify("ALICE@example.com", "alice's password")
    session = authenticator.create_session(principal)
    assert call(WHOAMI, session=session) == b"alice@example.com|password|None"


def test_no_credentials_is_unauthenticated(call: Callable[..., bytes]) -> None:
    error = _refusal(lambda: call(WHOAMI))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "authentication required"


def test_a_bad_bearer_token_gets_the_uniform_refusal(
    call: Callable[..., bytes], store: TokenStore
) -> None:
    token = store.create_token("bob").token
    for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "e6pat_nonsense", "x" * 5000):
        error = _refusal(lambda bad=bad: call(WHOAMI, bearer=bad))  # type: ignore[misc]
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() in ("invalid credentials", "authentication required")
        assert token not in (error.details() or "")


def test_a_refused_call_is_audited_with_its_method_reason_and_token_id(
    call: Callable[..., bytes], authenticator: Authenticator, store: TokenStore, clock: FakeClock
) -> None:
    authenticator.audit = audit = AuditLog(
        AuditStore(store.engine), flush_seconds=3600, clock=clock
    )
    new = store.create_token("bob")
    mistyped = new.token[:-1] + ("A" if new.token[-1] != "A" else "B")
    _refusal(lambda: call(WHOAMI, bearer=mistyped))
    _refusal(lambda: call(WHOAMI))
    assert call(WHOAMI, bearer=new.token).startswith(b"bob|")  # accepted calls are not events

    audit.flush()

    assert [
        (event.kind, event.result, event.reason, event.method, event.token_id, event.username)
        for event in AuditStore(store.engine).auth_events()
    ] == [
        ("call", "refused", "malformed", WHOAMI, new.id, "bob"),
        ("call", "refused", "missing_credentials", WHOAMI, None, None),
    ]
    assert {event.peer for event in AuditStore(store.engine).auth_events()} == {"127.0.0.1"}


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "aio"])
def test_an_unparsable_body_is_refused_logged_audited_and_traced_the_same_by_both(
    aio: bool,
    authenticator: Authenticator,
    store: TokenStore,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One refusal path for both interceptors: the status, the log line, the audit event and the
    request-id trailer of a body that is no message."""
    authenticator.audit = audit = AuditLog(
        AuditStore(store.engine), flush_seconds=3600, clock=clock
    )
    server: _SyncServer | _AioServer = (
        _AioServer(authenticator) if aio else _SyncServer(authenticator)
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        raw = channel.unary_unary(WHOAMI)  # bytes in: no serializer
        with caplog.at_level(logging.INFO, logger="e6auth"), pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff", metadata=[("x-request-id", "unparsable-1")])
    finally:
        channel.close()
        server.stop()
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("x-request-id", "unparsable-1") in tuple(error.trailing_metadata() or ())
    assert any("refused " + WHOAMI in record.getMessage() for record in caplog.records)
    audit.flush()
    assert [
        (event.kind, event.result, event.reason, event.method)
        for event in AuditStore(store.engine).auth_events()
    ] == [("call", "refused", "malformed_request", WHOAMI)]


def test_a_deleted_token_is_refused_on_the_next_call(
    call: Callable[..., bytes], store: TokenStore
) -> None:
    new = store.create_token("bob")
    assert call(WHOAMI, bearer=new.token).startswith(b"bob|")
    store.delete_tokens([new.id])
    error = _refusal(lambda: call(WHOAMI, bearer=new.token))
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "token revoked")


def test_calls_answered_by_the_cache_alone_still_end_with_the_token(
    call: Callable[..., bytes], store: TokenStore, authenticator: Authenticator
) -> None:
    """After its first call, a connection's calls are answered from the cache without the full
    verify (Authenticator.cached_token / cached_session), in both servers; a deletion still
    ends them at once, bearer and session alike."""
    new = store.create_token("bob")
    session = authenticator.create_session(authenticator.verify("bob", new.token))
    for _ in range(5):
        assert call(WHOAMI, bearer=new.token) == f"bob|token|{new.id}".encode()
        assert call(WHOAMI, session=session) == f"bob|token|{new.id}".encode()
    assert (
        authenticator.cached_call(f"Bearer {new.token}", None, authenticator.call_clock())
        is not None
    )
    store.delete_tokens([new.id])
    bearer = _refusal(lambda: call(WHOAMI, bearer=new.token))
    assert (bearer.code(), bearer.details()) == (grpc.StatusCode.UNAUTHENTICATED, "token revoked")
    ended = _refusal(lambda: call(WHOAMI, session=session))
    # The connector's cue to log in again, which then fails.
    assert ended.code() == grpc.StatusCode.INTERNAL
    assert "Access denied" in (ended.details() or "")


def test_an_expired_session_says_access_denied_so_the_connector_logs_in_again(
    call: Callable[..., bytes], authenticator: Authenticator, clock: FakeClock
) -> None:
    session = authenticator.create_session(
        authenticator.verify("alice@example.com", "alice's password")
    )
    clock.advance(3600)
    error = _refusal(lambda: call(WHOAMI, session=session))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "Access denied" in (error.details() or "")


def test_a_forged_session_is_refused(call: Callable[..., bytes]) -> None:
    error = _refusal(lambda: call(WHOAMI, session="eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ."))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "Access denied" in (error.details() or "")


def test_handler_errors_become_their_status_with_trigger_phrases_defused(
    call: Callable[..., bytes], store: TokenStore
) -> None:
    token = store.create_token("bob").token
    error = _refusal(lambda: call(FAIL, bearer=token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith('relation "x" does not exist')
    assert "Access denied" not in details


def test_public_methods_need_no_credentials(call: Callable[..., bytes]) -> None:
    assert call(PING) == b"pong"


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:127.0.0.1:50123", "127.0.0.1"),
        ("ipv6:[::1]:50123", "::1"),
        # What grpcio 1.6x reports: the URI's brackets percent-encoded.
        ("ipv6:%5B::1%5D:50123", "::1"),
        ("ipv6:%5B2001:db8::7%5D:443", "2001:db8::7"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_peer_address_drops_the_port(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_the_names_that_moved_out_of_the_interceptor_module_still_import_with_a_warning() -> None:
    from e6auth.grpc import caller, interceptor, refusals

    for name, home in (("peer_address", caller), ("RETRY_AFTER", refusals)):
        with pytest.warns(DeprecationWarning, match=f"moved to {home.__name__}.{name}"):
            assert getattr(interceptor, name) is getattr(home, name)
    assert interceptor.client_address is caller.client_address  # used there: no warning
