"""The token store on SQLite and PostgreSQL: users, tokens, what is kept, and what is refused."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, Table, event, inspect, select

from e6auth.clock import to_datetime
from e6auth.credentials.keys import Pepper
from e6auth.credentials.passwords import Passwords
from e6auth.credentials.tokens import generate_token, parse_token
from e6auth.errors import (
    InvalidUsername,
    PolicyError,
    SchemaOutOfDate,
    StoreUnavailable,
    UserExists,
    UserNotFound,
)
from e6auth.settings import Settings
from e6auth.store import TokenStore
from e6auth.store.database import create_store_engine
from e6auth.store.migrate import current_revision, head_revision
from e6auth.store.schema import ended_sessions, tokens
from e6auth.store.token_store import MAX_COMMENT_LENGTH, MAX_EXPIRES_DAYS
from e6auth.testing import FAST_ARGON2, FakeClock, memory_store

PASSWORD = "correct horse battery staple"
DAY = 86_400


# -- users -------------------------------------------------------------------------------------


def test_create_user_stores_the_canonical_name(store: TokenStore, clock: FakeClock) -> None:
    info = store.create_user("Alice@Example.COM", PASSWORD)

    assert info.name == "alice@example.com"
    assert info.has_password is True
    assert info.disabled is False
    assert info.created_at == to_datetime(clock())
    record = store.find_user("ALICE@example.com")
    assert record is not None
    assert record.id == info.id
    assert record.password_generation == 0
    assert record.password_hash is not None
    assert store.passwords.verify(record.password_hash, PASSWORD)


@pytest.mark.parametrize("again", ["alice", "ALICE", "aLiCe"])
def test_user_names_are_unique_whatever_their_case(store: TokenStore, again: str) -> None:
    store.create_user("Alice", PASSWORD)

    with pytest.raises(UserExists, match="alice"):
        store.create_user(again, "another password")
    assert [user.name for user in store.list_users()] == ["alice"]


@pytest.mark.parametrize("name", ["", "al ice", "x'; drop table--", "a..b", "ålice"])
def test_create_user_refuses_invalid_names(store: TokenStore, name: str) -> None:
    with pytest.raises(InvalidUsername):
        store.create_user(name, PASSWORD)
    assert store.list_users() == []


def test_password_that_looks_like_a_token_is_refused(store: TokenStore) -> None:
    # Such a password would be taken for a token by the handshake and could never log in.
    _, token = generate_token()

    with pytest.raises(PolicyError, match="token"):
        store.create_user("alice", token)
    assert store.list_users() == []

    store.create_user("alice", PASSWORD)
    with pytest.raises(PolicyError, match="token"):
        store.set_password("alice", token)


def test_empty_password_is_refused(store: TokenStore) -> None:
    with pytest.raises(PolicyError):
        store.create_user("alice", "")
    assert store.list_users() == []


def test_user_without_password(store: TokenStore) -> None:
    info = store.create_user("robot")

    assert info.has_password is False
    record = store.find_user("robot")
    assert record is not None
    assert record.password_hash is None


def test_set_password_replaces_it_and_bumps_the_generation(store: TokenStore) -> None:
    store.create_user("alice", PASSWORD)

    store.set_password("Alice", "a new password")
    store.set_password("alice", "and another one")

    record = store.find_user("alice")
    assert record is not None
    assert record.password_generation == 2
    assert record.password_hash is not None
    assert store.passwords.verify(record.password_hash, "and another one")
    assert not store.passwords.verify(record.password_hash, PASSWORD)


def test_signing_out_everywhere_bumps_only_that_users_session_generation(
    store: TokenStore,
) -> None:
    store.create_user("alice", PASSWORD)
    store.create_user("bob", PASSWORD)

    store.sign_out_everywhere("Alice")
    store.sign_out_everywhere("alice")

    alice, bob = store.find_user("alice"), store.find_user("bob")
    assert alice is not None
    assert bob is not None
    assert (alice.session_generation, bob.session_generation) == (2, 0)
    with pytest.raises(UserNotFound, match="nobody"):
        store.sign_out_everywhere("nobody")


def test_an_ended_session_is_kept_until_it_would_have_expired(
    store: TokenStore, clock: FakeClock
) -> None:
    until = store.now() + dt.timedelta(hours=1)
    store.end_session("session-one", expires_at=until)
    store.end_session("session-one", expires_at=until)  # twice: still one record, no error

    assert store.session_ended("session-one")
    assert not store.session_ended("session-two")
    clock.advance(3601)
    store.end_session("session-two", expires_at=store.now() + dt.timedelta(hours=1))
    with store.engine.connect() as connection:
        stored = connection.execute(select(ended_sessions.c.session_hash)).scalars().all()
    assert len(stored) == 1  # the first, past its expiry, was pruned by the second
    assert store.session_ended("session-two")
    assert b"session-two" not in bytes(stored[0])


def test_set_password_of_a_user_without_one(store: TokenStore) -> None:
    store.create_user("robot")
    store.set_password("robot", PASSWORD)

    assert [user.has_password for user in store.list_users()] == [True]


@pytest.mark.parametrize("action", ["set_password", "disable_user", "enable_user"])
def test_changing_an_unknown_user_raises_user_not_found(store: TokenStore, action: str) -> None:
    store.create_user("alice", PASSWORD)
    arguments = ("bob", PASSWORD) if action == "set_password" else ("bob",)

    with pytest.raises(UserNotFound, match="bob"):
        getattr(store, action)(*arguments)


def test_disable_and_enable(store: TokenStore) -> None:
    store.create_user("alice", PASSWORD)
    store.create_user("bob", PASSWORD)

    store.disable_user("ALICE")
    record = store.find_user("alice")
    assert record is not None
    assert record.disabled is True
    assert {user.name: user.disabled for user in store.list_users()} == {
        "alice": True,
        "bob": False,
    }

    store.enable_user("alice")
    record = store.find_user("alice")
    assert record is not None
    assert record.disabled is False


def test_administrators_are_made_at_creation_or_granted_later_and_nobody_else_is_one(
    store: TokenStore,
) -> None:
    made = store.create_user("root", PASSWORD, admin=True)
    store.create_user("alice", PASSWORD)
    assert made.admin is True

    store.set_admin("ALICE", True)
    store.set_admin("root", False)

    assert {user.name: user.admin for user in store.list_users()} == {
        "alice": True,
        "root": False,
    }
    alice = store.find_user("alice")
    assert alice is not None
    assert alice.admin is True
    with pytest.raises(UserNotFound):
        store.set_admin("nobody", True)


def test_list_users_sorted_by_name(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("carol", PASSWORD)
    clock.advance(5)
    store.create_user("Alice")
    store.create_user("bob@example.com", PASSWORD)

    users = store.list_users()
    assert [user.name for user in users] == ["alice", "bob@example.com", "carol"]
    assert [user.has_password for user in users] == [False, True, True]
    assert users[2].created_at == to_datetime(clock() - 5)
    assert len({user.id for user in users}) == 3


def test_find_user_with_an_impossible_name_is_none(store: TokenStore) -> None:
    store.create_user("alice", PASSWORD)
    assert store.find_user("nobody") is None
    assert store.find_user("not a name") is None


# -- creating tokens ---------------------------------------------------------------------------


def test_create_token(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("alice", PASSWORD)

    new = store.create_token("ALICE", comment="laptop")

    parsed = parse_token(new.token)
    assert new.id == parsed.id
    assert new.user == "alice"
    assert new.comment == "laptop"
    assert new.created_at == to_datetime(clock())
    assert new.expires_at is None
    assert new.token not in repr(new)
    assert parsed.secret not in repr(new)


def test_create_token_for_an_unknown_user(store: TokenStore) -> None:
    with pytest.raises(UserNotFound, match="bob"):
        store.create_token("bob")
    with pytest.raises(InvalidUsername):
        store.create_token("not a name")


def test_comment_limits(store: TokenStore) -> None:
    store.create_user("alice")

    longest = "c" * MAX_COMMENT_LENGTH
    assert store.create_token("alice", comment=longest).comment == longest
    assert store.create_token("alice", comment="déploiement 🚀 #3").comment == "déploiement 🚀 #3"
    # An empty comment is no comment.
    assert store.create_token("alice", comment="").comment is None
    with pytest.raises(PolicyError, match=str(MAX_COMMENT_LENGTH)):
        store.create_token("alice", comment="c" * (MAX_COMMENT_LENGTH + 1))


@pytest.mark.parametrize(
    "comment",
    ["two\nlines", "cr\rreturn", "tab\there", "nul\x00", "esc\x1b[31m", "del\x7f", "\u2028"],
)
def test_comment_must_be_one_printable_line(store: TokenStore, comment: str) -> None:
    # Comments are printed in listings: control characters could forge lines or colours there.
    store.create_user("alice")

    with pytest.raises(PolicyError):
        store.create_token("alice", comment=comment)
    assert store.list_tokens() == []


@pytest.mark.parametrize("days", [0, -1, True, False, MAX_EXPIRES_DAYS + 1])
def test_expiry_days_out_of_range_are_refused(store: TokenStore, days: int) -> None:
    store.create_user("alice")

    with pytest.raises(PolicyError, match="days"):
        store.create_token("alice", expires_days=days)
    assert store.list_tokens() == []


@pytest.mark.parametrize("days", [1, 30, MAX_EXPIRES_DAYS])
def test_expiry_is_exact_to_the_second(store: TokenStore, clock: FakeClock, days: int) -> None:
    store.create_user("alice")
    # Off the whole second: stored times are truncated to the second, expiry included.
    clock.advance(0.75)

    new = store.create_token("alice", expires_days=days)

    assert new.created_at.timestamp() == int(clock())
    assert new.expires_at == new.created_at + dt.timedelta(days=days)
    assert new.expires_at is not None
    assert new.expires_at.timestamp() == int(clock()) + days * DAY
    # And the same, to the second and in UTC, after a round trip through the database.
    (listed,) = store.list_tokens()
    assert listed.created_at == new.created_at
    assert listed.expires_at == new.expires_at
    assert listed.expires_at is not None
    assert listed.expires_at.utcoffset() == dt.timedelta(0)
    record = store.find_token(new.id)
    assert record is not None
    assert record.expires_at == new.expires_at


# -- listing tokens ----------------------------------------------------------------------------


def test_list_tokens_all_or_per_user(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("alice")
    store.create_user("bob")
    first = store.create_token("alice", comment="one")
    clock.advance(1)
    second = store.create_token("bob", comment="two")
    clock.advance(1)
    third = store.create_token("alice")

    assert [info.id for info in store.list_tokens()] == [first.id, second.id, third.id]
    assert [info.id for info in store.list_tokens("ALICE")] == [first.id, third.id]
    assert [(info.user, info.comment) for info in store.list_tokens("bob")] == [("bob", "two")]


def test_list_tokens_of_a_user_without_tokens_is_empty(store: TokenStore) -> None:
    store.create_user("alice")
    assert store.list_tokens("alice") == []


def test_list_tokens_of_an_unknown_user(store: TokenStore) -> None:
    store.create_user("alice")
    store.create_token("alice")

    with pytest.raises(UserNotFound, match="bob"):
        store.list_tokens("bob")


def test_listings_never_show_a_secret(store: TokenStore) -> None:
    store.create_user("alice")
    new = store.create_token("alice")
    secret = parse_token(new.token).secret

    (info,) = store.list_tokens()
    assert secret not in repr(info)
    assert not any(isinstance(value, bytes) for value in (getattr(info, f) for f in info.__slots__))


def test_token_status_follows_the_clock(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("alice")
    expiring = store.create_token("alice", expires_days=1)
    forever = store.create_token("alice")
    revoked = store.create_token("alice", expires_days=1)
    store.delete_tokens([revoked.id])

    def statuses() -> dict[str, str]:
        return {info.id: info.status(store.now()) for info in store.list_tokens()}

    assert statuses() == {expiring.id: "active", forever.id: "active", revoked.id: "revoked"}
    clock.advance(DAY - 1)
    assert statuses()[expiring.id] == "active"
    clock.advance(1)
    assert statuses() == {expiring.id: "expired", forever.id: "active", revoked.id: "revoked"}
    clock.advance(100 * 365 * DAY)
    assert statuses()[forever.id] == "active"


# -- deleting tokens ---------------------------------------------------------------------------


def test_delete_several_tokens_at_once(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("alice")
    one, two, keep = (store.create_token("alice") for _ in range(3))
    clock.advance(10)

    result = store.delete_tokens([one.id, two.id])

    assert result.deleted == (one.id, two.id)
    assert result.already_deleted == ()
    assert result.unknown == ()
    assert result.all_found
    revoked_at = {info.id: info.revoked_at for info in store.list_tokens()}
    assert revoked_at == {one.id: to_datetime(clock()), two.id: to_datetime(clock()), keep.id: None}


def test_unknown_and_malformed_ids_are_reported_and_the_rest_revoked(store: TokenStore) -> None:
    store.create_user("alice")
    target = store.create_token("alice")
    bystander = store.create_token("alice")
    nonexistent = generate_token()[0].id
    # Ids are case-sensitive: the swapped-case twin of a real id is another (unknown) id.
    twin = target.id.swapcase() if target.id.swapcase() != target.id else "Z" * 12
    malformed = ["", "short", "x' OR '1'='1", target.token, "e6pat_" + target.id, "%" * 12]

    result = store.delete_tokens([nonexistent, target.id, twin, *malformed, target.id])

    assert result.deleted == (target.id,)
    assert result.already_deleted == ()
    assert result.unknown == (nonexistent, twin, *malformed)
    assert not result.all_found
    status = {info.id: info.revoked_at is not None for info in store.list_tokens()}
    assert status == {target.id: True, bystander.id: False}


def test_deleting_again_reports_already_deleted(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("alice")
    old = store.create_token("alice")
    new = store.create_token("alice")
    store.delete_tokens([old.id])
    first_revocation = {info.id: info.revoked_at for info in store.list_tokens()}[old.id]
    assert first_revocation is not None
    clock.advance(60)

    result = store.delete_tokens([old.id, new.id])

    assert result.deleted == (new.id,)
    assert result.already_deleted == (old.id,)
    assert result.unknown == ()
    assert result.all_found
    # The first revocation time stands.
    assert {info.id: info.revoked_at for info in store.list_tokens()}[old.id] == first_revocation


def test_delete_with_nothing_to_delete(store: TokenStore) -> None:
    result = store.delete_tokens([])
    assert (result.deleted, result.already_deleted, result.unknown) == ((), (), ())
    assert store.delete_tokens(["nope"]).unknown == ("nope",)


def test_delete_scoped_to_a_user_touches_only_their_tokens(store: TokenStore) -> None:
    store.create_user("alice")
    store.create_user("bob")
    mine = store.create_token("alice")
    theirs = store.create_token("bob")

    result = store.delete_tokens([mine.id, theirs.id], user="Alice")

    assert result.deleted == (mine.id,)
    # Another user's token is reported as unknown: its existence is not the caller's business.
    assert result.unknown == (theirs.id,)
    bob_token = store.find_token(theirs.id)
    assert bob_token is not None
    assert bob_token.revoked_at is None
    assert store.delete_tokens([theirs.id], user="carol").unknown == (theirs.id,)


# -- finding tokens ----------------------------------------------------------------------------


def test_find_token(store: TokenStore, clock: FakeClock) -> None:
    store.create_user("alice")
    new = store.create_token("alice", expires_days=7)
    secret = parse_token(new.token).secret

    record = store.find_token(new.id)

    assert record is not None
    assert record.id == new.id
    assert record.user == "alice"
    assert record.user_disabled is False
    assert record.expires_at == new.expires_at
    assert record.revoked_at is None
    assert record.digest == store.token_digest(secret, record.pepper_id)
    assert len(record.digest) == 32
    assert record.digest.hex() not in repr(record)
    assert store.find_token(generate_token()[0].id) is None

    store.disable_user("alice")
    store.delete_tokens([new.id])
    record = store.find_token(new.id)
    assert record is not None
    assert record.user_disabled is True
    assert record.revoked_at == to_datetime(clock())


# -- what the database holds -------------------------------------------------------------------


def _all_values(engine: Engine) -> list[object]:
    """Every value of every column of every table the store's connection can see."""
    values: list[object] = []
    with engine.connect() as connection:
        for name in inspect(connection).get_table_names():
            table = Table(name, MetaData(), autoload_with=connection)
            for row in connection.execute(select(table)):
                values.extend(row)
    return values


def _texts_of(values: list[object]) -> list[str | bytes]:
    texts: list[str | bytes] = []
    for value in values:
        if isinstance(value, bytes | bytearray | memoryview):
            texts.append(bytes(value))
            texts.append(bytes(value).hex())
        texts.append(str(value))
    return texts


def _fill(store: TokenStore, clock: FakeClock) -> tuple[str, str, Pepper]:
    """Users and tokens in the store's database, made under a pepper the test knows:
    (a full token, its secret, the pepper)."""
    pepper = Pepper(secrets.token_bytes(32))
    known = TokenStore(store.engine, pepper=pepper, passwords=store.passwords, clock=clock)
    known.create_user("alice", PASSWORD)
    known.create_token("alice", comment="the other one")
    new = known.create_token("alice", comment="the one we look for", expires_days=3)
    known.delete_tokens([known.create_token("alice").id])
    return new.token, parse_token(new.token).secret, pepper


def test_no_secret_in_any_row(store: TokenStore, clock: FakeClock) -> None:
    token, secret, pepper = _fill(store, clock)
    needles = [
        token,
        secret,
        PASSWORD,
        pepper.key.hex(),
        base64.b64encode(pepper.key).decode(),
        base64.urlsafe_b64encode(pepper.key).decode(),
    ]

    values = _all_values(store.engine)
    assert "the one we look for" in values  # the rows were really read
    for haystack in _texts_of(values):
        if isinstance(haystack, bytes):
            assert secret.encode() not in haystack
            assert pepper.key not in haystack
        else:
            for needle in needles:
                assert needle not in haystack


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    return tmp_path / "file.db"


@pytest.fixture
def sqlite_store(sqlite_file: Path, clock: FakeClock) -> Iterator[TokenStore]:
    store = memory_store(clock=clock, url=f"sqlite:///{sqlite_file}")
    yield store
    store.close()


def _file_bytes(path: Path) -> bytes:
    files = [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]
    return b"".join(file.read_bytes() for file in files if file.exists())


def test_no_secret_in_the_sqlite_files(
    sqlite_file: Path, sqlite_store: TokenStore, clock: FakeClock
) -> None:
    token, secret, pepper = _fill(sqlite_store, clock)
    needles = [
        token.encode(),
        secret.encode(),
        PASSWORD.encode(),
        pepper.key,
        pepper.key.hex().encode(),
        base64.b64encode(pepper.key),
        base64.urlsafe_b64encode(pepper.key),
    ]
    # While open, recent writes live in the -wal file; after closing, in the database file.
    while_open = _file_bytes(sqlite_file)
    sqlite_store.close()
    after_close = _file_bytes(sqlite_file)

    for content in (while_open, after_close):
        assert b"the one we look for" in content  # the data really is in what was read
        for needle in needles:
            assert needle not in content


def test_stored_digest_is_the_hmac_under_the_configured_pepper(store: TokenStore) -> None:
    pepper = Pepper(secrets.token_bytes(32))
    known = TokenStore(store.engine, pepper=pepper, passwords=store.passwords)
    known.create_user("alice")
    new = known.create_token("alice")

    with store.engine.connect() as connection:
        digest = connection.execute(
            select(tokens.c.digest).where(tokens.c.id == new.id)
        ).scalar_one()
    assert bytes(digest) == pepper.digest(parse_token(new.token).secret)


# -- opening a store from settings -------------------------------------------------------------


def test_a_store_closes_on_leaving_its_with_block_even_by_an_error(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'store.db'}")
    closed: list[object] = []

    def use_and_fail() -> None:
        with TokenStore.from_settings(settings) as store:
            event.listen(store.engine, "close", lambda *connection: closed.append(connection))
            assert store.list_users() == []  # a connection now waits in the pool
            raise LookupError

    with pytest.raises(LookupError):
        use_and_fail()
    assert closed, "the pooled connection stays open"


def test_from_settings_migrates_an_empty_sqlite_file(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    settings = Settings(database_url=f"sqlite:///{path}", argon2_memory_kib=64, argon2_time_cost=1)

    store = TokenStore.from_settings(settings, clock=clock)
    try:
        assert current_revision(store.engine) == head_revision()
        store.create_user("alice")
        store.create_token("alice")
        assert len(store.list_tokens()) == 1
    finally:
        store.close()


def test_from_default_settings_makes_a_private_database_in_home(tmp_path: Path) -> None:
    store = TokenStore.from_settings(Settings(home=tmp_path / "home"))
    try:
        store.create_user("alice")
        database = tmp_path / "home" / "e6auth.db"
        assert database.is_file()
        assert database.stat().st_mode & 0o077 == 0
        assert (tmp_path / "home" / "pepper").is_file()
    finally:
        store.close()
    # Reopening finds the same data and the same pepper.
    again = TokenStore.from_settings(Settings(home=tmp_path / "home"))
    try:
        assert [user.name for user in again.list_users()] == ["alice"]
    finally:
        again.close()


@pytest.mark.postgres
def test_postgres_without_auto_migrate_refuses_an_empty_schema(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url)
    assert settings.migrate_on_first_use is False

    with pytest.raises(SchemaOutOfDate) as caught:
        TokenStore.from_settings(settings)

    assert "e6auth db upgrade" in str(caught.value)
    assert isinstance(caught.value, StoreUnavailable)
    # Refused, not half-done: nothing was created behind the operator's back.
    engine = create_store_engine(postgres_url)
    try:
        with engine.connect() as connection:
            assert inspect(connection).get_table_names() == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_with_auto_migrate_upgrades(postgres_url: str) -> None:
    store = TokenStore.from_settings(Settings(database_url=postgres_url, auto_migrate=True))
    try:
        assert current_revision(store.engine) == head_revision()
        # A second open finds the schema current and does not need to migrate.
        TokenStore.from_settings(Settings(database_url=postgres_url)).close()
    finally:
        store.close()


UNREACHABLE = "postgresql+psycopg://e6admin:Hunter2-Db-Passw0rd@127.0.0.1:1/test?connect_timeout=3"


def _chain_texts(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + repr(error.__cause__)


def test_unreachable_database_on_open(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url=UNREACHABLE, auto_migrate=True)

    with pytest.raises(StoreUnavailable) as caught:
        TokenStore.from_settings(settings)

    assert caught.value.grpc_status == "UNAVAILABLE"
    assert "Hunter2-Db-Passw0rd" not in _chain_texts(caught.value)


def test_unreachable_database_on_use() -> None:
    store = TokenStore(
        create_store_engine(UNREACHABLE),
        pepper=Pepper(secrets.token_bytes(32)),
        passwords=Passwords(FAST_ARGON2),
    )
    try:
        for call in (
            lambda: store.find_user("alice"),
            lambda: store.find_token("A" * 12),
            lambda: store.list_users(),
            lambda: store.create_user("alice"),
        ):
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert "Hunter2-Db-Passw0rd" not in _chain_texts(caught.value)
        assert "Hunter2-Db-Passw0rd" not in repr(store)
    finally:
        store.close()
