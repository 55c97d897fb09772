"""End to end in a browser: headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python API; never a browser Playwright downloads) on the page of a real `e6auth serve --http-port`,
and the real e6data connector (in its worker process, see test_connector.py) on the same gateway.

Skips when chromium or playwright is missing, saying which; with E6AUTH_REQUIRE_BROWSER=1 (as CI
sets it) that is a failure instead.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

# The harness of test_connector.py: the same gateway processes, connector worker and store.
import test_connector as harness
from test_connector import (
    CUSTOMERS_SQL,
    PASSWORD,
    Connector,
    Gateway,
    StartGateway,
    assert_error,
    demo_connection,
    demo_rows,
    refused_after,
)

from e6auth import TokenStore

# Its fixtures, found by pytest under these names.
home = harness.home
settings = harness.settings
store = harness.store
start_gateway = harness.start_gateway
connector = harness.connector

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("E6AUTH_REQUIRE_BROWSER") == "1"
PAGE_LINE = re.compile(r"^e6auth Access Tokens page on (?P<url>https?://\S+)$")
# The bound: a connector using a deleted token is refused within a second of the deletion.
REFUSAL_SECONDS = 1.0
STEP_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None and not CHROMIUM.exists():
        missing = f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    if missing is not None:
        if REQUIRE_BROWSER:
            pytest.fail(missing + " and E6AUTH_REQUIRE_BROWSER=1", pytrace=False)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def page_url(gateway: Gateway) -> str:
    found = [match["url"] for line in gateway.out.seen if (match := PAGE_LINE.match(line))]
    assert len(found) == 1, gateway.out.text
    return found[0]


@pytest.mark.timeout(120)
def test_sign_in_create_list_delete_two_and_the_connector_is_refused_within_a_second(
    browser: Any, start_gateway: StartGateway, store: TokenStore, connector: Connector
) -> None:
    store.create_user("alice", PASSWORD)
    gateway = start_gateway("--demo", "--http-port", "0")
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    try:
        # Sign in: the page sends an unknown browser to the sign-in form first.
        page.goto(page_url(gateway))
        assert page.url.endswith("/signin")
        page.fill("#username", "alice")
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.wait_for_url("**/tokens")
        assert page.inner_text("h1") == "Access Tokens"

        # Create three tokens, reading each from the page that shows it once; the notebook's is
        # read-only and for loopback only.
        made: dict[str, str] = {}
        for comment, days in (("laptop", "30"), ("ci pipeline", "7"), ("notebook", "")):
            page.click("text=Add Access Token")
            page.fill("#comment", comment)
            page.fill("#expires-days", days)
            if comment == "notebook":
                page.fill("#allow-from", "127.0.0.0/8, ::1")
                page.check("input[name=read_only]")
            page.click("button:has-text('Create token')")
            assert page.inner_text("h1") == "Token created"
            assert "shown this once" in page.inner_text(".message.warning")
            assert page.is_visible("button[data-copy='new-token']")  # the script showed it
            made[comment] = page.input_value("#new-token")
            page.click("text=Back to Access Tokens")
        ids = {comment: token.split("_")[1] for comment, token in made.items()}

        # The list: every token with its comment, created, expires, last used and status.
        rows = page.locator("tbody tr")
        assert rows.count() == 3
        assert {rows.nth(n).get_attribute("data-token") for n in range(3)} == set(ids.values())
        laptop = page.locator(f"tr[data-token='{ids['laptop']}']")
        assert "laptop" in laptop.inner_text()
        assert "active" in laptop.inner_text()
        assert "never" in laptop.inner_text()  # not used yet
        notebook = page.locator(f"tr[data-token='{ids['notebook']}']").inner_text()
        assert "never" in notebook
        assert "read-only" in notebook
        assert "from 127.0.0.0/8, ::1/128" in notebook

        # Connectors use two of them now, before the deletion.
        open_laptop = demo_connection(connector, gateway, username="alice", password=made["laptop"])
        assert connector.rows(open_laptop, CUSTOMERS_SQL) == demo_rows(gateway.home, CUSTOMERS_SQL)
        survivor = demo_connection(connector, gateway, username="alice", password=made["notebook"])
        assert connector.rows(survivor, "SELECT 1") == [[1]]
        write = connector.execute(survivor, "CREATE TABLE notes (line TEXT)")
        assert not write["ok"], write
        assert write["error"]["code"] == "PERMISSION_DENIED", write
        assert write["error"]["details"].startswith("read-only token: "), write

        # "Select all" selects every row; then select exactly two and delete them.
        page.check("#select-all")
        assert page.locator("input[name=id]:checked").count() == 3
        page.uncheck("#select-all")
        page.check(f"tr[data-token='{ids['laptop']}'] input[name=id]")
        page.check(f"tr[data-token='{ids['ci pipeline']}'] input[name=id]")
        page.click("#delete-selected")
        assert page.inner_text("h1") == "Delete 2 tokens?"
        confirming = page.locator("tbody tr")
        assert {confirming.nth(n).get_attribute("data-token") for n in range(2)} == {
            ids["laptop"],
            ids["ci pipeline"],
        }
        with page.expect_response(lambda answer: answer.url.endswith("/confirm")) as done:
            clicked = time.monotonic()
            page.click("#confirm-delete")
        assert done.value.status == 303

        # The open connection with a deleted token, and a new one with the other, are refused.
        delay, refusal = refused_after(connector, open_laptop, clicked, REFUSAL_SECONDS)
        assert_error(refusal, "UNAUTHENTICATED", "token revoked")
        assert delay < REFUSAL_SECONDS, f"refused {delay:.2f} s after the deletion"
        print(f"open connection refused {delay:.2f} s after the deletion")  # shown with -rP
        fresh = demo_connection(connector, gateway, username="alice", password=made["ci pipeline"])
        refused = connector.execute(fresh, "SELECT 1")
        fresh_delay = time.monotonic() - clicked
        assert_error(refused, "UNAUTHENTICATED", "token revoked")
        assert fresh_delay < REFUSAL_SECONDS + 1, f"refused {fresh_delay:.2f} s after"
        assert connector.rows(survivor, "SELECT 1") == [[1]]

        # The list now shows the one left, and says what happened.
        page.wait_for_url("**/tokens?deleted=2")
        assert "Deleted 2 tokens." in page.inner_text("main")
        assert page.locator("tbody tr").count() == 1
        assert page.locator("tbody tr").get_attribute("data-token") == ids["notebook"]
        assert all(token not in page.content() for token in made.values())

        # Signing out ends the session: the list asks for a sign-in again.
        page.click("button:has-text('Sign out')")
        page.wait_for_url("**/signin")
        page.goto(page_url(gateway) + "tokens")
        assert page.url.endswith("/signin")
    finally:
        context.close()


@pytest.mark.timeout(60)
def test_the_copy_button_puts_the_token_on_the_clipboard(
    browser: Any, start_gateway: StartGateway, store: TokenStore
) -> None:
    store.create_user("alice", PASSWORD)
    gateway = start_gateway("--demo", "--http-port", "0")
    url = page_url(gateway)
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    try:
        page.goto(url + "signin")
        page.fill("#username", "alice")
        page.fill("#password", PASSWORD)
        page.click("button:has-text('Sign in')")
        page.click("text=Add Access Token")
        page.click("button:has-text('Create token')")
        shown = page.input_value("#new-token")
        page.click("button[data-copy='new-token']")
        # The label changes once the asynchronous clipboard write has finished: wait for it.
        page.locator("button[data-copy='new-token']", has_text="Copied").wait_for()
        assert page.inner_text("button[data-copy='new-token']") == "Copied"
        assert page.evaluate("navigator.clipboard.readText()") == shown
    finally:
        context.close()


@pytest.mark.timeout(60)
def test_demo_prints_the_page_and_a_password_that_signs_in_and_sigterm_stops_both(
    start_gateway: StartGateway,
) -> None:
    # No browser needed: a plain HTTP client signs in.
    gateway = start_gateway("--demo", "--http-port", "0")
    url = page_url(gateway)
    printed = re.search(r"^Sign in as 'demo' with the password (\S+)$", gateway.out.text, re.M)
    assert printed is not None, gateway.out.text
    assert f"Access Tokens page: {url}" in gateway.out.text
    with httpx2.Client(base_url=url) as client:
        form = client.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]*)"', form.text)
        assert csrf is not None
        answer = client.post(
            "/signin", data={"csrf": csrf[1], "username": "demo", "password": printed[1]}
        )
        assert (answer.status_code, answer.headers["location"]) == (303, "/tokens")

    assert gateway.stop() == 0
    assert gateway.log.has("gateway stopped"), gateway.log.text
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(url, timeout=2)


@pytest.mark.timeout(60)
def test_sign_out_everywhere_ends_the_users_session_in_another_browser(
    browser: Any, start_gateway: StartGateway, store: TokenStore
) -> None:
    store.create_user("alice", PASSWORD)
    gateway = start_gateway("--demo", "--http-port", "0")
    url = page_url(gateway)
    contexts = [browser.new_context() for _ in range(2)]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            page.set_default_timeout(STEP_MS)
            page.goto(url + "signin")
            page.fill("#username", "alice")
            page.fill("#password", PASSWORD)
            page.click("button:has-text('Sign in')")
            page.wait_for_url("**/tokens")
        here, there = pages

        here.click("button:has-text('Sign out everywhere')")
        here.wait_for_url("**/signin")

        there.goto(url + "tokens")  # the other browser's session ended too
        assert there.url.endswith("/signin")
        there.fill("#username", "alice")
        there.fill("#password", PASSWORD)
        there.click("button:has-text('Sign in')")
        there.wait_for_url("**/tokens")  # a new sign-in works at once
    finally:
        for context in contexts:
            context.close()
