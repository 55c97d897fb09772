"""Creating the SQLAlchemy engine for the token store."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import StaticPool

from e6auth.credentials.keys import ensure_home
from e6auth.errors import StoreUnavailable
from e6auth.settings.sources import DATABASE_FILE
from e6auth.settings.values import safe_url

if TYPE_CHECKING:
    from e6auth.settings import Settings

__all__ = [
    "create_store_engine",
    "engine_from_settings",
    "safe_url",
    "unreachable_as_unavailable",
    "write_transaction",
]

SQLITE_BUSY_TIMEOUT_MS = 10_000
_PING = text("SELECT 1")


def create_store_engine(url: str, **options: Any) -> Engine:
    """An engine for ``url``; on SQLite, with the pragmas a shared multi-process file needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No pre-ping (a round trip per checkout): the verify path retries a read once on a
        # fresh connection instead, and SQLAlchemy drops the pool when it sees a disconnect.
        options.setdefault("pool_recycle", 1800)
        return create_engine(parsed, **options)
    in_memory = parsed.database in (None, "", ":memory:")
    options.setdefault("connect_args", {})["check_same_thread"] = False
    if in_memory:
        # One shared connection, or every checkout would see its own empty database.
        options.setdefault("poolclass", StaticPool)
    engine = create_engine(parsed, **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if not in_memory:
            # WAL lets the gateway read while the command line writes.
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    return engine


def engine_from_settings(settings: Settings) -> Engine:
    """The store's engine; the embedded default lives in a private file in the state folder."""
    if settings.database_url is None:
        _create_private_file(ensure_home(settings.home) / DATABASE_FILE)
    return create_store_engine(settings.resolved_database_url)


def _create_private_file(path: Path) -> None:
    """Create the embedded database 0600 before SQLite does (it would follow the umask)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


@contextlib.contextmanager
def unreachable_as_unavailable() -> Iterator[None]:
    """Turn 'the database is not there' into StoreUnavailable, without the driver's full text
    (which can name hosts and users)."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(f"token store unreachable ({type(exc.orig).__name__})") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable("token store connection lost") from exc
        raise


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` on a connection known to be alive, with database failures told as
    :class:`~e6auth.errors.StoreUnavailable` (:func:`unreachable_as_unavailable`).

    A pooled connection that outlived a database restart fails on first use. A read is simply
    tried again (``TokenStore._read``); a write cannot be once it was sent, since one that failed
    at COMMIT may have been made. So the transaction begins with a ping: if that finds the
    connection dead, nothing else was sent, and it begins again on a fresh connection
    (SQLAlchemy drops the whole pool when it sees a disconnect). One round trip more per write;
    writes are management commands and background flushes, never the request path.
    """
    with unreachable_as_unavailable():
        for attempt in (1, 2):
            connection = engine.connect()
            transaction = connection.begin()
            try:
                connection.execute(_PING)
            except DBAPIError as exc:
                connection.close()
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                continue
            with connection, transaction:
                yield connection
            return
