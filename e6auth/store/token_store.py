"""The token store: users, their passwords and their personal access tokens, in SQL.

``TokenStore`` is the one entry point, a thin facade. It owns the engine, the policy (callers may
replace it), the peppers and the verify path's reads, prepared once (e6auth.store.reads) and kept
here next to the statements they run, since the hot path is tuned as one piece. Everything else
is one call to a part named after what it keeps: ``users`` (accounts, passwords, administrators,
web page sessions, service accounts) and ``tokens`` (creating, rotating, listing, revoking,
counting), small classes built once over the facade's engine; ``invalidations``, the log both
write in the transaction of each change that ends a credential; ``usage``, the last-used flush.
Each part keeps its transactions as they were, so callers see one store, as before the split.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, bindparam, func, select
from sqlalchemy.exc import DBAPIError

from e6auth.clock import Clock, to_datetime
from e6auth.credentials.hashgate import HashGate
from e6auth.credentials.keys import Pepper
from e6auth.credentials.passwords import Argon2Parameters, Passwords
from e6auth.credentials.usernames import normalize_username
from e6auth.errors import InvalidUsername, StoreUnavailable
from e6auth.store.database import engine_from_settings, unreachable_as_unavailable
from e6auth.store.invalidations import NOTIFY_CHANNEL, InvalidationListener, InvalidationLog
from e6auth.store.migrate import ensure_schema
from e6auth.store.reads import PreparedRead, PreparedReads, Values
from e6auth.store.records import (
    DeleteResult,
    Invalidation,
    NewToken,
    TokenInfo,
    TokenRecord,
    TokenUse,
    UserInfo,
    UserRecord,
    make_token_record,
)
from e6auth.store.schema import ended_sessions, invalidations, tokens, users
from e6auth.store.tokens import MAX_COMMENT_LENGTH, MAX_EXPIRES_DAYS, Tokens
from e6auth.store.usage import NewPeersListener, record_token_uses
from e6auth.store.users import Users
from e6auth.store.users import session_hash as _session_hash
from e6auth.verify.policy import DEFAULT_ROTATION_GRACE, MAX_ROTATION_GRACE, Policy

if TYPE_CHECKING:
    from e6auth.settings import Settings

__all__ = [
    "DEFAULT_ROTATION_GRACE",
    "MAX_COMMENT_LENGTH",
    "MAX_EXPIRES_DAYS",
    "MAX_ROTATION_GRACE",
    "NOTIFY_CHANNEL",
    "TokenStore",
]

_T = TypeVar("_T")


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
        use, hashing through ``hash_gate`` (see e6auth.credentials.hashgate) when one is given."""
        self.engine = engine
        self.policy = policy or Policy()
        self._pepper = pepper
        self._peppers = {known.id: known for known in peppers}
        self._peppers[pepper.id] = pepper
        self._clock = clock
        self._invalidations = InvalidationLog(engine, self.now)
        self._users = Users(
            engine,
            # Read at each call: the reader is made below, with the verify path's reads.
            reader=lambda: self._reader,
            now=self.now,
            invalidations=self._invalidations,
            find_user=self.find_user,
            passwords=passwords,
            argon2=argon2,
            hash_gate=hash_gate,
        )
        self._tokens = Tokens(
            engine=engine,
            read=self._read,
            now=self.now,
            invalidations=self._invalidations,
            pepper=pepper,
            peppers=self._peppers,
        )
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
        from e6auth.settings import Settings

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
        """Hashing and checking passwords, made at first use (see e6auth.store.users)."""
        return self._users.passwords

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

    def __enter__(self) -> TokenStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def now(self) -> dt.datetime:
        return to_datetime(self._clock())

    def add_invalidation_listener(self, listener: InvalidationListener) -> None:
        """Call ``listener`` after every invalidating change this store commits.

        Other processes learn of the same changes from the invalidation log
        (:meth:`invalidations_after`).
        """
        self._invalidations.add_listener(listener)

    def remove_invalidation_listener(self, listener: InvalidationListener) -> None:
        self._invalidations.remove_listener(listener)

    # -- users ---------------------------------------------------------------------------------

    def create_user(
        self, name: str, password: str | None = None, *, admin: bool = False
    ) -> UserInfo:
        """Add a user; without a password the user can log in with tokens only. An ``admin``
        sees and deletes every user's tokens on the web page."""
        return self._users.create_user(name, password, admin=admin)

    def set_password(self, name: str, password: str) -> None:
        """Change a password. Sessions and cached logins made with the old one end."""
        self._users.set_password(name, password)

    def disable_user(self, name: str) -> None:
        """Refuse every credential of the user from the next verify on, in every process."""
        self._users.set_disabled(name, True)

    def enable_user(self, name: str) -> None:
        self._users.set_disabled(name, False)

    def set_admin(self, name: str, admin: bool) -> None:
        """Make a user an administrator of the web page, or no longer one. Nothing is cached on
        it: the web page reads it on every request, so a change applies to open sessions too."""
        self._users.set_admin(name, admin)

    def sign_out_everywhere(self, name: str) -> None:
        """End every web page session of the user, on every replica: sessions carry the user's
        session generation, which this bumps; each request of the page reads it from here."""
        self._users.sign_out_everywhere(name)

    # -- web page sessions ---------------------------------------------------------------------

    def end_session(self, session_id: str, *, expires_at: dt.datetime) -> None:
        """Record that a web page session was signed out, so that every process refuses it from
        now on, after a restart too. ``expires_at`` is when it would have ended anyway: the
        record is pruned after that (by the next sign-out), which keeps the table as small as
        the sign-outs of one maximum session age."""
        self._users.end_session(session_id, expires_at=expires_at)

    def session_ended(self, session_id: str) -> bool:
        """Whether a web page session was signed out (:meth:`end_session`): one indexed read."""
        found = self._read_prepared(self._session_ended, (_session_hash(session_id),))
        return found is not None

    def list_users(self) -> list[UserInfo]:
        return self._users.list_users()

    # -- service accounts ----------------------------------------------------------------------

    def create_service_account(self, name: str, owners: Sequence[str]) -> UserInfo:
        """Add a service account (no password, never signs in on the web page) whose tokens the
        ``owners`` manage: at least one, each an administrator."""
        return self._users.create_service_account(name, owners)

    def set_service_owners(
        self, name: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """Add and remove owners of a service account; its owners afterwards (never none)."""
        return self._users.set_service_owners(name, add=add, remove=remove)

    def owned_service_accounts(self, owner: str) -> list[str]:
        """The names of the service accounts ``owner`` manages, sorted."""
        return self._users.owned_service_accounts(owner)

    def owns_service_account(self, owner: str, service: str) -> bool:
        """Whether ``owner`` is an administrator who manages the service account ``service``."""
        return self._users.owns_service_account(owner, service)

    def find_user(self, name: str) -> UserRecord | None:
        """The user called ``name`` (any case), or None; also None for a name no user can have."""
        try:
            canonical = normalize_username(name)
        except InvalidUsername:
            return None
        row = self._read_prepared(self._find_user, (canonical,))
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
        return self._users.replace_password_hash(user_id, old_hash, new_hash)

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
        return self._tokens.create(
            user,
            policy=self.policy,
            comment=comment,
            expires_days=expires_days,
            allow_from=allow_from,
            read_only=read_only,
        )

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
        return self._tokens.rotate(token_id, grace=grace, user=user)

    def unused_tokens(self, before: dt.datetime) -> list[TokenInfo]:
        """Unrevoked tokens last used, or never used and created, before ``before``."""
        return self._tokens.unused(before)

    def revoke_unused(
        self, *, dry_run: bool = False, after_days: int | None = None
    ) -> list[TokenInfo]:
        """Revoke the tokens unused for the policy's ``revoke_unused_after_days`` (or
        ``after_days``), as :meth:`delete_tokens` does, so that caches everywhere drop them;
        returns them. A no-op when there is no such rule."""
        return self._tokens.revoke_unused(
            policy=self.policy, dry_run=dry_run, after_days=after_days
        )

    def find_token_info(self, token_id: str) -> TokenInfo | None:
        """A token as listings show it, by id."""
        return self._tokens.info(token_id)

    def pepper_usage(self) -> dict[int, int]:
        """How many tokens (revoked ones included) have their digest made with each pepper id,
        previous secrets still in their grace window counted too; known peppers no token uses
        count 0. Never a key."""
        return self._tokens.pepper_usage()

    @property
    def pepper_ids(self) -> tuple[int, ...]:
        """The known pepper ids, oldest first; the last makes new digests."""
        return self._tokens.pepper_ids

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        return self._tokens.infos(lambda query: query, user=user)

    def delete_tokens(self, ids: Iterable[str], *, user: str | None = None) -> DeleteResult:
        """Revoke several tokens at once. Unknown ids are reported; the others are still revoked.

        With ``user``, only that user's tokens count as found (a console user deleting their own).
        """
        return self._tokens.delete(ids, user=user)

    def find_token(self, token_id: str) -> TokenRecord | None:
        """The token and its owner, by public id: one indexed read."""
        try:
            # _read_prepared's work, without its call: this read is most of a cache miss.
            rows = self._reads.rows(self._find_token, (token_id,), "one")
        except DBAPIError:
            with unreachable_as_unavailable():
                raise
        # The read's columns are the record's fields, in order; its binary columns come as
        # bytes (the column types' processors make them so on drivers that give memoryviews).
        return make_token_record(rows[0]) if rows else None

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

    def _read_prepared(self, read: PreparedRead, values: Values) -> Sequence[Any] | None:
        """One row of a verify-path read (see e6auth.store.reads), or None."""
        try:
            rows = self._reads.rows(read, values, "one")
            return rows[0] if rows else None
        except DBAPIError:
            # Translated only when it happens: entering the context manager on every read cost
            # as much as a tenth of the read.
            with unreachable_as_unavailable():
                raise

    def token_digest(self, secret: str, pepper_id: int | None = None) -> bytes:
        """HMAC of ``secret`` under the pepper named ``pepper_id`` (default: the current one)."""
        tokens = self._tokens
        pepper = tokens.pepper if pepper_id is None else tokens.peppers.get(pepper_id)
        if pepper is None:
            raise StoreUnavailable(f"token digest made with unknown pepper {pepper_id}")
        return pepper.digest(secret)

    # -- invalidation log ----------------------------------------------------------------------

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
        return self._invalidations.prune(older_than)

    # -- last used -----------------------------------------------------------------------------

    def record_token_uses(
        self,
        uses: Mapping[str, TokenUse],
        *,
        max_peers: int = 5,
        on_new_peers: NewPeersListener | None = None,
    ) -> int:
        """Write the newest use of each token: one read and one batched UPDATE.

        ``last_used_at`` never moves backwards, whatever order processes flush in. Peer lists
        are merged with what is stored (newest first, distinct, at most ``max_peers``).
        ``on_new_peers`` is told, after the commit, of each token that already had stored peers
        and was now seen at others (the audit's "new address"). Returns the number of token
        rows written.
        """
        return record_token_uses(self.engine, uses, max_peers=max_peers, on_new_peers=on_new_peers)


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
