"""The web page's HTTP server: uvicorn on a thread of the gateway's process.

The socket is bound here, before the thread starts, so that a port in use fails the gateway's
start with an OSError (uvicorn would call sys.exit on its own thread) and port 0 is known at once.

uvicorn has no limit on the time a request's headers take to arrive: its keep-alive timeout is
armed only after an answer and any byte disarms it, so a client sending a byte now and then holds
a connection forever (slowloris). :class:`HeaderTimeoutProtocol` adds that limit to uvicorn's h11
protocol.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
from pathlib import Path
from typing import ClassVar

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeaderTimeoutProtocol", "WebServer"]

log = logging.getLogger("e6auth.web")

START_SECONDS = 10.0
MAX_HEADER_BYTES = 16 * 1024
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete
    ``header_timeout_seconds`` after it opened, or after the answer to its previous request.

    Only the wait for headers is limited: once a request has been read, the application's own
    limits apply (its body size; its time is the application's to take).
    """

    header_timeout_seconds: ClassVar[float] = DEFAULT_HEADER_TIMEOUT_SECONDS
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _watch_headers(self) -> None:
        # h11 leaves the client's state IDLE until a request's headers are complete; the timer
        # is armed once per request, so bytes trickling in do not push the deadline back.
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_header_timer()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.header_timeout_seconds, self._headers_too_slow
            )

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            peer = self.client[0] if self.client is not None else "an unknown address"
            log.info(
                "web: closed a connection from %s: no complete request headers within %g s",
                peer,
                self.header_timeout_seconds,
            )
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """:class:`HeaderTimeoutProtocol` with its limit: uvicorn makes protocols from a class."""

    class Protocol(HeaderTimeoutProtocol):
        header_timeout_seconds = seconds

    return Protocol


class WebServer:
    """Serves an ASGI app on ``host:port`` (0: a free port) until :meth:`stop`; a connection
    whose request headers take longer than ``header_timeout_seconds`` is closed."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        grace_seconds: float = 10.0,
        header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
    ) -> None:
        self._socket = _bind(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.tls = tls_cert is not None
        config = uvicorn.Config(
            app,
            # e6auth configures logging; uvicorn's records go through it (uvicorn.error,
            # uvicorn.access: paths without their query, see _PathsOnly).
            log_config=None,
            access_log=True,
            # uvicorn would believe X-Forwarded-For from any client, who could then pick the
            # address its failed sign-ins count against: the page reads it itself, from trusted
            # proxies only (e6auth.verify.proxies).
            proxy_headers=False,
            server_header=False,
            lifespan="off",
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            timeout_graceful_shutdown=max(1, math.ceil(grace_seconds)),
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            # h11 always (never httptools, should it be installed): the header limit above and
            # the header timeout are h11's.
            http=header_timeout_protocol(header_timeout_seconds),
        )
        self._server = uvicorn.Server(config)
        access = logging.getLogger("uvicorn.access")
        if _ACCESS_FILTER not in access.filters:
            access.addFilter(_ACCESS_FILTER)
        self._thread = threading.Thread(target=self._run, name="e6auth-http", daemon=True)
        self._failed: BaseException | None = None

    def __repr__(self) -> str:
        return f"WebServer({self.url!r})"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/"

    def start(self) -> None:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive():
                self._socket.close()
                raise OSError(f"the web page could not start on {self.url}") from self._failed
            if waited > START_SECONDS:
                self.stop()
                raise OSError(f"the web page did not start on {self.url} in time")
            self._thread.join(0.02)
            waited += 0.02
        log.info("serving the Access Tokens page on %s", self.url)

    def begin_stop(self) -> None:
        """Stop accepting connections and let requests in flight finish (see :meth:`stop`)."""
        self._server.should_exit = True

    def stop(self) -> None:
        """Stop, waiting for requests in flight up to the grace period."""
        self.begin_stop()
        if self._thread.is_alive():
            self._thread.join()
        self._socket.close()

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # SystemExit included: uvicorn exits on a startup failure
            self._failed = exc
            log.error("the web page stopped: %s", type(exc).__name__)


class _PathsOnly(logging.Filter):
    """Drops the query string from uvicorn's access log lines: the identity provider's callback
    carries its one-time code and state there (single use and bound to the browser, but no
    log should hold them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access: (client address, method, path with query, HTTP version, status).
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].partition("?")[0], args[3], args[4])
        return True


_ACCESS_FILTER = _PathsOnly()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} for the web page ({exc.strerror})") from exc
    return sock
