"""Where and when tokens were last used: the write-behind flush's batched write, and the stored
list of addresses.

The gateway samples uses in memory (e6auth.background.lastused) and flushes them here every few
seconds, from any number of processes in any order: so the write never moves ``last_used_at``
backwards, and merges address lists with what is stored instead of overwriting them. The
addresses are a JSON list in one column (newest first, distinct, bounded): listings show them and
the audit tells of a token seen at a new one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from sqlalchemy import Engine, bindparam, case, or_, select, update

from e6auth.store.database import write_transaction
from e6auth.store.records import TokenUse
from e6auth.store.schema import UTCDateTime, tokens

__all__ = ["NewPeersListener", "load_peers", "record_token_uses"]

NewPeersListener = Callable[[str, tuple[str, ...]], None]


def record_token_uses(
    engine: Engine,
    uses: Mapping[str, TokenUse],
    *,
    max_peers: int,
    on_new_peers: NewPeersListener | None,
) -> int:
    """Write the newest use of each token (see ``TokenStore.record_token_uses``): one read, which
    locks the rows, and one batched UPDATE, in one transaction."""
    if not uses:
        return 0
    ids = sorted(uses)
    new_peers: list[tuple[str, tuple[str, ...]]] = []
    with write_transaction(engine) as connection:
        stored = {
            row.id: row.last_used_peers for row in connection.execute(_STORED_PEERS, {"ids": ids})
        }
        rows = [
            {
                "b_id": token_id,
                "b_at": uses[token_id].at,
                "b_peers": _merge_peers(uses[token_id].peers, stored[token_id], max_peers),
            }
            for token_id in ids
            if token_id in stored
        ]
        if on_new_peers is not None:
            new_peers = _new_peers(uses, stored)
        if rows:
            connection.execute(_RECORD_USE, rows)
    if on_new_peers is not None:
        for token_id, peers in new_peers:
            on_new_peers(token_id, peers)
    return len(rows)


def load_peers(stored: str | None) -> tuple[str, ...]:
    """The addresses stored in a token's ``last_used_peers``; none for anything unreadable."""
    if not stored:
        return ()
    try:
        peers = json.loads(stored)
    except ValueError:
        return ()
    return tuple(peer for peer in peers if isinstance(peer, str)) if isinstance(peers, list) else ()


# The flush's statements, built once so that SQLAlchemy's compiled cache serves them.
_STORED_PEERS = (
    select(tokens.c.id, tokens.c.last_used_peers)
    .where(tokens.c.id.in_(bindparam("ids", expanding=True)))
    .with_for_update()
)
# last_used_at never moves backwards, whatever order processes flush in.
_RECORD_USE = (
    update(tokens)
    .where(tokens.c.id == bindparam("b_id"))
    .values(
        last_used_at=case(
            (
                or_(
                    tokens.c.last_used_at.is_(None),
                    tokens.c.last_used_at < bindparam("b_at", type_=UTCDateTime),
                ),
                bindparam("b_at", type_=UTCDateTime),
            ),
            else_=tokens.c.last_used_at,
        ),
        last_used_peers=bindparam("b_peers"),
    )
)


def _new_peers(
    uses: Mapping[str, TokenUse], stored: Mapping[str, str | None]
) -> list[tuple[str, tuple[str, ...]]]:
    """Tokens that had stored addresses and were now seen at others, with those others."""
    found = []
    for token_id, peers in stored.items():
        known = load_peers(peers)
        fresh = tuple(peer for peer in uses[token_id].peers if peer not in known)
        if known and fresh:
            found.append((token_id, fresh))
    return found


def _merge_peers(newest: tuple[str, ...], stored: str | None, limit: int) -> str | None:
    merged = list(dict.fromkeys((*newest, *load_peers(stored))))[:limit]
    return json.dumps(merged) if merged else None
