"""Single sign-on end to end in a browser: headless Chromium (as in test_web_browser.py) on the page
of a real `e6auth serve --http-port`, signing in through a real OpenID Provider (panva's
oidc-provider, ``tests/oidc_provider``) and its own login form; the token made there is used by the
real e6data connector (its worker process, see test_connector.py), deleted, and refused.

Skips when chromium, playwright, node or the provider's install is missing, saying which; with
E6AUTH_REQUIRE_BROWSER=1 (as CI sets it) that is a failure instead.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import test_connector as harness
import test_web_browser
from oidc_provider import CLIENT_ID, StartProvider, start_provider
from test_connector import (
    CUSTOMERS_SQL,
    Connector,
    StartGateway,
    assert_error,
    demo_connection,
    demo_rows,
    refused_after,
    run_cli,
)
from test_web_browser import REFUSAL_SECONDS, STEP_MS, page_url

from e6auth import TokenStore

# Fixtures, found by pytest under these names.
home = harness.home
settings = harness.settings
store = harness.store
start_gateway = harness.start_gateway
connector = harness.connector
browser = test_web_browser.browser
__all__ = ["start_provider"]


def free_port() -> int:
    # The provider must know the page's callback URL before the gateway starts: a port picked
    # here and given to both (the moment between closing and binding is the only race).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def local_only(route: Any) -> None:
    # The provider's login page imports a web font; nothing leaves the machine in a test.
    if urlsplit(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


@pytest.mark.timeout(120)
def test_sign_in_with_sso_make_a_token_the_connector_uses_delete_it_and_it_is_refused(
    browser: Any,
    start_provider: StartProvider,
    start_gateway: StartGateway,
    store: TokenStore,
    connector: Connector,
    tmp_path: Path,
) -> None:
    store.create_user("alice@example.com")  # no password: single sign-on and tokens only
    port = free_port()
    provider = start_provider(f"http://127.0.0.1:{port}/signin/oidc/callback")
    secret_file = tmp_path / "client_secret"
    secret_file.write_text(provider.client_secret + "\n")
    gateway = start_gateway(
        "--demo",
        "--http-port",
        str(port),
        "--log-level",
        "debug",  # everything any logger has to say, to look for secrets in
        E6AUTH_WEB_OIDC_ISSUER=provider.issuer,
        E6AUTH_WEB_OIDC_CLIENT_ID=CLIENT_ID,
        E6AUTH_WEB_OIDC_CLIENT_SECRET_FILE=str(secret_file),
        E6AUTH_WEB_PASSWORD_SIGNIN="false",
    )
    url = page_url(gateway)
    context = browser.new_context()
    context.route("**/*", local_only)
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    callbacks: list[str] = []
    page.on(
        "request",
        lambda request: callbacks.append(request.url) if "/callback?" in request.url else None,
    )
    try:
        # The sign-in page offers SSO only (password sign-in is turned off).
        page.goto(url)
        assert page.url.endswith("/signin")
        assert page.locator("#password").count() == 0
        page.click("#sign-in-sso")

        # The provider's own login form, then its consent; then back to the page, signed in.
        page.wait_for_url(provider.issuer + "/interaction/**")
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "any password")
        page.click("button[type=submit]")
        page.click("button:has-text('Continue')")
        page.wait_for_url(url + "tokens")
        assert page.inner_text("h1") == "Access Tokens"
        assert page.inner_text(".who .name") == "alice@example.com"

        # A token, read from the page that shows it once; the connector uses it.
        page.click("text=Add Access Token")
        page.fill("#comment", "notebook")
        page.fill("#expires-days", "7")
        page.click("button:has-text('Create token')")
        assert page.inner_text("h1") == "Token created"
        token = page.input_value("#new-token")
        token_id = token.split("_")[1]
        page.click("text=Back to Access Tokens")
        conn = demo_connection(connector, gateway, username="alice@example.com", password=token)
        assert connector.rows(conn, CUSTOMERS_SQL) == demo_rows(gateway.home, CUSTOMERS_SQL)

        # Deleted on the page: the open connection is refused within a second.
        page.check(f"tr[data-token='{token_id}'] input[name=id]")
        page.click("#delete-selected")
        assert page.inner_text("h1") == "Delete 1 token?"
        with page.expect_response(lambda answer: answer.url.endswith("/confirm")) as done:
            clicked = time.monotonic()
            page.click("#confirm-delete")
        assert done.value.status == 303
        delay, refusal = refused_after(connector, conn, clicked, REFUSAL_SECONDS)
        assert_error(refusal, "UNAUTHENTICATED", "token revoked")
        assert delay < REFUSAL_SECONDS, f"refused {delay:.2f} s after the deletion"
        page.wait_for_url("**/tokens?deleted=1")

        cookies = [cookie["value"] for cookie in context.cookies()]
    finally:
        context.close()

    # Nothing secret in the gateway's log (DEBUG and up, uvicorn's access log included):
    # not the client secret, the code or state of the callback, a cookie, nor any JWT.
    assert len(callbacks) == 1, callbacks
    query = parse_qs(urlsplit(callbacks[0]).query)
    assert gateway.stop() == 0
    logged = gateway.log.text + gateway.out.text
    assert "web sign-in of alice@example.com" in logged
    assert "GET /signin/oidc/callback HTTP" in logged  # the access log, without its query
    for secret in [provider.client_secret, query["code"][0], query["state"][0], token, *cookies]:
        assert secret not in logged
    assert "eyJ" not in logged


@pytest.mark.timeout(120)
def test_an_owner_signed_in_with_sso_makes_a_service_account_token_the_connector_uses(
    browser: Any,
    start_provider: StartProvider,
    start_gateway: StartGateway,
    store: TokenStore,
    connector: Connector,
) -> None:
    store.create_user("alice@example.com", admin=True)
    store.create_service_account("etl-nightly", owners=["alice@example.com"])
    port = free_port()
    provider = start_provider(f"http://127.0.0.1:{port}/signin/oidc/callback")
    gateway = start_gateway(
        "--demo",
        "--http-port",
        str(port),
        E6AUTH_WEB_OIDC_ISSUER=provider.issuer,
        E6AUTH_WEB_OIDC_CLIENT_ID=CLIENT_ID,
        E6AUTH_WEB_OIDC_CLIENT_SECRET=provider.client_secret,
    )
    url = page_url(gateway)
    context = browser.new_context()
    context.route("**/*", local_only)
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    try:
        page.goto(url + "signin")
        page.click("#sign-in-sso")
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "any password")
        page.click("button[type=submit]")
        page.click("button:has-text('Continue')")
        page.wait_for_url(url + "tokens")

        # Her service account, its page, a read-only token made there for it.
        page.click("a[href='/service-accounts/etl-nightly']")
        assert page.inner_text("h1") == "Service account etl-nightly"
        page.click("text=Add Access Token")
        page.fill("#comment", "nightly load")
        page.fill("#expires-days", "30")
        page.check("input[name=read_only]")
        page.click("button:has-text('Create token')")
        assert page.inner_text("h1") == "Token created"
        token = page.input_value("#new-token")
        token_id = token.split("_")[1]
        assert [info.user for info in store.list_tokens("etl-nightly")] == ["etl-nightly"]

        conn = demo_connection(connector, gateway, username="etl-nightly", password=token)
        assert connector.rows(conn, "SELECT 1") == [[1]]
        write = connector.execute(conn, "CREATE TABLE notes (line TEXT)")
        assert write["error"]["code"] == "PERMISSION_DENIED", write

        # Deleted from the service account's page: refused within a second.
        page.goto(url + "service-accounts/etl-nightly")
        page.check(f"tr[data-token='{token_id}'] input[name=id]")
        page.click("#delete-selected")
        with page.expect_response(lambda answer: answer.url.endswith("/confirm")) as done:
            clicked = time.monotonic()
            page.click("#confirm-delete")
        assert done.value.status == 303
        delay, refusal = refused_after(connector, conn, clicked, REFUSAL_SECONDS)
        assert_error(refusal, "UNAUTHENTICATED", "token revoked")
        assert delay < REFUSAL_SECONDS, f"refused {delay:.2f} s after the deletion"
    finally:
        context.close()
    assert gateway.stop() == 0  # its audit written
    audit = json.loads(run_cli(gateway.home, "audit", "--json", "--user", "etl-nightly").stdout)
    assert {(event["kind"], event["method"]) for event in audit} >= {
        ("token_created", "web:alice@example.com"),
        ("token_deleted", "web:alice@example.com"),
    }
