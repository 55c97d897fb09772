"""Keepalive: a statement that sends nothing for two and a half minutes survives the real
connector's pings. In a file of its own so that, on parallel test workers, its wait overlaps
the rest of the connector tests instead of following them."""

from __future__ import annotations

import pytest

# The harness of test_connector.py: the same gateway processes, connector worker and store.
import test_connector as harness
from connector_worker import decode_rows
from test_connector import CATALOG, Connector, StartGateway

# Its fixtures, found by pytest under these names.
home = harness.home
settings = harness.settings
store = harness.store
start_gateway = harness.start_gateway
connector = harness.connector
alice = harness.alice

SILENT_SECONDS = 150


@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_a_silent_execute_of_two_and_a_half_minutes_survives_the_connectors_pings(
    start_gateway: StartGateway, connector: Connector, alice: str, postgres_url: str
) -> None:
    # The connector pings every 30 s; gRPC's default server policy answers the third ping
    # without data with GOAWAY "too_many_pings", which kills this call at about 120 s.
    gateway = start_gateway("--query-url", postgres_url)
    conn = connector.connect(gateway, username="alice", password=alice, catalog=CATALOG)

    sql = f"SELECT 1 AS done FROM pg_sleep({SILENT_SECONDS})"  # noqa: S608 - a constant

    answer = connector.execute(conn, sql, timeout=SILENT_SECONDS + 60)

    assert answer["ok"], answer
    assert decode_rows(answer["rows"]) == [[1]]
    assert answer["seconds"] >= SILENT_SECONDS
