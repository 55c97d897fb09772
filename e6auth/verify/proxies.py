"""The client's address behind reverse proxies: ``X-Forwarded-For``, believed from trusted ones.

A proxy appends the address of whoever connected to it to ``X-Forwarded-For`` (gRPC metadata or an
HTTP header); everything to the left of that was written by the client, or by proxies further out,
and may be made up. So the client is the right-most address that is not itself a trusted proxy,
and only when the connection itself comes from a trusted proxy: from anyone else the header is
ignored, or every client could choose the address its failures count against and its
``--allow-from`` is checked against.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from e6auth.verify.restrictions import AllowedNetworks, Network, address_allowed

__all__ = ["FORWARDED_FOR", "MAX_HOPS", "TrustedProxies"]

FORWARDED_FOR = "x-forwarded-for"
"""The header (and gRPC metadata key) proxies append the client's address to."""
MAX_HOPS = 16
"""Forwarded addresses read at most, from the right: more proxies than this in a row is a loop or
a made-up chain, and reading a long header costs time on every refused call."""
_MAX_HEADER = 8192


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed: addresses or CIDR ranges, checked once
    (``ValueError`` for anything that is none, or a range with host bits set)."""

    def __init__(self, ranges: Iterable[str] = ()) -> None:
        networks: dict[Network, None] = {}
        for text in ranges:
            try:
                networks[ipaddress.ip_network(text.strip(), strict=True)] = None
            except ValueError as exc:
                raise ValueError(
                    f"{text!r} is not an address or a CIDR range (without host bits) of a proxy"
                ) from exc
        self._networks: AllowedNetworks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(network) for network in self._networks]!r})"

    @property
    def ranges(self) -> tuple[str, ...]:
        return tuple(str(network) for network in self._networks)

    def client_address(self, peer: str, forwarded: Iterable[str]) -> str:
        """The client's address for a connection from ``peer`` (as
        :func:`~e6auth.grpc.caller.peer_address` gives it) that carried the
        ``X-Forwarded-For`` values ``forwarded``, in the order received."""
        if not self._networks or not address_allowed(self._networks, peer):
            return peer
        hops = ",".join(forwarded)[-_MAX_HEADER:].split(",")[-MAX_HOPS:]
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break  # made up or mangled: nothing to its left can be followed either
            client = address
            if not address_allowed(self._networks, address):
                break
        return client


def _address(hop: str) -> str | None:
    """The address in one ``X-Forwarded-For`` entry (some proxies add a port, IPv6 in brackets),
    canonical and an IPv4-mapped IPv6 address as IPv4; None if there is none."""
    text = hop.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
