"""What every page of the Access Tokens site shares: its templates, its session cookie, who is
signed in, the CSRF check of a form, the browser's address, and the error pages.

The route groups (``sign_in_pages.py``, ``token_pages.py``, ``service_account_pages.py``,
``sso.py``) each hold one :class:`Pages` rather than repeating these rules: a form that changes
something is checked one way everywhere, and a refusal looks the same whichever page refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from e6auth.errors import SessionError, StoreUnavailable
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.proxies import FORWARDED_FOR
from e6auth.web.cookies import PageCookie
from e6auth.web.csrf import CsrfTokens, same_origin
from e6auth.web.forms import Form, FormRefused
from e6auth.web.page_sessions import WebSessions, WebUser

__all__ = [
    "CSRF_REFUSAL",
    "SESSION_COOKIE",
    "STORE_UNAVAILABLE",
    "CsrfRefused",
    "Pages",
    "SignInRequired",
]

log = logging.getLogger("e6auth.web")

HERE = Path(__file__).parent
SESSION_COOKIE = "e6auth_session"
CSRF_REFUSAL = "This form has expired or was sent from another site. Nothing was changed."
STORE_UNAVAILABLE = "The token store is unavailable. Try again in a moment."

ExceptionHandler = Callable[[Request, Exception], Response]


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""


class CsrfRefused(Exception):
    """A state-changing form without the right token, or from another origin."""


class Pages:
    """The shared part of the page on ``authenticator`` (its store and trusted proxies), its
    ``sessions`` and ``csrf`` tokens; ``secure``: served over TLS."""

    def __init__(
        self,
        authenticator: Authenticator,
        sessions: WebSessions,
        csrf: CsrfTokens,
        *,
        secure: bool,
    ) -> None:
        self.authenticator = authenticator
        self.store = authenticator.store
        self.sessions = sessions
        self.csrf = csrf
        self.secure = secure
        # The cookie goes when the session would end at the latest: never after.
        self.session_cookie = PageCookie(
            SESSION_COOKIE, secure=secure, max_age=int(sessions.max_age_seconds)
        )
        self._proxies = authenticator.trusted_proxies
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def __repr__(self) -> str:
        return f"Pages(secure={self.secure})"

    # -- who is asking -------------------------------------------------------------------------

    def current_user(self, request: Request) -> WebUser | None:
        cookie = self.session_cookie.read(request)
        if not cookie:
            return None
        try:
            return self.sessions.user(cookie)
        except SessionError:
            return None

    def user(self, request: Request) -> WebUser:
        """The signed-in user, or :class:`SignInRequired`."""
        user = self.current_user(request)
        if user is None:
            raise SignInRequired
        return user

    def form_user(self, request: Request, form: Form) -> WebUser:
        """The signed-in user of a form that changes something, once its CSRF token and the
        request's origin are proven (else :class:`SignInRequired` or :class:`CsrfRefused`)."""
        user = self.user(request)
        expected = self.csrf.for_session(user.session.id)
        if not self.csrf.matches(expected, form.first("csrf")) or not same_origin(request):
            raise CsrfRefused
        return user

    def peer(self, request: Request) -> str | None:
        """The browser's address: the socket's, or behind a trusted proxy the one it forwards
        (uvicorn's own proxy headers are off: it would believe any client)."""
        if request.client is None:
            return None
        forwarded = request.headers.getlist(FORWARDED_FOR)
        return self._proxies.client_address(request.client.host, forwarded)

    # -- answers -------------------------------------------------------------------------------

    def page(
        self,
        template: str,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("csrf", "")
        html = self._templates.get_template(template).render(context)
        return HTMLResponse(html, status_code=status, headers=headers)

    def user_page(
        self, user: WebUser, template: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        """A page for a signed-in user, its forms carrying the session's CSRF token."""
        csrf = self.csrf.for_session(user.session.id)
        return self.page(template, status=status, user=user, csrf=csrf, **context)

    def error(self, status: int, message: str) -> HTMLResponse:
        return self.page("error.html", status=status, user=None, message=message)

    # -- refusals raised anywhere below a route -----------------------------------------------

    def exception_handlers(self) -> dict[Any, ExceptionHandler]:
        return {
            SignInRequired: self._sign_in_required,
            CsrfRefused: self._csrf_refused,
            FormRefused: self._form_refused,
            StoreUnavailable: self._store_unavailable,
            HTTPException: self._http_error,
        }

    def _sign_in_required(self, request: Request, _exc: Exception) -> Response:
        response = RedirectResponse("/signin", status_code=303)
        if self.session_cookie.name in request.cookies:
            self.session_cookie.delete(response)
        return response

    def _csrf_refused(self, request: Request, _exc: Exception) -> Response:
        log.info("web: a form refused from %s (CSRF token or origin)", self.peer(request))
        return self.error(403, CSRF_REFUSAL)

    def _form_refused(self, _request: Request, exc: Exception) -> Response:
        status, message = (exc.status, exc.message) if isinstance(exc, FormRefused) else (400, "")
        return self.error(status, message[:1].upper() + message[1:] + ".")

    def _store_unavailable(self, _request: Request, _exc: Exception) -> Response:
        return self.error(503, STORE_UNAVAILABLE)

    def _http_error(self, _request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        messages = {404: "There is no such page.", 405: "That is not how this page is used."}
        return self.error(status, messages.get(status, "The request was refused."))
