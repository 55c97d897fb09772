"""Metrics: what the authenticator counts and times, and what the scrape-time collector reads, on
real SQLite and PostgreSQL stores with a fake clock."""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from test_connector import Gateway as ServeProcess

from e6auth import Authenticator, Metrics, Settings, TokenStore
from e6auth.credentials.tokens import generate_token
from e6auth.errors import (
    InvalidPassword,
    InvalidTokenSecret,
    MalformedCredential,
    SessionError,
    StoreUnavailable,
    Throttled,
    TokenExpired,
    TokenOwnerMismatch,
    TokenRevoked,
    UnknownToken,
    UnknownUser,
    UserDisabled,
)
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.metrics import METHODS, REASONS, reason_label
from e6auth.testing import FAST_ARGON2_SETTINGS, FakeClock
from e6auth.verify.parameters import SessionParameters

PASSWORD = "correct horse battery staple"


class StepTimer:
    """A timer that moves a fixed step on every read: each timed verification takes ``step``."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(timer=StepTimer(0.002), process=False)


@pytest.fixture
def authenticator(store: TokenStore, clock: FakeClock, metrics: Metrics) -> Iterator[Authenticator]:
    store.create_user("alice", PASSWORD)
    auth = Authenticator(
        store,
        clock=clock,
        sessions=SessionParameters(secrets.token_bytes(32), idle_seconds=600),
        metrics=metrics,
    )
    metrics.watch(auth)
    yield auth
    auth.close()


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def attempts(metrics: Metrics, method: str, result: str, reason: str) -> float:
    found = metrics.registry.get_sample_value(
        "e6auth_auth_attempts_total", {"method": method, "result": result, "reason": reason}
    )
    return found or 0.0


def test_handshakes_are_counted_by_method_result_and_reason(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics
) -> None:
    token = store.create_token("alice").token
    authenticator.verify("alice", PASSWORD)
    authenticator.verify("alice", token)
    with pytest.raises(InvalidPassword):
        authenticator.verify("alice", "wrong")
    with pytest.raises(MalformedCredential):
        authenticator.verify("alice", token[:-1] + ("A" if token[-1] != "A" else "B"))

    assert attempts(metrics, "password", "ok", "ok") == 1
    assert attempts(metrics, "token", "ok", "ok") == 1
    # Refused before the secret was proven: one public reason (the audit keeps the real one).
    assert attempts(metrics, "password", "refused", "bad_credentials") == 1
    # A changed last character breaks the checksum: refused before the store is read.
    assert attempts(metrics, "token", "refused", "bad_credentials") == 1
    assert value(metrics, "e6auth_verify_seconds_count", method="password") == 2
    assert value(metrics, "e6auth_verify_seconds_sum", method="password") == pytest.approx(0.004)


def test_cache_hits_are_not_counted_as_attempts_but_as_hits(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics
) -> None:
    token = store.create_token("alice").token
    for _ in range(5):
        authenticator.verify_token(token)
    session = authenticator.create_session(authenticator.verify("alice", PASSWORD))
    for _ in range(3):
        authenticator.verify_session(session)

    # One miss for the bearer token; the rest came from the cache. The session was cached when
    # it was issued, on its password's terms: it was never loaded.
    assert attempts(metrics, "bearer", "ok", "ok") == 1
    assert attempts(metrics, "session", "ok", "ok") == 0
    assert value(metrics, "e6auth_verify_seconds_count", method="bearer") == 1
    assert value(metrics, "e6auth_cache_hits_total") == 4 + 3
    # The password handshake missed too: two loads; three entries with the session's.
    assert value(metrics, "e6auth_cache_misses_total") == 2
    assert value(metrics, "e6auth_cache_entries") == 3


def test_refused_bearer_and_session_calls_are_counted(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics
) -> None:
    new = store.create_token("alice")
    authenticator.verify_token(new.token)
    store.delete_tokens([new.id])  # evicts it at once in this process
    with pytest.raises(TokenRevoked):
        authenticator.verify_token(new.token)
    with pytest.raises(MalformedCredential):
        authenticator.verify_token("e6pat_nonsense")
    with pytest.raises(SessionError):
        authenticator.verify_session("not.a.session")

    assert attempts(metrics, "bearer", "refused", "revoked") == 1
    assert attempts(metrics, "bearer", "refused", "bad_credentials") == 1  # malformed
    assert attempts(metrics, "session", "refused", "session_invalid") == 1


def test_an_unreachable_store_is_an_error_not_a_refusal(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics
) -> None:
    token = store.create_token("alice").token
    driver_error = store.engine.dialect.loaded_dbapi.OperationalError

    def refuse_connections(*_args: object) -> None:
        raise driver_error("connection refused")

    # The database goes away: every new connection fails, as when the server is down.
    event.listen(store.engine, "do_connect", refuse_connections)
    store.engine.dispose()
    try:
        with pytest.raises(StoreUnavailable):
            authenticator.verify_token(token)
    finally:
        event.remove(store.engine, "do_connect", refuse_connections)
    assert attempts(metrics, "bearer", "error", "store_unavailable") == 1


def refusal_reasons(metrics: Metrics, method: str) -> dict[str, float]:
    """The ``reason`` label values of ``method``'s refusals that were counted, with counts."""
    counted: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "e6auth_auth_attempts_total"
                and labels["method"] == method
                and labels["result"] == "refused"
                and sample.value
            ):
                counted[labels["reason"]] = sample.value
    return counted


def test_refusals_before_the_secret_is_proven_do_not_tell_which_names_and_ids_exist(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics
) -> None:
    # Anyone who can scrape /metrics must learn no more than the client was told: that a user or
    # a token id exists is known only to whoever proves its secret.
    alices = store.create_token("alice")
    _, wrong_secret = generate_token(token_id=alices.id)
    _, unknown_id = generate_token()
    store.create_user("bob")
    bobs = store.create_token("bob").token
    with pytest.raises(InvalidPassword):
        authenticator.verify("alice", "wrong horse")
    with pytest.raises(UnknownUser):
        authenticator.verify("no-such-user", "wrong horse")
    with pytest.raises(InvalidPassword):
        authenticator.verify_password("alice", "wrong horse")
    with pytest.raises(UnknownUser):
        authenticator.verify_password("no-such-user", "wrong horse")
    with pytest.raises(InvalidTokenSecret):
        authenticator.verify("alice", wrong_secret)
    with pytest.raises(UnknownToken):
        authenticator.verify("alice", unknown_id)
    with pytest.raises(TokenOwnerMismatch):
        authenticator.verify("alice", bobs)
    with pytest.raises(InvalidTokenSecret):
        authenticator.verify_token(wrong_secret)
    with pytest.raises(UnknownToken):
        authenticator.verify_token(unknown_id)

    assert refusal_reasons(metrics, "password") == {"bad_credentials": 4}
    assert refusal_reasons(metrics, "token") == {"bad_credentials": 3}
    assert refusal_reasons(metrics, "bearer") == {"bad_credentials": 2}


def test_refusals_after_the_secret_is_proven_keep_their_reason(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics, clock: FakeClock
) -> None:
    expiring = store.create_token("alice", expires_days=1)
    clock.advance(2 * 86_400)
    with pytest.raises(TokenExpired):
        authenticator.verify("alice", expiring.token)
    store.disable_user("alice")
    with pytest.raises(UserDisabled):
        authenticator.verify("alice", PASSWORD)

    assert refusal_reasons(metrics, "token") == {"expired": 1}
    assert refusal_reasons(metrics, "password") == {"user_disabled": 1}


def test_every_reason_label_comes_from_a_closed_set() -> None:
    assert reason_label(Throttled()) == "throttled"
    assert reason_label(ValueError("alice's token e6pat_x")) == "other"
    assert reason_label(UnknownUser()) == reason_label(InvalidPassword()) == "bad_credentials"
    assert {"bad_credentials", "expired", "store_unavailable", "ok", "other"} <= REASONS
    assert not {"bad_password", "unknown_user", "unknown_token", "bad_token_secret"} & REASONS
    assert all(reason.isidentifier() for reason in REASONS)


def test_last_used_backlog_and_flush_lag(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics, clock: FakeClock
) -> None:
    token = store.create_token("alice").token
    clock.advance(30)
    assert value(metrics, "e6auth_last_used_flush_lag_seconds") == 30
    authenticator.verify_token(token)
    assert value(metrics, "e6auth_last_used_pending") == 1
    authenticator.flush_last_used()
    assert value(metrics, "e6auth_last_used_pending") == 0
    assert value(metrics, "e6auth_last_used_flush_lag_seconds") == 0
    clock.advance(7)
    assert value(metrics, "e6auth_last_used_flush_lag_seconds") == 7


def test_invalidation_lag_is_measured_from_the_log_entry(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics, clock: FakeClock
) -> None:
    new = store.create_token("alice")
    store.delete_tokens([new.id])  # applied here at once, without a log entry's time
    assert value(metrics, "e6auth_invalidation_lag_seconds_count") == 0
    clock.advance(2.5)
    assert authenticator.poll_invalidations() == 1
    assert value(metrics, "e6auth_invalidation_lag_seconds_count") == 1
    assert value(metrics, "e6auth_invalidation_lag_seconds_sum") == pytest.approx(2.5, abs=1e-3)


def test_active_sessions_count_only_those_within_the_idle_limit(
    authenticator: Authenticator, metrics: Metrics, clock: FakeClock
) -> None:
    principal = authenticator.verify("alice", PASSWORD)
    authenticator.create_session(principal)
    clock.advance(300)
    authenticator.create_session(principal)
    assert value(metrics, "e6auth_sessions_active") == 2
    clock.advance(301)  # the first is idle past 600 s
    assert value(metrics, "e6auth_sessions_active") == 1


def test_the_exposition_has_every_series_and_no_unbounded_label(
    authenticator: Authenticator, store: TokenStore, metrics: Metrics
) -> None:
    new = store.create_token("alice")
    authenticator.verify("alice", new.token, peer="198.51.100.7")
    with pytest.raises(InvalidPassword):
        authenticator.verify("alice", "hunter2", peer="198.51.100.7")
    text = metrics.render().decode()
    for secret in (new.token, new.id, "alice", "hunter2", PASSWORD, "198.51.100.7"):
        assert secret not in text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "e6auth_auth_attempts",
        "e6auth_verify_seconds",
        "e6auth_cache_hits",
        "e6auth_cache_misses",
        "e6auth_cache_evictions",
        "e6auth_cache_entries",
        "e6auth_last_used_pending",
        "e6auth_last_used_flush_lag_seconds",
        "e6auth_invalidation_lag_seconds",
        "e6auth_sessions_active",
    ):
        assert name in families, name
    for sample in families["e6auth_auth_attempts"].samples:
        assert sample.labels["method"] in METHODS
        assert sample.labels["result"] in ("ok", "refused", "error")
        assert sample.labels["reason"] in REASONS


def test_two_gateways_in_one_process_have_registries_of_their_own() -> None:
    first, second = Metrics(process=False), Metrics(process=False)
    first.timed("bearer", lambda: None)
    assert (
        first.registry.get_sample_value(
            "e6auth_auth_attempts_total", {"method": "bearer", "result": "ok", "reason": "ok"}
        )
        == 1
    )
    assert (
        second.registry.get_sample_value(
            "e6auth_auth_attempts_total", {"method": "bearer", "result": "ok", "reason": "ok"}
        )
        == 0
    )


# -- a real gateway, scraped over HTTP -----------------------------------------------------------

METRICS_LINE = re.compile(r"^e6auth metrics on (?P<url>http://\S+/metrics)$")


@pytest.mark.timeout(90)
def test_a_running_gateway_serves_its_metrics_and_json_logs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = Settings(
        home=home,
        **FAST_ARGON2_SETTINGS,
    )
    store = TokenStore.from_settings(settings)
    try:
        store.create_user("alice", PASSWORD)
        new = store.create_token("alice")
    finally:
        store.close()
    served = ServeProcess(
        home, ("--metrics-port", "0", "--log-format", "json", "--log-level", "info"), {}
    )
    try:
        (url,) = [m["url"] for line in served.out.seen if (m := METRICS_LINE.match(line))]
        with grpc.insecure_channel(f"{served.host}:{served.port}") as channel:
            stub = QueryEngineServiceStub(channel)
            by_password = stub.authenticate(pb.AuthenticateRequest(user="alice", password=PASSWORD))
            by_token = stub.authenticate(pb.AuthenticateRequest(user="alice", password=new.token))
            for _ in range(3):  # cached calls: the session was cached when it was issued
                stub.getSchemaNamesV2(pb.GetSchemaNamesV2Request(sessionId=by_password.sessionId))
                stub.getSchemaNamesV2(
                    pb.GetSchemaNamesV2Request(),
                    metadata=[("authorization", f"Bearer {new.token}")],
                )
            with pytest.raises(grpc.RpcError) as refused:
                stub.authenticate(
                    pb.AuthenticateRequest(user="alice", password="wrong horse"),
                    metadata=[("x-request-id", "scrape-refused-1")],
                )
            with pytest.raises(grpc.RpcError) as unknown:
                stub.authenticate(pb.AuthenticateRequest(user="no-such-user", password="wrong"))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert ("x-request-id", "scrape-refused-1") in tuple(refused.value.trailing_metadata())
        assert unknown.value.details() == refused.value.details()

        assert url.startswith("http://")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - checked above
            text = response.read().decode()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

        def attempt(method: str, result: str, reason: str) -> float:
            labels = (("method", method), ("reason", reason), ("result", result))
            return samples.get(("e6auth_auth_attempts_total", labels), 0.0)

        assert attempt("password", "ok", "ok") == 1
        assert attempt("token", "ok", "ok") == 1
        # A wrong password for alice and one for a user that does not exist: one reason.
        assert attempt("password", "refused", "bad_credentials") == 2
        assert 'reason="bad_password"' not in text
        assert 'reason="unknown_user"' not in text
        # Cached when it was issued, on its password's terms: never loaded.
        assert attempt("session", "ok", "ok") == 0
        # The token login cached the token: its bearer calls were all cache hits.
        assert attempt("bearer", "ok", "ok") == 0
        assert samples[("e6auth_cache_hits_total", ())] == 3 + 3
        # Both logins and the two refusals.
        assert samples[("e6auth_cache_misses_total", ())] == 4
        assert samples[("e6auth_verify_seconds_count", (("method", "password"),))] == 3
        assert samples[("e6auth_sessions_active", ())] == 2
        assert samples[("e6auth_queries_open", ())] == 0
        for name in (
            "e6auth_cache_misses_total",
            "e6auth_cache_evictions_total",
            "e6auth_last_used_pending",
            "e6auth_last_used_flush_lag_seconds",
            "e6auth_invalidation_lag_seconds_count",
            "process_cpu_seconds_total",
        ):
            assert (name, ()) in samples, name
        secrets_and_names = (
            PASSWORD,
            "wrong horse",
            new.token,
            new.id,
            "alice",
            "no-such-user",
            by_password.sessionId,
            by_token.sessionId,
            "127.0.0.1",
        )
        for secret in secrets_and_names:
            assert secret not in text

        assert served.log.has("scrape-refused-1")
        log_lines = [json.loads(line) for line in served.log.seen]  # every line is JSON
        (refusal,) = [line for line in log_lines if line.get("request_id") == "scrape-refused-1"]
        assert refusal["message"].startswith("refused /QueryEngineService/authenticate")
        assert refusal["level"] == "INFO"
        assert refusal["logger"] == "e6auth.grpc"
        for secret in (PASSWORD, "wrong horse", new.token):
            assert secret not in served.log.text
    finally:
        code = served.stop()
    assert code == 0, served.log.text


def test_watching_an_authenticator_twice_exposes_its_state_once(
    authenticator: Authenticator, metrics: Metrics
) -> None:
    metrics.watch(authenticator)
    text = metrics.render().decode()
    assert text.count("\ne6auth_cache_entries ") == 1
