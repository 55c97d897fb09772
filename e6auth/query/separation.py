"""The query database must not be the token store: every token could read every token's hash.

Compared as databases, not as strings: a URL that differs only in driver, password or the spelling
of a local host is the same database, and so is a SQLite file reached by another path.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import URL, make_url

from e6auth.errors import UnsafeConfiguration

__all__ = ["check_query_database", "same_database"]

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433}
# All name this machine's server; a socket directory (host=/run/postgresql) does as well.
_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1", "[::1]"})


def check_query_database(query_url: str, *, store_url: str) -> None:
    """Raise :class:`~e6auth.errors.UnsafeConfiguration` if ``query_url`` is the token store.
    The message names neither URL: either may hold a password."""
    if same_database(query_url, store_url):
        raise UnsafeConfiguration(
            "the query database (query_url) is the token store (database_url): any token could "
            "read every token's hash there; point query_url at another database"
        )


def same_database(first: str, second: str) -> bool:
    """Whether two SQLAlchemy URLs reach the same database (an unparsable URL: not known to)."""
    try:
        one, other = make_url(first), make_url(second)
    except Exception:  # the engine will refuse it with its own message
        return False
    backend = one.get_backend_name()
    if backend != other.get_backend_name():
        return False
    if backend == "sqlite":
        return _same_sqlite_file(one.database, other.database)
    return _server_key(one) == _server_key(other)


def _server_key(url: URL) -> tuple[str, int | None, str | None]:
    host = (url.host or "").lower()
    if host in _LOCAL_HOSTS or host.startswith("/"):
        host = "localhost"
    port = url.port or _DEFAULT_PORTS.get(url.get_backend_name())
    # PostgreSQL's default database is the user's name.
    return host, port, url.database or url.username


def _same_sqlite_file(first: str | None, second: str | None) -> bool:
    if not first or not second or ":memory:" in (first, second):
        return False  # an in-memory database is private to its connection
    one, other = Path(first).expanduser(), Path(second).expanduser()
    if one.exists() and other.exists():
        return os.path.samefile(one, other)
    return one.resolve() == other.resolve()
