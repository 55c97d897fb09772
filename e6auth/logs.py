"""Logging: plain text or one JSON object per line, a configurable level, and request ids.

The gRPC interceptor binds an id to every call (in :data:`call_var`); :class:`RequestIdFilter`
copies it onto each record logged while the call runs, and both formats show it, so that every
line about one call can be found from the id the client got back in its ``x-request-id`` trailer.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import itertools
import json
import logging
import re
import secrets
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, TextIO

from e6auth.credentials.tokens import looks_like_token

if TYPE_CHECKING:
    from e6auth.verify.principal import Principal

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "REQUEST_ID_HEADER",
    "CallContext",
    "JsonFormatter",
    "LogFormat",
    "RequestIdFilter",
    "TextFormatter",
    "bind_call",
    "call_var",
    "configure_logging",
    "current_request_id",
    "new_request_id",
    "request_id_for",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 64

Metadata = Iterable[tuple[str, str | bytes]] | None


class CallContext:
    """What one call binds (in :data:`call_var`): its request id and, once the interceptor has
    authenticated it, its principal (:func:`e6auth.grpc.current_principal` reads it).

    The request id is decided when first asked for (:func:`current_request_id`), from the
    ``metadata`` the call came with: most calls log nothing. Mutable, so that the principal is
    set on the context the call's log lines already read, and the id is decided in place: a
    thread the call's context was copied to (``asyncio.to_thread``) decides the same one.

    Made by :meth:`new`. The class has no ``__init__``: the interceptor makes one on every call,
    bare, and fills it in itself; a Python-level ``__init__`` was a measurable part of what
    authentication adds to a call.
    """

    __slots__ = ("metadata", "principal", "request_id")
    metadata: Metadata
    principal: Principal | None
    request_id: str | None

    @classmethod
    def new(cls, metadata: Metadata, principal: Principal | None = None) -> CallContext:
        call = cls()
        call.metadata = metadata
        call.principal = principal
        call.request_id = None
        return call


call_var: contextvars.ContextVar[str | CallContext | None] = contextvars.ContextVar(
    "e6auth_call", default=None
)
"""The context of the call being handled (read its id through :func:`current_request_id`), a
bare request id, or None outside calls. One variable for both: setting and resetting a context
variable on every call costs the gateway throughput (measured)."""

# A random prefix per process and a counter: unique across replicas and restarts for all
# practical purposes, and far cheaper per call than drawing random bytes every time.
_PREFIX = secrets.token_hex(4)
_sequence = itertools.count(1)
# Printable ASCII without spaces: safe to put in a text log line and in gRPC metadata as is.
_SANE_REQUEST_ID = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID_LENGTH}}}")


def new_request_id() -> str:
    """A fresh request id, unique in this process (``<8 hex digits>-<counter in hex>``)."""
    return f"{_PREFIX}-{next(_sequence):x}"


def request_id_for(metadata: Metadata) -> str:
    """The client's ``x-request-id`` if it is sane, else a new id.

    Sane: at most 64 printable ASCII characters, no spaces, and not shaped like an access token
    (a client that put its secret there by mistake must not have it logged).
    """
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER:
            if (
                isinstance(value, str)
                and _SANE_REQUEST_ID.fullmatch(value)
                and not looks_like_token(value)
            ):
                return value
            break
    return new_request_id()


def bind_call(metadata: Metadata) -> contextvars.Token[str | CallContext | None]:
    """Bind a context to the call with this metadata: its request id, decided only if something
    asks for it, and no principal yet (the interceptor sets it once it is known).

    Most calls log nothing and succeed, so nothing ever reads their id: reading the client's
    header and making an id on every call cost the gateway throughput (measured).
    :func:`current_request_id` decides it on first use, so every line of one call shows the same
    id.
    """
    return call_var.set(CallContext.new(metadata))


def current_request_id() -> str | None:
    value = call_var.get()
    if value is None or isinstance(value, str):
        return value
    decided = value.request_id
    if decided is None:
        # Only the thread handling the call reads its context: no two threads decide at once.
        decided = value.request_id = request_id_for(value.metadata)
    return decided


class RequestIdFilter(logging.Filter):
    """Puts the current request id (or None) on every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


def _request_id_of(record: logging.LogRecord) -> str | None:
    # Records that did not pass through the filter (another handler's) have no attribute.
    request_id: str | None = getattr(record, "request_id", None)
    return request_id


# What ends a line for someone (Python's splitlines, a terminal, a log shipper) or drives a
# terminal: C0 controls (with CR, LF, TAB, ESC), DEL, C1 controls (with NEL U+0085), and the
# Unicode line and paragraph separators.
_UNSAFE_IN_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    character = match.group()
    named = _NAMED_ESCAPES.get(character)
    if named is not None:
        return named
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _escape_controls(text: str) -> str:
    """``text`` on one line: every line break and control character as a visible escape
    (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _UNSAFE_IN_TEXT.sub(_visible, text)


class TextFormatter(logging.Formatter):
    """``e6auth: <message>`` as before, with ``[request <id>]`` after it during a call: one line
    per record.

    Messages carry what clients and databases chose (a query error names the table as written,
    newlines and all): a line break in them would write a line that looks like a record of its
    own. So every control character is escaped, in the message and in a traceback, whose line
    breaks become ``\\n`` too (the JSON format keeps them, encoded).
    """

    def __init__(self) -> None:
        super().__init__("e6auth: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = "e6auth: " + _escape_controls(record.getMessage())
        request_id = _request_id_of(record)
        if request_id is not None:
            text += f" [request {_escape_controls(request_id)}]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += _escape_controls("\n" + record.exc_text)
        if record.stack_info:
            text += _escape_controls("\n" + self.formatStack(record.stack_info))
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``request_id`` during a call, and ``exception`` with its traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, object] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id_of(record)
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines inside strings: a record never spans two lines.
        return json.dumps(entry)


def configure_logging(
    *, level: str | int = "WARNING", log_format: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send every log record at ``level`` and above to ``stream`` (default stderr), as text or
    JSON lines, with request ids; replaces the root logger's handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
