"""``e6auth audit``: the audit trail, logins and refusals or the statements run."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING, Any

from e6auth.cli.common import (
    EXIT_OK,
    Refused,
    duration,
    human,
    iso,
    open_store,
    positive_int,
    print_json,
    print_table,
)
from e6auth.credentials.usernames import normalize_username

if TYPE_CHECKING:
    from e6auth.cli.common import Commands
    from e6auth.settings import Settings
    from e6auth.store.audit import AuthEvent, QueryEvent

MAX_TABLE_STATEMENT = 60


def add_commands(commands: Commands) -> None:
    audit = commands.add_parser("audit", help="show the audit trail (logins, refusals, queries)")
    audit.add_argument(
        "--user", help="only this user's events, or an unknown name's (unknown:<hex> as shown)"
    )
    audit.add_argument("--since", metavar="WHEN", help="from: 1h, 30m, 7d, 2026-11-01, ISO time")
    audit.add_argument("--until", metavar="WHEN", help="before: same forms as --since")
    audit.add_argument("--queries", action="store_true", help="statements run, not auth events")
    audit.add_argument("--limit", type=positive_int, default=100, metavar="N", help="newest N")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=_audit)


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from e6auth.store.audit import AuditStore

    user = _audit_user(args.user)
    with open_store(settings) as store:
        now = store.now()
        since = _moment("--since", args.since, now)
        until = _moment("--until", args.until, now)
        audit = AuditStore(store.engine)
        if args.queries:
            queries = audit.query_events(user=user, since=since, until=until, limit=args.limit)
        else:
            events = audit.auth_events(user=user, since=since, until=until, limit=args.limit)
    if args.queries:
        _print_queries(queries, as_json=args.json)
    else:
        _print_auth_events(events, as_json=args.json)
    return EXIT_OK


def _moment(option: str, text: str | None, now: dt.datetime) -> dt.datetime | None:
    """``1h`` (that long ago), ``2026-11-01`` (midnight UTC) or an ISO time (UTC unless it says)."""
    if text is None:
        return None
    ago = duration(text)
    if ago is not None:
        return now - ago
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise Refused(
            f"{option}: expected a duration (30m, 1h, 7d, 2w), a date or an ISO time"
        ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def _audit_user(text: str | None) -> str | None:
    """A user name, or the stored form of an unknown one (``unknown:<hex>``), which takes the
    attempts made with that name."""
    if text is None:
        return None
    from e6auth.background.audit import is_hashed_name

    return text if is_hashed_name(text) else normalize_username(text)


def _print_auth_events(events: list[AuthEvent], *, as_json: bool) -> None:
    _print_records(
        [
            {
                "at": event.at,
                "kind": event.kind,
                "result": event.result,
                "reason": event.reason,
                "user": event.username,
                "token_id": event.token_id,
                "peer": event.peer,
                "method": event.method,
            }
            for event in events
        ],
        {"at": "TIME (UTC)", "kind": "KIND", "result": "RESULT", "reason": "REASON"}
        | {"user": "USER", "token_id": "TOKEN", "peer": "PEER", "method": "METHOD"},
        as_json=as_json,
    )


def _print_queries(events: list[QueryEvent], *, as_json: bool) -> None:
    _print_records(
        [
            {
                "at": event.at,
                "user": event.username,
                "token_id": event.token_id,
                "peer": event.peer,
                "result": event.result,
                "query_id": event.query_id,
                "statement": event.statement,
            }
            for event in events
        ],
        {"at": "TIME (UTC)", "user": "USER", "token_id": "TOKEN", "peer": "PEER"}
        | {"result": "RESULT", "query_id": "QUERY ID", "statement": "STATEMENT"},
        as_json=as_json,
    )


def _print_records(
    records: list[dict[str, Any]], columns: dict[str, str], *, as_json: bool
) -> None:
    """Audit records as a JSON array (times in ISO 8601), or as a table under ``columns``'
    titles (times readable, empty for none, statements on one bounded line)."""
    if as_json:
        print_json([{**record, "at": iso(record["at"])} for record in records])
        return
    rows = []
    for record in records:
        shown = {**record, "at": human(record["at"])}
        if "statement" in shown:
            shown["statement"] = _one_line(shown["statement"], MAX_TABLE_STATEMENT)
        rows.append(["" if shown[key] is None else str(shown[key]) for key in columns])
    print_table(list(columns.values()), rows)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
