"""The token store: users, their passwords and their personal access tokens, in SQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from e6auth.clock import Clock, to_datetime
from e6auth.errors import (
    InvalidUsername,
    PolicyError,
    StoreUnavailable,
    UserExists,
    UserNotFound,
)
from e6auth.keys import Pepper
from e6auth.passwords import Passwords
from e6auth.settings import Settings
from e6auth.store.engine import engine_from_settings
from e6auth.store.migrate import ensure_schema
from e6auth.store.records import (
    DeleteResult,
    NewToken,
    TokenInfo,
    TokenRecord,
    UserInfo,
    UserRecord,
)
from e6auth.store.schema import tokens, users
from e6auth.tokens import generate_token, is_token_id, looks_like_token, token_digest
from e6auth.usernames import normalize_username

__all__ = ["MAX_COMMENT_LENGTH", "MAX_EXPIRES_DAYS", "TokenStore"]

log = logging.getLogger("e6auth.store")

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
    ) -> None:
        self.engine = engine
        self.passwords = passwords or Passwords()
        self._pepper = pepper
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, clock: Clock = time.time
    ) -> TokenStore:
        settings = settings or Settings()
        engine = engine_from_settings(settings)
        try:
            with _unreachable_as_unavailable():
                ensure_schema(engine, migrate=settings.migrate_on_first_use)
            pepper = settings.load_pepper()
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, pepper=pepper, passwords=Passwords(settings.argon2), clock=clock)

    def __repr__(self) -> str:
        return f"TokenStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        self.engine.dispose()

    def now(self) -> dt.datetime:
        return to_datetime(self._clock())

    # -- users ---------------------------------------------------------------------------------

    def create_user(self, name: str, password: str | None = None) -> UserInfo:
        """Add a user; without a password the user can log in with tokens only."""
        canonical = normalize_username(name)
        password_hash = self._new_password_hash(password) if password is not None else None
        now = self.now()
        try:
            with _unreachable_as_unavailable(), self.engine.begin() as connection:
                user_id = connection.execute(
                    insert(users)
                    .values(
                        name=canonical,
                        password_hash=password_hash,
                        password_generation=0,
                        disabled=False,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(users.c.id)
                ).scalar_one()
        except IntegrityError as exc:
            raise UserExists(f"user {canonical} already exists") from exc
        return UserInfo(user_id, canonical, False, password_hash is not None, now)

    def set_password(self, name: str, password: str) -> None:
        """Change a password. Sessions bound to the old one end (the generation moves on)."""
        password_hash = self._new_password_hash(password)
        self._update_user(
            name,
            password_hash=password_hash,
            password_generation=users.c.password_generation + 1,
        )

    def disable_user(self, name: str) -> None:
        self._update_user(name, disabled=True)

    def enable_user(self, name: str) -> None:
        self._update_user(name, disabled=False)

    def list_users(self) -> list[UserInfo]:
        query = select(
            users.c.id,
            users.c.name,
            users.c.disabled,
            users.c.password_hash.is_not(None).label("has_password"),
            users.c.created_at,
        ).order_by(users.c.name)
        with _unreachable_as_unavailable(), self.engine.connect() as connection:
            return [
                UserInfo(row.id, row.name, row.disabled, row.has_password, row.created_at)
                for row in connection.execute(query)
            ]

    def find_user(self, name: str) -> UserRecord | None:
        """The user called ``name`` (any case), or None; also None for a name no user can have."""
        try:
            canonical = normalize_username(name)
        except InvalidUsername:
            return None
        query = select(
            users.c.id,
            users.c.name,
            users.c.password_hash,
            users.c.password_generation,
            users.c.disabled,
        ).where(users.c.name == canonical)
        with _unreachable_as_unavailable(), self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            return None
        return UserRecord(
            row.id, row.name, row.password_hash, row.password_generation, row.disabled
        )

    def replace_password_hash(self, user_id: int, old_hash: str, new_hash: str) -> bool:
        """Swap in a re-hash of the same password, unless the password changed meanwhile."""
        with _unreachable_as_unavailable(), self.engine.begin() as connection:
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

    def _update_user(self, name: str, **values: object) -> None:
        canonical = normalize_username(name)
        with _unreachable_as_unavailable(), self.engine.begin() as connection:
            result = connection.execute(
                update(users)
                .where(users.c.name == canonical)
                .values(updated_at=self.now(), **values)
            )
        if result.rowcount != 1:
            raise UserNotFound(f"no user {canonical}")

    # -- tokens --------------------------------------------------------------------------------

    def create_token(
        self, user: str, *, comment: str | None = None, expires_days: int | None = None
    ) -> NewToken:
        """Create a token for ``user``; the result holds the secret, this once only."""
        canonical = normalize_username(user)
        comment = _check_comment(comment)
        now = self.now()
        expires_at = None
        if expires_days is not None:
            if isinstance(expires_days, bool) or not 1 <= expires_days <= MAX_EXPIRES_DAYS:
                raise PolicyError(f"expiry must be from 1 to {MAX_EXPIRES_DAYS} days")
            expires_at = now + dt.timedelta(days=expires_days)
        with _unreachable_as_unavailable():
            for _ in range(_ID_ATTEMPTS):
                parsed, token = generate_token()
                try:
                    with self.engine.begin() as connection:
                        user_id = connection.execute(
                            select(users.c.id).where(users.c.name == canonical)
                        ).scalar_one_or_none()
                        if user_id is None:
                            raise UserNotFound(f"no user {canonical}")
                        connection.execute(
                            insert(tokens).values(
                                id=parsed.id,
                                user_id=user_id,
                                digest=token_digest(self._pepper.key, parsed.secret),
                                pepper_id=self._pepper.id,
                                comment=comment,
                                created_at=now,
                                expires_at=expires_at,
                            )
                        )
                except IntegrityError:  # an id collision: 62**12 ids make this vanishingly rare
                    log.warning("token id collision, generating another")
                    continue
                log.info("created token %s for %s", parsed.id, canonical)
                return NewToken(parsed.id, canonical, token, comment, now, expires_at)
        raise RuntimeError("could not generate a unique token id")

    def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        query = (
            select(
                tokens.c.id,
                users.c.name,
                tokens.c.comment,
                tokens.c.created_at,
                tokens.c.expires_at,
                tokens.c.last_used_at,
                tokens.c.revoked_at,
            )
            .join(users, users.c.id == tokens.c.user_id)
            .order_by(tokens.c.created_at, tokens.c.id)
        )
        if user is not None:
            canonical = normalize_username(user)
            query = query.where(users.c.name == canonical)
        with _unreachable_as_unavailable(), self.engine.connect() as connection:
            if user is not None and not _user_exists(connection, canonical):
                raise UserNotFound(f"no user {canonical}")
            return [TokenInfo(*row) for row in connection.execute(query)]

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
        with _unreachable_as_unavailable(), self.engine.begin() as connection:
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
        query = (
            select(
                tokens.c.id,
                tokens.c.user_id,
                users.c.name,
                users.c.disabled,
                tokens.c.digest,
                tokens.c.pepper_id,
                tokens.c.expires_at,
                tokens.c.revoked_at,
            )
            .join(users, users.c.id == tokens.c.user_id)
            .where(tokens.c.id == token_id)
        )
        with _unreachable_as_unavailable(), self.engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None:
            return None
        return TokenRecord(
            id=row.id,
            user_id=row.user_id,
            user=row.name,
            user_disabled=row.disabled,
            digest=bytes(row.digest),
            pepper_id=row.pepper_id,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )

    def token_digest(self, secret: str, pepper_id: int | None = None) -> bytes:
        """HMAC of ``secret`` under the pepper named ``pepper_id`` (default: the current one)."""
        if pepper_id not in (None, self._pepper.id):
            raise StoreUnavailable(f"token digest made with unknown pepper {pepper_id}")
        return token_digest(self._pepper.key, secret)


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


@contextlib.contextmanager
def _unreachable_as_unavailable() -> Iterator[None]:
    """Turn 'the database is not there' into StoreUnavailable, without the driver's full text."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(f"token store unreachable ({type(exc.orig).__name__})") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable("token store connection lost") from exc
        raise
