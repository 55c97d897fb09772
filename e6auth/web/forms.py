"""HTML form bodies, read with a bound on their size and decoded strictly.

Only ``application/x-www-form-urlencoded`` is taken: the page's forms send nothing else. The body
is read up to :data:`MAX_BODY_BYTES` and refused beyond; it must be ASCII (browsers percent-encode
the rest) and its percent-encoded bytes valid UTF-8. Starlette's own parser would turn invalid
UTF-8 into U+FFFD without a word, and reads bodies of any size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_FIELDS",
    "Form",
    "FormHandler",
    "FormRefused",
    "posted_form",
    "read_form",
]

MAX_BODY_BYTES = 64 * 1024
"""Far more than any form of the page needs (a delete of a thousand tokens is about 20 KiB)."""
MAX_FIELDS = 1100
FORM_TYPE = "application/x-www-form-urlencoded"


class FormRefused(Exception):
    """A body that is no form of ours: answered with ``status`` and a fixed ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Form:
    """The fields of one form, in order; several fields may share a name (checkboxes)."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    def __repr__(self) -> str:
        # A form may hold a password: only the names are shown.
        return f"Form({[name for name, _ in self._fields]!r})"

    def first(self, name: str) -> str:
        """The first value of ``name``, or "" without one."""
        return next((value for key, value in self._fields if key == name), "")

    def every(self, name: str) -> list[str]:
        return [value for key, value in self._fields if key == name]


async def read_form(request: Request) -> Form:
    """The form a POST carries, or :class:`FormRefused` (415, 413 or 400)."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != FORM_TYPE:
        raise FormRefused(415, "expected a form (application/x-www-form-urlencoded)")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise FormRefused(413, "the form is too large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise FormRefused(413, "the form is too large")
    try:
        fields = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise FormRefused(400, "the form is not UTF-8 text") from None
    except ValueError:  # more fields than MAX_FIELDS
        raise FormRefused(413, "the form has too many fields") from None
    return Form(fields)


FormHandler = Callable[[Request, Form], Response]


def posted_form(handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of a form post: the form is read on the event loop (the body arrives there),
    then ``handler`` runs in Starlette's thread pool, since what it does blocks (argon2, the
    token store) and must never hold up the event loop."""

    async def endpoint(request: Request) -> Response:
        form = await read_form(request)
        return await run_in_threadpool(handler, request, form)

    return endpoint
