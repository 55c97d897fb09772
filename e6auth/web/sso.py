"""Single sign-on on the Access Tokens page: "Sign in with SSO" and the identity provider's
callback (the relying party's logic is ``oidc_client.py``).

``GET /signin/oidc`` starts a sign-in: what its callback must match goes into a sealed cookie of
its own (``SameSite=Lax``: the callback is a top-level navigation from the issuer's site, which a
``Strict`` cookie would miss), and the browser is sent to the issuer. ``GET /signin/oidc/callback``
opens that cookie (deleting it: one use), has :class:`~e6auth.web.oidc_client.SsoClient` prove the
answer, finds the user (or creates one, if so configured) and starts the same page session as a
password sign-in. Every refusal is audited and answered with a short page that echoes nothing.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from e6auth.errors import (
    E6AuthError,
    IdentityProviderUnavailable,
    SingleSignOnRefused,
    SsoAccountRefused,
    SsoIdTokenRefused,
    SsoProviderRefused,
    SsoStateRefused,
    StoreUnavailable,
    UserExists,
)
from e6auth.store.records import UserRecord
from e6auth.verify.principal import Principal
from e6auth.web.cookies import PageCookie
from e6auth.web.oidc_client import SignInSeal, SsoClient, SsoIdentity
from e6auth.web.pages import STORE_UNAVAILABLE, Pages

__all__ = ["CALLBACK_PATH", "SSO_COOKIE", "START_PATH", "SsoPages"]

log = logging.getLogger("e6auth.web.sso")

START_PATH = "/signin/oidc"
CALLBACK_PATH = "/signin/oidc/callback"
SSO_COOKIE = "e6auth_sso"
AUDIT_METHOD = "web-oidc"

# What the user reads: short, the same for refusals that differ only in their detail.
MESSAGES: dict[type[E6AuthError], str] = {
    SsoStateRefused: "This sign-in link has expired or was not started in this browser. "
    "Start again with “Sign in with SSO”.",
    SsoProviderRefused: "The identity provider did not complete the sign-in. Try again.",
    SsoIdTokenRefused: "The identity provider's answer could not be verified. Nothing was "
    "signed in.",
    SsoAccountRefused: "Your identity provider account may not sign in here. Ask an "
    "administrator of e6auth.",
}
UNAVAILABLE = "The identity provider cannot be reached. Try again in a moment."

# The page writes the session cookie and sends the browser on with a page of its own: a
# redirect would keep the navigation cross-site (it began at the issuer), and the browser
# would then withhold the SameSite=Strict session cookie from the next page.
CONTINUE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="0;url=/tokens">
<title>Signed in · e6auth</title></head>
<body><p>Signed in. <a href="/tokens">Continue to Access Tokens</a>.</p></body></html>
"""


class SsoPages:
    """``START_PATH`` and ``CALLBACK_PATH`` through ``client``, on the page's shared ``pages``;
    ``redirect_uri``: the callback's URL (None: this page's as addressed); ``create_users``: a
    user the issuer vouches for but the store lacks is made."""

    def __init__(
        self,
        pages: Pages,
        client: SsoClient,
        *,
        session_key: bytes,
        redirect_uri: str | None,
        create_users: bool,
    ) -> None:
        self._pages = pages
        self._store = pages.store
        self._client = client
        self._seal = SignInSeal(session_key)
        self._cookie = PageCookie(
            SSO_COOKIE,
            secure=pages.secure,
            same_site="lax",
            max_age=int(client.sign_in_seconds),
        )
        self._redirect_uri = redirect_uri
        self._create_users = create_users

    def __repr__(self) -> str:
        return f"SsoPages({self._client!r})"

    def routes(self) -> list[Route]:
        return [
            Route(START_PATH, self.start, methods=["GET"]),
            Route(CALLBACK_PATH, self.callback, methods=["GET"]),
        ]

    async def start(self, request: Request) -> Response:
        # Discovery may read the issuer's metadata: off the event loop.
        return await run_in_threadpool(self._start, request)

    def _start(self, request: Request) -> Response:
        redirect_uri = self._redirect_uri or str(request.base_url).rstrip("/") + CALLBACK_PATH
        try:
            url, pending = self._client.begin(redirect_uri)
        except IdentityProviderUnavailable as error:
            return self._refused(request, error)
        response = RedirectResponse(url, status_code=303)
        self._cookie.set(response, self._seal.seal(pending))
        return response

    async def callback(self, request: Request) -> Response:
        # The token endpoint, the issuer's keys and the store block: off the event loop.
        return await run_in_threadpool(self._callback, request)

    def _callback(self, request: Request) -> Response:
        identity: SsoIdentity | None = None
        try:
            sealed = self._cookie.read(request)
            if not sealed:
                raise SsoStateRefused("no sign-in was started in this browser")
            pending = self._seal.open(sealed)
            identity = self._client.finish(pending, request.query_params)
            user = self._user(identity)
        except E6AuthError as error:
            return self._refused(request, error, identity)
        except Exception as exc:  # a bug or an answer nobody foresaw: still a page, and audited
            # Its type only: an exception's text could quote what the provider sent.
            log.error("web SSO callback failed: %s", type(exc).__name__)
            unforeseen = SingleSignOnRefused(f"unforeseen {type(exc).__name__}")
            return self._refused(request, unforeseen, identity)
        cookie = self._pages.sessions.sign_in_sso(user)
        peer = self._pages.peer(request)
        audit = self._pages.authenticator.audit
        if audit is not None:
            principal = Principal(username=user.name, user_id=user.id, method="oidc")
            audit.web_sign_in(user.name, peer=peer, principal=principal, method=AUDIT_METHOD)
        log.info("web sign-in of %s from %s through %s", user.name, peer, self._client.issuer)
        response = HTMLResponse(CONTINUE_PAGE)
        self._pages.session_cookie.set(response, cookie)
        self._cookie.delete(response)
        return response

    def _user(self, identity: SsoIdentity) -> UserRecord:
        user = self._store.find_user(identity.username)
        if user is None and self._create_users:
            try:
                self._store.create_user(identity.username)
                log.info("single sign-on created user %s", identity.username)
            except UserExists:  # made meanwhile by a sign-in of the same user elsewhere
                pass
            user = self._store.find_user(identity.username)
        if user is None:
            raise SsoAccountRefused(f"no user {identity.username} (users are not created)")
        if user.service:
            raise SsoAccountRefused(f"{user.name} is a service account")
        if user.disabled:
            raise SsoAccountRefused(f"user {user.name} is disabled")
        return user

    def _refused(
        self, request: Request, error: E6AuthError, identity: SsoIdentity | None = None
    ) -> Response:
        peer = self._pages.peer(request)
        audit = self._pages.authenticator.audit
        if audit is not None:
            sent = identity.username if identity is not None else ""
            audit.web_sign_in(sent, peer=peer, error=error, method=AUDIT_METHOD)
        log.info("web SSO sign-in from %s refused: %s (%s)", peer, error.reason, error.detail)
        if isinstance(error, StoreUnavailable):
            # IdentityProviderUnavailable too: nothing is wrong with the user's sign-in.
            status = 503
            message = (
                UNAVAILABLE if isinstance(error, IdentityProviderUnavailable) else STORE_UNAVAILABLE
            )
        else:
            status = 403 if isinstance(error, SingleSignOnRefused) else 401
            message = next(
                (text for kind, text in MESSAGES.items() if isinstance(error, kind)),
                "Single sign-on refused.",
            )
        response = self._pages.error(status, message)
        self._cookie.delete(response)
        return response
