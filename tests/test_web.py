"""The Access Tokens web page (e6auth.web), through Starlette's TestClient on a real token store and
authenticator: signing in and out, cookies, CSRF, who sees and deletes what, adding tokens, bad
input, headers, and the separation of web sessions from the connector's session ids.

The page served by `e6auth serve` itself, in a browser, is tests/test_web_browser.py.
"""

from __future__ import annotations

import datetime as dt
import html
import re
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx2 as httpx
import jwt
import markupsafe
import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient
from test_connector import self_signed_certificate

from e6auth import Authenticator, Settings, TokenStore
from e6auth.errors import AddressNotAllowed, SessionError, TokenRevoked
from e6auth.grpc.server import Gateway, build_gateway
from e6auth.store import AuditStore
from e6auth.store.schema import ended_sessions, users
from e6auth.testing import FAST_ARGON2_SETTINGS, FakeClock, memory_store
from e6auth.verify.parameters import SessionParameters
from e6auth.verify.policy import Policy
from e6auth.verify.throttle import LoginThrottle, SlowdownLimit, ThrottleLimit
from e6auth.web import build_app
from e6auth.web.csrf import CsrfTokens
from e6auth.web.forms import MAX_BODY_BYTES
from e6auth.web.headers import SECURITY_HEADERS

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse battery staple"
ADMIN_PASSWORD = "root password of the page"
SESSION_KEY = secrets.token_bytes(32)
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')
NEW_TOKEN = re.compile(r'id="new-token" value="(e6pat_[^"]+)"')
PEER = "testclient"  # the client address Starlette's TestClient reports


class Page:
    """A browser's view of the page: a TestClient, or a client over real HTTP, with its cookie
    jar."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def csrf(self, path: str = "/tokens") -> str:
        answer = self.client.get(path)
        assert answer.status_code == 200, answer.text
        found = CSRF_FIELD.search(answer.text)
        assert found is not None, answer.text
        return found[1]

    def sign_in(self, username: str, password: str) -> httpx.Response:
        token = self.csrf("/signin")
        return self.client.post(
            "/signin", data={"csrf": token, "username": username, "password": password}
        )

    def create(self, comment: str = "", expires_days: str = "") -> httpx.Response:
        return self.client.post(
            "/tokens",
            data={"csrf": self.csrf(), "comment": comment, "expires_days": expires_days},
        )

    def created_token(self, comment: str = "", expires_days: str = "") -> str:
        answer = self.create(comment, expires_days)
        assert answer.status_code == 201, answer.text
        found = NEW_TOKEN.search(answer.text)
        assert found is not None
        return found[1]

    def delete(self, *ids: str) -> httpx.Response:
        return self.client.post(
            "/tokens/delete/confirm", data={"csrf": self.csrf(), "id": list(ids)}
        )

    def listed_ids(self, query: str = "") -> list[str]:
        answer = self.client.get("/tokens" + query)
        assert answer.status_code == 200, answer.text
        return re.findall(r'<tr data-token="([^"]+)"', answer.text)


class Site:
    """The page on a store and an authenticator, and browsers to visit it with."""

    def __init__(self, store: TokenStore, clock: FakeClock, *, secure: bool = False) -> None:
        self.store = store
        self.clock = clock
        self.throttle = LoginThrottle(
            address=ThrottleLimit(5, 60, 600), user=SlowdownLimit(50, 60, 600), clock=clock
        )
        self.auth = Authenticator(
            store,
            clock=clock,
            sessions=SessionParameters(SESSION_KEY),
            throttle=self.throttle,
            audit=None,
        )
        self.app = build_app(
            self.auth,
            session_key=SESSION_KEY,
            secure=secure,
            idle_seconds=600,
            max_age_seconds=3600,
            clock=clock,
            allowed_hosts=["testserver"],
        )
        self.base_url = "https://testserver" if secure else "http://testserver"
        self._clients: list[TestClient] = []

    def browser(self) -> Page:
        client = TestClient(self.app, base_url=self.base_url, follow_redirects=False)
        self._clients.append(client)
        return Page(client)

    def signed_in(self, username: str = "alice", password: str = PASSWORD) -> Page:
        page = self.browser()
        answer = page.sign_in(username, password)
        assert answer.status_code == 303, answer.text
        return page

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.auth.close()


@pytest.fixture
def sqlite_store(tmp_path: Path, clock: FakeClock) -> Iterator[TokenStore]:
    store = memory_store(clock=clock, url=f"sqlite:///{tmp_path}/store.db")
    store.create_user("alice", PASSWORD)
    store.create_user("bob", PASSWORD)
    store.create_user("root", ADMIN_PASSWORD, admin=True)
    yield store
    store.close()


@pytest.fixture
def site(sqlite_store: TokenStore, clock: FakeClock) -> Iterator[Site]:
    built = Site(sqlite_store, clock)
    yield built
    built.close()


def set_cookies(answer: httpx.Response) -> dict[str, str]:
    """The Set-Cookie headers of an answer, by cookie name, as sent."""
    found = {}
    for header in answer.headers.get_list("set-cookie"):
        name = header.partition("=")[0]
        found[name] = header
    return found


# -- signing in --------------------------------------------------------------------------------


def test_signing_in_sets_an_httponly_samesite_strict_session_cookie(site: Site) -> None:
    page = site.browser()
    first = page.client.get("/tokens")
    assert (first.status_code, first.headers["location"]) == (303, "/signin")

    answer = page.sign_in("Alice", PASSWORD)

    assert (answer.status_code, answer.headers["location"]) == (303, "/tokens")
    cookie = set_cookies(answer)["e6auth_session"]
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/" in attributes
    assert "max-age=3600" in attributes  # the session's absolute expiry, never beyond
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    listing = page.client.get("/tokens")
    assert listing.status_code == 200
    assert '<span class="name">alice</span>' in listing.text


def test_under_tls_the_cookies_are_secure_and_host_prefixed(
    sqlite_store: TokenStore, clock: FakeClock
) -> None:
    site = Site(sqlite_store, clock, secure=True)
    try:
        page = site.browser()
        form = page.client.get("/signin")
        assert "Secure" in set_cookies(form)["__Host-e6auth_signin"]
        answer = page.sign_in("alice", PASSWORD)
        assert answer.status_code == 303, answer.text
        cookie = SimpleCookie(set_cookies(answer)["__Host-e6auth_session"])
        morsel = cookie["__Host-e6auth_session"]
        assert morsel["secure"]
        assert morsel["httponly"]
        assert (morsel["samesite"].lower(), morsel["path"]) == ("strict", "/")
        assert page.client.get("/tokens").status_code == 200
    finally:
        site.close()


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "not her password"),
        ("nobody", PASSWORD),
        ("<b>bad name</b>", PASSWORD),
        ("alice", "{token}"),  # a token is never a web password
        ("alice", ""),
    ],
)
def test_every_refused_sign_in_gets_one_message_and_echoes_nothing(
    site: Site, username: str, password: str
) -> None:
    token = site.store.create_token("alice").token
    sent = password.format(token=token)
    answer = site.browser().sign_in(username, sent)

    assert answer.status_code == 401
    assert "Invalid user name or password." in answer.text
    assert "e6auth_session" not in set_cookies(answer)
    if sent:
        assert sent not in answer.text
    assert html.escape(username) not in answer.text.replace('"username"', "")


def test_a_throttled_sign_in_is_429_with_retry_after_and_counts_with_the_handshakes(
    site: Site,
) -> None:
    page = site.browser()
    for _ in range(3):
        assert page.sign_in("alice", "wrong").status_code == 401
    for _ in range(2):  # two more failures, through the connector's handshake
        with pytest.raises(Exception, match="wrong password"):
            site.auth.verify("alice", "wrong", peer=PEER)

    answer = page.sign_in("alice", PASSWORD)  # the right password, but blocked

    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) == 600
    assert "too many failed attempts; retry in 600 s" in answer.text
    assert "e6auth_session" not in set_cookies(answer)
    site.clock.advance(601)
    assert page.sign_in("alice", PASSWORD).status_code == 303


def test_failed_web_sign_ins_block_the_handshake_too(site: Site) -> None:
    page = site.browser()
    for _ in range(5):
        assert page.sign_in("bob", "wrong").status_code == 401
    with pytest.raises(Exception, match="throttled"):
        site.auth.verify("alice", PASSWORD, peer=PEER)


def test_a_disabled_user_cannot_sign_in_and_an_open_session_ends_at_its_next_request(
    site: Site,
) -> None:
    page = site.signed_in("alice")
    site.store.disable_user("alice")

    answer = page.client.get("/tokens")
    assert (answer.status_code, answer.headers["location"]) == (303, "/signin")
    refused = site.browser().sign_in("alice", PASSWORD)
    assert refused.status_code == 403
    assert "This user is disabled." in refused.text


def test_a_changed_password_ends_open_sessions(site: Site) -> None:
    page = site.signed_in("alice")
    site.store.set_password("alice", "her new password")
    assert page.client.get("/tokens").status_code == 303


def test_with_password_logins_off_the_page_says_so_and_refuses(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = memory_store(
        clock=clock, url=f"sqlite:///{tmp_path}/s.db", policy=Policy(password_logins=False)
    )
    store.create_user("alice", PASSWORD)
    site = Site(store, clock)
    try:
        page = site.browser()
        form = page.client.get("/signin")
        assert "Password sign-in is turned off by the policy" in form.text
        assert 'name="password"' not in form.text
        # No form to read the token from: made as the page makes it, for this browser's nonce.
        csrf = CsrfTokens(SESSION_KEY).for_sign_in(page.client.cookies["e6auth_signin"])
        answer = page.client.post(
            "/signin", data={"csrf": csrf, "username": "alice", "password": PASSWORD}
        )
        assert answer.status_code == 403
        assert "password_logins = false" in answer.text
    finally:
        site.close()
        store.close()


def test_a_sign_in_without_its_form_token_or_from_another_site_is_refused(site: Site) -> None:
    page = site.browser()
    token = page.csrf("/signin")
    fields = {"username": "alice", "password": PASSWORD}

    without = page.client.post("/signin", data=fields)
    forged = page.client.post("/signin", data={**fields, "csrf": token + "x"})
    elsewhere = page.client.post(
        "/signin", data={**fields, "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    no_cookie = site.browser().client.post("/signin", data={**fields, "csrf": token})

    for answer in (without, forged, elsewhere, no_cookie):
        assert answer.status_code == 403
        assert "e6auth_session" not in set_cookies(answer)
    same_site = page.client.post(
        "/signin", data={**fields, "csrf": token}, headers={"Origin": "http://testserver"}
    )
    assert same_site.status_code == 303


def test_signing_out_ends_the_session_even_for_a_copy_of_the_cookie(site: Site) -> None:
    page = site.signed_in("alice")
    cookie = page.client.cookies["e6auth_session"]

    answer = page.client.post("/signout", data={"csrf": page.csrf()})

    assert (answer.status_code, answer.headers["location"]) == (303, "/signin")
    assert 'e6auth_session=""' in set_cookies(answer)["e6auth_session"]
    replay = site.browser()
    replay.client.cookies.set("e6auth_session", cookie)
    assert replay.client.get("/tokens").status_code == 303


def test_a_session_ends_when_idle_and_at_its_maximum_age(site: Site) -> None:
    idle = site.signed_in("alice")
    busy = site.signed_in("bob")
    for _ in range(6):
        site.clock.advance(590)
        assert busy.client.get("/tokens").status_code == 200
        if _ == 0:
            assert idle.client.get("/tokens").status_code == 200
    assert idle.client.get("/tokens").status_code == 303  # idle for more than 600 s
    site.clock.advance(100)  # 3640 s after sign-in: past the maximum age, however busy
    assert busy.client.get("/tokens").status_code == 303


def test_a_web_cookie_is_no_connector_session_and_a_session_id_is_no_cookie(site: Site) -> None:
    page = site.signed_in("alice")
    cookie = page.client.cookies["e6auth_session"]
    with pytest.raises(SessionError):
        site.auth.verify_session(cookie, peer=PEER)

    session_id = site.auth.create_session(site.auth.verify("alice", PASSWORD))
    assert site.auth.verify_session(session_id).username == "alice"
    visitor = site.browser()
    visitor.client.cookies.set("e6auth_session", session_id)
    assert visitor.client.get("/tokens").status_code == 303


# -- adding tokens -----------------------------------------------------------------------------


def test_a_new_token_is_shown_once_on_the_post_answer_and_works(site: Site) -> None:
    page = site.signed_in("alice")

    answer = page.create("laptop", "30")

    assert answer.status_code == 201
    assert answer.headers["cache-control"] == "no-store"
    token = NEW_TOKEN.search(answer.text)
    assert token is not None
    assert "It is shown this once" in answer.text
    assert 'data-copy="new-token"' in answer.text
    principal = site.auth.verify_token(token[1])
    assert principal.username == "alice"
    [info] = site.store.list_tokens("alice")
    assert info.comment == "laptop"
    assert info.expires_at == site.store.now() + dt.timedelta(days=30)
    listing = page.client.get("/tokens").text
    assert token[1] not in listing
    assert info.id in listing
    assert "laptop" in listing


def test_a_token_made_read_only_and_for_some_ranges_is_limited_so(site: Site) -> None:
    page = site.signed_in("alice")

    answer = page.client.post(
        "/tokens",
        data={
            "csrf": page.csrf(),
            "comment": "dashboard",
            "allow_from": "10.0.0.0/8, 192.0.2.7\n2001:db8::/32",
            "read_only": "on",
        },
    )

    assert answer.status_code == 201, answer.text
    assert "read-only" in answer.text
    assert "10.0.0.0/8, 192.0.2.7/32, 2001:db8::/32" in answer.text
    token = NEW_TOKEN.search(answer.text)
    assert token is not None
    [info] = site.store.list_tokens("alice")
    assert info.scope == "read_only"
    assert info.allow_from == ("10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32")
    principal = site.auth.verify_token(token[1], peer="10.1.2.3")
    assert principal.read_only
    with pytest.raises(AddressNotAllowed):
        site.auth.verify_token(token[1], peer="198.51.100.1")
    listing = page.client.get("/tokens").text
    assert "read-only" in listing
    assert "from 10.0.0.0/8, 192.0.2.7/32, 2001:db8::/32" in listing


def test_a_token_made_without_limits_says_so(site: Site) -> None:
    answer = site.signed_in("alice").create("laptop")
    assert answer.status_code == 201
    assert "all queries" in answer.text
    assert "anywhere" in answer.text
    [info] = site.store.list_tokens("alice")
    assert (info.scope, info.allow_from) == ("all", None)


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        ("10.0.0.7/8", "has host bits set: did you mean &#39;10.0.0.0/8&#39;?"),
        ("not-a-range", "is not a CIDR range"),
        (
            ", ".join(f"10.{n}.0.0/16" for n in range(33)),
            "At most 32 allowed address ranges per token",
        ),
        ("10.0.0.0/8," * 200, "Give at most 32 address ranges"),
    ],
    ids=["host-bits", "garbage", "too-many", "too-long"],
)
def test_bad_allowed_ranges_are_form_errors(site: Site, ranges: str, message: str) -> None:
    page = site.signed_in("alice")
    answer = page.client.post(
        "/tokens",
        data={"csrf": page.csrf(), "comment": "ci", "allow_from": ranges, "read_only": "on"},
    )
    assert answer.status_code == 400
    assert message in answer.text
    assert "checked" in answer.text  # the form comes back as it was sent
    assert site.store.list_tokens("alice") == []


@pytest.mark.parametrize(
    ("days", "message"),
    [
        ("abc", "a whole number of days"),
        ("-3", "a whole number of days"),
        ("0", "a whole number of days"),
        ("1.5", "a whole number of days"),
        ("99999999", "a whole number of days"),
        ("36501", "a whole number of days"),
    ],
)
def test_a_bad_expiry_is_a_form_error(site: Site, days: str, message: str) -> None:
    page = site.signed_in("alice")
    answer = page.create("ci", days)
    assert answer.status_code == 400
    assert message in answer.text
    assert site.store.list_tokens("alice") == []


def test_policy_limits_are_form_errors_not_server_errors(tmp_path: Path, clock: FakeClock) -> None:
    store = memory_store(
        clock=clock,
        url=f"sqlite:///{tmp_path}/s.db",
        policy=Policy(max_token_lifetime_days=90, max_tokens_per_user=1),
    )
    store.create_user("alice", PASSWORD)
    site = Site(store, clock)
    try:
        page = site.signed_in("alice")
        form = page.client.get("/tokens/new").text
        assert "at most 90: required by the policy" in form
        for days in ("", "91"):
            answer = page.create("ci", days)
            assert answer.status_code == 400
            assert "Tokens must expire within 90 days" in answer.text
        assert page.create("ci", "90").status_code == 201
        over = page.create("second", "10")
        assert over.status_code == 400
        assert "already has 1 active tokens, the policy&#39;s maximum of 1" in over.text
        assert len(store.list_tokens("alice")) == 1
    finally:
        site.close()
        store.close()


def test_html_in_a_comment_is_shown_as_text(site: Site) -> None:
    page = site.signed_in("alice")
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    created = page.create(hostile)
    assert created.status_code == 201
    listing = page.client.get("/tokens").text
    for text in (created.text, listing):
        assert hostile not in text
        assert str(markupsafe.escape(hostile)) in text
    too_long = page.create("x" * 257)
    assert too_long.status_code == 400
    assert "comment is longer than 256 characters" in too_long.text.lower()
    control = page.create("line one\nline two")
    assert control.status_code == 400
    assert "printable text on one line" in control.text


# -- who sees and deletes what -----------------------------------------------------------------


def test_users_see_their_own_tokens_and_administrators_everyones(site: Site) -> None:
    mine = site.store.create_token("alice", comment="alice's").id
    theirs = site.store.create_token("bob", comment="bob's").id

    assert site.signed_in("alice").listed_ids() == [mine]
    assert site.signed_in("bob").listed_ids() == [theirs]
    root = site.signed_in("root", ADMIN_PASSWORD)
    assert set(root.listed_ids()) == {mine, theirs}
    assert root.listed_ids("?user=bob") == [theirs]
    listing = root.client.get("/tokens").text
    assert "<th>User</th>" in listing
    assert "<th>User</th>" not in site.signed_in("alice").client.get("/tokens").text


def test_delete_asks_for_confirmation_then_deletes_and_the_authenticator_forgets_at_once(
    site: Site,
) -> None:
    tokens = [site.store.create_token("alice", comment=f"t{n}") for n in range(3)]
    for token in tokens:
        site.auth.verify_token(token.token)  # cached
    page = site.signed_in("alice")

    confirm = page.client.post(
        "/tokens/delete", data={"csrf": page.csrf(), "id": [tokens[0].id, tokens[1].id]}
    )
    assert confirm.status_code == 200
    assert "Delete 2 tokens?" in confirm.text
    assert site.store.find_token_info(tokens[0].id).revoked_at is None  # type: ignore[union-attr]

    final_form = CSRF_FIELD.findall(confirm.text)[-1]
    ids = re.findall(r'name="id" value="([^"]+)"', confirm.text)
    answer = page.client.post("/tokens/delete/confirm", data={"csrf": final_form, "id": ids})

    assert (answer.status_code, answer.headers["location"]) == (303, "/tokens?deleted=2")
    for token in tokens[:2]:
        with pytest.raises(TokenRevoked):
            site.auth.verify_token(token.token)
    assert site.auth.verify_token(tokens[2].token).username == "alice"
    assert page.listed_ids() == [tokens[2].id]
    assert "Deleted 2 tokens." in page.client.get("/tokens?deleted=2").text


def test_a_forged_id_of_another_users_token_is_not_deleted_and_looks_like_no_token(
    site: Site,
) -> None:
    bobs = site.store.create_token("bob").id
    page = site.signed_in("alice")
    nonexistent = "A" * 12

    confirm_forged = page.client.post("/tokens/delete", data={"csrf": page.csrf(), "id": bobs})
    confirm_none = page.client.post("/tokens/delete", data={"csrf": page.csrf(), "id": nonexistent})
    forged, none = page.delete(bobs), page.delete(nonexistent)

    assert site.store.find_token_info(bobs).revoked_at is None  # type: ignore[union-attr]
    assert forged.headers["location"] == none.headers["location"] == "/tokens?deleted=0&missing=1"
    assert confirm_forged.status_code == confirm_none.status_code == 200
    assert bobs not in confirm_forged.text
    assert confirm_forged.text.replace(bobs, "") == confirm_none.text.replace(nonexistent, "")


def test_an_administrator_deletes_another_users_token(site: Site) -> None:
    bobs = site.store.create_token("bob").id
    root = site.signed_in("root", ADMIN_PASSWORD)
    answer = root.delete(bobs)
    assert answer.headers["location"] == "/tokens?deleted=1"
    assert site.store.find_token_info(bobs).revoked_at is not None  # type: ignore[union-attr]


def test_revoking_the_administrator_flag_applies_to_an_open_session(site: Site) -> None:
    bobs = site.store.create_token("bob").id
    root = site.signed_in("root", ADMIN_PASSWORD)
    site.store.set_admin("root", False)
    assert root.listed_ids() == []
    assert root.delete(bobs).headers["location"] == "/tokens?deleted=0&missing=1"


# -- CSRF --------------------------------------------------------------------------------------


@pytest.mark.parametrize("csrf", [None, "", "wrong", "ä" * 43])
def test_a_post_without_the_right_form_token_is_403_and_changes_nothing(
    site: Site, csrf: str | None
) -> None:
    token = site.store.create_token("alice")
    page = site.signed_in("alice")
    extra = {"another": "field"} if csrf is None else {"csrf": csrf}

    created = page.client.post("/tokens", data={**extra, "comment": "sneaky"})
    deleted = page.client.post("/tokens/delete/confirm", data={**extra, "id": token.id})
    signed_out = page.client.post("/signout", data=extra)

    for answer in (created, deleted, signed_out):
        assert answer.status_code == 403
        assert "Nothing was changed." in answer.text
    assert [info.id for info in site.store.list_tokens("alice")] == [token.id]
    assert site.auth.verify_token(token.token).username == "alice"
    assert page.client.get("/tokens").status_code == 200  # still signed in


def test_another_sessions_form_token_or_another_origin_is_refused(site: Site) -> None:
    token = site.store.create_token("alice")
    page = site.signed_in("alice")
    other = site.signed_in("alice").csrf()

    assert page.client.post("/tokens", data={"csrf": other}).status_code == 403
    for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
        answer = page.client.post(
            "/tokens/delete/confirm",
            data={"csrf": page.csrf(), "id": token.id},
            headers={"Origin": origin},
        )
        assert answer.status_code == 403, origin
    referred = page.client.post(
        "/tokens", data={"csrf": page.csrf()}, headers={"Referer": "https://evil.example/x"}
    )
    assert referred.status_code == 403
    assert site.store.find_token_info(token.id).revoked_at is None  # type: ignore[union-attr]


# -- headers and hostile input -----------------------------------------------------------------


def test_every_response_carries_the_security_headers(site: Site) -> None:
    page = site.signed_in("alice")
    answers = [
        page.client.get("/signin"),
        page.client.get("/tokens"),
        page.client.get("/tokens/new"),
        page.client.get("/nowhere"),
        page.client.delete("/tokens"),
        page.client.get("/static/e6auth.js"),
        page.client.post("/tokens", content=b"\xff", headers={"content-type": "text/plain"}),
    ]
    for answer in answers:
        for name, value in SECURITY_HEADERS:
            assert answer.headers[name] == value, (answer.request.url, name)
    csp = answers[0].headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    for answer in answers[:5]:
        assert answer.headers["cache-control"] == "no-store"
    assert [answer.status_code for answer in answers] == [303, 200, 200, 404, 405, 200, 415]
    for template in ("tokens", "new"):
        text = page.client.get(f"/tokens{'/new' if template == 'new' else ''}").text
        assert "<script>" not in text  # only <script src=...>
        assert " style=" not in text
        assert " onclick" not in text


def test_hostile_bodies_get_a_clear_4xx_and_never_a_500(site: Site) -> None:
    page = site.signed_in("alice")
    csrf = page.csrf()
    form = {"content-type": "application/x-www-form-urlencoded"}
    cases = [
        (b"csrf=" + csrf.encode() + b"&comment=%FF%FE", form, 400),
        (b"comment=\xe9t\xe9", form, 400),
        (b"a=" + b"x" * (MAX_BODY_BYTES + 1), form, 413),
        (b"&".join([b"id=x"] * 1200), form, 413),
        (b"csrf=x", {"content-type": "multipart/form-data; boundary=x"}, 415),
        (b"csrf=x", {"content-type": "application/json"}, 415),
    ]
    for body, headers, status in cases:
        for path in ("/tokens", "/tokens/delete", "/signin"):
            answer = page.client.post(path, content=body, headers=headers)
            assert answer.status_code == status, (path, body[:40], answer.text)
    ids = "&".join(f"id={'A' * 11}{n % 10}" for n in range(1001))
    many = page.client.post(
        "/tokens/delete/confirm", content=f"csrf={csrf}&{ids}".encode(), headers=form
    )
    assert many.status_code == 413
    huge_header = page.client.post(
        "/tokens", data={"csrf": csrf}, headers={"content-length": "99999999"}
    )
    assert huge_header.status_code in (400, 413)
    assert site.store.list_tokens("alice") == []


def test_a_long_password_or_user_name_is_refused_like_any_other(site: Site) -> None:
    page = site.browser()
    for username, password in (("alice", "p" * 5000), ("a" * 5000, PASSWORD)):
        answer = page.sign_in(username, password)
        assert answer.status_code == 401
        assert "p" * 100 not in answer.text
        assert "a" * 100 not in answer.text


# -- audit -------------------------------------------------------------------------------------


def test_sign_ins_and_token_changes_are_audited_with_the_browsers_address(
    sqlite_store: TokenStore, clock: FakeClock
) -> None:
    from e6auth.background.audit import AuditLog

    audit = AuditLog(AuditStore(sqlite_store.engine), clock=clock)
    site = Site(sqlite_store, clock)
    site.auth.audit = audit
    try:
        assert site.browser().sign_in("alice", "wrong").status_code == 401
        page = site.signed_in("alice")
        token = page.created_token("ci")
        token_id = token.split("_")[1]
        bobs = site.store.create_token("bob").id
        page.delete(token_id)
        site.signed_in("root", ADMIN_PASSWORD).delete(bobs)
        audit.flush()
        events = [
            (event.kind, event.result, event.reason, event.username, event.token_id, event.method)
            for event in AuditStore(sqlite_store.engine).auth_events()
        ]
        peers = {event.peer for event in AuditStore(sqlite_store.engine).auth_events()}
    finally:
        site.close()
    assert events == [
        ("web_signin", "refused", "bad_password", "alice", None, "password"),
        ("web_signin", "ok", None, "alice", None, "password"),
        ("token_created", "ok", None, "alice", token_id, "web"),
        ("token_deleted", "ok", None, "alice", token_id, "web"),
        ("web_signin", "ok", None, "root", None, "password"),
        ("token_deleted", "ok", None, "bob", bobs, "web:root"),
    ]
    assert peers == {PEER}


# -- on PostgreSQL -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_whole_flow_on_postgresql(postgres_url: str, clock: FakeClock) -> None:
    store = memory_store(clock=clock, url=postgres_url)
    store.create_user("alice", PASSWORD)
    site = Site(store, clock)
    try:
        page = site.signed_in("alice")
        tokens = [page.created_token(f"t{n}", "7") for n in range(3)]
        ids = page.listed_ids()
        assert len(ids) == 3
        assert page.delete(*ids[:2]).headers["location"] == "/tokens?deleted=2"
        assert page.listed_ids() == ids[2:]
        alive = [token for token in tokens if token.split("_")[1] == ids[2]]
        assert site.auth.verify_token(alive[0]).username == "alice"
    finally:
        site.close()
        store.close()


# -- served by the gateway ---------------------------------------------------------------------


def _gateway_settings(home: Path, **overrides: object) -> Settings:
    return Settings(
        home=home,
        port=0,
        http_port=0,
        **FAST_ARGON2_SETTINGS,
        **overrides,  # type: ignore[arg-type]
    )


def test_the_gateway_serves_the_page_beside_grpc_and_stops_it(tmp_path: Path) -> None:
    gateway = build_gateway(_gateway_settings(tmp_path / "home"))
    try:
        assert gateway.web is not None
        url = gateway.web.url
        assert url.startswith("http://127.0.0.1:")
        gateway.authenticator.store.create_user("alice", PASSWORD)
        with httpx.Client(base_url=url) as client:
            form = client.get("/signin")
            assert form.status_code == 200
            token = CSRF_FIELD.search(form.text)
            assert token is not None
            answer = client.post(
                "/signin", data={"csrf": token[1], "username": "alice", "password": PASSWORD}
            )
            assert answer.status_code == 303
            assert client.get("/tokens").status_code == 200
    finally:
        gateway.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)


def test_under_tls_the_gateway_serves_the_page_over_https_with_its_certificate(
    tmp_path: Path,
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    gateway = build_gateway(_gateway_settings(tmp_path / "home", tls_cert=cert, tls_key=key))
    try:
        assert gateway.web is not None
        assert gateway.web.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=gateway.web.url, verify=context) as client:
            answer = client.get("/signin")
        assert answer.status_code == 200
        assert "Secure" in answer.headers["set-cookie"]
        assert answer.headers["set-cookie"].startswith("__Host-e6auth_signin=")
        with pytest.raises(httpx.HTTPError):
            httpx.get(gateway.web.url.replace("https://", "http://") + "signin", timeout=2)
    finally:
        gateway.stop()


def test_a_web_port_in_use_fails_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = _gateway_settings(tmp_path / "home").replace(http_port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port} for the web page"):
            build_gateway(settings)


# -- signing out lasts, on every replica ---------------------------------------------------------

REPLICA_PEPPER = "the pepper every replica of the page shares, 32+ characters"
REPLICA_SESSION_KEY = "the session key every replica of the page shares, 32+ chars"


def _replica(home: Path, store_url: str) -> Gateway:
    """A gateway with its page, on the shared store and keys: one replica, or a restart of one."""
    return build_gateway(
        _gateway_settings(
            home,
            database_url=store_url,
            auto_migrate=True,
            pepper=REPLICA_PEPPER,
            session_key=REPLICA_SESSION_KEY,
            shutdown_grace_seconds=1,
        )
    )


def _visit(gateway: Gateway, cookie: str | None = None) -> Page:
    """A browser on a gateway's page over real HTTP, with a copied session cookie if given."""
    assert gateway.web is not None
    page = Page(httpx.Client(base_url=gateway.web.url, follow_redirects=False, timeout=10))
    if cookie is not None:
        page.client.cookies.set("e6auth_session", cookie)
    return page


def _signed_in_over_http(gateway: Gateway, username: str = "alice") -> Page:
    page = _visit(gateway)
    answer = page.sign_in(username, PASSWORD)
    assert (answer.status_code, answer.headers["location"]) == (303, "/tokens"), answer.text
    return page


@pytest.fixture
def replicas(tmp_path: Path, store_url: str) -> Iterator[list[Gateway]]:
    """Two gateways with their pages on one store (a SQLite file, or PostgreSQL)."""
    started: list[Gateway] = []
    try:
        for index in range(2):
            started.append(_replica(tmp_path / f"replica{index}", store_url))
        store = started[0].authenticator.store
        store.create_user("alice", PASSWORD)
        store.create_user("bob", PASSWORD)
        yield started
    finally:
        for gateway in started:
            gateway.stop()


def test_a_signed_out_cookie_is_refused_by_another_replica(replicas: list[Gateway]) -> None:
    first, second = replicas
    page = _signed_in_over_http(first)
    cookie = page.client.cookies["e6auth_session"]
    assert _visit(second, cookie).client.get("/tokens").status_code == 200  # one session, anywhere

    answer = page.client.post("/signout", data={"csrf": page.csrf()})

    assert (answer.status_code, answer.headers["location"]) == (303, "/signin")
    replay = _visit(second, cookie).client.get("/tokens")
    assert (replay.status_code, replay.headers["location"]) == (303, "/signin")
    assert _visit(first, cookie).client.get("/tokens").status_code == 303


def test_a_signed_out_cookie_is_refused_after_a_restart(
    replicas: list[Gateway], tmp_path: Path, store_url: str
) -> None:
    first = replicas[0]
    page = _signed_in_over_http(first)
    cookie = page.client.cookies["e6auth_session"]
    assert page.client.post("/signout", data={"csrf": page.csrf()}).status_code == 303
    first.stop()

    restarted = _replica(tmp_path / "replica0", store_url)
    try:
        replay = _visit(restarted, cookie).client.get("/tokens")
        assert (replay.status_code, replay.headers["location"]) == (303, "/signin")
        # Only that session ended: alice signs in again, on the restarted replica too.
        assert _signed_in_over_http(restarted).client.get("/tokens").status_code == 200
    finally:
        restarted.stop()


def test_signing_out_everywhere_ends_the_users_other_sessions_on_every_replica(
    replicas: list[Gateway],
) -> None:
    first, second = replicas
    here = _signed_in_over_http(first)
    there = _signed_in_over_http(second)
    bob = _signed_in_over_http(second, "bob")
    listing = here.client.get("/tokens").text
    assert 'action="/signout/everywhere"' in listing
    assert "Sign out everywhere" in listing

    answer = here.client.post("/signout/everywhere", data={"csrf": here.csrf()})

    assert (answer.status_code, answer.headers["location"]) == (303, "/signin")
    assert 'e6auth_session=""' in set_cookies(answer)["e6auth_session"]
    assert here.client.get("/tokens").status_code == 303
    assert there.client.get("/tokens").status_code == 303
    assert bob.client.get("/tokens").status_code == 200  # another user's sessions go on
    # A sign-in after it opens a new session, at once and on either replica.
    assert _signed_in_over_http(first).client.get("/tokens").status_code == 200
    assert _signed_in_over_http(second).client.get("/tokens").status_code == 200


def test_signing_out_everywhere_needs_the_form_token(replicas: list[Gateway]) -> None:
    page = _signed_in_over_http(replicas[0])
    answer = page.client.post("/signout/everywhere", data={"csrf": "forged"})
    assert answer.status_code == 403
    assert page.client.get("/tokens").status_code == 200


def test_an_administrator_signs_a_user_out_everywhere_with_the_command(
    replicas: list[Gateway], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from e6auth.cli import main

    alice = _signed_in_over_http(replicas[0])
    bob = _signed_in_over_http(replicas[1], "bob")
    monkeypatch.setenv("E6AUTH_DATABASE_URL", store_url)
    monkeypatch.setenv("E6AUTH_PEPPER", REPLICA_PEPPER)

    assert main(["user", "signout", "alice"]) == 0

    assert alice.client.get("/tokens").status_code == 303
    assert bob.client.get("/tokens").status_code == 200
    assert main(["user", "signout", "nobody"]) != 0


def test_a_stored_sign_out_holds_no_cookie_nor_session_id(site: Site) -> None:
    page = site.signed_in("alice")
    cookie = page.client.cookies["e6auth_session"]
    session_id = jwt.decode(cookie, options={"verify_signature": False})["jti"]
    assert page.client.post("/signout", data={"csrf": page.csrf()}).status_code == 303

    stored: list[str] = []
    with site.store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(ended_sessions)).scalar() == 1
        for table in (ended_sessions, users):
            for row in connection.execute(select(table)):
                stored.extend(
                    bytes(value).hex() if isinstance(value, bytes) else str(value) for value in row
                )
    secrets_sent = (cookie, session_id, session_id.encode().hex())
    assert not [value for value in stored if any(secret in value for secret in secrets_sent)]


def test_ended_sessions_are_pruned_once_they_would_have_expired(site: Site) -> None:
    first = site.signed_in("alice")
    assert first.client.post("/signout", data={"csrf": first.csrf()}).status_code == 303
    site.clock.advance(3601)  # past the first session's maximum age
    second = site.signed_in("alice")
    assert second.client.post("/signout", data={"csrf": second.csrf()}).status_code == 303
    with site.store.engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(ended_sessions)).scalar() == 1


# -- host names and slow clients -----------------------------------------------------------------


def _sign_in_form(client: httpx.Client) -> dict[str, str]:
    form = client.get("/signin")
    assert form.status_code == 200, form.text
    token = CSRF_FIELD.search(form.text)
    assert token is not None
    return {"csrf": token[1], "username": "alice", "password": PASSWORD}


def test_the_page_answers_only_under_its_host_names_so_a_rebound_name_cannot_sign_in(
    tmp_path: Path,
) -> None:
    gateway = build_gateway(_gateway_settings(tmp_path / "home"))
    try:
        assert gateway.web is not None
        port = gateway.web.port
        gateway.authenticator.store.create_user("alice", PASSWORD)
        with httpx.Client(base_url=gateway.web.url, timeout=10) as client:
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LocalHost", f"[::1]:{port}"):
                assert client.get("/signin", headers={"Host": host}).status_code == 200, host
            fields = _sign_in_form(client)
            # What a browser sends after DNS rebinding: the attacker's name, with this port.
            for host in (
                f"attacker.example:{port}",
                "attacker.example",
                f"127.0.0.1.attacker.example:{port}",
                f"localhost.attacker.example:{port}",
                f"[::2]:{port}",
                "",
            ):
                answer = client.post("/signin", data=fields, headers={"Host": host})
                assert (answer.status_code, answer.text) == (400, "Invalid host header"), host
                assert answer.headers["content-type"].startswith("text/plain")
                assert "e6auth_session" not in answer.headers.get("set-cookie", "")
                for name, value in SECURITY_HEADERS:
                    assert answer.headers[name] == value
            assert "e6auth_session" not in client.cookies
            signed_in = client.post("/signin", data=fields)
            assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/tokens")
    finally:
        gateway.stop()


def test_configured_host_names_replace_the_default_ones(tmp_path: Path) -> None:
    settings = _gateway_settings(
        tmp_path / "home", http_allowed_hosts=["tokens.example.com", "*.corp.example"]
    )
    gateway = build_gateway(settings)
    try:
        assert gateway.web is not None
        with httpx.Client(base_url=gateway.web.url, timeout=10) as client:
            for host, status in (
                ("tokens.example.com:8443", 200),
                ("TOKENS.example.com", 200),
                ("eu.corp.example", 200),
                ("corp.example.attacker.example", 400),
                ("example.com", 400),
                (f"127.0.0.1:{gateway.web.port}", 400),
                ("localhost", 400),
            ):
                assert client.get("/signin", headers={"Host": host}).status_code == status, host
    finally:
        gateway.stop()


def _open_for(sock: socket.socket, seconds: float, drip: bytes) -> float | None:
    """Send ``drip`` a byte every 0.2 s for up to ``seconds``; when the server closes the
    connection, how long after the start it did (None: it stayed open)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while (elapsed := time.monotonic() - started) < seconds:
        try:
            if drip:
                sock.sendall(drip[:1])
                drip = drip[1:] or drip
            if sock.recv(4096) == b"":
                return elapsed
        except TimeoutError:
            continue
        except OSError:  # reset: closed too
            return elapsed
    return None


@pytest.mark.parametrize(
    "prefix", [b"", b"GET /signin HTTP/1.1\r\n", b"GET /signin HTTP/1.1\r\nHost: localhost\r\nX-"]
)
def test_a_client_that_sends_its_request_headers_slowly_is_cut_off_at_the_header_timeout(
    tmp_path: Path, prefix: bytes
) -> None:
    gateway = build_gateway(_gateway_settings(tmp_path / "home", http_header_timeout_seconds=1))
    try:
        assert gateway.web is not None
        with socket.create_connection(("127.0.0.1", gateway.web.port), timeout=5) as sock:
            sock.sendall(prefix)
            closed = _open_for(sock, 6, b"a" if prefix else b"")
        assert closed is not None, "the connection stayed open"
        assert 0.8 <= closed <= 3, closed
    finally:
        gateway.stop()


def test_the_header_timeout_applies_to_every_request_of_a_kept_alive_connection(
    tmp_path: Path,
) -> None:
    gateway = build_gateway(_gateway_settings(tmp_path / "home", http_header_timeout_seconds=1))
    try:
        assert gateway.web is not None
        with socket.create_connection(("127.0.0.1", gateway.web.port), timeout=5) as sock:
            # A whole request, sent slowly but within the limit, is answered.
            request = b"GET /signin HTTP/1.1\r\nHost: localhost\r\n\r\n"
            for part in (request[:10], request[10:25]):
                sock.sendall(part)
                time.sleep(0.3)
            sock.sendall(request[25:])
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
            while b"</html>" not in answer:
                answer += sock.recv(65536)
            answered = time.monotonic()
            # The next one on the same connection trickles in: cut off in its turn, the limit
            # counted from the answer to the previous one.
            sock.sendall(b"GET /signin HTTP/1.1\r\n")
            closed = _open_for(sock, 6, b"b")
            waited = time.monotonic() - answered
        assert closed is not None, "the connection stayed open"
        assert 0.8 <= waited <= 3, waited
    finally:
        gateway.stop()
