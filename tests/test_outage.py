"""The token store goes away and comes back.

Against a throwaway PostgreSQL cluster that these tests create, stop and start themselves (never
the machine's shared server): uncached credentials fail as "authentication store unavailable",
never as invalid; cached ones are served past their TTL only within ``stale_if_error_seconds``
(default 0: fail closed); last-used times wait in memory and are written once the database is
back; and an authenticator or a running gateway recovers by itself.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

# The gateway helpers of the replica tests: the same processes, the same client.
from test_replicas import OK, SESSION_KEY, ServeProcess, bearer_call
from test_web import Site

from e6auth import (
    AuthenticationError,
    Authenticator,
    Settings,
    StoreUnavailable,
    TokenStore,
)
from e6auth.clock import to_datetime
from e6auth.credentials.tokens import generate_token
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc.e6x_engine_pb2_grpc import QueryEngineServiceStub
from e6auth.testing import FakeClock, memory_store
from e6auth.verify.parameters import CacheParameters, SessionParameters, TaskParameters

pytestmark = pytest.mark.postgres

PG_BIN = Path(os.environ.get("E6AUTH_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"  # initdb and postgres refuse to run as root
PEPPER = "the pepper of the outage tests, 32+ characters long"
PASSWORD = "correct horse battery staple"
UNAVAILABLE = ("UNAVAILABLE", "authentication store unavailable")
RECOVERY_SECONDS = 10.0


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary folder, on a free port, trusting local connections."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(PG_BIN / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", PG_USER, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False, cwd=self.root
        )
        if check and done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}\n{log}")
        return done

    def init(self) -> None:
        self.sockets.mkdir()
        give_to_postgres(self.sockets)
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--auth=trust",
            f"--username={PG_USER}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway: durability only costs time
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = ("-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30")
        self._run("pg_ctl", *pg_ctl, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def ensure_running(self) -> None:
        if not self.running:
            self.start()


def give_to_postgres(folder: Path) -> None:
    """Under root the server runs as postgres, and must own its folders."""
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_USER)
        os.chown(folder, owner.pw_uid, owner.pw_gid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def cluster() -> Iterator[ThrowawayCluster]:
    if not (PG_BIN / "initdb").exists():
        message = f"no PostgreSQL binaries in {PG_BIN} (E6AUTH_TEST_PG_BIN)"
        if os.environ.get("E6AUTH_REQUIRE_POSTGRES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="e6auth-outage-"))
    try:
        give_to_postgres(root)
        throwaway = ThrowawayCluster(root, free_port())
        throwaway.init()
        throwaway.start()
        try:
            yield throwaway
        finally:
            # Immediate: nothing in it is worth a checkpoint.
            subprocess.run(
                [
                    *(["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []),
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(throwaway.data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
                check=False,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(cluster: ThrowawayCluster) -> Iterator[str]:
    """A fresh database on the running cluster; the cluster is running again afterwards."""
    cluster.ensure_running()
    name = f"e6auth_{secrets.token_hex(6)}"
    # No pool: a pooled connection would not survive the tests' restarts.
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield cluster.url(name)
    finally:
        # Whatever the test left it in: the next one needs it up.
        cluster.ensure_running()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[TokenStore]:
    """A store on the throwaway cluster (not conftest's, which is on the shared server)."""
    token_store = memory_store(clock=clock, url=database_url)
    try:
        token_store.create_user("alice", PASSWORD)
        yield token_store
    finally:
        token_store.close()


def assert_unavailable(excinfo: pytest.ExceptionInfo[StoreUnavailable]) -> None:
    """A store failure, told as one: never as a refused credential."""
    error = excinfo.value
    assert not isinstance(error, AuthenticationError)
    assert error.grpc_status == "UNAVAILABLE"
    assert error.client_message() == "authentication store unavailable"


# -- in process ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_uncached_credentials_fail_as_unavailable_and_work_again_when_it_is_back(
    cluster: ThrowawayCluster, store: TokenStore, clock: FakeClock
) -> None:
    cached = store.create_token("alice")
    uncached = store.create_token("alice")
    _parsed, unknown = generate_token()
    auth = Authenticator(store, clock=clock)
    try:
        auth.verify_token(cached.token)

        attempts: list[Callable[[], object]] = [
            lambda: auth.verify_token(uncached.token),
            lambda: auth.verify("alice", uncached.token),  # the handshake, with a token
            lambda: auth.verify("alice", PASSWORD),
            lambda: auth.verify_token(unknown),  # not "no such token": nobody could tell
        ]
        cluster.stop()
        for attempt in attempts:
            with pytest.raises(StoreUnavailable) as excinfo:
                attempt()
            assert_unavailable(excinfo)
        cluster.start()

        # The same authenticator, on the same (now dead) pooled connections.
        assert auth.verify_token(uncached.token).token_id == uncached.id
        assert auth.verify("alice", PASSWORD).username == "alice"
    finally:
        cluster.ensure_running()  # close() writes pending last-used times
        auth.close()


def test_token_listings_work_on_the_first_call_after_a_restart(
    cluster: ThrowawayCluster, store: TokenStore
) -> None:
    """``token list``, ``token check`` and the web page read through dead pooled connections
    after a restart: the read is retried once on a fresh one, as the verify path's are."""
    made = store.create_token("alice")
    assert [info.id for info in store.list_tokens("alice")] == [made.id]  # the pool is warm
    cluster.stop()
    with pytest.raises(StoreUnavailable):
        store.list_tokens("alice")
    cluster.start()

    assert [info.id for info in store.list_tokens("alice")] == [made.id]
    info = store.find_token_info(made.id)
    assert info is not None
    assert info.user == "alice"


@pytest.mark.timeout(90)
def test_management_writes_work_on_the_first_call_after_a_restart(
    cluster: ThrowawayCluster, store: TokenStore
) -> None:
    """A write through pooled connections that died with the database while nobody used them
    (a restart between two commands of a long-running process) works the first time: the
    transaction's opening ping finds the connection dead before anything was sent, and it
    starts again on a fresh one. Each write is made exactly once."""
    first = store.create_token("alice")  # the pool is warm

    cluster.stop()
    cluster.start()
    second = store.create_token("alice", comment="after a restart")

    cluster.stop()
    cluster.start()
    result = store.delete_tokens([first.id])
    assert result.deleted == (first.id,)

    cluster.stop()
    cluster.start()
    store.create_user("bob", PASSWORD)

    listed = {info.id: info for info in store.list_tokens("alice")}
    assert set(listed) == {first.id, second.id}
    assert listed[second.id].comment == "after a restart"
    assert listed[first.id].revoked_at is not None
    assert store.find_user("bob") is not None


@pytest.mark.timeout(60)
def test_the_web_page_says_unavailable_during_an_outage_and_recovers_by_itself(
    cluster: ThrowawayCluster, store: TokenStore, clock: FakeClock
) -> None:
    """A signed-in browser gets a 503 page that says what is wrong (no traceback, no secret)
    while the database is down, and the same session works again once it is back."""
    site = Site(store, clock)
    try:
        page = site.signed_in("alice", PASSWORD)
        made = page.created_token("laptop")
        listed = page.listed_ids()
        form = {"csrf": page.csrf(), "comment": "desktop", "expires_days": ""}
        cluster.stop()
        for answer in (page.client.get("/tokens"), page.client.post("/tokens", data=form)):
            assert answer.status_code == 503, answer.text
            assert "The token store is unavailable" in answer.text
            assert made not in answer.text
            assert "Traceback" not in answer.text
        cluster.start()
        assert page.listed_ids() == listed
    finally:
        cluster.ensure_running()
        site.close()


@pytest.mark.timeout(60)
def test_cached_credentials_are_served_past_their_ttl_only_within_stale_if_error(
    cluster: ThrowawayCluster, store: TokenStore, clock: FakeClock
) -> None:
    token = store.create_token("alice")
    auth = Authenticator(
        store, clock=clock, cache=CacheParameters(ttl_seconds=60, stale_if_error_seconds=30)
    )
    cache = auth.cache
    assert cache is not None
    try:
        auth.verify_token(token.token)

        cluster.stop()
        clock.advance(59)
        assert auth.verify_token(token.token).token_id == token.id  # fresh
        clock.advance(2)
        assert auth.verify_token(token.token).token_id == token.id  # stale, store down
        clock.advance(28)
        assert auth.verify_token(token.token).token_id == token.id  # 89 s: still within 60 + 30
        assert cache.stale_served == 2
        clock.advance(2)
        with pytest.raises(StoreUnavailable) as excinfo:
            auth.verify_token(token.token)  # 91 s: past TTL + stale-if-error
        assert_unavailable(excinfo)
        cluster.start()

        assert auth.verify_token(token.token).token_id == token.id
    finally:
        cluster.ensure_running()  # close() writes pending last-used times
        auth.close()


@pytest.mark.timeout(60)
def test_by_default_cached_credentials_fail_closed_after_their_ttl(
    cluster: ThrowawayCluster, store: TokenStore, clock: FakeClock
) -> None:
    token = store.create_token("alice")
    auth = Authenticator(store, clock=clock, cache=CacheParameters(ttl_seconds=60))
    try:
        auth.verify_token(token.token)

        cluster.stop()
        clock.advance(59)
        assert auth.verify_token(token.token).token_id == token.id  # within the TTL
        clock.advance(2)
        with pytest.raises(StoreUnavailable) as excinfo:
            auth.verify_token(token.token)
        assert_unavailable(excinfo)
    finally:
        cluster.ensure_running()  # close() writes pending last-used times
        auth.close()


@pytest.mark.timeout(60)
def test_last_used_times_wait_in_memory_and_are_written_when_it_is_back(
    cluster: ThrowawayCluster, store: TokenStore, clock: FakeClock
) -> None:
    tokens = [store.create_token("alice") for _ in range(3)]
    # Room for two tokens' uses: the third shows the bound.
    auth = Authenticator(store, clock=clock, tasks=TaskParameters(last_used_max_pending=2))
    try:
        for token in tokens:
            auth.verify_token(token.token)  # cached from now on
            auth.flush_last_used()
        assert auth.last_used.dropped == 0

        cluster.stop()
        clock.advance(10)
        used_during_outage = clock()
        for token in tokens:
            auth.verify_token(token.token)  # cached: the uses are recorded, not written
        with pytest.raises(StoreUnavailable):
            auth.flush_last_used()
        assert auth.last_used.pending == 2
        assert auth.last_used.dropped == 1
        cluster.start()

        assert auth.flush_last_used() == 2
    finally:
        cluster.ensure_running()  # close() writes pending last-used times
        auth.close()
    last_used = {token.id: token.last_used_at for token in store.list_tokens("alice")}
    during_outage = to_datetime(used_during_outage)
    assert last_used[tokens[0].id] == during_outage
    assert last_used[tokens[1].id] == during_outage
    # Its use during the outage did not fit: what was written before it stays.
    assert last_used[tokens[2].id] == during_outage - dt.timedelta(seconds=10)


# -- a real gateway --------------------------------------------------------------------------


def start_gateway(tmp_path: Path, database_url: str, **env: str) -> ServeProcess:
    home = tmp_path / "gateway"
    # See test_replicas.test_a_replica_on_a_fresh_home_serves_queries.
    home.mkdir()
    gateway = ServeProcess(
        home,
        {
            "E6AUTH_DATABASE_URL": database_url,
            "E6AUTH_PEPPER": PEPPER,
            "E6AUTH_SESSION_KEY": SESSION_KEY,
            **env,
        },
    )
    gateway.wait_until_serving()
    return gateway


def shared_store(tmp_path: Path, database_url: str) -> TokenStore:
    """The store as the gateway sees it (the same pepper), migrated."""
    store = TokenStore.from_settings(
        Settings(
            home=tmp_path / "test", database_url=database_url, pepper=PEPPER, auto_migrate=True
        )
    )
    store.create_user("alice")
    return store


def wait_for(
    condition: Callable[[], bool],
    what: str,
    gateway: ServeProcess,
    timeout: float = RECOVERY_SECONDS,
) -> float:
    """Poll ``condition()`` until true; how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"no {what} within {timeout} s; the gateway's log:\n{gateway.log.text}")
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.mark.timeout(60)
def test_a_gateway_says_unavailable_keeps_last_used_and_recovers_by_itself(
    cluster: ThrowawayCluster, database_url: str, tmp_path: Path
) -> None:
    store = shared_store(tmp_path, database_url)
    cached = store.create_token("alice")
    uncached = store.create_token("alice")
    gateway = start_gateway(
        tmp_path,
        database_url,
        E6AUTH_LAST_USED_FLUSH_SECONDS="0.3",
        E6AUTH_INVALIDATION_POLL_SECONDS="0.3",
    )
    channel = grpc.insecure_channel(gateway.address)
    stub = QueryEngineServiceStub(channel)

    def last_used() -> dt.datetime | None:
        (info,) = [token for token in store.list_tokens("alice") if token.id == cached.id]
        return info.last_used_at

    try:
        assert bearer_call(stub, cached.token) == OK
        wait_for(lambda: last_used() is not None, "first last-used write", gateway)
        # Stored times are whole seconds: the use during the outage must fall in a later one,
        # and a cached token's uses are noted once a second: at least a second after the last.
        time.sleep(1.0 + 1.0 - time.time() % 1.0)

        cluster.stop()
        outage_began = dt.datetime.fromtimestamp(int(time.time()), dt.UTC)
        assert bearer_call(stub, uncached.token) == UNAVAILABLE
        assert bearer_call(stub, cached.token) == OK  # within its cache TTL
        # A flush runs every 0.3 s; let one fail at least.
        wait_for(lambda: "e6auth-last-used failed" in gateway.log.text, "failed flush", gateway)
        cluster.start()

        # No restart, and no retry by the client: the first call after the outage works.
        assert bearer_call(stub, uncached.token) == OK, gateway.log.text
        wait_for(
            lambda: (last_used() or outage_began) >= outage_began,
            "write of the last use during the outage",
            gateway,
        )
        store.delete_tokens([cached.id])
        wait_for(
            lambda: bearer_call(stub, cached.token) == ("UNAUTHENTICATED", "token revoked"),
            "refusal of a token deleted after the outage",
            gateway,
        )
        assert gateway.process.poll() is None
    finally:
        channel.close()
        gateway.stop()
        store.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("stale_if_error", "after_ttl"), [("0", UNAVAILABLE), ("30", OK)], ids=["default", "stale"]
)
def test_a_gateway_serves_cached_credentials_past_their_ttl_only_with_stale_if_error(
    cluster: ThrowawayCluster,
    database_url: str,
    tmp_path: Path,
    stale_if_error: str,
    after_ttl: tuple[str, str],
) -> None:
    store = shared_store(tmp_path, database_url)
    token = store.create_token("alice")
    env = {"E6AUTH_CACHE_TTL_SECONDS": "1"}
    if stale_if_error != "0":
        env["E6AUTH_STALE_IF_ERROR_SECONDS"] = stale_if_error
    gateway = start_gateway(tmp_path, database_url, **env)
    channel = grpc.insecure_channel(gateway.address)
    stub = QueryEngineServiceStub(channel)
    try:
        assert bearer_call(stub, token.token) == OK
        cluster.stop()
        time.sleep(1.2)  # a real process: its clock cannot be advanced
        assert bearer_call(stub, token.token) == after_ttl
        cluster.start()
        wait_for(lambda: bearer_call(stub, token.token) == OK, "recovery", gateway)
    finally:
        channel.close()
        gateway.stop()
        store.close()


# -- sessions opened from cached credentials (issue 15 point 3) ----------------------------------


@pytest.mark.timeout(60)
def test_a_session_opened_from_a_cached_credential_works_during_an_outage_on_its_terms(
    cluster: ThrowawayCluster, store: TokenStore, clock: FakeClock
) -> None:
    token = store.create_token("alice")
    auth = Authenticator(store, clock=clock, sessions=SessionParameters(SESSION_KEY.encode()))
    try:
        auth.verify("alice", token.token)
        auth.verify("alice", PASSWORD)
        cluster.stop()
        sessions = [
            auth.create_session(auth.verify("alice", secret)) for secret in (token.token, PASSWORD)
        ]
        for session_id in sessions:
            principal = auth.verify_session(session_id)  # no store read: the cache answers
            assert principal.username == "alice"
            assert principal.session_id is not None
        assert auth.verify_session(sessions[0]).token_id == token.id
        # Never longer than the credential's own entry: past its TTL, the session fails closed
        # with the credential (stale_if_error_seconds is 0).
        clock.advance(auth.cache.ttl_seconds + 1)  # type: ignore[union-attr]
        for session_id in sessions:
            with pytest.raises(StoreUnavailable) as excinfo:
                auth.verify_session(session_id)
            assert_unavailable(excinfo)
        cluster.start()
        for session_id in sessions:
            assert auth.verify_session(session_id).username == "alice"
    finally:
        cluster.ensure_running()
        auth.close()


@pytest.mark.timeout(60)
def test_a_connection_opened_during_an_outage_with_a_token_verified_seconds_ago_works(
    cluster: ThrowawayCluster, database_url: str, tmp_path: Path
) -> None:
    store = shared_store(tmp_path, database_url)
    token = store.create_token("alice")
    gateway = start_gateway(tmp_path, database_url)
    channel = grpc.insecure_channel(gateway.address)
    stub = QueryEngineServiceStub(channel)
    try:
        assert bearer_call(stub, token.token) == OK  # verified, and so cached
        cluster.stop()
        session = stub.authenticate(
            pb.AuthenticateRequest(user="alice", password=token.token), timeout=10
        ).sessionId
        answer = stub.getSchemaNamesV2(pb.GetSchemaNamesV2Request(sessionId=session), timeout=10)
        assert list(answer.schemas)
    finally:
        cluster.ensure_running()
        channel.close()
        gateway.stop()
        store.close()
