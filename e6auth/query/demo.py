"""A small sample database for ``e6auth serve --demo``: customers and their orders.

Deterministic (computed, not random) and idempotent: rows have fixed ids and are inserted with
``INSERT OR IGNORE``, so creating it again changes nothing. It covers what a connector must
render: integers, floats, non-ASCII text, dates and timestamps (ISO text, as SQLite stores them)
and NULLs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DEMO_CUSTOMERS", "DEMO_ORDERS", "create_demo_database"]

DEMO_CUSTOMERS = 120
DEMO_ORDERS = 400

_FIRST_NAMES = (
    "Ada", "Zoë", "José", "Ægir", "Søren", "Ñandú", "Chloé", "Mikołaj", "Ítalo", "Grace",
    "李雷", "Алина", "Σοφία", "Åsa", "Dvořák", "Nguyễn",
)  # fmt: skip
_LAST_NAMES = (
    "Lovelace", "Müller", "García", "Ólafsson", "Kierkegaard", "Straße", "O'Brien", "Hopper",
    "Wójcik", "Tanaka",
)  # fmt: skip
_COUNTRIES = ("DE", "FR", "ES", "IS", "DK", "PL", "JP", "US", "GB", "VN", "IN")
_STATUSES = ("placed", "shipped", "delivered", "returned")
_START = dt.datetime(2024, 1, 1, 8, 0, 0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    country TEXT NOT NULL,
    signup_date DATE NOT NULL,
    credit_limit REAL,
    vip BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    ordered_at TIMESTAMP NOT NULL,
    status TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price REAL NOT NULL,
    discount REAL,
    note TEXT
);
"""


def create_demo_database(path: str | Path) -> str:
    """Create (or complete) the demo database at ``path``; returns its SQLAlchemy URL."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.executescript(_SCHEMA)
        connection.executemany(
            "INSERT OR IGNORE INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", _customers()
        )
        connection.executemany(
            "INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _orders()
        )
        connection.commit()
    return f"sqlite:///{path.resolve()}"


def _customers() -> Iterator[tuple[object, ...]]:
    for id_ in range(1, DEMO_CUSTOMERS + 1):
        first = _FIRST_NAMES[id_ % len(_FIRST_NAMES)]
        last = _LAST_NAMES[(id_ * 7) % len(_LAST_NAMES)]
        email = None if id_ % 9 == 0 else f"customer{id_}@example.com"
        signup = dt.date(2023, 1, 1) + dt.timedelta(days=(id_ * 37) % 500)
        credit = None if id_ % 11 == 0 else round(500 + (id_ * 137) % 9500 + (id_ % 100) / 100, 2)
        yield (
            id_,
            f"{first} {last}",
            email,
            _COUNTRIES[(id_ * 5) % len(_COUNTRIES)],
            signup.isoformat(),
            credit,
            int(id_ % 10 == 0),
        )


def _orders() -> Iterator[tuple[object, ...]]:
    for id_ in range(1, DEMO_ORDERS + 1):
        ordered_at = _START + dt.timedelta(minutes=id_ * 613, seconds=id_ * 7 % 60)
        yield (
            id_,
            1 + (id_ * 31) % DEMO_CUSTOMERS,
            ordered_at.isoformat(sep=" "),
            _STATUSES[(id_ * 3) % len(_STATUSES)],
            1 + id_ % 5,
            round(2.5 + (id_ * 173) % 20000 / 100, 2),
            None if id_ % 4 else round((id_ % 30) / 100, 2),
            None if id_ % 6 else f"Lieferung an Tür {id_} — merci ✓",
        )
