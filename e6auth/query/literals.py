"""String literals as the e6data connector writes them, rewritten for standard-SQL databases.

The connector substitutes query parameters itself, Hive style: inside '...' a quote is written
\\', a backslash \\\\, and tab, CR and LF \\t, \\r, \\n. SQLite and PostgreSQL read literals the
standard way (backslash is an ordinary character, a quote is doubled), so taken as they are, a
parameter with a quote breaks the statement, and ``' OR 1=1 --`` escapes its literal. Every
single-quoted literal is therefore decoded with the connector's escapes and written back in
standard form. Escapes the connector never writes (\\x, \\d, ...) are kept as they are, so a
Windows path in a literal survives.

Everything else is copied unchanged: comments, "quoted identifiers", PostgreSQL E'...' strings
and $tag$ dollar-quoted bodies, whose rules differ.
"""

from __future__ import annotations

import re

__all__ = ["standard_string_literals"]

_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
# What may start something the translation must step over, or a literal.
_SPECIAL = re.compile(r"""--|/\*|["'$]""")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")
_IDENTIFIER_CHAR = re.compile(r"[A-Za-z0-9_$]")


def standard_string_literals(sql: str) -> str:
    """``sql`` with every connector-style string literal rewritten as a standard one."""
    if "\\" not in sql:
        return sql  # without backslashes both readings agree
    out: list[str] = []
    position = 0
    length = len(sql)
    while position < length:
        match = _SPECIAL.search(sql, position)
        if match is None:
            out.append(sql[position:])
            break
        start = match.start()
        out.append(sql[position:start])
        opener = match.group()
        if opener == "--":
            end = sql.find("\n", start)
            end = length if end < 0 else end + 1
        elif opener == "/*":
            end = sql.find("*/", start + 2)
            end = length if end < 0 else end + 2
        elif opener == '"':
            end = _quoted_end(sql, start, '"')
        elif opener == "$":
            end = _dollar_end(sql, start)
        elif start > 0 and sql[start - 1] in "Ee" and not _identifier_before(sql, start - 1):
            end = _escape_string_end(sql, start)  # PostgreSQL E'...': its own escapes
        else:
            literal, end = _connector_literal(sql, start)
            if literal is not None:
                out.append("'" + literal.replace("'", "''") + "'")
                position = end
                continue
        out.append(sql[start:end])
        position = end
    return "".join(out)


def _connector_literal(sql: str, start: int) -> tuple[str | None, int]:
    """The value of the literal opening at ``start`` and the index after it; None when it is not
    closed (the database then reports the error on the text as written)."""
    index = start + 1
    value: list[str] = []
    length = len(sql)
    while index < length:
        character = sql[index]
        if character == "\\" and index + 1 < length:
            following = sql[index + 1]
            value.append(_ESCAPES.get(following, character + following))
            index += 2
        elif character == "'":
            return "".join(value), index + 1
        else:
            value.append(character)
            index += 1
    return None, length


def _quoted_end(sql: str, start: int, quote: str) -> int:
    index = start + 1
    while True:
        index = sql.find(quote, index)
        if index < 0:
            return len(sql)
        if sql.startswith(quote * 2, index):
            index += 2
            continue
        return index + 1


def _escape_string_end(sql: str, start: int) -> int:
    index = start + 1
    length = len(sql)
    while index < length:
        character = sql[index]
        if character == "\\":
            index += 2
        elif character == "'":
            if sql.startswith("''", index):
                index += 2
                continue
            return index + 1
        else:
            index += 1
    return length


def _dollar_end(sql: str, start: int) -> int:
    match = _DOLLAR_TAG.match(sql, start)
    if match is None or _identifier_before(sql, start):
        return start + 1  # a $ in an identifier or a $1 placeholder: an ordinary character
    tag = match.group()
    end = sql.find(tag, match.end())
    return len(sql) if end < 0 else end + len(tag)


def _identifier_before(sql: str, index: int) -> bool:
    return index > 0 and _IDENTIFIER_CHAR.match(sql[index - 1]) is not None
