"""The web page's HTTP server: uvicorn on a thread of the gateway's process.

The socket is bound here, before the thread starts, so that a port in use fails the gateway's
start with an OSError (uvicorn would call sys.exit on its own thread) and port 0 is known at once.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

__all__ = ["WebServer"]

log = logging.getLogger("e6auth.web")

START_SECONDS = 10.0
MAX_HEADER_BYTES = 16 * 1024


class WebServer:
    """Serves an ASGI app on ``host:port`` (0: a free port) until :meth:`stop`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        self._socket = _bind(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.tls = tls_cert is not None
        config = uvicorn.Config(
            app,
            # e6auth configures logging; uvicorn's records go through it (uvicorn.error,
            # uvicorn.access: paths only, and no page puts a secret in a URL).
            log_config=None,
            access_log=True,
            # uvicorn would believe X-Forwarded-For from any client, who could then pick the
            # address its failed sign-ins count against: the page reads it itself, from trusted
            # proxies only (e6auth.proxies).
            proxy_headers=False,
            server_header=False,
            lifespan="off",
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
            timeout_graceful_shutdown=max(1, math.ceil(grace_seconds)),
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        self._server = uvicorn.Server(config)
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
