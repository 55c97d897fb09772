"""Every kind of method behind both interceptors, sync and grpc.aio alike: a streamed response, a
streamed request, or both, is authenticated, refused and answered as a unary call is."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from test_interceptor import (
    COLLECT,
    EACH,
    ECHO,
    FAIL_EACH,
    PING_EACH,
    WHOAMI,
    _AioServer,
    _SyncServer,
)

from e6auth import Authenticator, SessionParameters, TokenStore
from e6auth.background.audit import AuditLog
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.store import AuditStore
from e6auth.testing import FakeClock, memory_store

REQUEST = pb.GetSchemaNamesV2Request


@dataclass
class Served:
    channel: grpc.Channel
    authenticator: Authenticator
    store: TokenStore
    audit: AuditLog

    def unary_stream(self, method: str) -> Any:
        return self.channel.unary_stream(method, request_serializer=REQUEST.SerializeToString)

    def stream_unary(self, method: str) -> Any:
        return self.channel.stream_unary(method, request_serializer=REQUEST.SerializeToString)

    def stream_stream(self, method: str) -> Any:
        return self.channel.stream_stream(method, request_serializer=REQUEST.SerializeToString)

    def events(self) -> list[tuple[str, str, str | None, str | None]]:
        self.audit.flush()
        return [
            (event.kind, event.result, event.reason, event.method)
            for event in AuditStore(self.store.engine).auth_events()
        ]


@pytest.fixture(params=[False, True], ids=["sync", "aio"])
def served(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[Served]:
    store = memory_store(clock=clock)
    store.create_user("alice", "alice's password")
    authenticator = Authenticator(
        store, clock=clock, sessions=SessionParameters(key=secrets.token_bytes(32))
    )
    authenticator.audit = audit = AuditLog(
        AuditStore(store.engine), flush_seconds=3600, clock=clock
    )
    server: _SyncServer | _AioServer = (
        _AioServer(authenticator) if request.param else _SyncServer(authenticator)
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield Served(channel, authenticator, store, audit)
    finally:
        channel.close()
        server.stop()
        authenticator.close()
        store.close()


def _bearer(token: str, request_id: str = "streams-1") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"), ("x-request-id", request_id))


def _refused(function: Any) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        function()
    return caught.value


def test_a_streamed_response_is_authenticated_by_bearer_or_session_id_and_sees_its_principal(
    served: Served,
) -> None:
    new = served.store.create_token("alice")
    session = served.authenticator.create_session(
        served.authenticator.verify("alice", "alice's password")
    )
    each = served.unary_stream(EACH)
    assert (
        list(each(REQUEST(), metadata=_bearer(new.token))) == [f"alice|token|{new.id}".encode()] * 2
    )
    assert list(each(REQUEST(sessionId=session))) == [b"alice|password|None"] * 2


def test_streamed_requests_are_served_to_bearer_tokens_and_see_their_principal(
    served: Served,
) -> None:
    new = served.store.create_token("alice")
    whoami = f"alice|token|{new.id}".encode()
    requests = [REQUEST(), REQUEST(), REQUEST()]
    collect = served.stream_unary(COLLECT)
    assert collect(iter(requests), metadata=_bearer(new.token)) == b"3|" + whoami
    echo = served.stream_stream(ECHO)
    assert list(echo(iter(requests), metadata=_bearer(new.token))) == [whoami] * 3


@pytest.mark.parametrize("method", [WHOAMI, EACH, COLLECT, ECHO])
def test_a_call_without_credentials_is_refused_logged_audited_and_traced_alike_by_kind(
    served: Served, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    metadata = (("x-request-id", "no-credential-1"),)
    calls = {
        WHOAMI: lambda: served.channel.unary_unary(
            WHOAMI, request_serializer=REQUEST.SerializeToString
        )(REQUEST(), metadata=metadata),
        EACH: lambda: list(served.unary_stream(EACH)(REQUEST(), metadata=metadata)),
        COLLECT: lambda: served.stream_unary(COLLECT)(iter([REQUEST()]), metadata=metadata),
        ECHO: lambda: list(served.stream_stream(ECHO)(iter([REQUEST()]), metadata=metadata)),
    }
    with caplog.at_level(logging.INFO, logger="e6auth"):
        error = _refused(calls[method])
    assert (error.code(), error.details()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "authentication required",
    )
    assert ("x-request-id", "no-credential-1") in tuple(error.trailing_metadata() or ())
    assert any(f"refused {method} from" in record.getMessage() for record in caplog.records)
    assert served.events() == [("call", "refused", "missing_credentials", method)]


@pytest.mark.parametrize("method", [EACH, PING_EACH], ids=["authenticated", "public"])
def test_an_unparsable_body_of_a_streamed_response_is_refused_as_malformed(
    served: Served, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    new = served.store.create_token("alice")
    raw = served.channel.unary_stream(method)  # bytes in: no serializer
    with caplog.at_level(logging.INFO, logger="e6auth"):
        error = _refused(lambda: list(raw(b"\xff\xff\xff", metadata=_bearer(new.token, "bad-1"))))
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "malformed request",
    )
    assert ("x-request-id", "bad-1") in tuple(error.trailing_metadata() or ())
    assert any(f"refused {method} from" in record.getMessage() for record in caplog.records)
    assert served.events() == [("call", "refused", "malformed_request", method)]


def test_a_handler_error_in_a_streamed_response_becomes_its_status_and_public_message(
    served: Served,
) -> None:
    new = served.store.create_token("alice")
    received: list[bytes] = []
    stream = served.unary_stream(FAIL_EACH)(REQUEST(), metadata=_bearer(new.token, "fails-1"))
    error = _refused(lambda: received.extend(stream))
    assert received == [b"first"]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith('relation "x" does not exist')
    assert "Access denied" not in details
    assert ("x-request-id", "fails-1") in tuple(error.trailing_metadata() or ())


def test_a_public_streamed_response_needs_no_credentials(served: Served) -> None:
    assert list(served.unary_stream(PING_EACH)(REQUEST())) == [b"pong", b"pong"]
