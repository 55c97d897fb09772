"""The gateway: QueryEngineService behind the interceptor, with health checking, reflection,
keepalive settings the e6data connector needs, optional TLS, and a graceful stop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from e6auth.background.periodic import PeriodicTask
from e6auth.credentials.keys import ensure_home
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.interceptor import AuthInterceptor
from e6auth.grpc.service import QueryEngineService, add_to_server
from e6auth.query import QueryManager, SQLAlchemyBackend
from e6auth.query.separation import check_query_database
from e6auth.settings import Settings
from e6auth.verify.authenticator import Authenticator

if TYPE_CHECKING:
    from e6auth.metrics import MetricsServer
    from e6auth.web import WebServer

__all__ = ["SERVER_OPTIONS", "Gateway", "build_gateway", "run_until_signalled"]

log = logging.getLogger("e6auth.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["QueryEngineService"].full_name
_LAST_CALLS_SECONDS = 1.0
"""Once every query has drained, what calls still open get before the server stops: the
connector's last read of an empty batch, or its clear, may be on the wire."""
QUERY_HOUSEKEEPING_SECONDS = 1.0
"""How often queries past the statement timeout are stopped and idle ones collected."""

# The connector pings every 30 s, also with no call open; gRPC's default policy answers that
# with GOAWAY "too_many_pings" and a silent two-minute execute dies. Allow its pings.
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)


def reserved_threads(workers: int) -> int:
    """Server threads kept from calls that wait for results, so that authenticate, cancel, clear
    and health checks are served however many reads wait: a quarter, at least 4."""
    return max(4, workers // 4)


def server_options(settings: Settings) -> tuple[tuple[str, int], ...]:
    """SERVER_OPTIONS and a bound on what one response may carry: a batch is cut at
    ``max_batch_bytes`` as its values count, and the wire's own framing adds a little."""
    send_limit = 2 * settings.max_batch_bytes + 1024 * 1024
    return (*SERVER_OPTIONS, ("grpc.max_send_message_length", send_limit))


@dataclass
class Gateway:
    """A started gateway. ``stop()`` drains calls, then closes the queries and the authenticator."""

    server: grpc.Server
    authenticator: Authenticator
    queries: QueryManager
    backend: SQLAlchemyBackend
    health: health.HealthServicer
    port: int
    grace_seconds: float
    _collector: PeriodicTask = field(repr=False)
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False)
    metrics_server: MetricsServer | None = None
    """The /metrics endpoint, when the ``metrics_port`` setting asks for one."""
    web: WebServer | None = None
    """The Access Tokens page, when the ``http_port`` setting asks for it."""

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_server is None else self.metrics_server.port

    def stop(self) -> None:
        """Drain, then stop: health says NOT_SERVING and new logins and statements are refused
        at once, while the calls that carry on the queries already prepared (execute, metadata,
        batches, status, clear) are served until each client has had its results, or for
        ``grace_seconds``; then the server stops, giving calls still open what is left."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        began = time.monotonic()
        self.health.enter_graceful_shutdown()
        self.queries.begin_drain()
        if self.web is not None:
            self.web.begin_stop()  # drains beside the gRPC calls, within the same grace period
        self.queries.wait_drained(self.grace_seconds)
        left = max(self.grace_seconds - (time.monotonic() - began), _LAST_CALLS_SECONDS)
        self.server.stop(left).wait()
        if self.web is not None:
            self.web.stop()  # before the authenticator it uses is closed
        self._collector.stop()
        self.queries.close()
        self.backend.close()
        self.authenticator.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        log.info("gateway stopped")

    def wait(self) -> None:
        self.server.wait_for_termination()


def build_gateway(settings: Settings, *, authenticator: Authenticator | None = None) -> Gateway:
    """Start a gateway as the settings describe (the caller stops it)."""
    check_query_database(settings.resolved_query_url, store_url=settings.resolved_database_url)
    if settings.query_url is None:
        ensure_home(settings.home)  # the default query database lives there
    auth = authenticator or Authenticator.from_settings(settings)
    timeout = settings.statement_timeout_seconds or None  # 0: none
    backend = SQLAlchemyBackend(
        settings.resolved_query_url,
        catalog=settings.catalog,
        statement_timeout_seconds=timeout,
        role_template=settings.query_role,
    )
    queries = QueryManager(
        backend,
        batch_rows=settings.query_batch_rows,
        idle_seconds=settings.query_idle_seconds,
        statement_timeout_seconds=timeout,
        max_running_per_user=settings.max_queries_per_user,
        max_batch_bytes=settings.max_batch_bytes,
        max_waiting_calls=settings.grpc_max_workers - reserved_threads(settings.grpc_max_workers),
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.grpc_max_workers, thread_name_prefix="e6auth-grpc"
        ),
        interceptors=[AuthInterceptor(auth)],
        options=server_options(settings),
    )
    add_to_server(QueryEngineService(auth, queries, backend), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    port = _bind(server, address, settings)
    collector = PeriodicTask(
        "e6auth-query-collector", QUERY_HOUSEKEEPING_SECONDS, queries.housekeep
    )
    try:
        web = _web_server(settings, auth)  # binds now: a port in use fails the start here
    except BaseException:
        queries.close()
        backend.close()
        if authenticator is None:  # made here, so closed here
            auth.close()
        raise
    metrics_server = _serve_metrics(settings, auth, queries)
    server.start()
    collector.start()
    if web is not None:
        web.start()
    log.info(
        "serving QueryEngineService on %s:%d (%s)",
        settings.host,
        port,
        "TLS" if settings.tls_cert else "plaintext",
    )
    return Gateway(
        server,
        auth,
        queries,
        backend,
        health_servicer,
        port,
        settings.shutdown_grace_seconds,
        collector,
        metrics_server=metrics_server,
        web=web,
    )


def _web_server(settings: Settings, authenticator: Authenticator) -> WebServer | None:
    """The Access Tokens page on the gateway's authenticator (store, throttle, policy, audit),
    over TLS with the gateway's certificate when it has one."""
    if settings.http_port is None:
        return None
    # Imported here: a gateway without the page does not load Starlette and uvicorn.
    from e6auth.web import WebServer, build_app

    app = build_app(
        authenticator,
        session_key=settings.load_session_key(),
        secure=settings.tls_cert is not None,
        idle_seconds=settings.http_session_idle_seconds,
        max_age_seconds=settings.http_session_max_age_seconds,
        allowed_hosts=settings.resolved_http_allowed_hosts,
        password_sign_in=settings.web_password_signin,
        sso=settings.build_sso_client(),
        sso_redirect_uri=settings.web_oidc_redirect_uri,
        sso_create_users=settings.web_oidc_create_users,
    )
    return WebServer(
        app,
        host=settings.resolved_http_host,
        port=settings.http_port,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        grace_seconds=settings.shutdown_grace_seconds,
        header_timeout_seconds=settings.http_header_timeout_seconds,
    )


def _serve_metrics(
    settings: Settings, authenticator: Authenticator, queries: QueryManager
) -> MetricsServer | None:
    if settings.metrics_port is None:
        return None
    from e6auth.metrics import Metrics  # prometheus_client: only for a /metrics endpoint

    metrics = authenticator.metrics
    if metrics is None:
        metrics = authenticator.metrics = Metrics()
    metrics.watch(authenticator, queries)
    return metrics.serve(settings.host, settings.metrics_port)


def _bind(server: grpc.Server, address: str, settings: Settings) -> int:
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    if settings.tls_cert is not None and settings.tls_key is not None:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def run_until_signalled(gateway: Gateway, *, on_stop: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully: drain calls for the grace period,
    flush last-used times, release the databases."""
    stopping = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping.wait(0.5):  # a bounded wait keeps the main thread responsive
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        gateway.stop()
        if on_stop is not None:
            on_stop()
