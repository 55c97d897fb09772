"""Service accounts: users that are no people (no password, no web sign-in), owned by
administrators who manage their tokens on the page and from the command line, under the same
policy and audit as everyone's."""

from __future__ import annotations

import json
import re

import pytest
from test_cli import PASSWORD, Cli, _cheap_hashing, _restore_root_logging, add_user, cli
from test_web import ADMIN_PASSWORD, CSRF_FIELD, NEW_TOKEN, Site, site, sqlite_store

from e6auth import TokenStore
from e6auth.background.audit import AuditLog
from e6auth.errors import InvalidPassword, PolicyError, UserNotFound
from e6auth.store import AuditStore
from e6auth.testing import FakeClock
from e6auth.verify.policy import Policy

# Fixtures of the modules above, found by pytest under these names.
__all__ = ["_cheap_hashing", "_restore_root_logging", "cli", "site", "sqlite_store"]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def etl(sqlite_store: TokenStore) -> str:
    sqlite_store.create_user("ops", ADMIN_PASSWORD, admin=True)
    sqlite_store.create_service_account("etl", owners=["root"])
    return "etl"


# -- the store ---------------------------------------------------------------------------------


def test_a_service_account_has_no_password_and_administrators_as_owners(
    sqlite_store: TokenStore,
) -> None:
    made = sqlite_store.create_service_account("ETL", owners=["root"])
    assert (made.name, made.service, made.has_password, made.owners) == (
        "etl",
        True,
        False,
        ("root",),
    )
    listed = {user.name: user for user in sqlite_store.list_users()}
    assert (listed["etl"].service, listed["etl"].owners) == (True, ("root",))
    assert (listed["alice"].service, listed["alice"].owners) == (False, ())
    record = sqlite_store.find_user("etl")
    assert record is not None
    assert (record.service, record.password_hash) == (True, None)


def test_only_administrators_own_service_accounts_and_one_is_needed(
    sqlite_store: TokenStore,
) -> None:
    with pytest.raises(PolicyError, match="alice is no administrator"):
        sqlite_store.create_service_account("etl", owners=["alice"])
    with pytest.raises(UserNotFound):
        sqlite_store.create_service_account("etl", owners=["nobody"])
    with pytest.raises(PolicyError, match="at least one owner"):
        sqlite_store.create_service_account("etl", owners=[])
    assert sqlite_store.find_user("etl") is None


def test_owners_are_added_and_removed_but_never_all(sqlite_store: TokenStore, etl: str) -> None:
    assert sqlite_store.set_service_owners(etl, add=["ops"]) == ("ops", "root")
    assert sqlite_store.owned_service_accounts("ops") == ["etl"]
    assert sqlite_store.set_service_owners(etl, remove=["root"]) == ("ops",)
    assert sqlite_store.owned_service_accounts("root") == []
    with pytest.raises(PolicyError, match="no owner left"):
        sqlite_store.set_service_owners(etl, remove=["ops"])
    with pytest.raises(PolicyError, match="no service account"):
        sqlite_store.set_service_owners("alice", add=["ops"])


def test_a_service_accounts_token_works_and_no_password_does(site: Site, etl: str) -> None:
    token = site.store.create_token(etl, read_only=True).token
    principal = site.auth.verify(etl, token)
    assert (principal.username, principal.read_only) == ("etl", True)
    with pytest.raises(InvalidPassword):
        site.auth.verify_password(etl, "")


# -- the page ----------------------------------------------------------------------------------


def test_an_owner_makes_lists_and_deletes_its_tokens_on_the_page_audited_as_theirs(
    site: Site, etl: str
) -> None:
    audit = AuditLog(AuditStore(site.store.engine), clock=site.clock)
    site.auth.audit = audit
    page = site.signed_in("root", ADMIN_PASSWORD)
    listing = page.client.get("/tokens")
    assert '<a href="/service-accounts/etl">etl</a>' in listing.text

    form = page.client.get("/service-accounts/etl/new")
    assert form.status_code == 200
    assert 'action="/service-accounts/etl/tokens"' in form.text
    csrf = CSRF_FIELD.search(form.text)
    assert csrf is not None
    made = page.client.post(
        "/service-accounts/etl/tokens",
        data={
            "csrf": csrf[1],
            "comment": "nightly load",
            "expires_days": "30",
            "read_only": "on",
            "allow_from": "10.0.0.0/8",
        },
    )
    assert made.status_code == 201, made.text
    found = NEW_TOKEN.search(made.text)
    assert found is not None
    token = found[1]
    token_id = token.split("_")[1]
    [info] = site.store.list_tokens(etl)
    assert (info.id, info.comment, info.scope, info.allow_from) == (
        token_id,
        "nightly load",
        "read_only",
        ("10.0.0.0/8",),
    )
    assert info.expires_at is not None

    shown = page.client.get("/service-accounts/etl")
    assert re.findall(r'<tr data-token="([^"]+)"', shown.text) == [token_id]
    assert token not in shown.text
    assert page.delete(token_id).status_code == 303
    assert site.store.list_tokens(etl)[0].revoked_at is not None

    audit.flush()
    events = [
        (event.kind, event.username, event.token_id, event.method)
        for event in AuditStore(site.store.engine).auth_events()
        if event.kind.startswith("token_")
    ]
    assert events == [
        ("token_created", "etl", token_id, "web:root"),
        ("token_deleted", "etl", token_id, "web:root"),
    ]


def test_the_policy_applies_to_service_account_tokens_made_on_the_page(
    sqlite_store: TokenStore, clock: FakeClock
) -> None:
    sqlite_store.policy = Policy(max_token_lifetime_days=7)
    sqlite_store.create_service_account("etl", owners=["root"])
    site = Site(sqlite_store, clock)
    try:
        page = site.signed_in("root", ADMIN_PASSWORD)
        csrf = page.csrf("/service-accounts/etl/new")
        answer = page.client.post(
            "/service-accounts/etl/tokens", data={"csrf": csrf, "expires_days": "30"}
        )
        assert answer.status_code == 400
        assert "Tokens must expire within 7 days" in answer.text
        assert sqlite_store.list_tokens("etl") == []
    finally:
        site.close()


@pytest.mark.parametrize(
    ("who", "password"), [("ops", ADMIN_PASSWORD), ("alice", PASSWORD)], ids=["other-admin", "user"]
)
def test_someone_who_does_not_own_it_finds_no_such_page(
    site: Site, etl: str, who: str, password: str
) -> None:
    page = site.signed_in(who, password)
    assert page.client.get("/service-accounts/etl").status_code == 404
    assert page.client.get("/service-accounts/etl/new").status_code == 404
    answer = page.client.post(
        "/service-accounts/etl/tokens", data={"csrf": page.csrf(), "comment": "mine now"}
    )
    assert answer.status_code == 404
    assert site.store.list_tokens(etl) == []
    assert "service-accounts" not in page.client.get("/tokens").text


def test_a_service_account_cannot_sign_in_on_the_page(site: Site, etl: str) -> None:
    answer = site.browser().sign_in(etl, "")
    assert answer.status_code == 401


# -- the command line --------------------------------------------------------------------------


def test_the_command_line_adds_owns_and_makes_tokens_for_service_accounts(cli: Cli) -> None:
    assert cli("user", "add", "root", "--admin", "--password-stdin", stdin="pw\n").code == 0
    add_user(cli, "alice")
    assert cli("user", "add", "etl", "--service").code != 0  # no owner
    refused = cli("user", "add", "etl", "--service", "--owner", "alice")
    assert refused.code != 0
    assert "alice is no administrator" in refused.err

    added = cli("user", "add", "etl", "--service", "--owner", "root")
    assert added.code == 0, added.err
    assert added.out == "added service account etl (tokens only; owners root)\n"
    listed = {user["name"]: user for user in json.loads(cli("user", "list", "--json").out)}
    assert (listed["etl"]["service"], listed["etl"]["owners"]) == (True, ["root"])
    assert "service" not in listed["alice"]

    assert cli("user", "add", "ops", "--admin", "--password-stdin", stdin="pw\n").code == 0
    assert cli("user", "owners", "etl", "--add", "ops").out == "etl is owned by ops, root\n"
    assert cli("user", "owners", "etl", "--remove", "root").out == "etl is owned by ops\n"
    assert cli("user", "owners", "etl", "--remove", "ops").code != 0

    created = cli("token", "create", "--user", "etl", "--read-only", "--json")
    assert created.code == 0, created.err
    assert json.loads(created.out)["scope"] == "read_only"
    tokens = json.loads(cli("token", "list", "--user", "etl", "--json").out)
    assert [token["user"] for token in tokens] == ["etl"]


def test_a_service_account_gets_no_password_and_is_no_administrator(
    sqlite_store: TokenStore, etl: str
) -> None:
    with pytest.raises(PolicyError, match="service account"):
        sqlite_store.set_password(etl, PASSWORD)
    with pytest.raises(PolicyError, match="service account"):
        sqlite_store.set_admin(etl, True)
    record = sqlite_store.find_user(etl)
    assert record is not None
    assert (record.password_hash, record.admin) == (None, False)
