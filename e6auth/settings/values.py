"""Reading, checking and masking single setting values: host names, http(s) URLs, keys and
peppers, database URLs, proxies, query roles, JWT algorithms, names in any case.

Plain functions the Settings' declarations name (``parse=``, ``check=``, ``shown=``), apart from
the model so that it reads as its declarations; the web page (``LOCAL_HOST_NAMES``) and the store
(``safe_url``) use them too. A check imports what it checks with when a value is given: the
defaults are not checked, so reading settings that leave them loads none of it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from e6auth.settings.conversions import SecretStr

__all__ = [
    "LOCAL_HOST_NAMES",
    "allowed_host",
    "allowed_hosts",
    "check_http_url",
    "check_key_length",
    "check_peppers",
    "host_names_from_text",
    "lower_case",
    "oidc_algorithms",
    "proxy_ranges",
    "role_template",
    "safe_url",
    "upper_case",
    "words",
]

LOCAL_HOST_NAMES = ("localhost", "127.0.0.1", "[::1]")
# DNS labels (and "_", seen in real names), optionally under "*." for every subdomain.
_HOST_NAME = re.compile(
    r"(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*"
)


def allowed_host(text: str) -> str:
    """A host name as the Host header carries it (lower case; IPv6 in brackets), or ValueError."""
    host = text.strip().lower()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in bare:
        import ipaddress

        try:
            return f"[{ipaddress.IPv6Address(bare).compressed}]"
        except ValueError:
            raise ValueError(
                f"{text!r} is no host name (give none with a port: every port is taken)"
            ) from None
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(f"{text!r} is no host name (a pattern is *.example.com)")
    return host


def host_names_from_text(value: object) -> object:
    """Text (as the environment gives it) as a list of host names: a JSON list, or names
    separated by commas; anything else as it is."""
    if not isinstance(value, str):
        return value
    if value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except ValueError:
            pass  # "[::1], localhost": a list of names after all
    return [part for part in value.split(",") if part.strip()]


def allowed_hosts(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Host names checked by :func:`allowed_host`, each once; at least one, or None."""
    if value is None:
        return None
    if not value:
        raise ValueError("give at least one host name")
    return tuple(dict.fromkeys(allowed_host(host) for host in value))


def check_http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("https://", "http://")):
        raise ValueError("must be an https:// (or http://) URL")
    return value


def check_key_length(value: SecretStr | None) -> SecretStr | None:
    from e6auth.credentials.keys import MIN_KEY_BYTES

    if value is not None and len(value.get_secret_value().encode()) < MIN_KEY_BYTES:
        raise ValueError(f"must be at least {MIN_KEY_BYTES} bytes long")
    return value


def check_peppers(value: SecretStr | None) -> SecretStr | None:
    """``value`` if it is peppers as ``id:key,id:key`` (see e6auth.credentials.peppers)."""
    from e6auth.credentials.peppers import parse_peppers

    if value is not None:
        parse_peppers(value.get_secret_value())
    return value


def role_template(value: str | None) -> str | None:
    """A ``query_role`` template (see e6auth.query.roles)."""
    from e6auth.query.roles import check_role_template

    return None if value is None else check_role_template(value)


def oidc_algorithms(value: tuple[str, ...]) -> tuple[str, ...]:
    """Asymmetric JWS algorithms only (see e6auth.verify.oidc)."""
    from e6auth.verify.oidc import check_algorithms

    return check_algorithms(value)


def words(value: object) -> object:
    """Text (as the environment gives it) as the words separated by commas or spaces in it;
    anything else as it is."""
    return value.replace(",", " ").split() if isinstance(value, str) else value


def proxy_ranges(value: tuple[str, ...]) -> tuple[str, ...]:
    """Proxy addresses as the CIDR ranges they are (see e6auth.verify.proxies)."""
    from e6auth.verify.proxies import TrustedProxies

    return TrustedProxies(value).ranges


def upper_case(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def lower_case(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def safe_url(url: str) -> str:
    """``url`` with any password masked, for messages, logs and reprs."""
    from sqlalchemy import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"
