"""The token store: users, their passwords and their personal access tokens, in SQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from e6auth.clock import Clock, to_datetime
from e6auth.errors import (
    InvalidUsername,
    PolicyError,
    StoreUnavailable,
    TokenNotFound,
    UserExists,
    UserNotFound,
)
from e6auth.hashgate import HashGate
from e6auth.keys import Pepper
from e6auth.passwords import Argon2Parameters, Passwords
from e6auth.policy import DEFAULT_ROTATION_GRACE, MAX_ROTATION_GRACE, Policy
from e6auth.restrictions import (
    SCOPE_ALL,
    SCOPE_READ_ONLY,
    dump_allow_from,
    load_allow_from,
    parse_allow_from,
)
from e6auth.settings import Settings
from e6auth.store.engine import engine_from_settings, unreachable_as_unavailable, write_transaction
from e6auth.store.migrate import ensure_schema
from e6auth.store.reads import PreparedRead, PreparedReads
from e6auth.store.records import (
    DeleteResult,
    Invalidation,
    NewToken,
    TokenInfo,
    TokenRecord,
    TokenUse,
    UserInfo,
    UserRecord,
)
from e6auth.store.schema import (
    UTCDateTime,
    ended_sessions,
    invalidations,
    service_owners,
    tokens,
    users,
)
from e6auth.tokens import generate_token, is_token_id, looks_like_token, token_digest
from e6auth.usernames import normalize_username

__all__ = [
    "DEFAULT_ROTATION_GRACE",
    "MAX_COMMENT_LENGTH",
    "MAX_EXPIRES_DAYS",
    "MAX_ROTATION_GRACE",
    "NOTIFY_CHANNEL",
    "TokenStore",
]

log = logging.getLogger("e6auth.store")

InvalidationListener = Callable[[Sequence[Invalidation]], None]
_T = TypeVar("_T")
NOTIFY_CHANNEL = "e6auth_invalidation"

MAX_COMMENT_LENGTH = 256
MAX_EXPIRES_DAYS = 36_500
_ID_ATTEMPTS = 5


class TokenStore:
    """Users and tokens in any SQLAlchemy database.

    Administrative calls (create, list, delete…) validate their input and raise
    :mod:`e6auth.errors` management errors with messages fit for a person. The two lookups the
    authenticator uses, :meth:`find_user` and :meth:`find_token`, are single indexed reads.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        pepper: Pepper,
        passwords: Passwords | None = None,
        clock: Clock = time.time,
        peppers: Iterable[Pepper] = (),
        policy: Policy | None = None,
        argon2: Argon2Parameters | None = None,
        hash_gate: HashGate | None = None,
    ) -> None:
        """``pepper`` makes new digests; ``peppers`` are older ones that still verify. Without
        ``passwords``, one with the ``argon2`` parameters (default: argon2's) is made at first
        use, hashing through ``hash_gate`` (see e6auth.hashgate) when one is given."""
        self.engine = engine
        self._passwords = passwords
        self._argon2 = argon2
        self._hash_gate = hash_gate
        self.policy = policy or Policy()
        self._pepper = pepper
        self._peppers = {known.id: known for known in peppers}
        self._peppers[pepper.id] = pepper
        self._clock = clock
        self._listeners: list[InvalidationListener] = []
        # Reads outside a transaction: no BEGIN and ROLLBACK round trips. Python's sqlite3 begins
        # none for a SELECT anyway, and there the option would cost a PRAGMA at every checkin,
        # which also expires every statement the connection has prepared (measured: the next
        # prepared read took twice as long).
        self._reader = (
            engine
            if engine.dialect.name == "sqlite"
            else engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._reads = PreparedReads(engine, self._read)

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, clock: Clock = time.time
    ) -> TokenStore:
        settings = settings or Settings()
        engine = engine_from_settings(settings)
        try:
            with unreachable_as_unavailable():
                ensure_schema(engine, migrate=settings.migrate_on_first_use)
            peppers = settings.load_peppers()
        except BaseException:
            engine.dispose()
            raise
        return cls(
            engine,
            pepper=peppers.current,
            argon2=settings.argon2,
            hash_gate=settings.build_hash_gate(),
            clock=clock,
            peppers=peppers,
            policy=Policy.from_settings(settings),
        )

    @property
    def passwords(self) -> Passwords:
        """Hashing and checking passwords. Made at first use: making one hashes a dummy password
        (tens of milliseconds at the production parameters), which a command or a process that
        checks no password never needs. Two threads racing here make two: harmless."""
        if self._passwords is None:
            self._passwords = Passwords(self._argon2, gate=self._hash_gate)
        return self._passwords

    # The verify path's reads, compiled at first use (a command that verifies nothing skips it).
    @functools.cached_property
    def _find_token(self) -> PreparedRead:
        return self._reads.prepare(_FIND_TOKEN)

    @functools.cached_property
    def _find_user(self) -> PreparedRead:
        return self._reads.prepare(_FIND_USER)

    @functools.cached_property
    def _session_ended(self) -> PreparedRead:
        return self._reads.prepare(_SESSION_ENDED)

    @functools.cached_property
    def _latest_invalidation(self) -> PreparedRead:
        return self._reads.prepare(_LATEST_INVALIDATION)

    @functools.cached_property
    def _invalidations_after(self) -> PreparedRead:
        return self._reads.prepare(_INVALIDATIONS_AFTER)

    def __repr__(self) -> str:
        return f"TokenStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self._reads.close()  # the connections it holds go back to the pool, which closes them
        self.engine.dispose()

    def now(self) -> dt.datetime:
        return to_datetime(self._clock())

    def add_invalidation_listener(self, listener: InvalidationListener) -> None:
        """Call ``listener`` after every invalidating change this store commits.

        Other processes learn of the same changes from the invalidation log
        (:meth:`invalidations_after`).
        """
        self._listeners.append(listener)

    def remove_invalidation_listener(self, listener: InvalidationListener) -> None:
        self._listeners.remove(listener)

    # -- users ---------------------------------------------------------------------------------

    def create_user(
        self, name: str, password: str | None = None, *, admin: bool = False
    ) -> UserInfo:
        """Add a user; without a password the user can log in with tokens only. An ``admin``
        sees and deletes every user's tokens on the web page."""
        canonical = normalize_username(name)
        password_hash = self._new_password_hash(password) if password is not None else None
        now = self.now()
        try:
            with write_transaction(self.engine) as connection:
                user_id = connection.execute(
                    insert(users)
                    .values(
                        name=canonical,
                        password_hash=password_hash,
                        password_generation=0,
                        disabled=False,
                        admin=admin,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(users.c.id)
                ).scalar_one()
        except IntegrityError as exc:
            raise UserExists(f"user {canonical} already exists") from exc
        return UserInfo(user_id, canonical, False, password_hash is not None, now, admin=admin)

    def set_password(self, name: str, password: str) -> None:
        """Change a password. Sessions and cached logins made with the old one end."""
        self._refuse_service_account(name, "has no password")
        password_hash = self._new_password_hash(password)
        self._update_user(
            name,
            invalidate=True,
            password_hash=password_hash,
            password_generation=users.c.password_generation + 1,
        )

    def disable_user(self, name: str) -> None:
        """Refuse every credential of the user from the next verify on, in every process."""
        self._update_user(name, invalidate=True, disabled=True)

    def enable_user(self, name: str) -> None:
        self._update_user(name, invalidate=False, disabled=False)

    def set_admin(self, name: str, admin: bool) -> None:
        """Make a user an administrator of the web page, or no longer one. Nothing is cached on
        it: the web page reads it on every request, so a change applies to open sessions too."""
        if admin:
            self._refuse_service_account(name, "is no administrator")
        self._update_user(name, invalidate=False, admin=admin)

    def _refuse_service_account(self, name: str, what: str) -> None:
        user = self.find_user(name)
        if user is not None and user.service:
            raise PolicyError(f"{user.name} is a service account: it {what}")

    def sign_out_everywhere(self, name: str) -> None:
        """End every web page session of the user, on every replica: sessions carry the user's
        session generation, which this bumps; each request of the page reads it from here."""
        self._update_user(name, invalidate=False, session_generation=users.c.session_generation + 1)

    # -- web page sessions ---------------------------------------------------------------------

    def end_session(self, session_id: str, *, expires_at: dt.datetime) -> None:
        """Record that a web page session was signed out, so that every process refuses it from
        now on, after a restart too. ``expires_at`` is when it would have ended anyway: the
        record is pruned after that (by the next sign-out), which keeps the table as small as
        the sign-outs of one maximum session age."""
        digest = _session_hash(session_id)
        try:
            with write_transaction(self.engine) as connection:
                connection.execute(
                    delete(ended_sessions).where(ended_sessions.c.expires_at <= self.now())
                )
                connection.execute(
                    insert(ended_sessions).values(session_hash=digest, expires_at=expires_at)
                )
        except IntegrityError:
            pass  # signed out twice at once: the other sign-out recorded it

    def session_ended(self, session_id: str) -> bool:
        """Whether a web page session was signed out (:meth:`end_session`): one indexed read."""
        found = self._read_prepared(self._session_ended, {"hash": _session_hash(session_id)})
        return found is not None

    def list_users(self) -> list[UserInfo]:
        query = select(
            users.c.id,
            users.c.name,
            users.c.disabled,
            users.c.password_hash.is_not(None).label("has_password"),
            users.c.created_at,
            users.c.admin,
            users.c.service,
        ).order_by(users.c.name)
        with unreachable_as_unavailable(), self.engine.connect() as connection:
            owners = _owners_by_service(connection)
            return [
                UserInfo(
                    row.id,
                    row.name,
                    row.disabled,
                    row.has_password,
                    row.created_at,
                    admin=row.admin,
                    service=row.service,
                    owners=owners.get(row.id, ()),
                )
                for row in connection.execute(query)
            ]

    # -- service accounts ----------------------------------------------------------------------

    def create_service_account(self, name: str, owners: Sequence[str]) -> UserInfo:
        """Add a service account (no password, never signs in on the web page) whose tokens the
        ``owners`` manage: at least one, each an administrator."""
        canonical = normalize_username(name)
        owner_names = list(dict.fromkeys(normalize_username(owner) for owner in owners))
        if not owner_names:
            raise PolicyError("a service account needs at least one owner (an administrator)")
        now = self.now()
        try:
            with write_transaction(self.engine) as connection:
                owner_ids = self._admin_ids(connection, owner_names)
                user_id = connection.execute(
                    insert(users)
                    .values(
                        name=canonical,
                        password_hash=None,
                        password_generation=0,
                        disabled=False,
                        admin=False,
                        service=True,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(users.c.id)
                ).scalar_one()
                connection.execute(
                    insert(service_owners),
                    [{"service_user_id": user_id, "owner_user_id": owner} for owner in owner_ids],
                )
        except IntegrityError as exc:
            raise UserExists(f"user {canonical} already exists") from exc
        return UserInfo(
            user_id, canonical, False, False, now, service=True, owners=tuple(owner_names)
        )

    def set_service_owners(
        self, name: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """Add and remove owners of a service account; its owners afterwards (never none)."""
        canonical = normalize_username(name)
        added = list(dict.fromkeys(normalize_username(owner) for owner in add))
        removed = {normalize_username(owner) for owner in remove}
        with write_transaction(self.engine) as connection:
            service_id = self._service_id(connection, canonical)
            for owner_id in self._admin_ids(connection, added):
                connection.execute(
                    delete(service_owners).where(
                        service_owners.c.service_user_id == service_id,
                        service_owners.c.owner_user_id == owner_id,
                    )
                )
                connection.execute(
                    insert(service_owners).values(
                        service_user_id=service_id, owner_user_id=owner_id
                    )
                )
            if removed:
                connection.execute(
                    delete(service_owners).where(
                        service_owners.c.service_user_id == service_id,
                        service_owners.c.owner_user_id.in_(
                            select(users.c.id).where(users.c.name.in_(removed))
                        ),
                    )
                )
            left = _owners_by_service(connection).get(service_id, ())
            if not left:
                raise PolicyError(f"service account {canonical} would have no owner left")
        return left

    def owned_service_accounts(self, owner: str) -> list[str]:
        """The names of the service accounts ``owner`` manages, sorted."""
        owner_user = users.alias("owner")
        query = (
            select(users.c.name)
            .join(service_owners, service_owners.c.service_user_id == users.c.id)
            .join(owner_user, owner_user.c.id == service_owners.c.owner_user_id)
            .where(owner_user.c.name == normalize_username(owner), owner_user.c.admin)
            .order_by(users.c.name)
        )
        with unreachable_as_unavailable(), self._reader.connect() as connection:
            return [row.name for row in connection.execute(query)]

    def owns_service_account(self, owner: str, service: str) -> bool:
        """Whether ``owner`` is an administrator who manages the service account ``service``."""
        try:
            canonical = normalize_username(service)
        except InvalidUsername:
            return False
        return canonical in self.owned_service_accounts(owner)

    def _service_id(self, connection: Connection, canonical: str) -> int:
        row = connection.execute(
            select(users.c.id, users.c.service).where(users.c.name == canonical)
        ).one_or_none()
        if row is None:
            raise UserNotFound(f"no user {canonical}")
        if not row.service:
            raise PolicyError(f"{canonical} is no service account")
        return int(row.id)

    def _admin_ids(self, connection: Connection, names: Sequence[str]) -> list[int]:
        if not names:
            return []
        found = {
            row.name: row
            for row in connection.execute(
                select(users.c.id, users.c.name, users.c.admin).where(users.c.name.in_(names))
            )
        }
        for name in names:
            if name not in found:
                raise UserNotFound(f"no user {name}")
            if not found[name].admin:
                raise PolicyError(f"{name} is no administrator: only administrators own")
        return [int(found[name].id) for name in names]

    def find_user(self, name: str) -> UserRecord | None:
        """The user called ``name`` (any case), or None; also None for a name no user can have."""
        try:
            canonical = normalize_username(name)
        except InvalidUsername:
            return None
        row = self._read_prepared(self._find_user, {"name": canonical})
        if row is None:
            return None
        user_id, user_name, password_hash, generation, disabled, admin, sessions, service = row
        return UserRecord(
            user_id,
            user_name,
            password_hash,
            generation,
            disabled,
            admin=admin,
            session_generation=sessions,
            service=service,
        )

    def replace_password_hash(self, user_id: int, old_hash: str, new_hash: str) -> bool:
        """Swap in a re-hash of the same password, unless the password changed meanwhile."""
        with write_transaction(self.engine) as connection:
            result = connection.execute(
                update(users)
                .where(users.c.id == user_id, users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )
        return result.rowcount == 1

    def _new_password_hash(self, password: str) -> str:
        if looks_like_token(password):
            raise PolicyError("a password must not look like an access token")
        return self.passwords.hash(password)

    def _update_user(self, name: str, *, invalidate: bool, **values: object) -> None:
        canonical = normalize_username(name)
        with write_transaction(self.engine) as connection:
            user_id = connection.execute(
                update(users)
                .where(users.c.name == canonical)
                .values(updated_at=self.now(), **values)
                .returning(users.c.id)
            ).scalar_one_or_none()
            if user_id is None:
                raise UserNotFound(f"no user {canonical}")
            events = [Invalidation(user_id=user_id)] if invalidate else []
            self._log_invalidations(connection, events)
        self._announce(events)

    # -- tokens --------------------------------------------------------------------------------

    def create_token(
        self,
        user: str,
        *,
        comment: str | None = None,
        expires_days: int | None = None,
        allow_from: Sequence[str] | None = None,
        read_only: bool = False,
    ) -> NewToken:
        """Create a token for ``user``; the result holds the secret, this once only.

        ``allow_from``: CIDR ranges the token may be used from (None: anywhere). ``read_only``:
        the gateway runs the token's statements in read-only transactions.
        """
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
        self.policy.check_lifetime(expires_days)
        with unreachable_as_unavailable():
            for _ in range(_ID_ATTEMPTS):
                parsed, token = generate_token()
                try:
                    with write_transaction(self.engine) as connection:
                        user_id = connection.execute(
                            self._lock_user_if_counting(
                                select(users.c.id).where(users.c.name == canonical)
                            )
                        ).scalar_one_or_none()
                        if user_id is None:
                            raise UserNotFound(f"no user {canonical}")
                        self._check_token_count(connection, canonical, user_id, now)
                        connection.execute(
                            insert(tokens).values(
                                id=parsed.id,
                                user_id=user_id,
                                digest=token_digest(self._pepper.key, parsed.secret),
                                pepper_id=self._pepper.id,
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

    def _lock_user_if_counting(self, query: Select[Any]) -> Select[Any]:
        # With a token limit, concurrent creates for one user queue on the user's row, so that
        # two of them cannot both see room for one more token (SQLite serialises writers anyway).
        return query.with_for_update() if self.policy.max_tokens_per_user is not None else query

    def _check_token_count(
        self, connection: Connection, user: str, user_id: int, now: dt.datetime
    ) -> None:
        if self.policy.max_tokens_per_user is None:
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
        self.policy.check_token_count(user, int(active))

    def rotate_token(
        self,
        token_id: str,
        *,
        grace: dt.timedelta = DEFAULT_ROTATION_GRACE,
        user: str | None = None,
    ) -> NewToken:
        """Give the token ``token_id`` a new secret (digested with the newest pepper); the old one
        keeps verifying for ``grace`` (0: refused at once), then is refused everywhere.

        A secret replaced by an earlier rotation stops working now: only one previous secret is
        kept. With ``user``, only that user's token can be rotated. The result holds the new secret,
        this once only; the token keeps its id, comment and expiry.
        """
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
        with write_transaction(self.engine) as connection:
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
                    digest=token_digest(self._pepper.key, parsed.secret),
                    pepper_id=self._pepper.id,
                    rotated_at=rotated_at,
                    previous_digest=row.digest,
                    previous_pepper_id=row.pepper_id,
                    previous_valid_until=now + grace,
                )
            )
            events = [Invalidation(token_id=token_id)]
            self._log_invalidations(connection, events)
        self._announce(events)
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

    def unused_tokens(self, before: dt.datetime) -> list[TokenInfo]:
        """Unrevoked tokens last used, or never used and created, before ``before``."""
        last_activity = func.coalesce(tokens.c.last_used_at, tokens.c.created_at)
        return self._token_infos(
            lambda query: query.where(tokens.c.revoked_at.is_(None), last_activity < before)
        )

    def revoke_unused(
        self, *, dry_run: bool = False, after_days: int | None = None
    ) -> list[TokenInfo]:
        """Revoke the tokens unused for the policy's ``revoke_unused_after_days`` (or
        ``after_days``), through :meth:`delete_tokens` so that caches everywhere drop them; returns
        them. A no-op when there is no such rule."""
        policy = self.policy
        if after_days is not None:
            policy = dataclasses.replace(policy, revoke_unused_after_days=after_days)
        cutoff = policy.unused_cutoff(self.now())
        if cutoff is None:
            return []
        unused = self.unused_tokens(cutoff)
        if unused and not dry_run:
            revoked = set(self.delete_tokens([token.id for token in unused]).deleted)
            unused = [token for token in unused if token.id in revoked]
            log.info("revoked %d token(s) unused since %s", len(unused), cutoff.isoformat())
        return unused

    def find_token_info(self, token_id: str) -> TokenInfo | None:
        """A token as listings show it, by id."""
        if not is_token_id(token_id):
            return None
        found = self._token_infos(lambda query: query.where(tokens.c.id == token_id))
        return found[0] if found else None

    def _token_infos(
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
                    last_used_peers=_load_peers(row.last_used_peers),
                    allow_from=_shown_ranges(row.allow_from),
                    scope=row.scope,
                    previous_valid_until=row.previous_valid_until,
                )
                for row in connection.execute(query)
            ]

        # Retried once on a fresh connection, as the verify path's reads are: the listing is
        # what the web page and `token list` show first after a database restart.
        return self._read(read)

    def pepper_usage(self) -> dict[int, int]:
        """How many tokens (revoked ones included) have their digest made with each pepper id,
        previous secrets still in their grace window counted too; known peppers no token uses
        count 0. Never a key."""
        usage = dict.fromkeys(self._peppers, 0)
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

    @property
    def pepper_ids(self) -> tuple[int, ...]:
        """The known pepper ids, oldest first; the last makes new digests."""
        return tuple(sorted(self._peppers))

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        return self._token_infos(lambda query: query, user=user)

    def delete_tokens(self, ids: Iterable[str], *, user: str | None = None) -> DeleteResult:
        """Revoke several tokens at once. Unknown ids are reported; the others are still revoked.

        With ``user``, only that user's tokens count as found (a console user deleting their own).
        """
        wanted = list(dict.fromkeys(ids))
        candidates = [token_id for token_id in wanted if is_token_id(token_id)]
        query = select(tokens.c.id, tokens.c.revoked_at).where(tokens.c.id.in_(candidates))
        if user is not None:
            query = query.join(users, users.c.id == tokens.c.user_id).where(
                users.c.name == normalize_username(user)
            )
        with write_transaction(self.engine) as connection:
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
            events = [Invalidation(token_id=token_id) for token_id in live]
            self._log_invalidations(connection, events)
        self._announce(events)
        if live:
            log.info("revoked tokens %s", ", ".join(live))
        return DeleteResult(
            deleted=tuple(token_id for token_id in wanted if token_id in live),
            already_deleted=tuple(
                token_id for token_id in wanted if token_id in found and token_id not in live
            ),
            unknown=tuple(token_id for token_id in wanted if token_id not in found),
        )

    def find_token(self, token_id: str) -> TokenRecord | None:
        """The token and its owner, by public id: one indexed read."""
        row = self._read_prepared(self._find_token, {"id": token_id})
        if row is None:
            return None
        (
            token_id,
            user_id,
            user_name,
            user_disabled,
            digest,
            pepper_id,
            expires_at,
            revoked_at,
            allow_from,
            scope,
            rotated_at,
            previous_digest,
            previous_pepper_id,
            previous_valid_until,
        ) = row
        return TokenRecord(
            id=token_id,
            user_id=user_id,
            user=user_name,
            user_disabled=user_disabled,
            digest=bytes(digest),
            pepper_id=pepper_id,
            expires_at=expires_at,
            revoked_at=revoked_at,
            allow_from=allow_from,
            scope=scope,
            rotated_at=rotated_at,
            previous_digest=None if previous_digest is None else bytes(previous_digest),
            previous_pepper_id=previous_pepper_id,
            previous_valid_until=previous_valid_until,
        )

    def _read(self, work: Callable[[Connection], _T]) -> _T:
        """Run a read outside any transaction (no BEGIN/ROLLBACK round trips), retried once on a
        fresh connection if the pooled one turned out dead (the database restarted), instead of
        pinging before every checkout."""
        with unreachable_as_unavailable():
            try:
                with self._reader.connect() as connection:
                    return work(connection)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
            with self._reader.connect() as connection:
                return work(connection)

    def _read_prepared(self, read: PreparedRead, values: Mapping[str, Any]) -> Sequence[Any] | None:
        """One row of a verify-path read (see e6auth.store.reads), or None."""
        try:
            return self._reads.one(read, values)
        except DBAPIError:
            # Translated only when it happens: entering the context manager on every read cost
            # as much as a tenth of the read.
            with unreachable_as_unavailable():
                raise

    def token_digest(self, secret: str, pepper_id: int | None = None) -> bytes:
        """HMAC of ``secret`` under the pepper named ``pepper_id`` (default: the current one)."""
        pepper = self._pepper if pepper_id is None else self._peppers.get(pepper_id)
        if pepper is None:
            raise StoreUnavailable(f"token digest made with unknown pepper {pepper_id}")
        return token_digest(pepper.key, secret)

    # -- invalidation log ----------------------------------------------------------------------

    def _log_invalidations(self, connection: Connection, events: list[Invalidation]) -> None:
        if not events:
            return
        if connection.dialect.name == "postgresql":
            # Serialise writers of the log so that its ids become visible in commit order: a
            # reader that has seen id N can then never later find a smaller id appear.
            connection.execute(text(f"LOCK TABLE {invalidations.name} IN EXCLUSIVE MODE"))
        now = self.now()
        connection.execute(
            insert(invalidations),
            [
                {"created_at": now, "token_id": event.token_id, "user_id": event.user_id}
                for event in events
            ],
        )
        if connection.dialect.name == "postgresql":
            # Delivered when this transaction commits: listeners read the log at once instead of
            # at their next poll. The payload is empty; the log is the one source of truth.
            connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})

    def _announce(self, events: list[Invalidation]) -> None:
        if not events:
            return
        for listener in list(self._listeners):
            try:
                listener(events)
            except Exception:
                log.exception("invalidation listener failed")

    def latest_invalidation_id(self) -> int:
        row = self._read_prepared(self._latest_invalidation, {})
        return int(row[0] or 0) if row is not None else 0

    def invalidations_after(self, last_id: int, *, limit: int = 1000) -> list[Invalidation]:
        """Log entries newer than ``last_id``, oldest first: one indexed range read."""
        with unreachable_as_unavailable():
            rows = self._reads.all(self._invalidations_after, {"last_id": last_id, "limit": limit})
        return [
            Invalidation(token_id=token_id, user_id=user_id, id=entry_id, created_at=created_at)
            for entry_id, token_id, user_id, created_at in rows
        ]

    def prune_invalidations(self, older_than: dt.datetime) -> int:
        with write_transaction(self.engine) as connection:
            result = connection.execute(
                delete(invalidations).where(invalidations.c.created_at < older_than)
            )
        return result.rowcount

    # -- last used -----------------------------------------------------------------------------

    def record_token_uses(
        self,
        uses: Mapping[str, TokenUse],
        *,
        max_peers: int = 5,
        on_new_peers: Callable[[str, tuple[str, ...]], None] | None = None,
    ) -> int:
        """Write the newest use of each token: one read and one batched UPDATE.

        ``last_used_at`` never moves backwards, whatever order processes flush in. Peer lists
        are merged with what is stored (newest first, distinct, at most ``max_peers``).
        ``on_new_peers`` is told, after the commit, of each token that already had stored peers
        and was now seen at others (the audit's "new address"). Returns the number of token
        rows written.
        """
        if not uses:
            return 0
        ids = sorted(uses)
        new_peers: list[tuple[str, tuple[str, ...]]] = []
        with write_transaction(self.engine) as connection:
            stored = {
                row.id: row.last_used_peers
                for row in connection.execute(_STORED_PEERS, {"ids": ids})
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


# The verify path's reads and the invalidation poll's, built once: see e6auth.store.reads.
_FIND_TOKEN = (
    select(
        tokens.c.id,
        tokens.c.user_id,
        users.c.name,
        users.c.disabled,
        tokens.c.digest,
        tokens.c.pepper_id,
        tokens.c.expires_at,
        tokens.c.revoked_at,
        tokens.c.allow_from,
        tokens.c.scope,
        tokens.c.rotated_at,
        tokens.c.previous_digest,
        tokens.c.previous_pepper_id,
        tokens.c.previous_valid_until,
    )
    .join(users, users.c.id == tokens.c.user_id)
    .where(tokens.c.id == bindparam("id"))
)
_FIND_USER = select(
    users.c.id,
    users.c.name,
    users.c.password_hash,
    users.c.password_generation,
    users.c.disabled,
    users.c.admin,
    users.c.session_generation,
    users.c.service,
).where(users.c.name == bindparam("name"))
_SESSION_ENDED = select(ended_sessions.c.session_hash).where(
    ended_sessions.c.session_hash == bindparam("hash")
)
_LATEST_INVALIDATION = select(func.max(invalidations.c.id))
_INVALIDATIONS_AFTER = (
    select(
        invalidations.c.id,
        invalidations.c.token_id,
        invalidations.c.user_id,
        invalidations.c.created_at,
    )
    .where(invalidations.c.id > bindparam("last_id"))
    .order_by(invalidations.c.id)
    .limit(bindparam("limit"))
)

# The last-used flush's statements, built once so that SQLAlchemy's compiled cache serves them.
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
    found = []
    for token_id, peers in stored.items():
        known = _load_peers(peers)
        fresh = tuple(peer for peer in uses[token_id].peers if peer not in known)
        if known and fresh:
            found.append((token_id, fresh))
    return found


def _merge_peers(newest: tuple[str, ...], stored: str | None, limit: int) -> str | None:
    merged = list(dict.fromkeys((*newest, *_load_peers(stored))))[:limit]
    return json.dumps(merged) if merged else None


def _load_peers(stored: str | None) -> tuple[str, ...]:
    if not stored:
        return ()
    try:
        peers = json.loads(stored)
    except ValueError:
        return ()
    return tuple(peer for peer in peers if isinstance(peer, str)) if isinstance(peers, list) else ()


def _shown_ranges(stored: str | None) -> tuple[str, ...] | None:
    networks = load_allow_from(stored)
    return None if networks is None else tuple(str(network) for network in networks)


def _session_hash(session_id: str) -> bytes:
    # Session ids are random (96 bits): an unkeyed hash cannot be reversed or guessed into.
    return hashlib.sha256(session_id.encode()).digest()


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


def _owners_by_service(connection: Connection) -> dict[int, tuple[str, ...]]:
    query = (
        select(service_owners.c.service_user_id, users.c.name)
        .join(users, users.c.id == service_owners.c.owner_user_id)
        .order_by(users.c.name)
    )
    owners: dict[int, list[str]] = {}
    for row in connection.execute(query):
        owners.setdefault(row.service_user_id, []).append(row.name)
    return {service: tuple(names) for service, names in owners.items()}
