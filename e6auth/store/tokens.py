"""The store's personal access tokens: creating, rotating, listing and revoking them, the digests of
their secrets under the peppers, and the counts the policy and ``e6auth pepper`` ask for.

A small class over the facade's engine rather than functions: it holds the peppers and writes
through the facade's invalidation log, so that a revoked or rotated token is logged in the
transaction that changes it. The policy is the facade's (callers may replace it), handed in by
the calls that apply it. ``TokenStore`` is the one entry point and documents each call; the
verify path's read of a token (``TokenStore.find_token``) stays with the store's other prepared
reads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, Select, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from e6auth.credentials.keys import Pepper
from e6auth.credentials.tokens import generate_token, is_token_id
from e6auth.credentials.usernames import normalize_username
from e6auth.errors import PolicyError, TokenNotFound, UserNotFound
from e6auth.store.database import unreachable_as_unavailable, write_transaction
from e6auth.store.invalidations import InvalidationLog
from e6auth.store.records import DeleteResult, Invalidation, NewToken, TokenInfo
from e6auth.store.schema import tokens, users
from e6auth.store.usage import load_peers
from e6auth.verify.policy import MAX_ROTATION_GRACE, Policy
from e6auth.verify.restrictions import (
    SCOPE_ALL,
    SCOPE_READ_ONLY,
    dump_allow_from,
    load_allow_from,
    parse_allow_from,
)

__all__ = ["MAX_COMMENT_LENGTH", "MAX_EXPIRES_DAYS", "Reader", "Tokens"]

log = logging.getLogger("e6auth.store")

_T = TypeVar("_T")

MAX_COMMENT_LENGTH = 256
MAX_EXPIRES_DAYS = 36_500
_ID_ATTEMPTS = 5


class Reader(Protocol):
    """The facade's read outside a transaction, retried once on a fresh connection."""

    def __call__(self, work: Callable[[Connection], _T]) -> _T: ...


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class Tokens:
    """Writes, lists and counts tokens, with what the facade gives it and no state of its own.
    ``pepper`` makes new digests; ``peppers`` (it among them) are every one that still verifies,
    by id. ``read`` is the facade's read outside a transaction."""

    engine: Engine
    read: Reader
    now: Callable[[], dt.datetime]
    invalidations: InvalidationLog
    pepper: Pepper
    peppers: Mapping[int, Pepper]

    def create(
        self,
        user: str,
        *,
        policy: Policy,
        comment: str | None,
        expires_days: int | None,
        allow_from: Sequence[str] | None,
        read_only: bool,
    ) -> NewToken:
        canonical = normalize_username(user)
        comment = _check_comment(comment)
        networks = None if allow_from is None else parse_allow_from(allow_from)
        scope = SCOPE_READ_ONLY if read_only else SCOPE_ALL
        now = self.now()
        expires_at = None
        if expires_days is not None:
            if type(expires_days) is not int or not 1 <= expires_days <= MAX_EXPIRES_DAYS:
                raise PolicyError(f"expiry must be from 1 to {MAX_EXPIRES_DAYS} days")
            expires_at = now + dt.timedelta(days=expires_days)
        policy.check_lifetime(expires_days)
        with unreachable_as_unavailable():
            for _ in range(_ID_ATTEMPTS):
                parsed, token = generate_token()
                try:
                    with write_transaction(self.engine) as connection:
                        user_id = connection.execute(
                            _lock_user_if_counting(
                                policy, select(users.c.id).where(users.c.name == canonical)
                            )
                        ).scalar_one_or_none()
                        if user_id is None:
                            raise UserNotFound(f"no user {canonical}")
                        _check_token_count(policy, connection, canonical, user_id, now)
                        connection.execute(
                            insert(tokens).values(
                                id=parsed.id,
                                user_id=user_id,
                                digest=self.pepper.digest(parsed.secret),
                                pepper_id=self.pepper.id,
                                comment=comment,
                                created_at=now,
                                expires_at=expires_at,
                                scope=scope,
                                allow_from=dump_allow_from(networks),
                            )
                        )
                except IntegrityError:  # an id collision: 62**12 ids make this vanishingly rare
                    log.warning("token id collision, generating another")
                    continue
                log.info("created token %s for %s", parsed.id, canonical)
                return NewToken(
                    parsed.id,
                    canonical,
                    token,
                    comment,
                    now,
                    expires_at,
                    allow_from=_shown_ranges(dump_allow_from(networks)),
                    scope=scope,
                )
        raise RuntimeError("could not generate a unique token id")

    def rotate(self, token_id: str, *, grace: dt.timedelta, user: str | None) -> NewToken:
        if not dt.timedelta(0) <= grace <= MAX_ROTATION_GRACE:
            raise PolicyError(f"the grace window must be from 0 to {MAX_ROTATION_GRACE.days} days")
        query = (
            select(
                tokens.c.id,
                users.c.name,
                tokens.c.digest,
                tokens.c.pepper_id,
                tokens.c.comment,
                tokens.c.created_at,
                tokens.c.expires_at,
                tokens.c.revoked_at,
                tokens.c.rotated_at,
                tokens.c.allow_from,
                tokens.c.scope,
            )
            .join(users, users.c.id == tokens.c.user_id)
            .where(tokens.c.id == token_id)
            .with_for_update(of=tokens)
        )
        if user is not None:
            query = query.where(users.c.name == normalize_username(user))
        parsed, token = generate_token(token_id=token_id) if is_token_id(token_id) else (None, "")
        now = self.now()
        with self.invalidations.transaction() as (connection, invalidated):
            row = connection.execute(query).one_or_none() if parsed is not None else None
            if row is None or parsed is None:
                raise TokenNotFound(f"no token {token_id}")
            if row.revoked_at is not None:
                raise PolicyError(f"token {token_id} is revoked: it cannot be rotated")
            if row.expires_at is not None and now >= row.expires_at:
                raise PolicyError(f"token {token_id} has expired: create a new one instead")
            # Sessions tell rotations apart by this moment: it must change with every rotation.
            rotated_at = now
            if row.rotated_at is not None and rotated_at <= row.rotated_at:
                rotated_at = row.rotated_at + dt.timedelta(microseconds=1)
            connection.execute(
                update(tokens)
                .where(tokens.c.id == token_id)
                .values(
                    digest=self.pepper.digest(parsed.secret),
                    pepper_id=self.pepper.id,
                    rotated_at=rotated_at,
                    previous_digest=row.digest,
                    previous_pepper_id=row.pepper_id,
                    previous_valid_until=now + grace,
                )
            )
            invalidated.append(Invalidation(token_id=token_id))
        log.info("rotated token %s of %s (grace %s)", token_id, row.name, grace)
        return NewToken(
            token_id,
            row.name,
            token,
            row.comment,
            row.created_at,
            row.expires_at,
            allow_from=_shown_ranges(row.allow_from),
            scope=row.scope,
            previous_valid_until=now + grace,
        )

    def delete(self, ids: Iterable[str], *, user: str | None) -> DeleteResult:
        wanted = list(dict.fromkeys(ids))
        candidates = [token_id for token_id in wanted if is_token_id(token_id)]
        query = select(tokens.c.id, tokens.c.revoked_at).where(tokens.c.id.in_(candidates))
        if user is not None:
            query = query.join(users, users.c.id == tokens.c.user_id).where(
                users.c.name == normalize_username(user)
            )
        with self.invalidations.transaction() as (connection, invalidated):
            found = (
                {row.id: row.revoked_at for row in connection.execute(query)} if candidates else {}
            )
            live = [token_id for token_id, revoked in found.items() if revoked is None]
            if live:
                connection.execute(
                    update(tokens)
                    .where(tokens.c.id.in_(live), tokens.c.revoked_at.is_(None))
                    .values(revoked_at=self.now())
                )
            invalidated.extend(Invalidation(token_id=token_id) for token_id in live)
        if live:
            log.info("revoked tokens %s", ", ".join(live))
        return DeleteResult(
            deleted=tuple(token_id for token_id in wanted if token_id in live),
            already_deleted=tuple(
                token_id for token_id in wanted if token_id in found and token_id not in live
            ),
            unknown=tuple(token_id for token_id in wanted if token_id not in found),
        )

    def revoke_unused(
        self, *, policy: Policy, dry_run: bool, after_days: int | None
    ) -> list[TokenInfo]:
        if after_days is not None:
            policy = dataclasses.replace(policy, revoke_unused_after_days=after_days)
        cutoff = policy.unused_cutoff(self.now())
        if cutoff is None:
            return []
        unused = self.unused(cutoff)
        if unused and not dry_run:
            revoked = set(self.delete([token.id for token in unused], user=None).deleted)
            unused = [token for token in unused if token.id in revoked]
            log.info("revoked %d token(s) unused since %s", len(unused), cutoff.isoformat())
        return unused

    def unused(self, before: dt.datetime) -> list[TokenInfo]:
        last_activity = func.coalesce(tokens.c.last_used_at, tokens.c.created_at)
        return self.infos(
            lambda query: query.where(tokens.c.revoked_at.is_(None), last_activity < before)
        )

    def info(self, token_id: str) -> TokenInfo | None:
        if not is_token_id(token_id):
            return None
        found = self.infos(lambda query: query.where(tokens.c.id == token_id))
        return found[0] if found else None

    def infos(
        self, where: Callable[[Select[Any]], Select[Any]], *, user: str | None = None
    ) -> list[TokenInfo]:
        """Tokens as listings show them, oldest first: ``where`` narrows the query; with ``user``,
        only that user's, and :class:`UserNotFound` if there is no such user."""
        query = where(
            select(
                tokens.c.id,
                users.c.name,
                tokens.c.comment,
                tokens.c.created_at,
                tokens.c.expires_at,
                tokens.c.last_used_at,
                tokens.c.revoked_at,
                tokens.c.last_used_peers,
                tokens.c.allow_from,
                tokens.c.scope,
                tokens.c.previous_valid_until,
            )
            .join(users, users.c.id == tokens.c.user_id)
            .order_by(tokens.c.created_at, tokens.c.id)
        )
        canonical = normalize_username(user) if user is not None else None
        if canonical is not None:
            query = query.where(users.c.name == canonical)

        def read(connection: Connection) -> list[TokenInfo]:
            if canonical is not None and not _user_exists(connection, canonical):
                raise UserNotFound(f"no user {canonical}")
            return [
                TokenInfo(
                    row.id,
                    row.name,
                    row.comment,
                    row.created_at,
                    row.expires_at,
                    row.last_used_at,
                    row.revoked_at,
                    last_used_peers=load_peers(row.last_used_peers),
                    allow_from=_shown_ranges(row.allow_from),
                    scope=row.scope,
                    previous_valid_until=row.previous_valid_until,
                )
                for row in connection.execute(query)
            ]

        # Retried once on a fresh connection, as the verify path's reads are: the listing is
        # what the web page and `token list` show first after a database restart.
        return self.read(read)

    # -- peppers -------------------------------------------------------------------------------

    @property
    def pepper_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.peppers))

    def pepper_usage(self) -> dict[int, int]:
        usage = dict.fromkeys(self.peppers, 0)
        current = select(tokens.c.pepper_id, func.count()).group_by(tokens.c.pepper_id)
        previous = (
            select(tokens.c.previous_pepper_id, func.count())
            .where(
                tokens.c.previous_pepper_id.is_not(None),
                tokens.c.previous_valid_until > self.now(),
            )
            .group_by(tokens.c.previous_pepper_id)
        )
        with unreachable_as_unavailable(), self.engine.connect() as connection:
            for query in (current, previous):
                for pepper_id, count in connection.execute(query):
                    usage[pepper_id] = usage.get(pepper_id, 0) + count
        return dict(sorted(usage.items()))


def _lock_user_if_counting(policy: Policy, query: Select[Any]) -> Select[Any]:
    # With a token limit, concurrent creates for one user queue on the user's row, so that two of
    # them cannot both see room for one more token (SQLite serialises writers anyway).
    return query.with_for_update() if policy.max_tokens_per_user is not None else query


def _check_token_count(
    policy: Policy, connection: Connection, user: str, user_id: int, now: dt.datetime
) -> None:
    if policy.max_tokens_per_user is None:
        return
    active = connection.execute(
        select(func.count())
        .select_from(tokens)
        .where(
            tokens.c.user_id == user_id,
            tokens.c.revoked_at.is_(None),
            or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now),
        )
    ).scalar_one()
    policy.check_token_count(user, int(active))


def _shown_ranges(stored: str | None) -> tuple[str, ...] | None:
    networks = load_allow_from(stored)
    return None if networks is None else tuple(str(network) for network in networks)


def _user_exists(connection: Connection, canonical: str) -> bool:
    count = connection.execute(
        select(func.count()).select_from(users).where(users.c.name == canonical)
    ).scalar_one()
    return bool(count)


def _check_comment(comment: str | None) -> str | None:
    if comment is None or comment == "":
        return None
    if len(comment) > MAX_COMMENT_LENGTH:
        raise PolicyError(f"comment is longer than {MAX_COMMENT_LENGTH} characters")
    if not comment.isprintable():
        raise PolicyError("comment must be printable text on one line")
    return comment
