"""The signed-in user's tokens on the Access Tokens page: the list, the new-token form, and
deleting tokens after a confirmation.

A user sees and deletes only their own tokens; an administrator may list anyone's (choosing a user)
and delete any. The new-token form is also the service accounts' (``service_account_pages.py``):
it checks what it can in the page's own words before the store, which refuses the same things in
the command's. A new token's secret is shown in the one response that creates it: never in a
redirect, a URL or anything stored.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from e6auth.credentials.tokens import is_token_id
from e6auth.credentials.usernames import normalize_username
from e6auth.errors import E6AuthError, PolicyError, UserNotFound
from e6auth.store.token_store import MAX_COMMENT_LENGTH, MAX_EXPIRES_DAYS
from e6auth.verify.restrictions import MAX_ALLOWED_RANGES
from e6auth.web.forms import Form, FormRefused, posted_form
from e6auth.web.listing import shown_time, token_row
from e6auth.web.page_sessions import WebUser
from e6auth.web.pages import Pages

__all__ = ["MAX_ALLOW_FROM_LENGTH", "MAX_SELECTED", "TokenPages"]

log = logging.getLogger("e6auth.web")

MAX_SELECTED = 1000
"""Tokens one delete may name."""
MAX_ALLOW_FROM_LENGTH = 64 * MAX_ALLOWED_RANGES
"""The longest "Allowed from" field taken: enough for every range the store allows."""
_DAYS = re.compile(r"[0-9]{1,6}")


class TokenPages:
    """``/tokens`` (the list, and a new token posted to it), ``/tokens/new``,
    ``/tokens/delete`` (what would go) and ``/tokens/delete/confirm``."""

    def __init__(self, pages: Pages) -> None:
        self._pages = pages
        self._store = pages.store

    def __repr__(self) -> str:
        return f"TokenPages({self._pages!r})"

    def routes(self) -> list[Route]:
        return [
            Route("/tokens", self.tokens_page, methods=["GET"]),
            Route("/tokens", posted_form(self._create_token), methods=["POST"]),
            Route("/tokens/new", self.new_token_page, methods=["GET"]),
            Route("/tokens/delete", posted_form(self._confirm_delete), methods=["POST"]),
            Route("/tokens/delete/confirm", posted_form(self._delete_tokens), methods=["POST"]),
        ]

    # -- the list ------------------------------------------------------------------------------

    def tokens_page(self, request: Request) -> Response:
        user = self._pages.user(request)
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
        show_all = params.get("show") == "all"
        owner: str | None = user.name
        chosen = None
        if user.admin:
            owner = chosen = _user_filter(params.get("user"))
        try:
            tokens = self._store.list_tokens(owner)
        except UserNotFound:
            tokens = []
        now = self._store.now()
        shown = [token for token in tokens if show_all or token.revoked_at is None]
        shown.sort(key=lambda token: (token.created_at, token.id), reverse=True)
        return self._pages.user_page(
            user,
            "tokens.html",
            rows=[token_row(token, now) for token in shown],
            hidden=len(tokens) - len(shown),
            show_all=show_all,
            users=[known.name for known in self._store.list_users()] if user.admin else [],
            services=self._store.owned_service_accounts(user.name) if user.admin else [],
            chosen=chosen,
            notices=notices,
            error=error,
        )

    # -- adding a token ------------------------------------------------------------------------

    def new_token_page(self, request: Request) -> Response:
        return self.new_token_form(self._pages.user(request))

    def new_token_form(
        self,
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
        return self._pages.user_page(
            user,
            "new_token.html",
            account=account,
            status=status,
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

    def _create_token(self, request: Request, form: Form) -> Response:
        return self.create_token(request, self._pages.form_user(request, form), form)

    def create_token(
        self, request: Request, user: WebUser, form: Form, *, account: str | None = None
    ) -> Response:
        """The token ``form`` asks for, made for ``user`` (or the service ``account`` that user
        manages, already checked), shown once; or the form again with what is wrong."""
        comment = form.first("comment").strip()
        days_text = form.first("expires_days").strip()
        # A checkbox is sent only when ticked; its value is "on" unless the page says otherwise.
        read_only = form.first("read_only") == "on"
        ranges_text = form.first("allow_from").strip()

        def refused(message: str) -> Response:
            return self.new_token_form(
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
        audit = self._pages.authenticator.audit
        if audit is not None:
            # A service account's token is made by an administrator: the audit names them.
            method = "web" if account is None else f"web:{user.name}"
            audit.token_event(
                "token_created", new.user, new.id, method=method, peer=self._pages.peer(request)
            )
        # Shown in this response only: not in a redirect, a URL or anything stored.
        return self._pages.user_page(
            user,
            "created.html",
            status=201,
            new=new,
            expires=f"{shown_time(new.expires_at)} UTC" if new.expires_at else "never",
        )

    # -- deleting tokens -----------------------------------------------------------------------

    def _confirm_delete(self, request: Request, form: Form) -> Response:
        """What would be deleted, for the user to confirm. Nothing changes yet."""
        user = self._pages.form_user(request, form)
        wanted = _selected(form)
        if not wanted:
            return _nothing_selected()
        # A user sees only their own tokens here: another user's id is "not found", exactly
        # as an id that does not exist.
        tokens = self._store.list_tokens(None if user.admin else user.name)
        selected = set(wanted)
        found = [token for token in tokens if token.id in selected and token.revoked_at is None]
        now = self._store.now()
        return self._pages.user_page(
            user,
            "confirm_delete.html",
            rows=[token_row(token, now) for token in found],
            missing=len(wanted) - len(found),
        )

    def _delete_tokens(self, request: Request, form: Form) -> Response:
        user = self._pages.form_user(request, form)
        wanted = _selected(form)
        if not wanted:
            return _nothing_selected()
        # For a user who is no administrator the store itself takes only their own tokens: a
        # forged id of another user's token is "unknown", as one that does not exist.
        result = self._store.delete_tokens(wanted, user=None if user.admin else user.name)
        audit = self._pages.authenticator.audit
        if audit is not None:
            method = f"web:{user.name}" if user.admin else "web"
            peer = self._pages.peer(request)
            for token_id in result.deleted:
                # The owner is looked up when the event is written.
                audit.token_event("token_deleted", None, token_id, method=method, peer=peer)
        log.info("web: %s deleted tokens %s", user.name, ", ".join(result.deleted) or "none")
        missing = len(result.unknown) + len(result.already_deleted)
        target = f"/tokens?deleted={len(result.deleted)}"
        if missing:
            target += f"&missing={missing}"
        return RedirectResponse(target, status_code=303)


def _selected(form: Form) -> list[str]:
    """The token ids a form names, each once, in order; anything that is no token id is dropped
    (it names no token). At most :data:`MAX_SELECTED`."""
    ids = form.every("id")
    if len(ids) > MAX_SELECTED:
        raise FormRefused(413, f"at most {MAX_SELECTED} tokens can be deleted at once")
    return [token_id for token_id in dict.fromkeys(ids) if is_token_id(token_id)]


def _nothing_selected() -> Response:
    return RedirectResponse("/tokens?nothing=1", status_code=303)


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
