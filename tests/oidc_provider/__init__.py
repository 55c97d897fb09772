"""A real OpenID Provider for the single sign-on tests: panva's ``oidc-provider`` (certified by the
OpenID Foundation) in a node process, configured by ``provider.mjs`` beside this file.

``npm ci --prefix tests/oidc_provider`` installs it (CI does). Without node or that install the
tests that need it skip, saying which; with ``E6AUTH_REQUIRE_BROWSER=1`` (as CI sets it) that is a
failure instead, as for the browser.

:class:`ProviderLogin` plays the browser at the provider with a plain HTTP client: its login form
(any password), then its consent form, up to the redirect back to e6auth, which it hands over
without following.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2 as httpx
import pytest
from processes import Lines, stop_process

HERE = Path(__file__).parent
SCRIPT = HERE / "provider.mjs"
MODULES = HERE / "node_modules" / "oidc-provider"
REQUIRE = os.environ.get("E6AUTH_REQUIRE_BROWSER") == "1"
READY = re.compile(r"^oidc-provider listening on (?P<issuer>http://\S+)$")
START_SECONDS = 15.0
START_ATTEMPTS = 3
CLIENT_ID = "e6auth"
OTHER_CLIENT_ID = "other-app"
OTHER_REDIRECT_URI = "http://127.0.0.1:9/other-app/callback"
FORM = re.compile(r'<form[^>]*action="(?P<action>[^"]+)"[^>]*>(?P<body>.*?)</form>', re.S)
INPUT = re.compile(r"<input(?P<attributes>[^>]*)>")
ATTRIBUTE = re.compile(r'(?P<name>[a-z]+)="(?P<value>[^"]*)"')


def provider_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (Node.js 20 or later runs the test OpenID Provider)"
    if not MODULES.is_dir():
        return "the test OpenID Provider is not installed (npm ci --prefix tests/oidc_provider)"
    return None


def require_provider() -> None:
    missing = provider_missing()
    if missing is not None:
        if REQUIRE:
            pytest.fail(missing + " and E6AUTH_REQUIRE_BROWSER=1", pytrace=False)
        pytest.skip(missing)


class Provider:
    """A running provider: its ``issuer`` URL, the clients' secrets, its output for assertions."""

    def __init__(
        self, redirect_uris: tuple[str, ...], *, auth_method: str = "client_secret_basic"
    ) -> None:
        self.auth_method = auth_method
        self.client_secret = secrets.token_urlsafe(24)
        self.other_secret = secrets.token_urlsafe(24)
        # Under Node.js 20, about one start in ten hung in generateKeyPairSync (provider.mjs now
        # makes its key on the thread pool: none in 40 starts since). Should a start still print
        # nothing, it is retried.
        for attempt in range(START_ATTEMPTS):
            self._start(redirect_uris)
            issuer = self._wait_until_ready(last=attempt == START_ATTEMPTS - 1)
            if issuer is not None:
                self.issuer = issuer
                return

    def _start(self, redirect_uris: tuple[str, ...]) -> None:
        env = {
            **os.environ,
            "OIDC_TEST_CLIENT_SECRET": self.client_secret,
            "OIDC_TEST_OTHER_SECRET": self.other_secret,
            "OIDC_TEST_AUTH_METHOD": self.auth_method,
        }
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), *redirect_uris],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.out = Lines(self.process.stdout)
        self.log = Lines(self.process.stderr)

    def _wait_until_ready(self, *, last: bool) -> str | None:
        deadline = time.monotonic() + START_SECONDS
        try:
            while (line := self.out.next(max(0.0, deadline - time.monotonic()))) is not None:
                ready = READY.match(line)
                if ready:
                    return ready["issuer"]
        except TimeoutError:
            pass
        self.stop()
        if not last:
            return None
        pytest.fail(f"the OpenID Provider did not start:\n{self.out.text}\n{self.log.text}")

    def stop(self) -> int:
        return stop_process(self.process, 10)

    def arm_other_audience_replay(self) -> None:
        """The next token response to e6auth carries the ID token last issued to other-app."""
        answer = httpx.post(self.issuer + "/_test/replay-other-audience")
        assert answer.status_code == 204, answer.text

    def settings(self, **extra: object) -> dict[str, object]:
        """The web_oidc_* settings for this provider and its client ``e6auth``."""
        return {
            "web_oidc_issuer": self.issuer,
            "web_oidc_client_id": CLIENT_ID,
            "web_oidc_client_secret": self.client_secret,
            **extra,
        }


StartProvider = Callable[..., Provider]


@pytest.fixture
def start_provider() -> Iterator[StartProvider]:
    """Starts providers whose client ``e6auth`` may redirect to the given URIs."""
    require_provider()
    started: list[Provider] = []

    def start(*redirect_uris: str, auth_method: str = "client_secret_basic") -> Provider:
        provider = Provider(redirect_uris, auth_method=auth_method)
        started.append(provider)
        return provider

    try:
        yield start
    finally:
        for provider in started:
            provider.stop()


class ProviderLogin:
    """A browser at the provider, as a plain HTTP client with its own cookies."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.client = httpx.Client(timeout=10)

    def close(self) -> None:
        self.client.close()

    def authorize(self, authorization_url: str, login: str) -> str:
        """Signs in as ``login`` and consents; the URL the provider sends the browser back to
        (e6auth's callback with ``code`` and ``state``), not followed."""
        url = authorization_url
        for _ in range(12):
            answer = self.client.get(url)
            while answer.is_redirect:
                url = urljoin(str(answer.url), answer.headers["location"])
                if not url.startswith(self.provider.issuer):
                    return url
                answer = self.client.get(url)
            assert answer.status_code == 200, answer.text
            form = FORM.search(answer.text)
            assert form is not None, answer.text
            fields = {}
            for found in INPUT.finditer(form["body"]):
                attributes = dict(ATTRIBUTE.findall(found["attributes"]))
                if "name" in attributes:
                    fields[attributes["name"]] = attributes.get("value", "")
            if "login" in fields:
                fields |= {"login": login, "password": "any password"}
            posted = self.client.post(urljoin(str(answer.url), form["action"]), data=fields)
            assert posted.is_redirect, posted.text
            url = urljoin(str(posted.url), posted.headers["location"])
            if not url.startswith(self.provider.issuer):
                return url
        raise AssertionError("the provider did not send the browser back")

    def other_app_id_token(self, nonce: str) -> str:
        """An ID token the provider issues to other-app (the test playing that application,
        PKCE and all) for the account signed in here, with ``nonce``."""
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .decode()
            .rstrip("=")
        )
        query = httpx.QueryParams(
            {
                "response_type": "code",
                "client_id": OTHER_CLIENT_ID,
                "redirect_uri": OTHER_REDIRECT_URI,
                "scope": "openid email profile",
                "state": "other",
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        back = self.authorize(f"{self.provider.issuer}/auth?{query}", "alice")
        code = parse_qs(urlsplit(back).query)["code"][0]
        answer = self.client.post(
            f"{self.provider.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": OTHER_REDIRECT_URI,
                "code_verifier": verifier,
                "client_id": OTHER_CLIENT_ID,
                "client_secret": self.provider.other_secret,
            },
        )
        assert answer.status_code == 200, answer.text
        id_token: str = answer.json()["id_token"]
        return id_token
