"""Prometheus metrics of a gateway, on a registry of its own.

Labels come only from closed sets: ``method`` (password, token, session, bearer), ``result`` (ok,
refused, error) and ``reason`` (the ``public_reason`` codes of :mod:`e6auth.errors`, anything else
"other"). No user name, token id, peer address or message ever becomes a label value, and every
refusal made before a secret is proven is "bad_credentials": /metrics needs no login.

The cache-hit path pays nothing for this: cache hits and misses are the cache's own integer
counters, and every gauge (cache size, last-used backlog, sessions, queries) is read when
Prometheus scrapes, by :class:`_StateCollector`. Prometheus counters and histograms, which take a
lock, are only touched where the store is read or a handshake is made.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from e6auth import errors
from e6auth.clock import Clock
from e6auth.errors import AuthenticationError, E6AuthError, Throttled

__all__ = ["METHODS", "REASONS", "Method", "Metrics", "MetricsServer", "reason_label"]

log = logging.getLogger("e6auth.metrics")

Method = Literal["password", "token", "session", "bearer"]
METHODS: tuple[Method, ...] = ("password", "token", "session", "bearer")
RESULTS = ("ok", "refused", "error")
OK_REASON = "ok"
OTHER_REASON = "other"


def _error_reasons() -> frozenset[str]:
    classes = (value for value in vars(errors).values() if inspect.isclass(value))
    return frozenset(cls.public_reason() for cls in classes if issubclass(cls, E6AuthError))


REASONS: frozenset[str] = _error_reasons() | {OK_REASON, OTHER_REASON}
"""Every value the ``reason`` label can take."""

# From a cached password check (~100 µs) to a slow argon2 hash or a stalled store.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# From a NOTIFY delivered within milliseconds to a poller that could not reach the store.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

T = TypeVar("T")


# What the metrics read of the components they observe, as small protocols rather than the
# classes: the authenticator holds a Metrics, so naming it here made an import cycle, and the
# collector needs a handful of counters, not the whole component.


class LoggedInvalidation(Protocol):
    """An invalidation log entry (:class:`~e6auth.store.Invalidation`), for its lag."""

    @property
    def created_at(self) -> dt.datetime | None: ...


class CacheCounts(Protocol):
    """What :meth:`VerificationCache.stats` reports."""

    @property
    def hits(self) -> int: ...
    @property
    def misses(self) -> int: ...
    @property
    def evictions(self) -> int: ...
    @property
    def size(self) -> int: ...


class ObservedCache(Protocol):
    """The verification cache (:class:`~e6auth.verify.cache.VerificationCache`)."""

    @property
    def stale_served(self) -> int: ...
    def stats(self) -> CacheCounts: ...


class ObservedRecorder(Protocol):
    """The last-used recorder (:class:`~e6auth.background.lastused.LastUsedRecorder`)."""

    last_flush_at: float
    dropped: int
    failures: int

    @property
    def pending(self) -> int: ...


class ObservedSessions(Protocol):
    """The session signer (:class:`~e6auth.verify.sessions.SessionSigner`)."""

    def active(self, now: float | None = None) -> int: ...


class ObservedAuthenticator(Protocol):
    """What :meth:`Metrics.watch` reads of an :class:`~e6auth.verify.authenticator.Authenticator`
    when Prometheus scrapes."""

    @property
    def cache(self) -> ObservedCache | None: ...
    @property
    def last_used(self) -> ObservedRecorder: ...
    @property
    def sessions(self) -> ObservedSessions | None: ...
    @property
    def call_clock(self) -> Clock: ...


class ObservedQueries(Protocol):
    """The gateway's query manager (:class:`~e6auth.query.QueryManager`)."""

    def open_queries(self) -> int: ...


def reason_label(error: BaseException) -> str:
    """The ``reason`` label of an error: its public code, or "other" for anything unknown."""
    reason = type(error).public_reason() if isinstance(error, E6AuthError) else None
    return reason if reason in REASONS else OTHER_REASON


def _result_label(error: BaseException) -> str:
    # Throttled says nothing about the credential but is still a refusal of the attempt.
    return "refused" if isinstance(error, AuthenticationError | Throttled) else "error"


class Metrics:
    """The metrics of one gateway (or of any process verifying credentials).

    Give it to an :class:`~e6auth.verify.authenticator.Authenticator` as ``metrics=`` (or set
    ``authenticator.metrics``) to count attempts, time them and measure invalidation lag, and
    :meth:`watch` the authenticator (and the query manager) to expose their state.
    """

    def __init__(self, *, timer: Clock = time.perf_counter, process: bool = True) -> None:
        """``process`` adds the standard ``process_*`` series (CPU, memory, open files)."""
        self.registry = CollectorRegistry()
        self._timer = timer
        self._watched: set[int] = set()
        self._attempts = Counter(
            "e6auth_auth_attempts",
            "Verifications decided past the cache: handshakes, cache misses and every refusal. "
            "Calls accepted from the cache are counted in e6auth_cache_hits_total instead.",
            ["method", "result", "reason"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "e6auth_verify_seconds",
            "Time to verify a credential, observed on handshakes and cache misses (store reads, "
            "password hashes) only, not on cache hits.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._invalidation_lag = Histogram(
            "e6auth_invalidation_lag_seconds",
            "Seconds from an invalidation log entry's creation to this process applying it.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        # The series every dashboard wants present from the start, at zero.
        for method in METHODS:
            self._attempts.labels(method, "ok", OK_REASON)
            self._latency.labels(method)
        if process:
            ProcessCollector(registry=self.registry)

    def timed(self, method: Method, verify: Callable[[], T]) -> T:
        """``verify()``, counted as an attempt of ``method`` with its outcome and timed."""
        started = self._timer()
        try:
            result = verify()
        except BaseException as error:
            self._latency.labels(method).observe(self._timer() - started)
            self._attempts.labels(method, _result_label(error), reason_label(error)).inc()
            raise
        self._latency.labels(method).observe(self._timer() - started)
        self._attempts.labels(method, "ok", OK_REASON).inc()
        return result

    def invalidations_applied(self, events: Sequence[LoggedInvalidation], now: float) -> None:
        """Observe the lag of log entries just applied (those read from the log carry their
        creation time; this process's own, applied before they were written, do not)."""
        for event in events:
            created_at = event.created_at
            if created_at is not None:
                # Another host's clock may be slightly ahead: a negative lag is none.
                self._invalidation_lag.observe(max(0.0, now - created_at.timestamp()))

    def watch(
        self, authenticator: ObservedAuthenticator, queries: ObservedQueries | None = None
    ) -> None:
        """Expose the state of ``authenticator`` (and of ``queries``), read at scrape time; once
        (a second call for the same authenticator does nothing: its series would clash)."""
        if id(authenticator) in self._watched:
            return
        self._watched.add(id(authenticator))
        self.registry.register(_StateCollector(authenticator, queries))

    def render(self) -> bytes:
        """The registry in Prometheus text format, as /metrics serves it."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve /metrics over HTTP on ``host``:``port`` (0 picks a free port) in a daemon
        thread, with prometheus_client's own server."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        bound = MetricsServer(server, thread, host, int(server.server_port))
        log.info("serving metrics on http://%s:%d/metrics", host, bound.port)
        return bound


@dataclass
class MetricsServer:
    """A running /metrics endpoint; :meth:`close` stops it."""

    server: WSGIServer
    thread: threading.Thread
    host: str
    port: int

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _StateCollector(Collector):
    """Reads counters and sizes the components keep anyway, when Prometheus scrapes."""

    def __init__(
        self, authenticator: ObservedAuthenticator, queries: ObservedQueries | None
    ) -> None:
        self._authenticator = authenticator
        self._queries = queries

    def collect(self) -> Iterator[Metric]:
        authenticator = self._authenticator
        yield from self._cache()
        recorder = authenticator.last_used
        now = authenticator.call_clock()
        yield GaugeMetricFamily(
            "e6auth_last_used_pending",
            "Tokens whose last use waits in memory for the next batched write.",
            value=recorder.pending,
        )
        yield GaugeMetricFamily(
            "e6auth_last_used_flush_lag_seconds",
            "Seconds since last-used times were last written (or since start).",
            value=max(0.0, now - recorder.last_flush_at),
        )
        yield CounterMetricFamily(
            "e6auth_last_used_dropped",
            "Token uses not recorded because the pending buffer was full.",
            value=recorder.dropped,
        )
        yield CounterMetricFamily(
            "e6auth_last_used_flush_failures",
            "Last-used writes that failed (their times are kept and retried).",
            value=recorder.failures,
        )
        sessions = authenticator.sessions
        if sessions is not None:
            yield GaugeMetricFamily(
                "e6auth_sessions_active",
                "Sessions this process saw within their idle limit.",
                value=sessions.active(now),
            )
        if self._queries is not None:
            yield GaugeMetricFamily(
                "e6auth_queries_open",
                "Queries held open by the gateway (prepared, running or with results to fetch).",
                value=self._queries.open_queries(),
            )

    def _cache(self) -> Iterator[Metric]:
        cache = self._authenticator.cache
        if cache is None:
            return
        stats = cache.stats()
        yield CounterMetricFamily(
            "e6auth_cache_hits",
            "Verifications answered from the cache (tokens, sessions and passwords).",
            value=stats.hits,
        )
        yield CounterMetricFamily(
            "e6auth_cache_misses",
            "Verifications the cache could not answer, which read the store.",
            value=stats.misses,
        )
        yield CounterMetricFamily(
            "e6auth_cache_evictions",
            "Cache entries dropped because they ran out or the cache was full.",
            value=stats.evictions,
        )
        yield CounterMetricFamily(
            "e6auth_cache_stale_served",
            "Cached verifications served past their TTL while the store was unreachable.",
            value=cache.stale_served,
        )
        yield GaugeMetricFamily(
            "e6auth_cache_entries", "Verified credentials held in the cache.", value=stats.size
        )
