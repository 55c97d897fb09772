"""Expiry warnings: a real gRPC client reads the token's expiry (and a rotated secret's grace end)
from the handshake's initial metadata; `token list --expiring-within` is in test_cli_policy.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.expiry import ROTATED_UNTIL_HEADER, TOKEN_EXPIRES_HEADER
from e6auth.grpc.server import Gateway, build_gateway
from e6auth.settings import Settings
from e6auth.store import TokenStore
from e6auth.testing import FakeClock
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.parameters import SessionParameters

PASSWORD = "correct horse battery staple"
HEADERS = (TOKEN_EXPIRES_HEADER, ROTATED_UNTIL_HEADER)


@pytest.fixture
def stub(store: TokenStore, clock: FakeClock, tmp_path: Path) -> Iterator[QueryEngineServiceStub]:
    """A gateway over loopback on the test's store (each backend), and a client of it."""
    settings = Settings(home=tmp_path, port=0, query_url=f"sqlite:///{tmp_path / 'query.db'}")
    auth = Authenticator(store, clock=clock, sessions=SessionParameters(b"s" * 32))
    gateway: Gateway = build_gateway(settings, authenticator=auth)
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        channel.close()
        gateway.stop()


def handshake(stub: QueryEngineServiceStub, user: str, secret: str) -> dict[str, str]:
    response, call = stub.authenticate.with_call(
        pb.AuthenticateRequest(user=user, password=secret), timeout=10
    )
    assert response.sessionId
    return {key: value for key, value in call.initial_metadata() if key in HEADERS}


def parse(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text)


def test_a_token_with_an_expiry_announces_it(
    stub: QueryEngineServiceStub, store: TokenStore
) -> None:
    store.create_user("alice", PASSWORD)
    token = store.create_token("alice", expires_days=7)

    headers = handshake(stub, "alice", token.token)

    assert headers.keys() == {TOKEN_EXPIRES_HEADER}
    assert parse(headers[TOKEN_EXPIRES_HEADER]) == token.expires_at


def test_the_old_secret_of_a_rotated_token_announces_its_grace_end(
    stub: QueryEngineServiceStub, store: TokenStore
) -> None:
    store.create_user("alice")
    old = store.create_token("alice", expires_days=30)
    new = store.rotate_token(old.id, grace=dt.timedelta(hours=5))

    headers = handshake(stub, "alice", old.token)

    assert parse(headers[ROTATED_UNTIL_HEADER]) == new.previous_valid_until
    assert parse(headers[TOKEN_EXPIRES_HEADER]) == old.expires_at
    assert handshake(stub, "alice", new.token).keys() == {TOKEN_EXPIRES_HEADER}


def test_passwords_and_lasting_tokens_announce_nothing(
    stub: QueryEngineServiceStub, store: TokenStore
) -> None:
    store.create_user("alice", PASSWORD)
    lasting = store.create_token("alice")

    assert handshake(stub, "alice", PASSWORD) == {}
    assert handshake(stub, "alice", lasting.token) == {}
