"""The policy and rotation as the real e6data connector sees them, against a real `e6auth serve`
(see test_connector.py for the harness: the connector runs in a worker process of its own)."""

from __future__ import annotations

import json
import time

import pytest

# The harness of test_connector.py: the same gateway processes, connector worker and store.
import test_connector as harness
from test_connector import (
    CUSTOMERS_SQL,
    PASSWORD,
    REFUSAL_BUDGET_SECONDS,
    Connector,
    StartGateway,
    assert_error,
    demo_connection,
    demo_rows,
    refused_after,
    run_cli,
)

from e6auth import TokenStore

# Its fixtures, found by pytest under these names.
home = harness.home
settings = harness.settings
store = harness.store
start_gateway = harness.start_gateway
connector = harness.connector
alice = harness.alice


@pytest.mark.timeout(60)
def test_tokens_only_refuses_a_password_login_with_a_clear_message_and_accepts_tokens(
    start_gateway: StartGateway, connector: Connector, alice: str
) -> None:
    gateway = start_gateway("--demo", E6AUTH_PASSWORD_LOGINS="false")
    by_password = demo_connection(connector, gateway, username="alice", password=PASSWORD)
    by_token = demo_connection(connector, gateway, username="alice", password=alice)

    refused = connector.execute(by_password, "SELECT 1")

    assert_error(refused, "PERMISSION_DENIED", "password logins are disabled; use an access token")
    assert connector.rows(by_token, CUSTOMERS_SQL) == demo_rows(gateway.home, CUSTOMERS_SQL)
    assert gateway.log.has("password_logins_disabled"), gateway.log.text


@pytest.mark.timeout(60)
def test_a_rotation_from_the_command_line_ends_the_old_secret_in_the_gateway(
    start_gateway: StartGateway, connector: Connector, store: TokenStore, alice: str
) -> None:
    gateway = start_gateway("--demo")
    old = demo_connection(connector, gateway, username="alice", password=alice)
    assert connector.rows(old, "SELECT 1") == [[1]]
    token_id = store.list_tokens("alice")[0].id

    rotated = run_cli(gateway.home, "token", "rotate", token_id, "--grace-hours", "0", "--json")
    since = time.monotonic()
    new_token = json.loads(rotated.stdout)["token"]
    delay, answer = refused_after(connector, old, since, REFUSAL_BUDGET_SECONDS)

    assert_error(answer, "UNAUTHENTICATED", "token rotated: use its new secret")
    assert delay < REFUSAL_BUDGET_SECONDS, f"refused {delay:.2f} s after the rotation"
    new = demo_connection(connector, gateway, username="alice", password=new_token)
    assert connector.rows(new, "SELECT 1") == [[1]]
