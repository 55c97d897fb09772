"""Cross-site request forgery: a synchronizer token in every form that changes something, and a
check of the Origin (or Referer) header when the browser sends one.

A signed-in user's token is an HMAC of the session's id under a key derived from the session key:
nothing to store, and it changes with every session. The sign-in form, before any session, is bound
the same way to a random nonce kept in a cookie of its own (so that another site cannot sign a
browser in under the attacker's name either).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["CsrfTokens", "same_origin"]

MAX_NONCE_LENGTH = 64


class CsrfTokens:
    def __init__(self, session_key: bytes) -> None:
        # A key of its own: a CSRF token is never also a valid signature of anything else.
        self._key = hmac.new(session_key, b"e6auth web csrf", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "CsrfTokens()"

    def for_session(self, session_id: str) -> str:
        return self._mac(b"session\0" + session_id.encode())

    @staticmethod
    def new_nonce() -> str:
        return secrets.token_urlsafe(32)

    def for_sign_in(self, nonce: str) -> str:
        return self._mac(b"sign-in\0" + nonce.encode())

    @staticmethod
    def matches(expected: str, given: str) -> bool:
        # Compared as bytes: compare_digest refuses non-ASCII str, and a form may carry any text.
        return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))

    def _mac(self, message: bytes) -> str:
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def same_origin(request: Request) -> bool:
    """Whether the request's Origin header, or without one its Referer, names this server (the
    host and port the browser addressed it by). A request with neither passes: the token decides.
    ``Origin: null`` (a sandboxed frame, a redirect from elsewhere) does not pass."""
    host = request.headers.get("host")
    origin = request.headers.get("origin")
    if origin is not None:
        return host is not None and _netloc(origin) == host.lower()
    referer = request.headers.get("referer")
    if referer is not None:
        return host is not None and _netloc(referer) == host.lower()
    return True


def _netloc(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    return parts.netloc.lower()
