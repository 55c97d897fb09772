"""Per-token restrictions: address ranges and the read-only scope, stored on SQLite and PostgreSQL
and enforced by the authenticator on every call (explicit peers stand in for the network)."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import update

from e6auth.credentials.tokens import PREFIX, _checksum, generate_token, split_token
from e6auth.errors import UNIFORM_REFUSAL, AddressNotAllowed, InvalidTokenSecret, PolicyError
from e6auth.grpc import peer_address
from e6auth.store import TokenStore
from e6auth.store.schema import tokens
from e6auth.testing import FakeClock
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.parameters import CacheParameters, SessionParameters
from e6auth.verify.restrictions import (
    MAX_ALLOWED_RANGES,
    address_allowed,
    check_peer,
    load_allow_from,
    parse_allow_from,
)

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["cached", "uncached"])
def auth(
    request: pytest.FixtureRequest, store: TokenStore, clock: FakeClock
) -> Iterator[Authenticator]:
    """Every rule must hold on a cache hit as on a load."""
    ttl = 300.0 if request.param == "cached" else 0.0
    authenticator = Authenticator(
        store,
        clock=clock,
        cache=CacheParameters(ttl_seconds=ttl, password_ttl_seconds=ttl),
        sessions=SessionParameters(secrets.token_bytes(32)),
    )
    yield authenticator
    authenticator.close()


@pytest.fixture
def users(store: TokenStore) -> TokenStore:
    store.create_user("alice", PASSWORD)
    return store


# -- validation --------------------------------------------------------------------------------


def test_ranges_are_normalised_deduplicated_and_keep_their_order() -> None:
    assert [str(n) for n in parse_allow_from(["10.0.0.0/8", "2001:DB8::/32", "10.0.0.0/8"])] == [
        "10.0.0.0/8",
        "2001:db8::/32",
    ]
    assert [str(n) for n in parse_allow_from(["192.0.2.7", "::1"])] == ["192.0.2.7/32", "::1/128"]


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        (["10.0.0.7/8"], "host bits set: did you mean '10.0.0.0/8'"),
        (["2001:db8::1/32"], "did you mean '2001:db8::/32'"),
        (["10.0.0.0/33"], "not a CIDR range"),
        (["example.com"], "not a CIDR range"),
        (["10.0.0.0/8 10.1.0.0/16"], "not a CIDR range"),
        ([""], "must be CIDR text"),
        ([], "at least one"),
        ("10.0.0.0/8", "not one string"),
        (
            [f"10.{i}.0.0/16" for i in range(MAX_ALLOWED_RANGES + 1)],
            f"at most {MAX_ALLOWED_RANGES}",
        ),
    ],
)
def test_bad_ranges_are_refused_with_a_clear_message(ranges: list[str], message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("(", r"\(")):
        parse_allow_from(ranges)


def test_the_most_ranges_allowed_are_accepted() -> None:
    many = [f"10.{i}.0.0/16" for i in range(MAX_ALLOWED_RANGES)]
    assert len(parse_allow_from(many)) == MAX_ALLOWED_RANGES


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("ipv4:10.1.2.3:5123", True),
        ("ipv4:11.1.2.3:5123", False),
        ("ipv6:[::ffff:10.0.0.7]:5123", True),  # a dual-stack listener's IPv4 client
        ("ipv6:[::ffff:11.0.0.7]:5123", False),
        ("ipv6:[2001:db8::5]:443", True),
        ("ipv6:[2001:db9::5]:443", False),
        ("ipv6:[::1]:443", False),
        ("unix:/run/e6auth.sock", False),
        ("unix-abstract:e6auth", False),
        ("", False),
        ("garbage", False),
    ],
)
def test_peer_membership(peer: str, allowed: bool) -> None:
    networks = parse_allow_from(["10.0.0.0/8", "2001:db8::/32"])
    assert address_allowed(networks, peer_address(peer)) is allowed


def test_no_peer_at_all_is_refused() -> None:
    with pytest.raises(AddressNotAllowed):
        check_peer(parse_allow_from(["0.0.0.0/0", "::/0"]), None, token_id="x")


def test_a_stored_value_e6auth_did_not_write_allows_nothing() -> None:
    assert load_allow_from(None) is None
    assert load_allow_from("not json") == ()
    assert load_allow_from('{"10.0.0.0/8": 1}') == ()
    assert load_allow_from('["10.0.0.0/8", 7]') == ()
    assert load_allow_from('["10.0.0.0/8"]') == (ipaddress.ip_network("10.0.0.0/8"),)


# -- storage -----------------------------------------------------------------------------------


def test_restrictions_are_stored_and_listed(users: TokenStore) -> None:
    plain = users.create_token("alice")
    limited = users.create_token("alice", allow_from=["10.0.0.0/8", "2001:db8::/32"])
    reader = users.create_token("alice", read_only=True)
    assert (plain.allow_from, plain.scope) == (None, "all")
    assert (limited.allow_from, limited.scope) == (("10.0.0.0/8", "2001:db8::/32"), "all")
    assert (reader.allow_from, reader.scope) == (None, "read_only")
    listed = {info.id: (info.allow_from, info.scope) for info in users.list_tokens("alice")}
    assert listed == {
        plain.id: (None, "all"),
        limited.id: (("10.0.0.0/8", "2001:db8::/32"), "all"),
        reader.id: (None, "read_only"),
    }
    record = users.find_token(limited.id)
    assert record is not None
    assert load_allow_from(record.allow_from) == parse_allow_from(["10.0.0.0/8", "2001:db8::/32"])
    # Every listing shows them, the single-token one (`token check`) included.
    for token in (limited, reader):
        info = users.find_token_info(token.id)
        assert info is not None
        assert (info.allow_from, info.scope) == listed[token.id]


def test_a_bad_range_creates_no_token(users: TokenStore) -> None:
    with pytest.raises(PolicyError, match="host bits"):
        users.create_token("alice", allow_from=["10.0.0.1/8"])
    assert users.list_tokens("alice") == []


# -- enforcement -------------------------------------------------------------------------------


@pytest.mark.parametrize("repeat", [1, 3], ids=["load", "cache-hit"])
def test_a_restricted_token_works_only_from_its_ranges(
    auth: Authenticator, users: TokenStore, repeat: int
) -> None:
    new = users.create_token("alice", allow_from=["10.0.0.0/8"])
    for _ in range(repeat):
        assert auth.verify_token(new.token, peer="10.9.8.7").token_id == new.id
        assert auth.verify("alice", new.token, peer=lambda: "::ffff:10.0.0.1").token_id == new.id
        with pytest.raises(AddressNotAllowed) as refused:
            auth.verify_token(new.token, peer="192.168.1.1")
        with pytest.raises(AddressNotAllowed):
            auth.verify("alice", new.token, peer=lambda: "192.168.1.1")
        with pytest.raises(AddressNotAllowed):
            auth.verify_token(new.token, peer="unix:/tmp/sock")
        with pytest.raises(AddressNotAllowed):
            auth.verify_token(new.token)
    error = refused.value
    assert error.grpc_status == "PERMISSION_DENIED"
    assert error.reason == "address_not_allowed"
    assert new.token not in str(error)
    assert new.token not in repr(error)
    assert split_token(new.token).secret not in str(error)


def test_the_address_is_checked_only_after_the_secret(
    auth: Authenticator, users: TokenStore
) -> None:
    """A wrong secret from a forbidden address is the uniform refusal: an outsider learns
    nothing about the token's restrictions."""
    new = users.create_token("alice", allow_from=["10.0.0.0/8"])
    _parsed, other = generate_token()
    body = f"{PREFIX}{new.id}_{split_token(other).secret}"
    forged = body + _checksum(body)
    with pytest.raises(InvalidTokenSecret) as refused:
        auth.verify_token(forged, peer="192.168.1.1")
    assert refused.value.client_message() == UNIFORM_REFUSAL


def test_unrestricted_tokens_ignore_the_peer(auth: Authenticator, users: TokenStore) -> None:
    new = users.create_token("alice")
    calls = []

    def peer() -> str:
        calls.append(1)
        return "unix:/tmp/sock"

    for _ in range(3):
        assert auth.verify_token(new.token, peer=peer).allow_from is None
    # The recorder samples the peer; an unrestricted token is never refused for it.
    assert len(calls) <= 1


def test_a_session_made_with_a_restricted_token_is_checked_on_every_call(
    auth: Authenticator, users: TokenStore
) -> None:
    new = users.create_token("alice", allow_from=["10.0.0.0/8", "2001:db8::/32"])
    session = auth.create_session(auth.verify("alice", new.token, peer="10.0.0.5"))
    for _ in range(3):
        assert auth.verify_session(session, peer="10.200.0.1").token_id == new.id
        assert auth.verify_session(session, peer=lambda: "2001:db8::9").token_id == new.id
        # The session id stolen and replayed from elsewhere is refused.
        with pytest.raises(AddressNotAllowed):
            auth.verify_session(session, peer="203.0.113.9")
        with pytest.raises(AddressNotAllowed):
            auth.verify_session(session, peer=lambda: "unix:/tmp/sock")
        with pytest.raises(AddressNotAllowed):
            auth.verify_session(session)


def test_the_principal_carries_the_scope(auth: Authenticator, users: TokenStore) -> None:
    reader = users.create_token("alice", read_only=True)
    writer = users.create_token("alice")
    assert auth.verify_token(reader.token).read_only is True
    assert auth.verify_token(writer.token).read_only is False
    session = auth.create_session(auth.verify("alice", reader.token))
    assert auth.verify_session(session).read_only is True
    assert auth.verify("alice", PASSWORD).read_only is False


def test_an_unknown_stored_scope_is_read_only(users: TokenStore, auth: Authenticator) -> None:
    """Fail closed: a scope this version does not know is treated as the narrowest one."""
    new = users.create_token("alice")
    with users.engine.begin() as connection:
        connection.execute(update(tokens).where(tokens.c.id == new.id).values(scope="future"))
    assert auth.verify_token(new.token).read_only is True
