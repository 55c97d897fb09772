"""The Access Tokens page as one ASGI application: its route groups, its refusals and the
middleware around them.

Every page but the sign-in form needs a live session (``page_sessions.py``); every form that
changes something carries a CSRF token (``csrf.py``); every response carries the security headers
of ``headers.py``. Work that blocks (argon2, the token store) runs in Starlette's thread pool, never
on the event loop (``forms.posted_form``). The pages themselves are grouped by what they are about:
signing in and out (``sign_in_pages.py``), the user's tokens (``token_pages.py``), the service
accounts an administrator manages (``service_account_pages.py``) and single sign-on (``sso.py``),
on what they share (``pages.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from e6auth.clock import Clock
from e6auth.settings import LOCAL_HOST_NAMES
from e6auth.verify.authenticator import Authenticator
from e6auth.web.csrf import CsrfTokens
from e6auth.web.headers import SecurityHeaders
from e6auth.web.oidc_client import SsoClient
from e6auth.web.page_sessions import (
    DEFAULT_IDLE_SECONDS,
    DEFAULT_MAX_AGE_SECONDS,
    WebSessions,
)
from e6auth.web.pages import HERE, Pages
from e6auth.web.service_account_pages import ServiceAccountPages
from e6auth.web.sign_in_pages import SignInPages
from e6auth.web.sso import SsoPages
from e6auth.web.token_pages import TokenPages

__all__ = ["build_app"]


def build_app(
    authenticator: Authenticator,
    *,
    session_key: bytes,
    secure: bool = False,
    idle_seconds: float = DEFAULT_IDLE_SECONDS,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
    clock: Clock = time.time,
    password_sign_in: bool = True,
    sso: SsoClient | None = None,
    sso_redirect_uri: str | None = None,
    sso_create_users: bool = False,
    allowed_hosts: Sequence[str] = LOCAL_HOST_NAMES,
) -> ASGIApp:
    """The page's ASGI application on ``authenticator`` (its store, throttle, policy and audit).

    ``session_key`` signs its sessions (for their own audience) and derives its CSRF key: the
    gateway's session key. ``secure``: it is served over TLS, so its cookies are ``Secure`` (and
    ``__Host-`` prefixed). Sessions end after ``idle_seconds`` unused and ``max_age_seconds``.
    ``password_sign_in``: offer the password form. ``sso``: offer single sign-on through that
    client (``sso.py``), on ``sso_redirect_uri`` (default: this page's URL as addressed), creating
    unknown users if ``sso_create_users``. ``allowed_hosts``: the host names it answers under
    (lower case, IPv6 in brackets, any port; ``*.example.com`` for subdomains), as
    ``Settings.resolved_http_allowed_hosts`` gives them; every other ``Host`` gets 400."""
    sessions = WebSessions(
        authenticator,
        session_key,
        idle_seconds=idle_seconds,
        max_age_seconds=max_age_seconds,
        clock=clock,
        sso=sso is not None,
        password=password_sign_in,
    )
    pages = Pages(authenticator, sessions, CsrfTokens(session_key), secure=secure)
    tokens = TokenPages(pages)
    routes: list[BaseRoute] = []
    if sso is not None:
        sso_pages = SsoPages(
            pages,
            sso,
            session_key=session_key,
            redirect_uri=sso_redirect_uri,
            create_users=sso_create_users,
        )
        routes += sso_pages.routes()
    routes += SignInPages(pages, password_sign_in=password_sign_in, sso=sso is not None).routes()
    routes += tokens.routes()
    routes += ServiceAccountPages(pages, tokens).routes()
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    app = Starlette(routes=routes, exception_handlers=pages.exception_handlers())
    # Before anything reads a cookie or a form: under a name an attacker controls (DNS
    # rebinding), the browser counts the page as the attacker's own origin, so the Origin check
    # and SameSite cookies would not stop a script there from driving sign-ins.
    checked = TrustedHostMiddleware(app, allowed_hosts=list(allowed_hosts), www_redirect=False)
    # Outside Starlette's error middleware, so that even its 500 answer carries the headers.
    return SecurityHeaders(checked)
