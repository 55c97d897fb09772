"""Service accounts on the Access Tokens page: an administrator lists and adds the tokens of the
service accounts they manage.

A service account never signs in; its tokens are made by an administrator who owns it, on the same
new-token form as a user's own (``token_pages.py``). To anyone else, an administrator who does not
own it included, its pages do not exist (404, as for a name that is no account at all).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from e6auth.credentials.usernames import normalize_username
from e6auth.web.forms import Form, posted_form
from e6auth.web.listing import token_row
from e6auth.web.page_sessions import WebUser
from e6auth.web.pages import Pages
from e6auth.web.token_pages import TokenPages

__all__ = ["ServiceAccountPages"]


class ServiceAccountPages:
    """``/service-accounts/{name}`` (its tokens), ``…/new`` (the form) and ``…/tokens`` (a new
    token posted)."""

    def __init__(self, pages: Pages, tokens: TokenPages) -> None:
        self._pages = pages
        self._store = pages.store
        self._tokens = tokens

    def __repr__(self) -> str:
        return f"ServiceAccountPages({self._pages!r})"

    def routes(self) -> list[Route]:
        return [
            Route("/service-accounts/{name}", self.service_account_page, methods=["GET"]),
            Route("/service-accounts/{name}/new", self.new_service_token_page, methods=["GET"]),
            Route(
                "/service-accounts/{name}/tokens",
                posted_form(self._create_service_token),
                methods=["POST"],
            ),
        ]

    def service_account_page(self, request: Request) -> Response:
        user = self._pages.user(request)
        account = self._owned_account(user, request)
        tokens = self._store.list_tokens(account)
        now = self._store.now()
        shown = sorted(
            (token for token in tokens if token.revoked_at is None),
            key=lambda token: (token.created_at, token.id),
            reverse=True,
        )
        return self._pages.user_page(
            user,
            "service_account.html",
            account=account,
            rows=[token_row(token, now) for token in shown],
        )

    def new_service_token_page(self, request: Request) -> Response:
        user = self._pages.user(request)
        return self._tokens.new_token_form(user, account=self._owned_account(user, request))

    def _create_service_token(self, request: Request, form: Form) -> Response:
        user = self._pages.form_user(request, form)
        account: str = request.path_params["name"]
        self._check_owner(user, account)
        return self._tokens.create_token(request, user, form, account=account)

    def _owned_account(self, user: WebUser, request: Request) -> str:
        account: str = request.path_params["name"]
        self._check_owner(user, account)
        return normalize_username(account)

    def _check_owner(self, user: WebUser, account: str) -> None:
        # Not the administrator's: no such page, as for a name that does not exist.
        if not user.admin or not self._store.owns_service_account(user.name, account):
            raise HTTPException(404)
