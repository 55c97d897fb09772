"""No secret leaks, proven: the main scenarios run with every logger at DEBUG (SQLAlchemy's too),
and no password, token, token secret, session id, pepper or session key appears in any log record,
exception message or repr, command output (but the one that shows a new token), gRPC status or
response metadata, or metric.

Each secret is searched in every form it could take in text: as given, and for keys also as
base64, hex and the repr of their bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import re
import secrets
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx2
import pytest

from e6auth import Authenticator, E6AuthError, Settings, TokenStore
from e6auth.cli import main
from e6auth.credentials.tokens import PREFIX, split_token
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.server import build_gateway
from e6auth.testing import FAST_ARGON2, FAST_ARGON2_SETTINGS

PASSWORD = "pw-" + secrets.token_urlsafe(18)
NEW_PASSWORD = "pw-" + secrets.token_urlsafe(18)
WRONG_PASSWORD = "pw-" + secrets.token_urlsafe(18)


@dataclass
class Evidence:
    """Everything the scenarios let out, and every secret they used."""

    secrets: set[str] = field(default_factory=set)
    texts: list[tuple[str, str]] = field(default_factory=list)
    """(where, text) pairs: log lines, exception messages, reprs, outputs, statuses."""

    def secret(self, value: str) -> str:
        self.secrets.add(value)
        if value.startswith(PREFIX):
            self.secrets.add(split_token(value).secret)
        if value.count(".") == 2:  # a JWT: its signature alone is a secret too
            self.secrets.add(value.rsplit(".", 1)[1])
        return value

    def key(self, raw: bytes) -> None:
        """A key in every text form: as configured, base64 both ways, hex, the repr of its bytes."""
        self.secrets.update(
            {
                raw.decode("latin-1"),
                base64.b64encode(raw).decode(),
                base64.urlsafe_b64encode(raw).decode(),
                raw.hex(),
                repr(raw)[2:-1],
            }
        )

    def saw(self, where: str, value: object) -> None:
        self.texts.append((where, value if isinstance(value, str) else repr(value)))

    def raised(self, where: str, call: Callable[[], object]) -> None:
        """Run ``call``, which must fail with an e6auth error, and keep what the error says."""
        with pytest.raises(E6AuthError) as caught:
            call()
        error = caught.value
        self.texts += [(where, str(error)), (where, repr(error)), (where, error.client_message())]

    def leaks(self) -> list[str]:
        found = []
        for where, text in self.texts:
            for secret in self.secrets:
                if len(secret) >= 8 and secret in text:
                    found.append(f"{where}: …{text[max(0, text.find(secret) - 40) :][:120]}…")
        return found


class Recorder(logging.Handler):
    """Every record any logger emits, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.lines.append(repr(record.args))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    handler = Recorder()
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    noisy = [
        "sqlalchemy",
        "sqlalchemy.engine",
        "sqlalchemy.pool",
        "alembic",
        "e6auth",
        "uvicorn",
        "uvicorn.error",
        "uvicorn.access",
    ]
    levels = {name: logging.getLogger(name).level for name in noisy}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in noisy:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _settings(home: Path, database_url: str, pepper: str, session_key: str) -> Settings:
    return Settings(
        home=home,
        database_url=database_url,
        auto_migrate=True,
        port=0,
        peppers=f"2:{pepper}",
        pepper="p1-" + pepper,
        session_key=session_key,
        **FAST_ARGON2_SETTINGS,
        audit_flush_seconds=0.05,
        last_used_flush_seconds=0.05,
        metrics_port=0,
    )


def _cli(
    evidence: Evidence,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    stdin: str = "",
) -> str:
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    main(list(argv))
    captured = capsys.readouterr()
    evidence.saw(f"e6auth {' '.join(argv)} (stdout)", captured.out)
    evidence.saw(f"e6auth {' '.join(argv)} (stderr)", captured.err)
    return captured.out


def _run_failing_query(stub: QueryEngineServiceStub, session_id: str) -> None:
    prepared = stub.prepareStatement(
        pb.PrepareStatementRequest(sessionId=session_id, queryString="SELECT * FROM nowhere")
    )
    ids = {"sessionId": session_id, "queryId": prepared.queryId}
    stub.executeStatement(pb.ExecuteStatementRequest(**ids))
    stub.getResultMetadata(pb.GetResultMetadataRequest(**ids))


def test_no_secret_reaches_a_log_an_error_a_repr_an_output_or_a_status(
    store_url: str,
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    evidence = Evidence()
    pepper = secrets.token_urlsafe(40)
    session_key = secrets.token_urlsafe(40)
    for value in (pepper, "p1-" + pepper, session_key):
        evidence.secret(value)
        evidence.key(value.encode())
    for password in (PASSWORD, NEW_PASSWORD, WRONG_PASSWORD):
        evidence.secret(password)
    settings = _settings(tmp_path / "home", store_url, pepper, session_key)
    # The commands read the same settings from the environment, as in production.
    for name in ("home", "database_url", "pepper", "peppers", "session_key", "argon2_memory_kib"):
        value = getattr(settings, name)
        shown = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        monkeypatch.setenv(f"E6AUTH_{name.upper()}", shown)
    monkeypatch.setenv("E6AUTH_ARGON2_TIME_COST", str(FAST_ARGON2.time_cost))
    evidence.saw("Settings repr", settings)

    # -- the store: users, tokens, rotation, revocation ---------------------------------------
    store = TokenStore.from_settings(settings)
    evidence.saw("TokenStore repr", store)
    store.create_user("alice", PASSWORD)
    store.create_user("bob", PASSWORD)
    first = store.create_token("alice", comment="first", expires_days=30)
    second = store.create_token("alice", comment="second")
    restricted = store.create_token("bob", allow_from=["10.0.0.0/8"], read_only=True)
    for new in (first, second, restricted):
        evidence.secret(new.token)
        evidence.saw("NewToken repr", new)
    rotated = store.rotate_token(second.id, grace=dt.timedelta(hours=1))
    evidence.secret(rotated.token)
    evidence.saw("rotated NewToken repr", rotated)
    evidence.saw("TokenRecord repr", store.find_token(first.id))
    evidence.saw("token list repr", store.list_tokens())
    evidence.saw("user repr", store.find_user("alice"))
    store.set_password("alice", NEW_PASSWORD)

    # -- the authenticator: right and wrong secrets of every kind -----------------------------
    with Authenticator.from_settings(settings) as auth:
        evidence.saw("Authenticator repr", auth)
        principal = auth.verify("alice", NEW_PASSWORD, peer="10.1.2.3")
        evidence.saw("Principal repr", principal)
        session_id = evidence.secret(auth.create_session(principal))
        evidence.saw("session Principal repr", auth.verify_session(session_id))
        token_principal = auth.verify("alice", first.token, peer="10.1.2.3")
        evidence.secret(auth.create_session(token_principal))
        auth.verify_token(first.token, peer="10.1.2.3")
        auth.verify_token(second.token, peer="10.1.2.3")  # the old secret, in its grace window
        auth.verify_token(rotated.token, peer="10.1.2.3")
        forged = first.token[:-12] + "A" * 6 + first.token[-6:]
        evidence.secret(forged)
        tampered = session_id[:-4] + ("AAAA" if not session_id.endswith("AAAA") else "BBBB")
        evidence.secret(tampered)
        evidence.raised("wrong password", lambda: auth.verify("alice", WRONG_PASSWORD))
        evidence.raised("old password", lambda: auth.verify("alice", PASSWORD))
        evidence.raised("unknown user", lambda: auth.verify("nobody", PASSWORD))
        evidence.raised("token of another", lambda: auth.verify("bob", first.token))
        evidence.raised("forged secret", lambda: auth.verify_token(forged))
        # The last character changed (never to itself: the token may end with an x already).
        bad_checksum = first.token[:-1] + ("y" if first.token.endswith("x") else "x")
        evidence.raised("bad checksum", lambda: auth.verify_token(bad_checksum))
        evidence.raised("token as password", lambda: auth.verify("alice", first.token + "x"))
        evidence.raised("tampered session", lambda: auth.verify_session(tampered))
        evidence.raised("token as session", lambda: auth.verify_session(first.token))
        evidence.raised("session as token", lambda: auth.verify_token(session_id))
        evidence.raised(
            "restricted token elsewhere",
            lambda: auth.verify_token(restricted.token, peer="1.2.3.4"),
        )
        store.delete_tokens([first.id])
        auth.poll_invalidations()
        evidence.raised("deleted token", lambda: auth.verify_token(first.token))
        auth.flush_last_used()
    store.close()

    # -- the gateway over real gRPC -------------------------------------------------------------
    gateway = build_gateway(settings)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
            response, outcome = stub.authenticate.with_call(
                pb.AuthenticateRequest(user="alice", password=rotated.token)
            )
            evidence.saw("handshake metadata", outcome.initial_metadata())
            evidence.saw("handshake trailers", outcome.trailing_metadata())
            live = evidence.secret(response.sessionId)
            stub.getSchemaNamesV2(pb.GetSchemaNamesV2Request(sessionId=live, catalog="default"))
            stub.prepareStatement(
                pb.PrepareStatementRequest(sessionId=live, queryString="SELECT 1")
            )
            attempts: list[Callable[[], Any]] = [
                lambda: stub.authenticate(pb.AuthenticateRequest(user="alice", password=PASSWORD)),
                lambda: stub.authenticate(
                    pb.AuthenticateRequest(user="alice", password=first.token)
                ),
                lambda: stub.authenticate(pb.AuthenticateRequest(user=forged, password=forged)),
                lambda: stub.getSchemaNamesV2(
                    pb.GetSchemaNamesV2Request(sessionId=tampered, catalog="default")
                ),
                lambda: stub.getSchemaNamesV2(
                    pb.GetSchemaNamesV2Request(catalog="default"),
                    metadata=(("authorization", f"Bearer {forged}"),),
                ),
                lambda: stub.getSchemaNamesV2(
                    pb.GetSchemaNamesV2Request(catalog="default"),
                    metadata=(("authorization", f"Bearer {first.token}"),),
                ),
                lambda: _run_failing_query(stub, live),
            ]
            for attempt in attempts:
                with pytest.raises(grpc.RpcError) as refused:
                    attempt()
                error: Any = refused.value
                evidence.saw("status details", error.details())
                evidence.saw("status trailers", error.trailing_metadata())
        assert gateway.metrics_port is not None
        scrape = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
        with urllib.request.urlopen(scrape, timeout=10) as answer:
            metrics = answer.read().decode()
        assert "e6auth_auth_attempts_total" in metrics
        evidence.saw("metrics", metrics)
    finally:
        gateway.stop()

    # -- the command line ----------------------------------------------------------------------
    # `token create` shows its token once by design: it is the only output not searched.
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert main(["token", "create", "--user", "bob", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["token"]
    evidence.secret(shown)
    for argv, stdin in [
        (("token", "check", "--json"), shown),
        (("token", "check"), rotated.token),
        (("token", "check", "--offline"), forged),
        (("token", "check"), "garbage " + PASSWORD),
        (("token", "list", "--json"), ""),
        (("audit", "--json"), ""),
        (("audit", "--queries", "--json"), ""),
        (("policy", "show", "--json"), ""),
        (("pepper", "list"), ""),
        (("user", "list"), ""),
        (("user", "add", "carol", "--password-stdin"), PASSWORD + "\n"),
    ]:
        _cli(evidence, monkeypatch, capsys, *argv, stdin=stdin)

    evidence.texts += [("log", line) for line in recorder.lines]
    assert len(recorder.lines) > 50, "the scenarios should have logged at DEBUG"
    assert any("sqlalchemy" in line for line in recorder.lines), "SQL was logged too"
    assert evidence.leaks() == []


_CSRF = re.compile(r'name="csrf" value="([^"]*)"')
_NEW_TOKEN = re.compile(r'id="new-token" value="(e6pat_[^"]+)"')


def _seen(evidence: Evidence, where: str, answer: httpx2.Response) -> httpx2.Response:
    evidence.saw(f"{where}: status", f"{answer.status_code} {answer.reason_phrase}")
    # Set-Cookie is where the session and the sign-in nonce are meant to be, as a new token is
    # meant to be on the page that shows it: the only places not searched.
    headers = [pair for pair in answer.headers.multi_items() if pair[0] != "set-cookie"]
    evidence.saw(f"{where}: headers", str(headers))
    evidence.saw(f"{where}: body", answer.text)
    return answer


def _csrf(answer: httpx2.Response) -> str:
    found = _CSRF.search(answer.text)
    assert found is not None, answer.text
    return found[1]


def test_no_secret_of_the_web_page_reaches_a_log_an_error_a_url_or_a_page(
    store_url: str, tmp_path: Path, recorder: Recorder
) -> None:
    """The page served by the gateway (uvicorn's loggers at DEBUG too): the password, the session
    cookie, the sign-in nonce and the tokens it creates appear in no log record and in no answer
    but the one that shows a new token."""
    evidence = Evidence()
    pepper, session_key = secrets.token_urlsafe(40), secrets.token_urlsafe(40)
    for value in (pepper, "p1-" + pepper, session_key):
        evidence.secret(value)
        evidence.key(value.encode())
    for password in (PASSWORD, WRONG_PASSWORD):
        evidence.secret(password)
    settings = _settings(tmp_path / "home", store_url, pepper, session_key).replace(http_port=0)
    # The test's own HTTP client logs the answers' headers, cookies included, at DEBUG: it is the
    # browser here, not e6auth.
    client_logs = [logging.getLogger(name) for name in ("httpx2", "httpcore2")]
    for logger in client_logs:
        logger.setLevel(logging.WARNING)
    gateway = build_gateway(settings)
    urls: list[str] = []
    try:
        assert gateway.web is not None
        gateway.authenticator.store.create_user("alice", PASSWORD, admin=True)
        gateway.authenticator.store.create_user("bob", PASSWORD)
        bobs = gateway.authenticator.store.create_token("bob", comment="bob's")
        evidence.secret(bobs.token)
        with httpx2.Client(
            base_url=gateway.web.url,
            event_hooks={"request": [lambda request: urls.append(str(request.url))]},
        ) as client:
            form = _seen(evidence, "sign-in form", client.get("/signin"))
            evidence.secret(client.cookies["e6auth_signin"])
            for username, password in (
                ("alice", WRONG_PASSWORD),
                (PASSWORD, PASSWORD),  # the password typed into the user name field
                ("alice", bobs.token),
                ("alice", "x" * 5000 + PASSWORD),
            ):
                _seen(
                    evidence,
                    "refused sign-in",
                    client.post(
                        "/signin",
                        data={"csrf": _csrf(form), "username": username, "password": password},
                    ),
                )
            signed_in = client.post(
                "/signin", data={"csrf": _csrf(form), "username": "alice", "password": PASSWORD}
            )
            _seen(evidence, "sign-in", signed_in)
            cookie = evidence.secret(client.cookies["e6auth_session"])
            listing = _seen(evidence, "list", client.get("/tokens"))
            created = []
            for comment in ("laptop", "ci"):
                fields = {"csrf": _csrf(listing), "comment": comment, "expires_days": "9"}
                answer = client.post("/tokens", data=fields)
                assert answer.status_code == 201, answer.text
                found = _NEW_TOKEN.search(answer.text)
                assert found is not None
                created.append(evidence.secret(found[1]))  # its answer is the one not searched
            _seen(evidence, "list", client.get("/tokens"))
            ids = [token.split("_")[1] for token in created] + [bobs.id]
            _seen(
                evidence,
                "confirm",
                client.post("/tokens/delete", data={"csrf": _csrf(listing), "id": ids}),
            )
            _seen(
                evidence,
                "delete",
                client.post("/tokens/delete/confirm", data={"csrf": _csrf(listing), "id": ids}),
            )
            for body in (b"comment=%FF", b"x=" + b"y" * 70_000):
                _seen(
                    evidence,
                    "bad form",
                    client.post(
                        "/tokens",
                        content=body,
                        headers={"content-type": "application/x-www-form-urlencoded"},
                    ),
                )
            _seen(evidence, "sign-out", client.post("/signout", data={"csrf": _csrf(listing)}))
            client.cookies.set("e6auth_session", cookie)
            _seen(evidence, "replayed cookie", client.get("/tokens"))
        gateway.authenticator.audit.flush()  # type: ignore[union-attr]
    finally:
        gateway.stop()
        for logger in client_logs:
            logger.setLevel(logging.NOTSET)
    for token in created:
        evidence.raised("deleted token", lambda token=token: _verify_deleted(settings, token))

    evidence.texts += [("url", url) for url in urls]
    evidence.texts += [("log", line) for line in recorder.lines]
    assert any("uvicorn" in line for line in recorder.lines), "uvicorn logged too"
    assert any('"POST /signin HTTP/1.1" 401' in line for line in recorder.lines)
    assert evidence.leaks() == []


def _verify_deleted(settings: Settings, token: str) -> None:
    with Authenticator.from_settings(settings) as auth:
        auth.verify_token(token)
