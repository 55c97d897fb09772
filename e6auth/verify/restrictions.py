"""Per-token restrictions: the address ranges a token may be used from, and its scope.

A token may carry a list of CIDR ranges (IPv4 and IPv6); it is then refused from any other
address, on the handshake and on every call made with it or with a session made with it. The
ranges are parsed once, when the token is loaded, and travel in the cached
:class:`~e6auth.verify.principal.Principal`: checking a call costs one parse of the peer
address and a membership test, and only for tokens that have ranges.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from typing import Final, Literal

from e6auth.errors import AddressNotAllowed, PolicyError

__all__ = [
    "MAX_ALLOWED_RANGES",
    "SCOPE_ALL",
    "SCOPE_READ_ONLY",
    "AllowedNetworks",
    "Network",
    "Scope",
    "address_allowed",
    "check_peer",
    "dump_allow_from",
    "load_allow_from",
    "parse_allow_from",
    "peer_address",
]

MAX_ALLOWED_RANGES: Final = 32
"""More ranges than a person can review is a sign of a mistake (or of a list that should be a
firewall rule)."""
_MAX_RANGE_TEXT = 64

Scope = Literal["all", "read_only"]
SCOPE_ALL: Final[Scope] = "all"
SCOPE_READ_ONLY: Final[Scope] = "read_only"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AllowedNetworks = tuple[Network, ...]
Peer = str | Callable[[], str]
"""A caller's address, or a function that finds it only when asked: the one definition, used by
the interceptor, the authenticator and the last-used recorder."""


def peer_address(peer: Peer | None) -> str | None:
    """The caller's address, found now if ``peer`` is the function that finds it."""
    return peer() if callable(peer) else peer


def parse_allow_from(ranges: Sequence[str]) -> AllowedNetworks:
    """Validated, de-duplicated ranges, in the order given, or :class:`PolicyError`.

    A range with host bits set (``10.0.0.7/8``) is refused rather than widened silently: the
    person who typed it probably meant a narrower range than the one it would become. A bare
    address is a range of one (``/32`` or ``/128``).
    """
    if isinstance(ranges, str):
        raise PolicyError("allowed address ranges must be a list of CIDR ranges, not one string")
    networks: dict[Network, None] = {}
    for text in ranges:
        if not isinstance(text, str) or not text.strip() or len(text) > _MAX_RANGE_TEXT:
            raise PolicyError("an allowed address range must be CIDR text such as 10.0.0.0/8")
        shown = text.strip()
        try:
            # An interface (address/prefix) keeps the address, so host bits can be seen.
            interface = ipaddress.ip_interface(shown)
        except ValueError:
            raise PolicyError(
                f"{shown!r} is not a CIDR range (such as 10.0.0.0/8 or 2001:db8::/32)"
            ) from None
        network = interface.network
        if interface.ip != network.network_address:
            raise PolicyError(f"{shown!r} has host bits set: did you mean {str(network)!r}?")
        networks[network] = None
    if not networks:
        raise PolicyError("give at least one allowed address range, or none to allow any")
    if len(networks) > MAX_ALLOWED_RANGES:
        raise PolicyError(f"at most {MAX_ALLOWED_RANGES} allowed address ranges per token")
    return tuple(networks)


def dump_allow_from(networks: AllowedNetworks | None) -> str | None:
    """The column value: a JSON list of CIDR strings, or NULL for "from anywhere"."""
    return None if networks is None else json.dumps([str(network) for network in networks])


def load_allow_from(stored: str | None) -> AllowedNetworks | None:
    """The ranges from the column. A value that cannot be read allows nothing (fails closed):
    it was not written by e6auth, and guessing what it meant could widen a restriction."""
    if stored is None:
        return None
    try:
        texts = json.loads(stored)
        # ip_network(7) would be 0.0.0.7/32: only strings are ranges.
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            return ()
        return tuple(ipaddress.ip_network(text, strict=True) for text in texts)
    except (ValueError, TypeError):
        return ()


def address_allowed(networks: AllowedNetworks, address: str) -> bool:
    """Whether ``address`` (as :func:`e6auth.grpc.caller.peer_address` gives it) lies in
    one of ``networks``. An IPv4-mapped IPv6 address (``::ffff:10.0.0.7``, what a dual-stack
    listener reports for IPv4 clients) counts as its IPv4 address. Anything that is not an IP
    address (a Unix socket, an unknown peer) matches nothing."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # `in` is False across versions, so no version check is needed.
    return any(ip in network for network in networks)


def check_peer(networks: AllowedNetworks, peer: Peer | None, *, token_id: str | None) -> None:
    """Raise :class:`AddressNotAllowed` unless ``peer`` is in ``networks``. No peer at all is
    refused: a restriction nobody can check is not met."""
    address = peer_address(peer)
    if address is None or not address_allowed(networks, address):
        shown = "an unknown address" if address is None else repr(address[:100])
        raise AddressNotAllowed(f"token {token_id} may not be used from {shown}")
