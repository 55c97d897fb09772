"""The store's users: accounts and their passwords, administrators, web page sessions (the session
generation and the sessions signed out), and service accounts with their owners.

A small class over the facade's engine rather than functions: it owns the password hasher, made at
first use, and writes through the facade's invalidation log, so that a change that ends a user's
credentials is logged in its own transaction. ``TokenStore`` is the one entry point and documents
each call; the verify path's read of a user (``TokenStore.find_user``) stays with the store's
other prepared reads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from e6auth.credentials.hashgate import HashGate
from e6auth.credentials.passwords import Argon2Parameters, Passwords
from e6auth.credentials.tokens import looks_like_token
from e6auth.credentials.usernames import normalize_username
from e6auth.errors import InvalidUsername, PolicyError, UserExists, UserNotFound
from e6auth.store.database import unreachable_as_unavailable, write_transaction
from e6auth.store.invalidations import InvalidationLog
from e6auth.store.records import Invalidation, UserInfo, UserRecord
from e6auth.store.schema import ended_sessions, service_owners, users

__all__ = ["Users", "session_hash"]


class Users:
    """Writes and lists users. ``find_user`` is the facade's prepared read; ``reader`` gives the
    facade's engine for reads outside a transaction."""

    def __init__(
        self,
        engine: Engine,
        *,
        reader: Callable[[], Engine],
        now: Callable[[], dt.datetime],
        invalidations: InvalidationLog,
        find_user: Callable[[str], UserRecord | None],
        passwords: Passwords | None,
        argon2: Argon2Parameters | None,
        hash_gate: HashGate | None,
    ) -> None:
        self._engine = engine
        self._reader = reader
        self._now = now
        self._invalidations = invalidations
        self._find_user = find_user
        self._passwords = passwords
        self._argon2 = argon2
        self._hash_gate = hash_gate

    @property
    def passwords(self) -> Passwords:
        """Made at first use: making one hashes a dummy password (tens of milliseconds at the
        production parameters), which a command or a process that checks no password never
        needs. Two threads racing here make two: harmless."""
        if self._passwords is None:
            self._passwords = Passwords(self._argon2, gate=self._hash_gate)
        return self._passwords

    # -- users ---------------------------------------------------------------------------------

    def create_user(self, name: str, password: str | None, *, admin: bool) -> UserInfo:
        canonical = normalize_username(name)
        password_hash = self._new_password_hash(password) if password is not None else None
        now = self._now()
        try:
            with write_transaction(self._engine) as connection:
                user_id = _insert_user(
                    connection, canonical, now, password_hash=password_hash, admin=admin
                )
        except IntegrityError as exc:
            raise UserExists(f"user {canonical} already exists") from exc
        return UserInfo(user_id, canonical, False, password_hash is not None, now, admin=admin)

    def set_password(self, name: str, password: str) -> None:
        self._refuse_service_account(name, "has no password")
        password_hash = self._new_password_hash(password)
        self._update(
            name,
            invalidate=True,
            password_hash=password_hash,
            password_generation=users.c.password_generation + 1,
        )

    def set_disabled(self, name: str, disabled: bool) -> None:
        # Only disabling ends credentials a cache may hold: only it is logged.
        self._update(name, invalidate=disabled, disabled=disabled)

    def set_admin(self, name: str, admin: bool) -> None:
        if admin:
            self._refuse_service_account(name, "is no administrator")
        self._update(name, invalidate=False, admin=admin)

    def sign_out_everywhere(self, name: str) -> None:
        self._update(name, invalidate=False, session_generation=users.c.session_generation + 1)

    def replace_password_hash(self, user_id: int, old_hash: str, new_hash: str) -> bool:
        with write_transaction(self._engine) as connection:
            result = connection.execute(
                update(users)
                .where(users.c.id == user_id, users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )
        return result.rowcount == 1

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
        with unreachable_as_unavailable(), self._engine.connect() as connection:
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

    def _refuse_service_account(self, name: str, what: str) -> None:
        user = self._find_user(name)
        if user is not None and user.service:
            raise PolicyError(f"{user.name} is a service account: it {what}")

    def _new_password_hash(self, password: str) -> str:
        if looks_like_token(password):
            raise PolicyError("a password must not look like an access token")
        return self.passwords.hash(password)

    def _update(self, name: str, *, invalidate: bool, **values: object) -> None:
        canonical = normalize_username(name)
        with self._invalidations.transaction() as (connection, invalidated):
            user_id = connection.execute(
                update(users)
                .where(users.c.name == canonical)
                .values(updated_at=self._now(), **values)
                .returning(users.c.id)
            ).scalar_one_or_none()
            if user_id is None:
                raise UserNotFound(f"no user {canonical}")
            if invalidate:
                invalidated.append(Invalidation(user_id=user_id))

    # -- web page sessions ---------------------------------------------------------------------

    def end_session(self, session_id: str, *, expires_at: dt.datetime) -> None:
        digest = session_hash(session_id)
        try:
            with write_transaction(self._engine) as connection:
                connection.execute(
                    delete(ended_sessions).where(ended_sessions.c.expires_at <= self._now())
                )
                connection.execute(
                    insert(ended_sessions).values(session_hash=digest, expires_at=expires_at)
                )
        except IntegrityError:
            pass  # signed out twice at once: the other sign-out recorded it

    # -- service accounts ----------------------------------------------------------------------

    def create_service_account(self, name: str, owners: Sequence[str]) -> UserInfo:
        canonical = normalize_username(name)
        owner_names = list(dict.fromkeys(normalize_username(owner) for owner in owners))
        if not owner_names:
            raise PolicyError("a service account needs at least one owner (an administrator)")
        now = self._now()
        try:
            with write_transaction(self._engine) as connection:
                owner_ids = _admin_ids(connection, owner_names)
                user_id = _insert_user(
                    connection, canonical, now, password_hash=None, admin=False, service=True
                )
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
        self, name: str, *, add: Sequence[str], remove: Sequence[str]
    ) -> tuple[str, ...]:
        canonical = normalize_username(name)
        added = list(dict.fromkeys(normalize_username(owner) for owner in add))
        removed = {normalize_username(owner) for owner in remove}
        with write_transaction(self._engine) as connection:
            service_id = _service_id(connection, canonical)
            for owner_id in _admin_ids(connection, added):
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
        owner_user = users.alias("owner")
        query = (
            select(users.c.name)
            .join(service_owners, service_owners.c.service_user_id == users.c.id)
            .join(owner_user, owner_user.c.id == service_owners.c.owner_user_id)
            .where(owner_user.c.name == normalize_username(owner), owner_user.c.admin)
            .order_by(users.c.name)
        )
        with unreachable_as_unavailable(), self._reader().connect() as connection:
            return [row.name for row in connection.execute(query)]

    def owns_service_account(self, owner: str, service: str) -> bool:
        try:
            canonical = normalize_username(service)
        except InvalidUsername:
            return False
        return canonical in self.owned_service_accounts(owner)


def session_hash(session_id: str) -> bytes:
    """What the store keeps of a signed-out session's id."""
    # Session ids are random (96 bits): an unkeyed hash cannot be reversed or guessed into.
    return hashlib.sha256(session_id.encode()).digest()


def _insert_user(
    connection: Connection,
    canonical: str,
    now: dt.datetime,
    *,
    password_hash: str | None,
    admin: bool,
    service: bool = False,
) -> int:
    """A new user's row: enabled, at the first password generation; its id."""
    user_id: int = connection.execute(
        insert(users)
        .values(
            name=canonical,
            password_hash=password_hash,
            password_generation=0,
            disabled=False,
            admin=admin,
            service=service,
            created_at=now,
            updated_at=now,
        )
        .returning(users.c.id)
    ).scalar_one()
    return user_id


def _service_id(connection: Connection, canonical: str) -> int:
    row = connection.execute(
        select(users.c.id, users.c.service).where(users.c.name == canonical)
    ).one_or_none()
    if row is None:
        raise UserNotFound(f"no user {canonical}")
    if not row.service:
        raise PolicyError(f"{canonical} is no service account")
    return int(row.id)


def _admin_ids(connection: Connection, names: Sequence[str]) -> list[int]:
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
