"""The token store: SQLAlchemy tables, the TokenStore and its Alembic migrations.

The records (``e6auth.store.records``) are plain dataclasses, imported with the package and
exported as they are listed there. The stores are exported lazily (PEP 562): importing this
package, or a record, does not load SQLAlchemy; using a store does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from e6auth._exports import lazy_exports
from e6auth.store import records
from e6auth.store.records import *  # noqa: F403 (the records' own __all__ says what they are)

if TYPE_CHECKING:
    from e6auth.store.audit import AuditStore, AuthEvent, QueryEvent
    from e6auth.store.token_store import TokenStore

__all__ = ["AuditStore", "AuthEvent", "QueryEvent", "TokenStore", *records.__all__]

_EXPORTS: dict[str, str] = {
    "AuditStore": "e6auth.store.audit",
    "AuthEvent": "e6auth.store.audit",
    "QueryEvent": "e6auth.store.audit",
    "TokenStore": "e6auth.store.token_store",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
