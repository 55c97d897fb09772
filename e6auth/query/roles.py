"""Templates that map an e6auth user to the database role their statements run as.

Apart from the query engine so that settings can check a template without importing it.
"""

from __future__ import annotations

import string

__all__ = ["PLACEHOLDER", "check_role_template", "role_for"]

PLACEHOLDER = "username"


def check_role_template(template: str) -> str:
    """``template`` if it is plain text around ``{username}``; else ValueError. A format spec,
    a conversion, an attribute or another field would make role names nobody meant."""
    try:
        fields = [
            (field, spec, conversion)
            for _text, field, spec, conversion in string.Formatter().parse(template)
            if field is not None
        ]
    except ValueError as exc:
        raise ValueError(f"role template {template!r}: {exc}") from None
    if not fields or any(
        field != PLACEHOLDER or spec or conversion for field, spec, conversion in fields
    ):
        raise ValueError(
            f"role template {template!r} must contain {{{PLACEHOLDER}}} and no other "
            "placeholder, format spec or conversion"
        )
    return template


def role_for(template: str, username: str) -> str:
    """The role name ``template`` gives ``username`` (not yet checked against any database)."""
    return template.format(**{PLACEHOLDER: username})
