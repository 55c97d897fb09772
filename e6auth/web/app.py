"""The Access Tokens page as a Starlette application: sign in, list, add and delete tokens.

Every page but the sign-in form needs a live session (``sessions.py``); every form that changes
something carries a CSRF token (``csrf.py``); every response carries the security headers of
``headers.py``. Work that blocks (argon2, the token store) runs in Starlette's thread pool, never
on the event loop.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from e6auth.clock import Clock
from e6auth.credentials.tokens import is_token_id
from e6auth.credentials.usernames import normalize_username
from e6auth.errors import (
    AuthenticationError,
    E6AuthError,
    PasswordLoginsDisabled,
    PolicyError,
    SessionError,
    StoreUnavailable,
    Throttled,
    UserDisabled,
    UserNotFound,
)
from e6auth.settings import LOCAL_HOST_NAMES
from e6auth.store.token_store import MAX_COMMENT_LENGTH, MAX_EXPIRES_DAYS
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.proxies import FORWARDED_FOR
from e6auth.verify.restrictions import MAX_ALLOWED_RANGES
from e6auth.web.csrf import MAX_NONCE_LENGTH, CsrfTokens, same_origin
from e6auth.web.forms import Form, FormRefused, read_form
from e6auth.web.headers import SecurityHeaders
from e6auth.web.listing import shown_time, token_row
from e6auth.web.oidc_client import SsoClient
from e6auth.web.page_sessions import (
    DEFAULT_IDLE_SECONDS,
    DEFAULT_MAX_AGE_SECONDS,
    WebSessions,
    WebUser,
)
from e6auth.web.sso import SsoPages

__all__ = ["build_app"]

log = logging.getLogger("e6auth.web")

HERE = Path(__file__).parent
SESSION_COOKIE = "e6auth_session"
SIGN_IN_COOKIE = "e6auth_signin"
MAX_SELECTED = 1000
"""Tokens one delete may name."""
_NONCE = re.compile(rf"[A-Za-z0-9_-]{{16,{MAX_NONCE_LENGTH}}}")
_DAYS = re.compile(r"[0-9]{1,6}")
MAX_ALLOW_FROM_LENGTH = 64 * MAX_ALLOWED_RANGES
"""The longest "Allowed from" field taken: enough for every range the store allows."""


UNIFORM_SIGN_IN_REFUSAL = "Invalid user name or password."
FORM_SIGN_IN_OFF = "Password sign-in is turned off on this page: sign in with SSO."
CSRF_REFUSAL = "This form has expired or was sent from another site. Nothing was changed."
SIGN_IN_TURNED_OFF = (
    "Password sign-in is turned off by the policy (password_logins = false: access tokens "
    "only). Tokens are managed with the e6auth command."
)


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page."""


class CsrfRefused(Exception):
    """A state-changing form without the right token, or from another origin."""


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
    pages = TokenPages(
        authenticator,
        sessions,
        CsrfTokens(session_key),
        secure=secure,
        password_sign_in=password_sign_in,
        sso=sso is not None,
    )
    routes = pages.routes()
    if sso is not None:
        sso_pages = SsoPages(
            authenticator,
            sessions,
            sso,
            session_key=session_key,
            secure=secure,
            redirect_uri=sso_redirect_uri,
            create_users=sso_create_users,
            error_page=pages.error_page,
            set_session_cookie=pages.set_session_cookie,
        )
        routes[:0] = sso_pages.routes()
    app = Starlette(
        routes=routes,
        exception_handlers={
            SignInRequired: pages.sign_in_required,
            CsrfRefused: pages.csrf_refused,
            FormRefused: pages.form_refused,
            StoreUnavailable: pages.store_unavailable,
            HTTPException: pages.http_error,
        },
    )
    # Before anything reads a cookie or a form: under a name an attacker controls (DNS
    # rebinding), the browser counts the page as the attacker's own origin, so the Origin check
    # and SameSite cookies would not stop a script there from driving sign-ins.
    checked = TrustedHostMiddleware(app, allowed_hosts=list(allowed_hosts), www_redirect=False)
    # Outside Starlette's error middleware, so that even its 500 answer carries the headers.
    return SecurityHeaders(checked)


class TokenPages:
    def __init__(
        self,
        authenticator: Authenticator,
        sessions: WebSessions,
        csrf: CsrfTokens,
        *,
        secure: bool,
        password_sign_in: bool = True,
        sso: bool = False,
    ) -> None:
        self._password_sign_in = password_sign_in
        self._sso = sso
        self._authenticator = authenticator
        self._store = authenticator.store
        self._proxies = authenticator.trusted_proxies
        self._sessions = sessions
        self._csrf = csrf
        self._secure = secure
        # __Host-: the browser keeps such a cookie only if it is Secure, for Path=/ and this
        # host alone (no Domain), so no sibling domain can plant or overwrite it.
        prefix = "__Host-" if secure else ""
        self._session_cookie = prefix + SESSION_COOKIE
        self._sign_in_cookie = prefix + SIGN_IN_COOKIE
        self._templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def __repr__(self) -> str:
        return f"TokenPages(secure={self._secure})"

    def routes(self) -> list[Route | Mount]:
        return [
            Route("/", self.index),
            Route("/signin", self.sign_in_page, methods=["GET"]),
            Route("/signin", self.sign_in, methods=["POST"]),
            Route("/signout", self.sign_out, methods=["POST"]),
            Route("/signout/everywhere", self.sign_out_everywhere, methods=["POST"]),
            Route("/tokens", self.tokens_page, methods=["GET"]),
            Route("/tokens", self.create_token, methods=["POST"]),
            Route("/tokens/new", self.new_token_page, methods=["GET"]),
            Route("/tokens/delete", self.confirm_delete, methods=["POST"]),
            Route("/tokens/delete/confirm", self.delete_tokens, methods=["POST"]),
            Route("/service-accounts/{name}", self.service_account_page, methods=["GET"]),
            Route("/service-accounts/{name}/new", self.new_service_token_page, methods=["GET"]),
            Route("/service-accounts/{name}/tokens", self.create_service_token, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # -- signing in and out --------------------------------------------------------------------

    def index(self, request: Request) -> Response:
        return RedirectResponse("/tokens", status_code=303)

    def sign_in_page(self, request: Request) -> Response:
        if self._current_user(request) is not None:
            return RedirectResponse("/tokens", status_code=303)
        return self._sign_in_form(request)

    async def sign_in(self, request: Request) -> Response:
        form = await read_form(request)
        # argon2 and the store block: off the event loop.
        return await run_in_threadpool(self._sign_in, request, form)

    def _sign_in(self, request: Request, form: Form) -> Response:
        if not self._password_sign_in:
            # Configured off (web_password_signin): the form is not shown, and no post is read.
            return self._sign_in_form(request, status=403, error=FORM_SIGN_IN_OFF)
        nonce = request.cookies.get(self._sign_in_cookie, "")
        if (
            not _NONCE.fullmatch(nonce)
            or not self._csrf.matches(self._csrf.for_sign_in(nonce), form.first("csrf"))
            or not same_origin(request)
        ):
            return self._sign_in_form(request, status=403, error=CSRF_REFUSAL)
        sent_name = form.first("username")
        peer = self._peer(request)
        audit = self._authenticator.audit
        try:
            cookie, principal = self._sessions.sign_in(sent_name, form.first("password"), peer=peer)
        except E6AuthError as error:
            if audit is not None:
                audit.web_sign_in(sent_name, peer=peer, error=error)
            log.info("web sign-in from %s refused: %s (%s)", peer, error.reason, error.detail)
            return self._sign_in_refused(request, error)
        if audit is not None:
            audit.web_sign_in(sent_name, peer=peer, principal=principal)
        log.info("web sign-in of %s from %s", principal.username, peer)
        response = RedirectResponse("/tokens", status_code=303)
        response.set_cookie(
            self._session_cookie,
            cookie,
            # The cookie goes when the session would end at the latest: never after.
            max_age=int(self._sessions.max_age_seconds),
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )
        self._delete_cookie(response, self._sign_in_cookie)
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
        raise error  # the store is unreachable: answered by store_unavailable

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
        nonce = request.cookies.get(self._sign_in_cookie, "")
        fresh = not _NONCE.fullmatch(nonce)
        if fresh:
            nonce = CsrfTokens.new_nonce()
        response = self._page(
            request,
            "signin.html",
            status=status,
            headers=headers,
            user=None,
            csrf=self._csrf.for_sign_in(nonce),
            error=error,
            password_logins=self._store.policy.password_logins,
            password_sign_in=self._password_sign_in,
            sso=self._sso,
        )
        if fresh:
            response.set_cookie(
                self._sign_in_cookie,
                nonce,
                path="/",
                secure=self._secure,
                httponly=True,
                samesite="strict",
            )
        return response

    async def sign_out(self, request: Request) -> Response:
        form = await read_form(request)
        return await run_in_threadpool(self._sign_out, request, form)

    def _sign_out(self, request: Request, form: Form) -> Response:
        user = self._user(request)
        self._check_csrf(request, user, form)
        self._sessions.end(user)
        log.info("web sign-out of %s", user.name)
        return self._signed_out()

    async def sign_out_everywhere(self, request: Request) -> Response:
        form = await read_form(request)
        return await run_in_threadpool(self._sign_out_everywhere, request, form)

    def _sign_out_everywhere(self, request: Request, form: Form) -> Response:
        user = self._user(request)
        self._check_csrf(request, user, form)
        self._sessions.end_everywhere(user)
        log.info("web sign-out of %s everywhere", user.name)
        return self._signed_out()

    def _signed_out(self) -> Response:
        response = RedirectResponse("/signin", status_code=303)
        self._delete_cookie(response, self._session_cookie)
        return response

    # -- the list ------------------------------------------------------------------------------

    def tokens_page(self, request: Request) -> Response:
        user = self._user(request)
        params = request.query_params
        notices = []
        deleted, missing = _count(params.get("deleted")), _count(params.get("missing"))
        if deleted:
            notices.append(f"Deleted {_plural(deleted, 'token')}.")
        if missing:
            notices.append(
                f"{_plural(missing, 'selected token')} {'was' if missing == 1 else 'were'} "
                "not found or already deleted."
            )
        error = "Select the tokens to delete first." if params.get("nothing") else None
        return self._list(request, user, notices=notices, error=error)

    def _list(
        self,
        request: Request,
        user: WebUser,
        *,
        notices: list[str] | None = None,
        error: str | None = None,
    ) -> Response:
        show_all = request.query_params.get("show") == "all"
        owner: str | None = user.name
        chosen = None
        if user.admin:
            owner = chosen = _user_filter(request.query_params.get("user"))
        try:
            tokens = self._store.list_tokens(owner)
        except UserNotFound:
            tokens = []
        now = self._store.now()
        shown = [token for token in tokens if show_all or token.revoked_at is None]
        shown.sort(key=lambda token: (token.created_at, token.id), reverse=True)
        return self._page(
            request,
            "tokens.html",
            user=user,
            csrf=self._csrf.for_session(user.session.id),
            rows=[token_row(token, now) for token in shown],
            hidden=len(tokens) - len(shown),
            show_all=show_all,
            users=[known.name for known in self._store.list_users()] if user.admin else [],
            services=self._store.owned_service_accounts(user.name) if user.admin else [],
            chosen=chosen,
            notices=notices or [],
            error=error,
        )

    # -- adding a token ------------------------------------------------------------------------

    def new_token_page(self, request: Request) -> Response:
        user = self._user(request)
        return self._new_token_form(request, user)

    def _new_token_form(
        self,
        request: Request,
        user: WebUser,
        *,
        status: int = 200,
        comment: str = "",
        expires_days: str = "",
        read_only: bool = False,
        allow_from: str = "",
        error: str | None = None,
        account: str | None = None,
    ) -> Response:
        """``account``: the form makes a token for that service account (of this administrator)."""
        policy = self._store.policy
        return self._page(
            request,
            "new_token.html",
            account=account,
            status=status,
            user=user,
            csrf=self._csrf.for_session(user.session.id),
            # Only what fits is shown again: a form refused for its size is not echoed whole.
            comment=comment if len(comment) <= MAX_COMMENT_LENGTH else "",
            expires_days=expires_days if len(expires_days) <= 6 else "",
            read_only=read_only,
            allow_from=allow_from if len(allow_from) <= MAX_ALLOW_FROM_LENGTH else "",
            max_allow_from=MAX_ALLOW_FROM_LENGTH,
            max_days=policy.max_token_lifetime_days or MAX_EXPIRES_DAYS,
            expiry_required=policy.max_token_lifetime_days is not None,
            max_comment=MAX_COMMENT_LENGTH,
            error=error,
        )

    async def create_token(self, request: Request) -> Response:
        form = await read_form(request)
        return await run_in_threadpool(self._create_token, request, form)

    def _create_token(
        self, request: Request, form: Form, *, account: str | None = None
    ) -> Response:
        user = self._user(request)
        self._check_csrf(request, user, form)
        if account is not None:
            self._check_owner(user, account)
        comment = form.first("comment").strip()
        days_text = form.first("expires_days").strip()
        # A checkbox is sent only when ticked; its value is "on" unless the page says otherwise.
        read_only = form.first("read_only") == "on"
        ranges_text = form.first("allow_from").strip()

        def refused(message: str) -> Response:
            return self._new_token_form(
                request,
                user,
                status=400,
                comment=comment,
                expires_days=days_text,
                read_only=read_only,
                allow_from=ranges_text,
                error=message,
                account=account,
            )

        if len(ranges_text) > MAX_ALLOW_FROM_LENGTH:
            return refused(
                f"Give at most {MAX_ALLOWED_RANGES} address ranges in Allowed from "
                f"({MAX_ALLOW_FROM_LENGTH} characters)."
            )
        # Ranges separated by commas, spaces or new lines; none: from anywhere.
        allow_from = ranges_text.replace(",", " ").split() or None

        expires_days: int | None = None
        if days_text:
            if not _DAYS.fullmatch(days_text) or not 1 <= int(days_text) <= MAX_EXPIRES_DAYS:
                return refused(
                    f"The expiry is a whole number of days from 1 to {MAX_EXPIRES_DAYS}, or "
                    "empty for a token that never expires."
                )
            expires_days = int(days_text)
        limit = self._store.policy.max_token_lifetime_days
        if limit is not None and (expires_days is None or expires_days > limit):
            # The store would refuse it too, in the command's words (--expires-days).
            return refused(
                f"Tokens must expire within {limit} days (the policy's maximum token "
                f"lifetime): give an expiry of at most {limit} days."
            )
        try:
            new = self._store.create_token(
                account or user.name,
                comment=comment or None,
                expires_days=expires_days,
                allow_from=allow_from,
                read_only=read_only,
            )
        except PolicyError as exc:  # the token limit, a bad range, a comment not printable
            return refused(_sentence(exc.detail))
        audit = self._authenticator.audit
        if audit is not None:
            # A service account's token is made by an administrator: the audit names them.
            method = "web" if account is None else f"web:{user.name}"
            audit.token_event(
                "token_created", new.user, new.id, method=method, peer=self._peer(request)
            )
        # Shown in this response only: not in a redirect, a URL or anything stored.
        return self._page(
            request,
            "created.html",
            status=201,
            user=user,
            csrf=self._csrf.for_session(user.session.id),
            new=new,
            expires=f"{shown_time(new.expires_at)} UTC" if new.expires_at else "never",
        )

    # -- deleting tokens -----------------------------------------------------------------------

    async def confirm_delete(self, request: Request) -> Response:
        form = await read_form(request)
        return await run_in_threadpool(self._confirm_delete, request, form)

    def _confirm_delete(self, request: Request, form: Form) -> Response:
        """What would be deleted, for the user to confirm. Nothing changes yet."""
        user = self._user(request)
        self._check_csrf(request, user, form)
        wanted = _selected(form)
        if not wanted:
            return RedirectResponse("/tokens?nothing=1", status_code=303)
        # A user sees only their own tokens here: another user's id is "not found", exactly
        # as an id that does not exist.
        tokens = self._store.list_tokens(None if user.admin else user.name)
        selected = set(wanted)
        found = [token for token in tokens if token.id in selected and token.revoked_at is None]
        now = self._store.now()
        return self._page(
            request,
            "confirm_delete.html",
            user=user,
            csrf=self._csrf.for_session(user.session.id),
            rows=[token_row(token, now) for token in found],
            missing=len(wanted) - len(found),
        )

    async def delete_tokens(self, request: Request) -> Response:
        form = await read_form(request)
        return await run_in_threadpool(self._delete_tokens, request, form)

    def _delete_tokens(self, request: Request, form: Form) -> Response:
        user = self._user(request)
        self._check_csrf(request, user, form)
        wanted = _selected(form)
        if not wanted:
            return RedirectResponse("/tokens?nothing=1", status_code=303)
        # For a user who is no administrator the store itself takes only their own tokens: a
        # forged id of another user's token is "unknown", as one that does not exist.
        result = self._store.delete_tokens(wanted, user=None if user.admin else user.name)
        audit = self._authenticator.audit
        if audit is not None:
            method = f"web:{user.name}" if user.admin else "web"
            for token_id in result.deleted:
                # The owner is looked up when the event is written.
                audit.token_event(
                    "token_deleted", None, token_id, method=method, peer=self._peer(request)
                )
        log.info("web: %s deleted tokens %s", user.name, ", ".join(result.deleted) or "none")
        missing = len(result.unknown) + len(result.already_deleted)
        target = f"/tokens?deleted={len(result.deleted)}"
        if missing:
            target += f"&missing={missing}"
        return RedirectResponse(target, status_code=303)

    # -- service accounts ----------------------------------------------------------------------

    def service_account_page(self, request: Request) -> Response:
        user = self._user(request)
        account = self._owned_account(user, request)
        tokens = self._store.list_tokens(account)
        now = self._store.now()
        shown = sorted(
            (token for token in tokens if token.revoked_at is None),
            key=lambda token: (token.created_at, token.id),
            reverse=True,
        )
        return self._page(
            request,
            "service_account.html",
            user=user,
            csrf=self._csrf.for_session(user.session.id),
            account=account,
            rows=[token_row(token, now) for token in shown],
        )

    def new_service_token_page(self, request: Request) -> Response:
        user = self._user(request)
        return self._new_token_form(request, user, account=self._owned_account(user, request))

    async def create_service_token(self, request: Request) -> Response:
        form = await read_form(request)
        account = request.path_params["name"]
        return await run_in_threadpool(self._create_token, request, form, account=account)

    def _owned_account(self, user: WebUser, request: Request) -> str:
        account: str = request.path_params["name"]
        self._check_owner(user, account)
        return normalize_username(account)

    def _check_owner(self, user: WebUser, account: str) -> None:
        # Not the administrator's: no such page, as for a name that does not exist.
        if not user.admin or not self._store.owns_service_account(user.name, account):
            raise HTTPException(404)

    # -- errors --------------------------------------------------------------------------------

    def sign_in_required(self, request: Request, _exc: Exception) -> Response:
        response = RedirectResponse("/signin", status_code=303)
        if self._session_cookie in request.cookies:
            self._delete_cookie(response, self._session_cookie)
        return response

    def csrf_refused(self, request: Request, _exc: Exception) -> Response:
        log.info("web: a form refused from %s (CSRF token or origin)", self._peer(request))
        return self._error(request, 403, CSRF_REFUSAL)

    def form_refused(self, request: Request, exc: Exception) -> Response:
        status, message = (exc.status, exc.message) if isinstance(exc, FormRefused) else (400, "")
        return self._error(request, status, message[:1].upper() + message[1:] + ".")

    def store_unavailable(self, request: Request, _exc: Exception) -> Response:
        return self._error(request, 503, "The token store is unavailable. Try again in a moment.")

    def http_error(self, request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        messages = {404: "There is no such page.", 405: "That is not how this page is used."}
        return self._error(request, status, messages.get(status, "The request was refused."))

    def error_page(self, request: Request, status: int, message: str) -> Response:
        return self._error(request, status, message)

    def set_session_cookie(self, response: Response, cookie: str) -> None:
        """The session cookie of a sign-in, as the password sign-in sets it."""
        response.set_cookie(
            self._session_cookie,
            cookie,
            max_age=int(self._sessions.max_age_seconds),
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )

    def _error(self, request: Request, status: int, message: str) -> Response:
        return self._page(request, "error.html", status=status, user=None, message=message)

    # -- helpers -------------------------------------------------------------------------------

    def _current_user(self, request: Request) -> WebUser | None:
        cookie = request.cookies.get(self._session_cookie)
        if not cookie:
            return None
        try:
            return self._sessions.user(cookie)
        except SessionError:
            return None

    def _user(self, request: Request) -> WebUser:
        user = self._current_user(request)
        if user is None:
            raise SignInRequired
        return user

    def _check_csrf(self, request: Request, user: WebUser, form: Form) -> None:
        expected = self._csrf.for_session(user.session.id)
        if not self._csrf.matches(expected, form.first("csrf")) or not same_origin(request):
            raise CsrfRefused

    def _peer(self, request: Request) -> str | None:
        """The browser's address: the socket's, or behind a trusted proxy the one it forwards
        (uvicorn's own proxy headers are off: it would believe any client)."""
        if request.client is None:
            return None
        forwarded = request.headers.getlist(FORWARDED_FOR)
        return self._proxies.client_address(request.client.host, forwarded)

    def _delete_cookie(self, response: Response, name: str) -> None:
        response.delete_cookie(
            name, path="/", secure=self._secure, httponly=True, samesite="strict"
        )

    def _page(
        self,
        request: Request,
        template: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("csrf", "")
        html = self._templates.get_template(template).render(context)
        return HTMLResponse(html, status_code=status, headers=headers)


def _selected(form: Form) -> list[str]:
    """The token ids a form names, each once, in order; anything that is no token id is dropped
    (it names no token). At most :data:`MAX_SELECTED`."""
    ids = form.every("id")
    if len(ids) > MAX_SELECTED:
        raise FormRefused(413, f"at most {MAX_SELECTED} tokens can be deleted at once")
    return [token_id for token_id in dict.fromkeys(ids) if is_token_id(token_id)]


def _user_filter(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return normalize_username(text)
    except E6AuthError:
        return None


def _count(text: str | None) -> int:
    return int(text) if text is not None and _DAYS.fullmatch(text) else 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _sentence(detail: str) -> str:
    text = detail.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "."
