"""Logs: text or JSON lines, the level, request ids (made, accepted, bound to log lines and sent
back in the ``x-request-id`` trailer of a failed call by the interceptor, sync and grpc.aio), and
the CLI flags."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from test_interceptor import PING, WHOAMI, _AioServer, _SyncServer

from e6auth import Authenticator, Settings, SettingsError, TokenStore
from e6auth.cli import main
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.grpc.server import build_gateway
from e6auth.logs import (
    REQUEST_ID_HEADER,
    CallContext,
    JsonFormatter,
    bind_call,
    call_var,
    configure_logging,
    current_request_id,
    new_request_id,
    request_id_for,
)
from e6auth.testing import FAST_ARGON2_SETTINGS, FakeClock, memory_store
from e6auth.verify.parameters import SessionParameters

LOG = logging.getLogger("e6auth.test")


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def json_log(restore_root_logging: None) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="json", stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_the_request_id(
    json_log: io.StringIO,
) -> None:
    LOG.info("outside a call")
    token = call_var.set("req-1")
    try:
        LOG.warning("inside a call: %s", "with\na newline")
    finally:
        call_var.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        LOG.exception("failed")

    outside, inside, failed = lines(json_log)
    assert outside.keys() == {"time", "level", "logger", "message"}
    assert outside["time"].endswith("Z")
    assert outside["time"][10] == "T"
    assert (outside["level"], outside["logger"]) == ("INFO", "e6auth.test")
    assert inside["request_id"] == "req-1"
    assert inside["message"] == "inside a call: with\na newline"  # one line all the same
    assert failed["level"] == "ERROR"
    assert "ValueError: boom" in failed["exception"]


def test_the_level_filters_records(restore_root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(level="WARNING", log_format="json", stream=stream)
    LOG.info("hidden")
    LOG.debug("hidden too")
    LOG.error("shown")
    assert [line["message"] for line in lines(stream)] == ["shown"]


def test_text_lines_show_the_request_id_during_a_call(restore_root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="text", stream=stream)
    LOG.info("plain")
    token = call_var.set("req-7")
    try:
        LOG.info("in a call")
    finally:
        call_var.reset(token)
    assert stream.getvalue().splitlines() == ["e6auth: plain", "e6auth: in a call [request req-7]"]


def test_request_ids_are_unique_and_only_sane_client_ids_are_taken() -> None:
    made = {new_request_id() for _ in range(1000)}
    assert len(made) == 1000
    assert request_id_for([("x-request-id", "abc-123_XYZ.9")]) == "abc-123_XYZ.9"
    token = "e6pat_" + "A" * 12 + "_" + "B" * 38
    for bad in ("", "x" * 65, "with space", "ünïcode", "new\nline", token, b"bytes"):
        chosen = request_id_for([("x-request-id", bad)])
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", chosen), bad
    assert request_id_for(None) != request_id_for(None)


def test_a_bound_request_id_is_decided_once_when_first_asked_for() -> None:
    """A call's id is made only if something asks (most calls log nothing), and then every line
    of the call shows the same one."""
    token = bind_call([("cluster-name", "default")])
    try:
        call = call_var.get()
        assert isinstance(call, CallContext), "not bound"
        assert call.request_id is None, "decided before anything asked for it"
        first = current_request_id()
        assert first is not None
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", first)
        assert current_request_id() == first
    finally:
        call_var.reset(token)
    assert current_request_id() is None

    token = bind_call([("x-request-id", "client-42")])
    try:
        assert current_request_id() == "client-42"
    finally:
        call_var.reset(token)


# -- one record, one line ----------------------------------------------------------------------

FORGED = "e6auth: web sign-in of maria from 203.0.113.9"
"""What a hostile value would like to add to the text log as a line of its own."""
BREAKS = {
    "\n": "\\n",
    "\r": "\\r",
    "\r\n": "\\r\\n",
    "\t": "\\t",
    "\x00": "\\x00",
    "\x0b": "\\x0b",
    "\x0c": "\\x0c",
    "\x1b[2K\r": "\\x1b[2K\\r",  # erase the line on a terminal, then write over it
    "\x1c": "\\x1c",
    "\x7f": "\\x7f",
    "\x85": "\\x85",
    "\x9b": "\\x9b",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
"""Characters that end a line (for Python's splitlines, terminals or log shippers) or control a
terminal, and the visible sequence each must become."""
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def records(text: str) -> list[str]:
    """The text log's lines: one per record, each ending with the handler's newline only."""
    assert text.endswith("\n")
    found = text[:-1].split("\n")
    for line in found:
        assert not UNSAFE.search(line), repr(line)
    assert len(text.splitlines()) == len(found)
    return found


def test_text_records_are_one_line_whatever_their_arguments_hold(
    restore_root_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="text", stream=stream)
    for sent in BREAKS:
        LOG.info("query failed: %s", f"no such table: a{sent}{FORGED}")

    written = records(stream.getvalue())
    assert written == [
        f"e6auth: query failed: no such table: a{shown}{FORGED}" for shown in BREAKS.values()
    ]


def test_a_traceback_in_the_text_log_stays_on_its_records_line(restore_root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="text", stream=stream)
    token = call_var.set("req-9")
    try:
        raise ValueError(f"no such table: a\n{FORGED}\u2028{FORGED}")
    except ValueError:
        LOG.exception("query %s failed unexpectedly", "q\r\n1")
    finally:
        call_var.reset(token)
    LOG.warning("next")

    failed, following = records(stream.getvalue())
    assert failed.startswith("e6auth: query q\\r\\n1 failed unexpectedly [request req-9]\\n")
    assert "\\nTraceback (most recent call last):\\n" in failed
    assert failed.endswith(f"ValueError: no such table: a\\n{FORGED}\\u2028{FORGED}")
    assert following == "e6auth: next"


def test_json_records_are_one_line_and_keep_the_text_as_it_was(
    restore_root_logging: None,
) -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="json", stream=stream)
    for sent in BREAKS:
        LOG.info("query failed: %s", f"no such table: a{sent}{FORGED}")
    try:
        raise ValueError(f"a\n{FORGED}")
    except ValueError:
        LOG.exception("failed")

    text = stream.getvalue()
    written = text[:-1].split("\n")
    assert len(written) == len(text.splitlines()) == len(BREAKS) + 1
    entries = [json.loads(line) for line in written]
    assert [entry["message"] for entry in entries[:-1]] == [
        f"query failed: no such table: a{sent}{FORGED}" for sent in BREAKS
    ]
    assert entries[-1]["exception"].endswith(f"ValueError: a\n{FORGED}")


@pytest.mark.timeout(60)
def test_a_table_name_with_a_newline_forges_no_line_in_a_real_gateways_log(
    tmp_path: Path, restore_root_logging: None
) -> None:
    settings = Settings(home=tmp_path / "home", port=0, **FAST_ARGON2_SETTINGS)
    store = TokenStore.from_settings(settings)
    try:
        store.create_user("alice", "correct horse battery staple")
    finally:
        store.close()
    stream = io.StringIO()
    configure_logging(level="INFO", log_format="text", stream=stream)
    gateway = build_gateway(settings)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = QueryEngineServiceStub(channel)  # type: ignore[no-untyped-call]
            session = stub.authenticate(
                pb.AuthenticateRequest(user="alice", password="correct horse battery staple")
            ).sessionId
            prepared = stub.prepareStatement(
                pb.PrepareStatementRequest(
                    sessionId=session,
                    queryString=f'SELECT * FROM "a\n{FORGED}"',  # noqa: S608 - hostile on purpose
                )
            )
            ids = {"sessionId": session, "queryId": prepared.queryId}
            stub.executeStatement(pb.ExecuteStatementRequest(**ids))
            with pytest.raises(grpc.RpcError) as failed:
                stub.getResultMetadata(pb.GetResultMetadataRequest(**ids))
    finally:
        gateway.stop()

    assert f"a\n{FORGED}" in (failed.value.details() or "")  # the database's own message
    written = records(stream.getvalue())
    assert not [line for line in written if line.startswith("e6auth: web sign-in")], written
    (refused,) = [line for line in written if "no such table" in line]
    assert refused.startswith("e6auth: refused /QueryEngineService/getResultMetadata from ")
    assert f"no such table: a\\n{FORGED}" in refused


# -- the interceptor ---------------------------------------------------------------------------


@pytest.fixture
def authenticator(clock: FakeClock) -> Iterator[Authenticator]:
    store = memory_store(clock=clock)
    store.create_user("alice")
    auth = Authenticator(store, clock=clock, sessions=SessionParameters(secrets.token_bytes(32)))
    yield auth
    auth.close()


Call = Callable[..., tuple[grpc.Call | grpc.RpcError, bytes | None]]


@pytest.fixture(params=[False, True], ids=["sync", "aio"])
def call(request: pytest.FixtureRequest, authenticator: Authenticator) -> Iterator[Call]:
    server: _SyncServer | _AioServer = (
        _AioServer(authenticator) if request.param else _SyncServer(authenticator)
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")

    def invoke(
        method: str, *, bearer: str | None = None, request_id: str | None = None
    ) -> tuple[grpc.Call | grpc.RpcError, bytes | None]:
        metadata = []
        if bearer is not None:
            metadata.append(("authorization", f"Bearer {bearer}"))
        if request_id is not None:
            metadata.append((REQUEST_ID_HEADER, request_id))
        stub = channel.unary_unary(
            method, request_serializer=pb.GetSchemaNamesV2Request.SerializeToString
        )
        try:
            response, outcome = stub.with_call(pb.GetSchemaNamesV2Request(), metadata=metadata)
        except grpc.RpcError as error:
            return error, None
        return outcome, response

    yield invoke
    channel.close()
    server.stop()


def trailer(outcome: grpc.Call | grpc.RpcError) -> str:
    found = [value for key, value in outcome.trailing_metadata() or () if key == REQUEST_ID_HEADER]
    assert len(found) == 1, outcome.trailing_metadata()
    return str(found[0])


def test_a_failed_call_gets_its_request_id_back_and_a_good_one_sends_no_trailer(
    call: Call, authenticator: Authenticator
) -> None:
    new = authenticator.store.create_token("alice")
    ok, response = call(WHOAMI, bearer=new.token)
    assert response is not None
    assert REQUEST_ID_HEADER not in dict(ok.trailing_metadata() or ())
    public, _ = call(PING)
    assert REQUEST_ID_HEADER not in dict(public.trailing_metadata() or ())
    first, _ = call(WHOAMI, bearer="e6pat_nonsense")
    second, _ = call(WHOAMI)
    assert len({trailer(first), trailer(second)}) == 2  # generated, one per call
    chosen, _ = call(WHOAMI, request_id="client-chosen-1")
    assert trailer(chosen) == "client-chosen-1"


def test_a_refused_calls_log_line_carries_the_request_id_the_client_got(
    call: Call, json_log: io.StringIO
) -> None:
    refused, response = call(WHOAMI, bearer="e6pat_nonsense")
    assert response is None
    assert isinstance(refused, grpc.RpcError)
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    request_id = trailer(refused)
    chosen, _ = call(WHOAMI, request_id="mine-42")  # no credential at all
    assert trailer(chosen) == "mine-42"

    refusals = [line for line in lines(json_log) if line["message"].startswith("refused ")]
    assert [line["request_id"] for line in refusals] == [request_id, "mine-42"]
    assert all(line["logger"] == "e6auth.grpc" for line in refusals)
    assert "e6pat_nonsense" not in json_log.getvalue()


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_root_logging: None) -> Path:
    for name in ("E6AUTH_LOG_LEVEL", "E6AUTH_LOG_FORMAT", "E6AUTH_CONFIG", "E6AUTH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("E6AUTH_HOME", str(tmp_path))
    return tmp_path


def root_handler() -> logging.Handler:
    (handler,) = logging.getLogger().handlers
    return handler


def test_the_log_flags_set_format_and_level(home: Path) -> None:
    assert main(["--log-format", "json", "--log-level", "debug", "user", "list"]) == 0
    assert logging.getLogger().level == logging.DEBUG
    assert isinstance(root_handler().formatter, JsonFormatter)


def test_the_log_settings_come_from_the_environment_and_v_only_adds_verbosity(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E6AUTH_LOG_LEVEL", "error")
    monkeypatch.setenv("E6AUTH_LOG_FORMAT", "JSON")
    assert main(["user", "list"]) == 0
    assert logging.getLogger().level == logging.ERROR
    assert isinstance(root_handler().formatter, JsonFormatter)
    assert main(["-v", "user", "list"]) == 0
    assert logging.getLogger().level == logging.INFO
    monkeypatch.setenv("E6AUTH_LOG_LEVEL", "debug")
    assert main(["-v", "user", "list"]) == 0
    assert logging.getLogger().level == logging.DEBUG


def test_serve_takes_the_log_and_metrics_flags_after_the_command() -> None:
    from e6auth.cli import _parser, _setting_overrides

    args = _parser().parse_args(
        ["serve", "--log-format", "json", "--log-level", "Info", "--metrics-port", "9464"]
    )
    overrides = _setting_overrides(args)
    assert overrides == {"log_format": "json", "log_level": "INFO", "metrics_port": 9464}
    assert Settings(**overrides).log_level == "INFO"


def test_a_wrong_log_level_is_a_usage_error(home: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "loud", "user", "list"])
    assert exited.value.code == 2


def test_settings_refuse_unknown_log_values() -> None:
    with pytest.raises(SettingsError, match="log_level"):
        Settings(log_level="loud")
    with pytest.raises(SettingsError, match="log_format"):
        Settings(log_format="xml")
