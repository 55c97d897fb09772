"""Single sign-on on the Access Tokens page against a real OpenID Provider (panva's oidc-provider,
``tests/oidc_provider``), with the page in this process (Starlette's TestClient, a real store and
authenticator, a fake clock for the relying party) and a plain HTTP client as the browser at the
provider. Every refusal is the page's own validation of what the real provider answered; the
provider is only ever misled the way an attacker could (a URL changed in the browser, a code
used twice), or, for the audience, by its one test hook (``provider.mjs``).

The same sign-in in a real browser on a real ``e6auth serve``, and the token it makes used by the
real connector, is tests/test_web_browser.py.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from oidc_provider import Provider, ProviderLogin, StartProvider, start_provider
from starlette.testclient import TestClient

from e6auth import Authenticator, Settings, TokenStore
from e6auth.background.audit import AuditLog
from e6auth.store import AuditStore
from e6auth.testing import FakeClock, memory_store
from e6auth.verify.parameters import SessionParameters
from e6auth.web import build_app

__all__ = ["start_provider"]  # the fixture, found by pytest under this name

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse battery staple"
TEST_HOSTS = ["testserver"]  # Starlette's TestClient's host name
SESSION_KEY = b"k" * 32
BASE_URL = "http://testserver"
REDIRECT_URI = BASE_URL + "/signin/oidc/callback"
ID_TOKEN_TTL_SECONDS = 300  # provider.mjs
LOGIN_LINK = 'href="/signin/oidc"'
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


class SsoSite:
    """The page, configured for the provider like ``e6auth serve`` would be, and its audit."""

    def __init__(self, store: TokenStore, provider: Provider, **settings: Any) -> None:
        self.store = store
        self.provider = provider
        # The relying party's clock: real time at first, moved on only by a test.
        self.clock = FakeClock(time.time())
        self.audit = AuditLog(AuditStore(store.engine), clock=self.clock)
        self.auth = Authenticator(store, sessions=SessionParameters(SESSION_KEY), audit=self.audit)
        configured = Settings(**provider.settings(**settings))  # type: ignore[arg-type]
        sso = configured.build_sso_client(clock=self.clock)
        assert sso is not None
        self.app = build_app(
            self.auth,
            session_key=SESSION_KEY,
            password_sign_in=configured.web_password_signin,
            sso=sso,
            sso_create_users=configured.web_oidc_create_users,
            allowed_hosts=TEST_HOSTS,
        )
        self._clients: list[TestClient] = []
        self._logins: list[ProviderLogin] = []

    def browser(self) -> TestClient:
        client = TestClient(self.app, base_url=BASE_URL, follow_redirects=False)
        self._clients.append(client)
        return client

    def at_provider(self) -> ProviderLogin:
        login = ProviderLogin(self.provider)
        self._logins.append(login)
        return login

    def start(self, browser: TestClient) -> str:
        """Clicks "Sign in with SSO": the authorization URL the page sends the browser to."""
        answer = browser.get("/signin/oidc")
        assert answer.status_code == 303, answer.text
        location: str = answer.headers["location"]
        assert location.startswith(self.provider.issuer + "/auth?")
        return location

    def callback_url(self, browser: TestClient, login: str) -> str:
        """A sign-in started on the page, completed at the provider as ``login``: the callback
        URL the provider sends the browser back to (not yet followed)."""
        back = self.at_provider().authorize(self.start(browser), login)
        assert back.startswith(REDIRECT_URI + "?"), back
        return back

    def sign_in(self, browser: TestClient, login: str) -> Any:
        return browser.get(self.callback_url(browser, login))

    def events(self) -> list[tuple[str, str, str | None, str | None, str | None]]:
        self.audit.flush()
        return [
            (event.kind, event.result, event.reason, event.username, event.method)
            for event in AuditStore(self.store.engine).auth_events()
        ]

    def close(self) -> None:
        for client in self._clients:
            client.close()
        for login in self._logins:
            login.close()
        self.auth.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TokenStore]:
    made = memory_store(url=f"sqlite:///{tmp_path}/store.db")
    made.create_user("alice@example.com")
    made.create_user("olga@elsewhere.test")
    made.create_user("mallory@example.com")
    made.create_user("root", PASSWORD, admin=True)
    yield made
    made.close()


@pytest.fixture
def provider(start_provider: StartProvider) -> Provider:
    return start_provider(REDIRECT_URI)


@pytest.fixture
def site(store: TokenStore, provider: Provider) -> Iterator[SsoSite]:
    made = SsoSite(store, provider)
    yield made
    made.close()


def refused(answer: Any, status: int, message: str) -> None:
    assert answer.status_code == status, answer.text
    assert message in answer.text, answer.text
    assert "e6auth_session" not in answer.headers.get("set-cookie", "")


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    return urlunsplit(parts._replace(query=urlencode(query | changes)))


def signed_in_as(browser: TestClient) -> str | None:
    page = browser.get("/tokens")
    if page.status_code != 200:
        return None
    found = re.search(r'<span class="name">([^<]+)</span>', page.text)
    return found[1] if found else None


# -- signing in ----------------------------------------------------------------------------------


def test_the_sign_in_page_offers_sso_and_the_provider_signs_alice_in(site: SsoSite) -> None:
    browser = site.browser()
    assert LOGIN_LINK in browser.get("/signin").text

    answer = site.sign_in(browser, "alice")

    # A page that moves on by itself (a redirect would keep the navigation cross-site), with
    # the same session cookie as a password sign-in, and the sign-in cookie deleted.
    assert answer.status_code == 200, answer.text
    assert 'http-equiv="refresh" content="0;url=/tokens"' in answer.text
    cookies = answer.headers.get_list("set-cookie")
    session = next(cookie for cookie in cookies if cookie.startswith("e6auth_session="))
    assert "httponly" in session.lower()
    assert "samesite=strict" in session.lower()
    assert any(cookie.startswith('e6auth_sso=""') for cookie in cookies), cookies
    assert signed_in_as(browser) == "alice@example.com"
    assert site.events() == [("web_signin", "ok", None, "alice@example.com", "web-oidc")]


def test_a_client_registered_for_client_secret_post_signs_in_with_it(
    store: TokenStore, start_provider: StartProvider
) -> None:
    provider = start_provider(REDIRECT_URI, auth_method="client_secret_post")
    site = SsoSite(store, provider, web_oidc_token_auth_method="client_secret_post")
    try:
        browser = site.browser()
        assert site.sign_in(browser, "alice").status_code == 200
        assert signed_in_as(browser) == "alice@example.com"
    finally:
        site.close()
    # The default, client_secret_basic, is refused by that provider: the setting matters.
    basic = SsoSite(store, provider)
    try:
        refused(basic.sign_in(basic.browser(), "alice"), 403, "did not complete the sign-in")
    finally:
        basic.close()


def test_the_authorization_request_has_pkce_state_and_nonce(site: SsoSite) -> None:
    browser = site.browser()
    query = parse_qs(urlsplit(site.start(browser)).query)
    assert query["response_type"] == ["code"]
    assert query["client_id"] == ["e6auth"]
    assert query["redirect_uri"] == [REDIRECT_URI]
    assert query["scope"] == ["openid email profile"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 43
    assert len(query["nonce"][0]) >= 43
    # The sign-in cookie holds them sealed: neither state, nonce nor anything readable.
    sealed = browser.cookies["e6auth_sso"]
    assert query["state"][0] not in sealed
    assert query["nonce"][0] not in sealed
    assert site.start(site.browser()) != site.start(browser)


# -- refusals ------------------------------------------------------------------------------------


def test_a_callback_with_another_state_is_refused(site: SsoSite) -> None:
    browser = site.browser()
    back = site.callback_url(browser, "alice")

    answer = browser.get(with_query(back, state="x" * 43))

    refused(answer, 403, "was not started in this browser")
    assert signed_in_as(browser) is None
    assert site.events() == [("web_signin", "refused", "sso_state", None, "web-oidc")]


def test_a_callback_naming_another_issuer_is_refused(site: SsoSite) -> None:
    browser = site.browser()
    back = site.callback_url(browser, "alice")
    assert parse_qs(urlsplit(back).query)["iss"] == [site.provider.issuer]  # RFC 9207

    answer = browser.get(with_query(back, iss="https://evil.example"))

    refused(answer, 403, "did not complete the sign-in")
    assert signed_in_as(browser) is None


def test_a_callback_in_a_browser_that_started_no_sign_in_is_refused(site: SsoSite) -> None:
    back = site.callback_url(site.browser(), "alice")
    other = site.browser()  # the victim of a login CSRF: it never clicked "Sign in with SSO"

    refused(other.get(back), 403, "was not started in this browser")
    assert signed_in_as(other) is None


def test_a_replayed_callback_is_refused_even_with_its_cookie_restored(site: SsoSite) -> None:
    browser = site.browser()
    back = site.callback_url(browser, "alice")
    sealed = browser.cookies["e6auth_sso"]
    assert browser.get(back).status_code == 200  # signed in; the sign-in cookie is deleted

    again = site.browser()
    again.cookies.set("e6auth_sso", sealed)
    refused(again.get(back), 403, "was not started in this browser")
    assert signed_in_as(again) is None
    assert [event[:3] for event in site.events()] == [
        ("web_signin", "ok", None),
        ("web_signin", "refused", "sso_state"),
    ]


def test_a_used_code_under_a_new_sign_in_is_refused_by_the_token_endpoint(site: SsoSite) -> None:
    first = site.browser()
    back = site.callback_url(first, "alice")
    assert first.get(back).status_code == 200
    code = parse_qs(urlsplit(back).query)["code"][0]

    # An attacker with the used code starts a sign-in of their own and feeds the code to it:
    # the state is theirs, but the provider refuses the code (used, and the verifier differs).
    attacker = site.browser()
    state = parse_qs(urlsplit(site.start(attacker)).query)["state"][0]
    answer = attacker.get(with_query(REDIRECT_URI + "?x=1", code=code, state=state))

    refused(answer, 403, "did not complete the sign-in")
    assert signed_in_as(attacker) is None
    assert site.events()[-1] == ("web_signin", "refused", "sso_provider", None, "web-oidc")


def test_an_id_token_with_another_nonce_is_refused(site: SsoSite) -> None:
    browser = site.browser()
    # The nonce changed on its way through the browser: the provider signs the one it got.
    tampered = with_query(site.start(browser), nonce="n" * 43)
    back = site.at_provider().authorize(tampered, "alice")

    refused(browser.get(back), 403, "could not be verified")
    assert signed_in_as(browser) is None
    assert site.events() == [("web_signin", "refused", "sso_id_token", None, "web-oidc")]


def test_an_expired_id_token_is_refused(site: SsoSite) -> None:
    browser = site.browser()
    back = site.callback_url(browser, "alice")
    # The relying party's clock is past the ID token's exp (and the leeway), still within the
    # time a sign-in may take: only the ID token is too old.
    site.clock.advance(ID_TOKEN_TTL_SECONDS + 60)

    refused(browser.get(back), 403, "could not be verified")
    assert signed_in_as(browser) is None
    assert site.events()[-1][:3] == ("web_signin", "refused", "sso_id_token")


def test_a_sign_in_taking_too_long_is_refused(site: SsoSite) -> None:
    browser = site.browser()
    back = site.callback_url(browser, "alice")
    site.clock.advance(601)

    refused(browser.get(back), 403, "has expired")


def test_an_id_token_for_another_audience_is_refused(site: SsoSite) -> None:
    browser = site.browser()
    authorization = site.start(browser)
    nonce = parse_qs(urlsplit(authorization).query)["nonce"][0]
    at_provider = site.at_provider()
    back = at_provider.authorize(authorization, "alice")
    # A real ID token of this provider for alice, with this sign-in's nonce, for other-app;
    # the provider's next token response to e6auth carries it instead of e6auth's own.
    at_provider.other_app_id_token(nonce)
    site.provider.arm_other_audience_replay()

    refused(browser.get(back), 403, "could not be verified")
    assert signed_in_as(browser) is None
    assert site.events() == [("web_signin", "refused", "sso_id_token", None, "web-oidc")]


def test_an_unverified_email_address_is_refused(site: SsoSite) -> None:
    browser = site.browser()
    refused(site.sign_in(browser, "unverified"), 403, "may not sign in here")
    assert signed_in_as(browser) is None
    assert site.events()[-1][:3] == ("web_signin", "refused", "sso_account")


def test_a_user_outside_the_allowed_domains_is_refused(
    store: TokenStore, provider: Provider
) -> None:
    site = SsoSite(store, provider, web_oidc_allowed_domains=("example.com",))
    try:
        outsider = site.browser()
        refused(site.sign_in(outsider, "outsider"), 403, "may not sign in here")
        assert signed_in_as(outsider) is None
        insider = site.browser()
        assert site.sign_in(insider, "alice").status_code == 200
        assert signed_in_as(insider) == "alice@example.com"
    finally:
        site.close()


def test_an_unknown_user_is_refused_unless_users_are_created(
    store: TokenStore, provider: Provider
) -> None:
    site = SsoSite(store, provider)
    try:
        refused(site.sign_in(site.browser(), "bob"), 403, "may not sign in here")
        assert store.find_user("bob@example.com") is None
    finally:
        site.close()
    creating = SsoSite(store, provider, web_oidc_create_users=True)
    try:
        browser = creating.browser()
        assert creating.sign_in(browser, "bob").status_code == 200
        assert signed_in_as(browser) == "bob@example.com"
        made = store.find_user("bob@example.com")
        assert made is not None
        assert (made.password_hash, made.admin, made.service) == (None, False, False)
    finally:
        creating.close()


def test_a_service_account_cannot_sign_in_through_the_provider(
    store: TokenStore, site: SsoSite
) -> None:
    store.create_service_account("etl@example.com", owners=["root"])
    browser = site.browser()
    refused(site.sign_in(browser, "etl"), 403, "may not sign in here")
    assert signed_in_as(browser) is None


def test_a_disabled_user_is_refused_and_an_open_session_ends(
    store: TokenStore, site: SsoSite
) -> None:
    browser = site.browser()
    assert site.sign_in(browser, "alice").status_code == 200
    store.disable_user("alice@example.com")
    assert signed_in_as(browser) is None
    refused(site.sign_in(site.browser(), "alice"), 403, "may not sign in here")


def test_the_provider_unreachable_is_a_clear_503(store: TokenStore, provider: Provider) -> None:
    site = SsoSite(store, provider)
    try:
        provider.stop()
        answer = site.browser().get("/signin/oidc")
        refused(answer, 503, "cannot be reached")
    finally:
        site.close()


# -- password sign-in turned off -----------------------------------------------------------------


def test_with_password_sign_in_off_the_form_is_gone_and_a_post_is_refused(
    store: TokenStore, provider: Provider
) -> None:
    site = SsoSite(store, provider, web_password_signin=False)
    try:
        browser = site.browser()
        form = browser.get("/signin")
        assert LOGIN_LINK in form.text
        assert 'name="password"' not in form.text
        csrf = CSRF_FIELD.search(form.text)
        answer = browser.post(
            "/signin",
            data={"csrf": csrf[1] if csrf else "", "username": "root", "password": PASSWORD},
        )
        refused(answer, 403, "Password sign-in is turned off")
        assert signed_in_as(browser) is None
        assert site.sign_in(browser, "alice").status_code == 200
    finally:
        site.close()


# -- no secrets in logs ------------------------------------------------------------------------


def test_no_secret_code_id_token_or_cookie_reaches_a_log_or_the_audit(
    site: SsoSite, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets_seen: list[str] = [site.provider.client_secret]

    browser = site.browser()
    back = site.callback_url(browser, "alice")
    query = parse_qs(urlsplit(back).query)
    secrets_seen += [query["code"][0], query["state"][0], browser.cookies["e6auth_sso"]]
    answer = browser.get(back)
    secrets_seen.append(browser.cookies["e6auth_session"])
    assert answer.status_code == 200
    # And refusals: another state, and the used code again (the token endpoint's refusal).
    failed = site.browser()
    failed_back = site.callback_url(failed, "alice")
    secrets_seen.append(parse_qs(urlsplit(failed_back).query)["code"][0])
    failed.get(with_query(failed_back, state="s" * 43))
    replay = site.browser()
    state = parse_qs(urlsplit(site.start(replay)).query)["state"][0]
    replay.get(with_query(REDIRECT_URI + "?x=1", code=query["code"][0], state=state))

    site.audit.flush()
    # Everything the page and its libraries log (the test's own HTTP clients log their URLs).
    clients = ("httpx", "httpcore")
    logged = "\n".join(
        record.getMessage() for record in caplog.records if not record.name.startswith(clients)
    )
    recorded = logged + repr(AuditStore(site.store.engine).auth_events())
    assert "web sign-in of alice@example.com" in logged
    for secret in secrets_seen:
        assert secret not in recorded
    assert "eyJ" not in recorded  # no JWT of any kind: no ID token, no session cookie


# -- settings ------------------------------------------------------------------------------------


def test_single_sign_on_settings_need_a_client_id_and_exactly_one_secret(tmp_path: Path) -> None:
    issuer = "https://login.example.com"
    with pytest.raises(ValueError, match="needs web_oidc_client_id"):
        Settings(web_oidc_issuer=issuer, web_oidc_client_secret="s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one of web_oidc_client_secret"):
        Settings(web_oidc_issuer=issuer, web_oidc_client_id="e6auth")
    with pytest.raises(ValueError, match="one of web_oidc_client_secret"):
        Settings(
            web_oidc_issuer=issuer,
            web_oidc_client_id="e6auth",
            web_oidc_client_secret="s",  # type: ignore[arg-type]
            web_oidc_client_secret_file=tmp_path / "secret",
        )
    with pytest.raises(ValueError, match="https://"):
        Settings(web_oidc_issuer="login.example.com")
    assert Settings().build_sso_client() is None


def test_the_client_secret_comes_from_its_file_and_is_never_shown(tmp_path: Path) -> None:
    secret = "a client secret 8c1f"
    (tmp_path / "secret").write_text(secret + "\n")
    settings = Settings(
        web_oidc_issuer="https://login.example.com",
        web_oidc_client_id="e6auth",
        web_oidc_client_secret_file=tmp_path / "secret",
    )
    client = settings.build_sso_client()
    assert client is not None
    assert client._client_secret.get_secret_value() == secret
    inline = Settings(
        web_oidc_issuer="https://login.example.com",
        web_oidc_client_id="e6auth",
        web_oidc_client_secret=secret,  # type: ignore[arg-type]
    )
    for shown in (repr(settings), repr(inline), str(inline), repr(client), repr(vars(client))):
        assert secret not in shown


def test_a_missing_or_empty_secret_file_stops_the_start_with_a_clear_error(
    tmp_path: Path,
) -> None:
    from e6auth.errors import UnsafeConfiguration

    settings = Settings(
        web_oidc_issuer="https://login.example.com",
        web_oidc_client_id="e6auth",
        web_oidc_client_secret_file=tmp_path / "missing",
    )
    with pytest.raises(UnsafeConfiguration, match="cannot read web_oidc_client_secret_file"):
        settings.build_sso_client()
    (tmp_path / "empty").write_text("\n")
    empty = settings.replace(web_oidc_client_secret_file=tmp_path / "empty")
    with pytest.raises(UnsafeConfiguration, match="client secret is empty"):
        empty.build_sso_client()


def test_turning_password_sign_in_off_ends_the_sessions_it_opened(tmp_path: Path) -> None:
    store = memory_store(url=f"sqlite:///{tmp_path}/store.db")
    store.create_user("root", PASSWORD, admin=True)
    auth = Authenticator(store, sessions=SessionParameters(SESSION_KEY), audit=None)
    try:
        app = build_app(auth, session_key=SESSION_KEY, allowed_hosts=TEST_HOSTS)
        with TestClient(app, follow_redirects=False) as on:
            csrf = CSRF_FIELD.search(on.get("/signin").text)
            assert csrf is not None
            answer = on.post(
                "/signin", data={"csrf": csrf[1], "username": "root", "password": PASSWORD}
            )
            assert answer.status_code == 303
            assert signed_in_as(on) == "root"
            cookie = on.cookies["e6auth_session"]
        # The same page restarted with password sign-in turned off: that session is over.
        off_app = build_app(
            auth, session_key=SESSION_KEY, password_sign_in=False, allowed_hosts=TEST_HOSTS
        )
        with TestClient(off_app, follow_redirects=False) as off:
            off.cookies.set("e6auth_session", cookie)
            assert signed_in_as(off) is None
    finally:
        auth.close()
        store.close()
