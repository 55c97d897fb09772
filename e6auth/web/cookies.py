"""The page's cookies, each set and deleted with its attributes written once.

Every cookie of the page is ``HttpOnly`` (no script needs one) and for ``Path=/``; served over
TLS it is ``Secure`` and its name has the ``__Host-`` prefix: the browser keeps such a cookie only
if it is Secure, for ``Path=/`` and this host alone (no ``Domain``), so no sibling domain can plant
or overwrite it. A cookie is deleted with the attributes it was set with, since a browser keeps a
cookie that a deletion with other attributes does not match.
"""

from __future__ import annotations

from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["PageCookie"]


class PageCookie:
    """One cookie of the page: ``name`` (prefixed with ``__Host-`` when ``secure``), its
    ``same_site`` rule, and ``max_age`` seconds (None: until the browser closes)."""

    def __init__(
        self,
        name: str,
        *,
        secure: bool,
        same_site: Literal["strict", "lax"] = "strict",
        max_age: int | None = None,
    ) -> None:
        self.name = ("__Host-" if secure else "") + name
        self._secure = secure
        self._same_site: Literal["strict", "lax"] = same_site
        self._max_age = max_age

    def __repr__(self) -> str:
        return f"PageCookie({self.name!r}, same_site={self._same_site!r})"

    def read(self, request: Request) -> str | None:
        return request.cookies.get(self.name)

    def set(self, response: Response, value: str) -> None:
        response.set_cookie(
            self.name,
            value,
            max_age=self._max_age,
            path="/",
            secure=self._secure,
            httponly=True,
            samesite=self._same_site,
        )

    def delete(self, response: Response) -> None:
        response.delete_cookie(
            self.name, path="/", secure=self._secure, httponly=True, samesite=self._same_site
        )
