"""The audit tables: auth events and query events, written in batches, read by ``e6auth audit``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, insert, select
from sqlalchemy.exc import DBAPIError

from e6auth.errors import StoreUnavailable
from e6auth.store.database import unreachable_as_unavailable, write_transaction
from e6auth.store.schema import auth_events, query_events, tokens, users

__all__ = ["AuditStore", "AuthEvent", "QueryEvent"]

LOOKUP_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class AuthEvent:
    """A handshake, a refused call, a token change, or a token seen at a new address.

    Never stores a secret: ``username`` is a canonical user name, the keyed hash of a name no user
    has (``unknown:…``) or None, ``token_id`` the public id, ``reason`` an error's stable code.

    ``sent_username`` is the canonical name a client sent with a refused attempt, nobody having
    proved it: it may be a password typed into the user field. It lives in memory only until the
    event is written, which stores it as ``username`` if a user has that name (else ``username``,
    its hash, stays); it is never a column, and no repr shows it.
    """

    at: dt.datetime
    kind: str
    result: str
    reason: str | None = None
    username: str | None = None
    token_id: str | None = None
    peer: str | None = None
    method: str | None = None
    sent_username: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class QueryEvent:
    """A statement run through the gateway, and by whom (``token_id`` None: a password login)."""

    at: dt.datetime
    username: str
    token_id: str | None
    peer: str | None
    query_id: str
    statement: str
    result: str


def _stored_fields(event: type[AuthEvent | QueryEvent], table: Table) -> tuple[str, ...]:
    """The fields of an event that are columns of its table, in the order of the fields: an event
    is written from them and read back into them (an auth event's ``sent_username`` is none)."""
    return tuple(each.name for each in fields(event) if each.name in table.c)


_AUTH_COLUMNS = _stored_fields(AuthEvent, auth_events)
_QUERY_COLUMNS = _stored_fields(QueryEvent, query_events)


class AuditStore:
    """Reads and writes the audit tables of a token store's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, auth: Sequence[AuthEvent], queries: Sequence[QueryEvent] = ()) -> None:
        """Append the events in one transaction, one executemany INSERT per table.

        Events about a token whose user is not known (a token seen at a new address) are given
        the token's owner here, off the request path; so are names sent with refused attempts
        checked against the users."""
        if not auth and not queries:
            return
        with write_transaction(self.engine) as connection:
            auth = _with_owners(connection, _with_known_names(connection, auth))
            _insert_many(connection, auth_events, [_row(event, _AUTH_COLUMNS) for event in auth])
            _insert_many(
                connection, query_events, [_row(event, _QUERY_COLUMNS) for event in queries]
            )

    def prune(self, older_than: dt.datetime) -> int:
        """Delete events older than ``older_than``; returns how many rows went."""
        with write_transaction(self.engine) as connection:
            removed = connection.execute(delete(auth_events).where(auth_events.c.at < older_than))
            removed_queries = connection.execute(
                delete(query_events).where(query_events.c.at < older_than)
            )
        return int(removed.rowcount) + int(removed_queries.rowcount)

    def auth_events(
        self,
        *,
        user: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[AuthEvent]:
        """The newest ``limit`` matching events, oldest first."""
        rows = self._newest(auth_events, _AUTH_COLUMNS, user, since, until, limit)
        return [AuthEvent(*row) for row in rows]

    def query_events(
        self,
        *,
        user: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int = 100,
    ) -> list[QueryEvent]:
        """The newest ``limit`` matching statements, oldest first."""
        rows = self._newest(query_events, _QUERY_COLUMNS, user, since, until, limit)
        return [QueryEvent(*row) for row in rows]

    def _newest(
        self,
        table: Table,
        columns: tuple[str, ...],
        user: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
    ) -> list[Any]:
        """The newest ``limit`` rows of ``table`` (its ``columns``, in order) matching the user
        and the time range, oldest first."""
        query = select(*(table.c[name] for name in columns))
        if user is not None:
            query = query.where(table.c.username == user)
        if since is not None:
            query = query.where(table.c.at >= since)
        if until is not None:
            query = query.where(table.c.at < until)
        query = query.order_by(table.c.at.desc(), table.c.id.desc()).limit(limit)
        with unreachable_as_unavailable(), self.engine.connect() as connection:
            rows = list(connection.execute(query))
        rows.reverse()
        return rows


def _with_known_names(connection: Connection, events: Sequence[AuthEvent]) -> Sequence[AuthEvent]:
    """A name sent with a refused attempt is stored as sent if a user has it: an operator sees
    which user was tried. The others keep their hash."""
    wanted = {event.sent_username for event in events if event.sent_username is not None}
    if not wanted:
        return events
    try:
        known = {
            name
            for chunk in _chunks(wanted)
            for name in connection.scalars(select(users.c.name).where(users.c.name.in_(chunk)))
        }
    except DBAPIError as exc:
        # Without the driver's text: its parameters are the names, which may be passwords.
        raise StoreUnavailable(
            f"could not look up the audit's user names ({type(exc).__name__})"
        ) from None
    return [
        replace(event, username=event.sent_username) if event.sent_username in known else event
        for event in events
    ]


def _with_owners(connection: Connection, events: Sequence[AuthEvent]) -> Sequence[AuthEvent]:
    wanted = {event.token_id for event in events if event.username is None and event.token_id}
    if not wanted:
        return events
    owners = {
        row.id: row.name
        for chunk in _chunks(wanted)
        for row in connection.execute(
            select(tokens.c.id, users.c.name)
            .join(users, users.c.id == tokens.c.user_id)
            .where(tokens.c.id.in_(chunk))
        )
    }
    return [
        replace(event, username=owners.get(event.token_id))
        if event.username is None and event.token_id in owners
        else event
        for event in events
    ]


def _chunks(values: set[str]) -> Iterator[list[str]]:
    """``values`` in lists a statement can bind: a batch can hold up to ``audit_max_pending``
    distinct names or token ids (a flood of made-up ones), more than PostgreSQL takes in one
    statement (65535 parameters); a write that always fails would stall the audit."""
    ordered = sorted(values)
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        yield ordered[start : start + LOOKUP_CHUNK]


def _insert_many(connection: Connection, table: Table, rows: list[dict[str, object]]) -> None:
    if rows:
        # One statement with the rows as parameter sets ("executemany"): SQLAlchemy compiles it
        # once and caches it, and batches the rows into multi-row VALUES where the driver allows
        # (insertmanyvalues). Rendering the rows into the statement (``insert().values(rows)``)
        # compiled a new statement every flush: 200 µs a row, on the gateway's GIL.
        connection.execute(insert(table), rows)


def _row(event: AuthEvent | QueryEvent, columns: tuple[str, ...]) -> dict[str, object]:
    return {name: getattr(event, name) for name in columns}
