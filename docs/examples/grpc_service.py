"""Your own grpcio service behind e6auth: every call is authenticated before its handler runs.

    python docs/examples/grpc_service.py [PORT]     # settings as for `e6auth` (E6AUTH_*, ...)

A client sends a token as ``authorization: Bearer <token>`` metadata (see :func:`call_hello`).
``tests/test_docs.py`` runs this file against a real server, so it cannot drift from the API.
"""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures

import grpc

from e6auth import Authenticator
from e6auth.grpc import AuthInterceptor, current_principal

SERVICE = "example.Greeter"
# Methods that pass without credentials: here a liveness ping (and grpc's health check, if added).
PUBLIC_METHODS = {f"/{SERVICE}/Ping", "/grpc.health.v1.Health/Check"}


def hello(request: bytes, context: grpc.ServicerContext) -> bytes:
    principal = current_principal()  # who is calling: set by the interceptor for this call only
    return f"hello {principal.username} ({principal.method} {principal.token_id})".encode()


def ping(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"pong"


def build_server(authenticator: Authenticator, address: str) -> tuple[grpc.Server, int]:
    """A started server with the interceptor in front of every method; returns it and its port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        interceptors=[AuthInterceptor(authenticator, public_methods=PUBLIC_METHODS)],
    )
    # Raw bytes keep the example free of generated stubs; a servicer from your .proto works the
    # same (a request with a `sessionId` field may also carry a session instead of a bearer).
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Hello": grpc.unary_unary_rpc_method_handler(hello),
        "Ping": grpc.unary_unary_rpc_method_handler(ping),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(address)
    server.start()
    return server, port


def call_hello(target: str, token: str | None) -> str:
    """The client side: one call with the token as bearer metadata."""
    with grpc.insecure_channel(target) as channel:
        hello_rpc: grpc.UnaryUnaryMultiCallable[bytes, bytes]
        hello_rpc = channel.unary_unary(f"/{SERVICE}/Hello")
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        reply: bytes = hello_rpc(b"", metadata=metadata, timeout=10)
        return reply.decode()


def main(argv: list[str]) -> None:
    port = int(argv[0]) if argv else 50052
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    # from_settings: the same store, pepper and session key as the `e6auth` command; closing it
    # writes the pending last-used times.
    with Authenticator.from_settings() as authenticator:
        server, port = build_server(authenticator, f"127.0.0.1:{port}")
        print(f"serving {SERVICE} on 127.0.0.1:{port}", flush=True)
        while not stopping.wait(0.5):
            pass
        server.stop(5).wait()  # let calls in flight finish


if __name__ == "__main__":
    main(sys.argv[1:])
