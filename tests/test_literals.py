"""Connector-style string literals become standard ones, so bound parameters mean what they say."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from e6auth.query.literals import standard_string_literals


def connector_escape(value: str) -> str:
    """What the e6data connector writes for a string parameter (protocol reference, 2.6)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    escaped = escaped.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    return f"'{escaped}'"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select 'it\\'s'", "select 'it''s'"),
        ("select 'a\\\\b'", "select 'a\\b'"),
        ("select 'tab\\there'", "select 'tab\there'"),
        ("select 'C:\\path'", "select 'C:\\path'"),  # not an escape the connector writes
        ("select 'it''s'", "select 'it''s'"),  # standard SQL, untouched in meaning
        ("select E'a\\'b'", "select E'a\\'b'"),  # PostgreSQL escape strings have their own rules
        ("select $$a\\'b$$", "select $$a\\'b$$"),
        ("select $q$ 'x\\' $q$", "select $q$ 'x\\' $q$"),
        ('select "we\\ird" from t', 'select "we\\ird" from t'),
        ("select 1 -- it\\'s\n, 'b\\tc'", "select 1 -- it\\'s\n, 'b\tc'"),
        ("select /* '\\' */ 'x\\'y'", "select /* '\\' */ 'x''y'"),
        ("select 'unterminated\\'", "select 'unterminated\\'"),
        ("select name\\ from t", "select name\\ from t"),
    ],
)
def test_literals_are_rewritten_and_everything_else_is_left_alone(sql: str, expected: str) -> None:
    assert standard_string_literals(sql) == expected


def test_a_quote_in_a_parameter_cannot_end_its_literal() -> None:
    database = sqlite3.connect(":memory:")
    database.execute("create table t (a text)")
    hostile = connector_escape("' OR 1 = 1 --")
    sql = standard_string_literals(f"select count(*) from t where a = {hostile}")  # noqa: S608
    database.execute("insert into t values ('something')")
    assert database.execute(sql).fetchone() == (0,)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")))
def test_any_string_parameter_arrives_unchanged_in_sqlite(value: str) -> None:
    database = sqlite3.connect(":memory:")
    sql = standard_string_literals(f"select {connector_escape(value)}, 'tail'")
    assert database.execute(sql).fetchone() == (value, "tail")


@pytest.mark.postgres
def test_string_parameters_arrive_unchanged_in_postgresql(postgres_url: str) -> None:
    values = ["it's", "a\\b", "line\nbreak\ttab\r", "' OR 1 = 1 --", "\\'", "emoji 🦉", "$$"]
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            for value in values:
                sql = standard_string_literals(f"select {connector_escape(value)}")
                assert connection.execute(text(sql).bindparams()).scalar() == value, value
    finally:
        engine.dispose()
