"""OIDC bearer tokens end to end: the real e6data connector in OAuth mode against a real
`e6auth serve` that trusts an issuer this test runs (its discovery document and JWKS over
loopback HTTP, and for the client-credentials grant an HTTPS token endpoint)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oidc_issuer import AUDIENCE, Issuer, TokenEndpoint
from test_connector import (  # the harness: gateway processes and the connector worker
    CATALOG,
    SQLITE_SCHEMA,
    UNIFORM,
    Connector,
    Gateway,
    StartGateway,
    assert_error,
    connector,
    demo_rows,
    home,
    self_signed_certificate,
    settings,
    start_gateway,
    store,
)

from e6auth import TokenStore

__all__ = ["connector", "home", "settings", "start_gateway", "store"]  # fixtures, used by name

SQL = "SELECT id, name FROM customers WHERE id IN (1, 2, 3) ORDER BY id"


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    test_issuer = Issuer()
    try:
        yield test_issuer
    finally:
        test_issuer.close()


@pytest.fixture
def oidc_gateway(start_gateway: StartGateway, issuer: Issuer, store: TokenStore) -> Gateway:
    """A demo gateway that accepts the issuer's JWTs for AUDIENCE; the JWKS URL is discovered."""
    store.create_user("alice")
    return start_gateway("--demo", E6AUTH_OIDC_ISSUER=issuer.url, E6AUTH_OIDC_AUDIENCE=AUDIENCE)


def connect(connector: Connector, gateway: Gateway, **credentials: str) -> str:
    return connector.connect(gateway, database=SQLITE_SCHEMA, catalog=CATALOG, **credentials)


@pytest.mark.timeout(90)
def test_the_connector_runs_queries_with_an_oidc_access_token(
    oidc_gateway: Gateway, connector: Connector, issuer: Issuer
) -> None:
    conn = connect(connector, oidc_gateway, access_token=issuer.token(sub="alice"))

    for _ in range(3):
        assert connector.rows(conn, SQL) == demo_rows(oidc_gateway.home, SQL)

    # Every call carried the JWT; the keys were fetched once, the issuer discovered once.
    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 1)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        pytest.param({"exp": -120}, ("UNAUTHENTICATED", "token expired"), id="expired"),
        pytest.param({"aud": "another-app"}, UNIFORM, id="wrong-audience"),
        pytest.param({"sub": "mallory"}, UNIFORM, id="unknown-user"),
    ],
)
def test_the_gateway_refuses_bad_jwts(
    oidc_gateway: Gateway,
    connector: Connector,
    issuer: Issuer,
    claims: dict[str, Any],
    expected: tuple[str, str],
) -> None:
    if "exp" in claims:
        claims = {**claims, "exp": int(time.time()) + int(claims["exp"])}
    conn = connect(connector, oidc_gateway, access_token=issuer.token(**claims))

    assert_error(connector.execute(conn, SQL), *expected)


@pytest.mark.timeout(90)
def test_without_oidc_settings_a_jwt_is_refused_uniformly(
    start_gateway: StartGateway, connector: Connector, issuer: Issuer, store: TokenStore
) -> None:
    store.create_user("alice")
    gateway = start_gateway("--demo")
    conn = connect(connector, gateway, access_token=issuer.token(sub="alice"))

    assert_error(connector.execute(conn, SQL), *UNIFORM)
    assert issuer.jwks_requests == 0


@pytest.mark.timeout(90)
def test_the_connector_gets_a_jwt_with_client_credentials(
    oidc_gateway: Gateway,
    issuer: Issuer,
    store: TokenStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.create_user("etl-bot")
    cert, key = self_signed_certificate(tmp_path)
    endpoint = TokenEndpoint(issuer, "etl-bot", "s3cret-of-the-bot", cert, key)
    # The connector only speaks HTTPS to a token endpoint: its worker trusts the test's CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    worker = Connector()
    try:
        conn = connect(
            worker,
            oidc_gateway,
            client_id="etl-bot",
            client_secret="s3cret-of-the-bot",
            token_url=endpoint.url,
        )
        assert worker.rows(conn, SQL) == demo_rows(oidc_gateway.home, SQL)
        assert worker.rows(conn, "SELECT count(*) FROM orders") == [[400]]
    finally:
        worker.close()
        endpoint.close()
    assert endpoint.granted == 1
