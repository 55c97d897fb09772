"""Signing in to the Access Tokens page with a password, and signing out (here or everywhere).

The sign-in form has no session to bind its CSRF token to, so it is bound to a random nonce in a
cookie of its own (``csrf.py``): another site cannot sign a browser in under the attacker's name.
Every refusal but a throttle, a disabled user and password logins turned off reads the same, so
that the page tells no one which user names exist. Every sign-in, good or refused, is audited.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from e6auth.errors import (
    AuthenticationError,
    E6AuthError,
    PasswordLoginsDisabled,
    Throttled,
    UserDisabled,
)
from e6auth.web.cookies import PageCookie
from e6auth.web.csrf import MAX_NONCE_LENGTH, CsrfTokens, same_origin
from e6auth.web.forms import Form, posted_form
from e6auth.web.pages import CSRF_REFUSAL, Pages

__all__ = ["SIGN_IN_COOKIE", "SignInPages"]

log = logging.getLogger("e6auth.web")

SIGN_IN_COOKIE = "e6auth_signin"
_NONCE = re.compile(rf"[A-Za-z0-9_-]{{16,{MAX_NONCE_LENGTH}}}")

UNIFORM_SIGN_IN_REFUSAL = "Invalid user name or password."
FORM_SIGN_IN_OFF = "Password sign-in is turned off on this page: sign in with SSO."
SIGN_IN_TURNED_OFF = (
    "Password sign-in is turned off by the policy (password_logins = false: access tokens "
    "only). Tokens are managed with the e6auth command."
)


class SignInPages:
    """``/signin`` (the form, and its post when ``password_sign_in``), ``/signout`` and
    ``/signout/everywhere``; the form offers single sign-on when ``sso``."""

    def __init__(self, pages: Pages, *, password_sign_in: bool = True, sso: bool = False) -> None:
        self._pages = pages
        self._password_sign_in = password_sign_in
        self._sso = sso
        self._sign_in_cookie = PageCookie(SIGN_IN_COOKIE, secure=pages.secure)

    def __repr__(self) -> str:
        return f"SignInPages(password_sign_in={self._password_sign_in}, sso={self._sso})"

    def routes(self) -> list[Route]:
        return [
            Route("/", self.index),
            Route("/signin", self.sign_in_page, methods=["GET"]),
            Route("/signin", posted_form(self._sign_in), methods=["POST"]),
            Route("/signout", posted_form(self._sign_out), methods=["POST"]),
            Route("/signout/everywhere", posted_form(self._sign_out_everywhere), methods=["POST"]),
        ]

    def index(self, request: Request) -> Response:
        return RedirectResponse("/tokens", status_code=303)

    def sign_in_page(self, request: Request) -> Response:
        if self._pages.current_user(request) is not None:
            return RedirectResponse("/tokens", status_code=303)
        return self._sign_in_form(request)

    def _sign_in(self, request: Request, form: Form) -> Response:
        if not self._password_sign_in:
            # Configured off (web_password_signin): the form is not shown, and no post is read.
            return self._sign_in_form(request, status=403, error=FORM_SIGN_IN_OFF)
        nonce = self._sign_in_cookie.read(request) or ""
        csrf = self._pages.csrf
        if (
            not _NONCE.fullmatch(nonce)
            or not csrf.matches(csrf.for_sign_in(nonce), form.first("csrf"))
            or not same_origin(request)
        ):
            return self._sign_in_form(request, status=403, error=CSRF_REFUSAL)
        sent_name = form.first("username")
        peer = self._pages.peer(request)
        audit = self._pages.authenticator.audit
        try:
            cookie, principal = self._pages.sessions.sign_in(
                sent_name, form.first("password"), peer=peer
            )
        except E6AuthError as error:
            if audit is not None:
                audit.web_sign_in(sent_name, peer=peer, error=error)
            log.info("web sign-in from %s refused: %s (%s)", peer, error.reason, error.detail)
            return self._sign_in_refused(request, error)
        if audit is not None:
            audit.web_sign_in(sent_name, peer=peer, principal=principal)
        log.info("web sign-in of %s from %s", principal.username, peer)
        response = RedirectResponse("/tokens", status_code=303)
        self._pages.session_cookie.set(response, cookie)
        self._sign_in_cookie.delete(response)
        return response

    def _sign_in_refused(self, request: Request, error: E6AuthError) -> Response:
        if isinstance(error, Throttled):
            return self._sign_in_form(
                request,
                status=429,
                error=error.client_message(),
                headers={"Retry-After": str(error.retry_after_seconds)},
            )
        if isinstance(error, PasswordLoginsDisabled):
            return self._sign_in_form(request, status=403, error=SIGN_IN_TURNED_OFF)
        if isinstance(error, UserDisabled):
            # Said only once the password is proven, as the handshake does.
            return self._sign_in_form(request, status=403, error="This user is disabled.")
        if isinstance(error, AuthenticationError):
            return self._sign_in_form(request, status=401, error=UNIFORM_SIGN_IN_REFUSAL)
        raise error  # the store is unreachable: answered by the store-unavailable page

    def _sign_in_form(
        self,
        request: Request,
        *,
        status: int = 200,
        error: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """The sign-in form, bound to this browser's sign-in nonce (made on first sight). The
        user name is never filled in again: a password typed into that field must not come back."""
        nonce = self._sign_in_cookie.read(request) or ""
        fresh = not _NONCE.fullmatch(nonce)
        if fresh:
            nonce = CsrfTokens.new_nonce()
        response = self._pages.page(
            "signin.html",
            status=status,
            headers=headers,
            user=None,
            csrf=self._pages.csrf.for_sign_in(nonce),
            error=error,
            password_logins=self._pages.store.policy.password_logins,
            password_sign_in=self._password_sign_in,
            sso=self._sso,
        )
        if fresh:
            self._sign_in_cookie.set(response, nonce)
        return response

    def _sign_out(self, request: Request, form: Form) -> Response:
        user = self._pages.form_user(request, form)
        self._pages.sessions.end(user)
        log.info("web sign-out of %s", user.name)
        return self._signed_out()

    def _sign_out_everywhere(self, request: Request, form: Form) -> Response:
        user = self._pages.form_user(request, form)
        self._pages.sessions.end_everywhere(user)
        log.info("web sign-out of %s everywhere", user.name)
        return self._signed_out()

    def _signed_out(self) -> Response:
        response = RedirectResponse("/signin", status_code=303)
        self._pages.session_cookie.delete(response)
        return response
