"""Trusted proxies: the client's address from X-Forwarded-For, believed from trusted peers only,
for the throttle, the audit and --allow-from alike, over gRPC and on the web page."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from starlette.testclient import TestClient

from e6auth import Authenticator, Settings, SettingsError, TokenStore
from e6auth.background.audit import AuditLog
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.server import Gateway, build_gateway
from e6auth.store import AuditStore
from e6auth.testing import FAST_ARGON2_SETTINGS, FakeClock, memory_store
from e6auth.verify.parameters import SessionParameters
from e6auth.verify.proxies import TrustedProxies
from e6auth.verify.throttle import LoginThrottle, SlowdownLimit, ThrottleLimit
from e6auth.web import build_app

PASSWORD = "correct horse battery staple"
PROXIES = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
ADDRESS = ThrottleLimit(failures=6, window_seconds=180.0, block_seconds=600.0)
USER = SlowdownLimit(failures=3, window_seconds=300.0, max_delay_seconds=8.0)


# -- choosing the address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # Not a trusted proxy: whatever it sends is ignored.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        ("2001:db8:1::9", ["198.51.100.1"], "2001:db8:1::9"),
        # A trusted proxy: the right-most address that is not itself a trusted proxy.
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # the client's own claim
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # two proxies
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # two headers
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),  # a dual-stack listener
        ("2001:db8:ffff:1::2", ["2001:db8:5::1"], "2001:db8:5::1"),
        # Forms proxies write: a port, brackets, spaces, mapped addresses.
        ("10.0.0.2", ["198.51.100.1:4711"], "198.51.100.1"),
        ("10.0.0.2", ["[2001:db8:5::1]:443"], "2001:db8:5::1"),
        ("10.0.0.2", ["  198.51.100.1  "], "198.51.100.1"),
        ("10.0.0.2", ["::ffff:198.51.100.1"], "198.51.100.1"),
        # Nothing forwarded: the proxy itself; only proxies: the left-most of them.
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.9, 10.0.0.3"], "10.0.0.9"),
        # Garbage where an address should be: the chain cannot be followed past it.
        ("10.0.0.2", ["198.51.100.1, not-an-address"], "10.0.0.2"),
        ("10.0.0.2", ["not-an-address, 10.0.0.3"], "10.0.0.3"),
        ("10.0.0.2", ["unknown"], "10.0.0.2"),
    ],
)
def test_the_client_is_the_right_most_address_no_trusted_proxy_claims(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert PROXIES.client_address(peer, forwarded) == client


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    nobody = TrustedProxies()
    assert not nobody
    assert nobody.client_address("10.0.0.2", ["198.51.100.1"]) == "10.0.0.2"
    assert nobody.client_address("unix:/run/e6auth.sock", ["198.51.100.1"]) == (
        "unix:/run/e6auth.sock"
    )


def test_a_long_chain_is_read_only_as_far_as_the_proxies_go() -> None:
    chain = ", ".join(f"10.0.{n >> 8 & 255}.{n & 255}" for n in range(10_000))
    assert PROXIES.client_address("10.0.0.2", [chain]).startswith("10.")


@pytest.mark.parametrize("bad", ["10.0.0.7/8", "nonsense", "", "10.0.0.0/33"])
def test_ranges_are_checked_once(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an address or a CIDR range"):
        TrustedProxies([bad])


def test_the_setting_takes_a_list_from_toml_and_commas_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert Settings(home=tmp_path).trusted_proxies == ()
    monkeypatch.setenv("E6AUTH_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1 2001:db8::/32")
    settings = Settings(home=tmp_path)
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32")
    monkeypatch.setenv("E6AUTH_TRUSTED_PROXIES", "10.0.0.1/8")
    with pytest.raises(SettingsError, match="trusted_proxies"):
        Settings(home=tmp_path)
    (tmp_path / "config.toml").write_text('trusted_proxies = ["192.0.2.0/24"]\n')
    monkeypatch.delenv("E6AUTH_TRUSTED_PROXIES")
    assert Settings(home=tmp_path).trusted_proxies == ("192.0.2.0/24",)


# -- over real gRPC ------------------------------------------------------------------------------


@pytest.fixture
def proxied(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[Gateway, TokenStore, AuditLog]]:
    """A gateway on IPv4 and IPv6 loopback that trusts 127.0.0.1 as its proxy, not ::1."""
    settings = Settings(
        home=tmp_path / "home",
        host="[::]",
        port=0,
        trusted_proxies=["127.0.0.1"],
        **FAST_ARGON2_SETTINGS,
    )
    store = TokenStore.from_settings(settings, clock=clock)
    store.create_user("alice", PASSWORD)
    audit = AuditLog(AuditStore(store.engine), flush_seconds=3600, clock=clock)
    auth = Authenticator(
        store,
        clock=clock,
        sessions=SessionParameters(secrets.token_bytes(32)),
        throttle=LoginThrottle(address=ADDRESS, user=USER, clock=clock),
        audit=audit,
        trusted_proxies=TrustedProxies(settings.trusted_proxies),
    )
    started = build_gateway(settings, authenticator=auth)
    try:
        yield started, store, audit
    finally:
        started.stop()


def _stub(port: int, host: str) -> tuple[grpc.Channel, QueryEngineServiceStub]:
    channel = grpc.insecure_channel(f"{host}:{port}")
    return channel, QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    code: grpc.StatusCode = refused.value.code()  # type: ignore[attr-defined]
    return code


def _from(address: str | None) -> tuple[tuple[str, str], ...]:
    return () if address is None else (("x-forwarded-for", address),)


def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled_audited_and_restricted(
    proxied: tuple[Gateway, TokenStore, AuditLog],
) -> None:
    server, store, audit = proxied
    restricted = store.create_token("alice", allow_from=["203.0.113.0/24"])
    proxy_channel, proxy = _stub(server.port, "127.0.0.1")
    direct_channel, direct = _stub(server.port, "[::1]")
    try:

        def handshake(stub: QueryEngineServiceStub, password: str, client: str | None) -> Any:
            request = pb.AuthenticateRequest(user="alice", password=password)
            return stub.authenticate(request, metadata=_from(client))

        # --allow-from: the forwarded address is the one checked, at the handshake and on
        # bearer calls; a client that is no trusted proxy cannot claim it.
        assert handshake(proxy, restricted.token, "203.0.113.5").sessionId
        schemas = pb.GetSchemaNamesV2Request(catalog="default")
        bearer = (("authorization", f"Bearer {restricted.token}"),)
        assert list(proxy.getSchemaNamesV2(schemas, metadata=bearer + _from("203.0.113.5")).schemas)
        denied = grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: handshake(proxy, restricted.token, None)) == denied
        assert _code(lambda: handshake(direct, restricted.token, "203.0.113.5")) == denied
        assert _code(lambda: direct.getSchemaNamesV2(schemas, metadata=bearer)) == denied

        # The throttle: one client behind the proxy blocks itself, not the proxy's others.
        for number in range(ADDRESS.failures):
            guess = pb.AuthenticateRequest(user=f"user{number}", password="guess")
            with pytest.raises(grpc.RpcError) as refused:
                proxy.authenticate(guess, metadata=_from("198.51.100.9"))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _code(lambda: handshake(proxy, PASSWORD, "198.51.100.9")) == exhausted
        assert handshake(proxy, PASSWORD, "198.51.100.10").sessionId
        assert handshake(proxy, PASSWORD, None).sessionId  # the proxy's own address

        # The audit names the forwarded client.
        audit.flush()
        events = [event for event in audit_events(store) if event.kind == "handshake"]
        seen = {(event.result, event.peer) for event in events}
        assert {("ok", "203.0.113.5"), ("ok", "198.51.100.10"), ("ok", "127.0.0.1")} <= seen
        refused = [event.reason for event in events if event.peer == "198.51.100.9"]
        assert len(refused) == ADDRESS.failures + 1
        assert refused.count("throttled") == 1
        assert {event.peer for event in events if event.reason == "address_not_allowed"} == {
            "127.0.0.1",
            "::1",
        }
    finally:
        proxy_channel.close()
        direct_channel.close()


def audit_events(store: TokenStore) -> list[Any]:
    return list(AuditStore(store.engine).auth_events(limit=1000))


# -- the web page --------------------------------------------------------------------------------


def test_the_web_page_throttles_the_forwarded_browser_behind_a_trusted_proxy(
    clock: FakeClock,
) -> None:
    store = memory_store(clock=clock)
    store.create_user("alice", PASSWORD)
    auth = Authenticator(
        store,
        clock=clock,
        throttle=LoginThrottle(address=ADDRESS, user=USER, clock=clock),
        trusted_proxies=TrustedProxies(["127.0.0.1"]),
    )
    key = secrets.token_bytes(32)
    app = build_app(
        auth,
        session_key=key,
        idle_seconds=600,
        max_age_seconds=3600,
        clock=clock,
        allowed_hosts=["testserver"],  # Starlette's TestClient's host name
    )

    def browser(client: str, forwarded: str | None) -> tuple[TestClient, str]:
        headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
        session = TestClient(app, follow_redirects=False, client=(client, 5000), headers=headers)
        page = session.get("/signin")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert found is not None
        return session, found.group(1)

    def sign_in(client: str, forwarded: str | None, password: str, user: str = "alice") -> int:
        session, csrf = browser(client, forwarded)
        form = {"csrf": csrf, "username": user, "password": password}
        answer = session.post("/signin", data=form, headers={"origin": "http://testserver"})
        return answer.status_code

    try:
        for number in range(ADDRESS.failures):
            assert sign_in("127.0.0.1", "198.51.100.9", "guess", f"user{number}") == 401
        assert sign_in("127.0.0.1", "198.51.100.9", PASSWORD) == 429
        assert sign_in("127.0.0.1", "198.51.100.10", PASSWORD) == 303
        # Not from a trusted proxy: the header is ignored, the socket's address counts.
        for number in range(ADDRESS.failures):
            assert sign_in("192.0.2.50", "198.51.100.11", "guess", f"user{number}") == 401
        assert sign_in("192.0.2.50", "198.51.100.12", PASSWORD) == 429
    finally:
        auth.close()
        store.close()
