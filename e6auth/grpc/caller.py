"""Who is calling: the address a gRPC call comes from, and the principal its credential proves
(a bearer token in its ``authorization`` metadata, else the ``sessionId`` of its request).

The address is the gRPC peer's, or when the peer is a trusted proxy the one it forwards; the
interceptor, the service's audit and the throttle all key on it, so it is read in one way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias
from urllib.parse import unquote

import grpc
import grpc.aio

from e6auth.errors import MissingCredentials
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.principal import Principal
from e6auth.verify.proxies import FORWARDED_FOR, TrustedProxies
from e6auth.verify.restrictions import Peer

__all__ = [
    "AnyContext",
    "Metadata",
    "authenticate_call",
    "authorization",
    "cached_principal",
    "client_address",
    "peer_address",
]

SESSION_FIELD = "sessionId"
MAX_AUTHORIZATION_LENGTH = 8192

Metadata = Iterable[tuple[str, str | bytes]]
# Generic only in the type stubs: a string, so that nothing subscripts it at run time.
AnyContext: TypeAlias = "grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]"


def peer_address(peer: str) -> str:
    """The address part of a gRPC peer string: ``ipv4:10.0.0.7:5123`` gives ``10.0.0.7``,
    ``ipv6:%5B::1%5D:5123`` gives ``::1``."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        # gRPC core percent-encodes the URI's brackets: left encoded, the port stayed in the
        # "address", and every connection of a client was a new key to the throttle.
        rest = unquote(rest)
        host = rest.rpartition(":")[0] if rest.startswith("[") else rest
        return host.strip("[]")
    return peer[:100]


def client_address(context: AnyContext, proxies: TrustedProxies) -> str:
    """The caller's address: the gRPC peer's, or when the peer is one of ``proxies``, the
    address it forwards in ``x-forwarded-for`` metadata (see :mod:`e6auth.verify.proxies`)."""
    address = peer_address(context.peer())
    if not proxies:
        return address
    forwarded = [
        value
        for key, value in context.invocation_metadata() or ()
        if key == FORWARDED_FOR and isinstance(value, str)
    ]
    return proxies.client_address(address, forwarded)


def authorization(metadata: Metadata | None) -> str | bytes | None:
    """The call's ``authorization`` metadata value as sent, or None without one."""
    for key, value in metadata or ():
        if key == "authorization":
            return value
    return None


def authenticate_call(
    authenticator: Authenticator, metadata: Metadata | None, request: object, peer: Peer
) -> Principal:
    """The principal for one call: the bearer token if there is one, else the session id.

    ``peer`` may be a callable: asking gRPC for the peer address costs more than a cache hit,
    so it is resolved only when the last-used recorder wants it.
    """
    presented = authorization(metadata)
    if presented is not None:
        if isinstance(presented, bytes) or len(presented) > MAX_AUTHORIZATION_LENGTH:
            raise MissingCredentials("unusable authorization metadata")
        scheme, _, credential = presented.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise MissingCredentials("authorization metadata is not a bearer token")
        return authenticator.verify_token(credential.strip(), peer=peer)
    session_id = getattr(request, SESSION_FIELD, "")
    if not isinstance(session_id, str) or not session_id:
        raise MissingCredentials("no session id and no bearer token")
    return authenticator.verify_session(session_id, peer=peer)


def cached_principal(
    authenticator: Authenticator, metadata: Metadata | None, request: object, now: float
) -> Principal | None:
    """The call's principal when the cache alone can tell (most calls of a connection), else
    None: then :func:`authenticate_call` decides, and refuses what it must."""
    presented = authorization(metadata)
    session_id = None if presented is not None else getattr(request, SESSION_FIELD, None)
    return authenticator.cached_call(presented, session_id, now)
