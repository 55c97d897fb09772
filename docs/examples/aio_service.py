"""Your own grpc.aio service behind e6auth: the asyncio twin of ``grpc_service.py``.

    python docs/examples/aio_service.py [PORT]      # settings as for `e6auth` (E6AUTH_*, ...)

The interceptor verifies in a worker thread (a cache miss reads the token store), so the event
loop never blocks on the database. ``tests/test_docs.py`` runs this file against a real server.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
import grpc.aio

from e6auth import Authenticator
from e6auth.grpc import AioAuthInterceptor, current_principal

SERVICE = "example.Greeter"
PUBLIC_METHODS = {f"/{SERVICE}/Ping", "/grpc.health.v1.Health/Check"}


async def hello(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    principal = current_principal()  # a context variable: correct per call, also under asyncio
    return f"hello {principal.username} ({principal.method} {principal.token_id})".encode()


async def ping(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b"pong"


async def start_server(authenticator: Authenticator, address: str) -> tuple[grpc.aio.Server, int]:
    """A started server with the interceptor in front of every method; returns it and its port."""
    server = grpc.aio.server(
        interceptors=[AioAuthInterceptor(authenticator, public_methods=PUBLIC_METHODS)]
    )
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Hello": grpc.unary_unary_rpc_method_handler(hello),
        "Ping": grpc.unary_unary_rpc_method_handler(ping),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port(address)
    await server.start()
    return server, port


async def call_hello(target: str, token: str | None) -> str:
    """The client side: one call with the token as bearer metadata."""
    async with grpc.aio.insecure_channel(target) as channel:
        hello_rpc: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
        hello_rpc = channel.unary_unary(f"/{SERVICE}/Hello")
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        reply: bytes = await hello_rpc(b"", metadata=metadata, timeout=10)
        return reply.decode()


async def serve(port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    with Authenticator.from_settings() as authenticator:
        server, port = await start_server(authenticator, f"127.0.0.1:{port}")
        print(f"serving {SERVICE} on 127.0.0.1:{port}", flush=True)
        await stopping.wait()
        await server.stop(5)  # let calls in flight finish


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 50052))
