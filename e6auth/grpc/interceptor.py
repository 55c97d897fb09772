"""One server interceptor that authenticates every RPC, for grpcio's sync server and grpc.aio.

Add it to your own service in a few lines::

    auth = Authenticator.from_settings()
    server = grpc.server(executor, interceptors=[AuthInterceptor(auth)])
    ...
    def MyMethod(self, request, context):
        principal = current_principal()     # who is calling

A call is authenticated by its ``authorization: Bearer <token>`` metadata if it has one, else by
the ``sessionId`` field of its request (what the e6data handshake hands out). Methods listed as
public (the handshake, health checks, reflection) pass without credentials. Every
:class:`~e6auth.errors.E6AuthError` raised by authentication or by a handler becomes its gRPC status
with its fixed public message; nothing else of it reaches the client.
"""

from __future__ import annotations

import asyncio
import inspect
import warnings
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeAlias

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from e6auth.errors import E6AuthError, MalformedRequest, MissingCredentials
from e6auth.grpc import caller, refusals
from e6auth.grpc.caller import SESSION_FIELD, authenticate_call, cached_principal, client_address
from e6auth.grpc.refusals import failed, refused
from e6auth.logs import CallContext, bind_call, call_var
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.principal import Principal
from e6auth.verify.sessions import TOUCH_GRANULARITY_SECONDS as SESSION_GRANULARITY

__all__ = [
    "DEFAULT_PUBLIC_METHODS",
    "AioAuthInterceptor",
    "AuthInterceptor",
    "authenticate_call",
    "current_principal",
]

DEFAULT_PUBLIC_METHODS: frozenset[str] = frozenset(
    {
        "/QueryEngineService/authenticate",
        # The connector sends getCataloges with an empty body and, in password mode, no credential.
        "/QueryEngineService/getCataloges",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)

# Names that lived here before the caller's address and the refusal path got modules of their
# own: still importable from this module, with a warning.
# (client_address, which it uses, stays importable from here as it was.)
_MOVED = {"peer_address": caller, "RETRY_AFTER": refusals}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__}.{name} moved to {home.__name__}.{name}", DeprecationWarning, stacklevel=2
    )
    return getattr(home, name)


def current_principal() -> Principal:
    """The principal of the call being handled; raises if the call was not authenticated."""
    call = call_var.get()
    principal = call.principal if type(call) is CallContext else None
    if principal is None:
        raise MissingCredentials("no authenticated principal for this call")
    return principal


class _Undecodable:
    """Stands in for a request body the method's message type cannot parse."""


_UNDECODABLE = _Undecodable()
Deserializer = Callable[[bytes], Any]


def _lenient(deserializer: Deserializer | None) -> Deserializer | None:
    """``deserializer``, answering an unparsable body with a marker instead of raising: grpcio
    would otherwise answer INTERNAL "Exception deserializing request!" and log a traceback. The
    wrapped handler refuses the marker as :class:`~e6auth.errors.MalformedRequest`."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


def _as_is(body: bytes) -> Any:
    return body


def _malformed() -> MalformedRequest:
    return MalformedRequest("request body is not a valid message")


Handler = Callable[[Any, grpc.ServicerContext], Any]
AioHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Any]
# Generic only in the type stubs: a string, so that nothing subscripts it at run time.
RpcHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class _Interceptor:
    """What both interceptors hold: the authenticator, the methods that need no credential, and
    each method's wrapped handler, built once (wrapping builds closures: not on every call)."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        public_methods: Iterable[str] = DEFAULT_PUBLIC_METHODS,
    ) -> None:
        self._authenticator = authenticator
        self._public = frozenset(public_methods)
        self._wrapped: dict[str, tuple[RpcHandler, RpcHandler]] = {}

    def _wrapped_handler(self, handler: RpcHandler, method: str) -> RpcHandler:
        """``handler`` wrapped, made on the method's first call (and if its handler changed)."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        return self._wrap_and_keep(handler, method)

    def _wrap_and_keep(self, handler: RpcHandler, method: str) -> RpcHandler:
        wrapped = self._wrap_handler(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap_handler(self, handler: RpcHandler, method: str) -> RpcHandler:
        raise NotImplementedError


class AuthInterceptor(_Interceptor, grpc.ServerInterceptor):
    """The interceptor for ``grpc.server``."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], RpcHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> RpcHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        # _wrapped_handler, inline: every call of the server runs this.
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        return self._wrap_and_keep(handler, method)

    def _wrap_handler(self, handler: RpcHandler, method: str) -> RpcHandler:
        public = method in self._public
        # The wrapper parses the request body itself (grpcio hands it the bytes): an unparsable
        # body is then refused as MalformedRequest, where grpcio would answer INTERNAL and log a
        # traceback, and without a deserializer wrapped around grpcio's (a call more per RPC).
        parse = handler.request_deserializer or _as_is
        if handler.unary_unary is not None:
            wrap = self._wrap_public if public else self._wrap
            return grpc.unary_unary_rpc_method_handler(
                wrap(handler.unary_unary, method, parse),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_streamed(handler.unary_stream, method, public, parse),
                response_serializer=handler.response_serializer,
            )
        if public:
            return handler
        # Streaming requests carry no session id before the handler reads them: such methods
        # are served only to bearer tokens, checked up front.
        return self._guard_stream(handler, method)

    def _refuse(self, method: str, error: E6AuthError, context: grpc.ServicerContext) -> None:
        """Log, audit and answer a refused call (``context.abort`` raises)."""
        context.abort(*refused(self._authenticator, method, error, context))

    def _fail(self, method: str, error: E6AuthError, context: grpc.ServicerContext) -> None:
        """Answer an error a handler raised with its status (``context.abort`` raises)."""
        context.abort(*failed(self._authenticator, method, error, context))

    def _parse(
        self, parse: Deserializer, body: bytes, method: str, context: grpc.ServicerContext
    ) -> Any:
        try:
            return parse(body)
        except DecodeError:
            self._refuse(method, _malformed(), context)
            raise  # _refuse() aborts; this line only tells type checkers so

    def _authenticate(
        self, method: str, request: object, context: grpc.ServicerContext
    ) -> Principal:
        """The principal of a call the cache could not answer, or the call refused."""
        authenticator = self._authenticator
        try:
            return authenticate_call(
                authenticator,
                context.invocation_metadata(),
                request,
                lambda: client_address(context, authenticator.trusted_proxies),
            )
        except E6AuthError as error:
            self._refuse(method, error, context)
            raise  # _refuse() aborts; this line only tells type checkers so

    def _wrap(self, behavior: Handler, method: str, parse: Deserializer) -> Handler:
        authenticator = self._authenticator
        clock = authenticator.call_clock

        # Every authenticated call of the server runs this: it is written for few frames and
        # few attribute reads (each costs throughput at saturation, measured).
        def authenticated(body: bytes, context: grpc.ServicerContext) -> Any:
            metadata = context.invocation_metadata()
            # CallContext.new, inline: a call less on every RPC.
            call = CallContext()
            call.metadata = metadata
            call.principal = call.request_id = None
            call_token = call_var.set(call)
            try:
                try:
                    request = parse(body)
                except DecodeError:
                    self._refuse(method, _malformed(), context)
                    raise  # _refuse() aborts; this line only tells type checkers so
                started = clock()
                # _cached_principal, inline: a call less on every RPC (measured).
                presented = None
                for key, value in metadata or ():
                    if key == "authorization":
                        presented = value
                        break
                principal = authenticator.cached_call(
                    presented,
                    getattr(request, SESSION_FIELD, None) if presented is None else None,
                    started,
                )
                if principal is None:
                    principal = self._authenticate(method, request, context)
                call.principal = principal
                try:
                    return behavior(request, context)
                except E6AuthError as error:
                    self._fail(method, error, context)
                finally:
                    # A call shorter than the session clock's granularity was noted when it began.
                    if (
                        principal.session_id is not None
                        and clock() - started >= SESSION_GRANULARITY
                    ):
                        authenticator.call_finished(principal, started)
            finally:
                call_var.reset(call_token)

        return authenticated

    def _wrap_public(self, behavior: Handler, method: str, parse: Deserializer) -> Handler:
        def public(body: bytes, context: grpc.ServicerContext) -> Any:
            call_token = bind_call(context.invocation_metadata())
            try:
                request = self._parse(parse, body, method, context)
                return behavior(request, context)
            except E6AuthError as error:
                self._fail(method, error, context)
            finally:
                call_var.reset(call_token)

        return public

    def _wrap_streamed(
        self, behavior: Handler, method: str, public: bool, parse: Deserializer
    ) -> Handler:
        """A unary request with streamed responses: authenticated as a unary call, and each
        response made with the call bound (grpcio iterates them after the handler returned)."""
        authenticator = self._authenticator

        def streamed(body: bytes, context: grpc.ServicerContext) -> Iterator[Any]:
            call = CallContext.new(context.invocation_metadata())
            call_token = call_var.set(call)
            try:
                request = self._parse(parse, body, method, context)
                started = authenticator.call_started()
                if not public:
                    call.principal = cached_principal(
                        authenticator, call.metadata, request, started
                    ) or self._authenticate(method, request, context)
                responses = behavior(request, context)
            finally:
                call_var.reset(call_token)
            try:
                yield from self._responses(responses, call, method, context)
            finally:
                if call.principal is not None:
                    authenticator.call_finished(call.principal, started)

        return streamed

    def _responses(
        self,
        responses: Iterator[Any],
        call: CallContext,
        method: str,
        context: grpc.ServicerContext,
    ) -> Iterator[Any]:
        """``responses``, each made with ``call`` bound; an error the handler raises becomes its
        status. Bound around each step only: between steps grpcio runs, maybe elsewhere."""
        while True:
            call_token = call_var.set(call)
            try:
                response = next(responses)
            except StopIteration:
                return
            except E6AuthError as error:
                self._fail(method, error, context)
            finally:
                call_var.reset(call_token)
            yield response

    def _guard_stream(self, handler: RpcHandler, method: str) -> RpcHandler:
        """Streamed requests: authenticated by bearer metadata before the handler runs."""
        streamed_responses = handler.stream_stream is not None
        inner: Any = handler.stream_stream or handler.stream_unary

        def guarded(requests: Any, context: grpc.ServicerContext) -> Any:
            call = CallContext.new(context.invocation_metadata())
            call_token = call_var.set(call)
            try:
                call.principal = self._authenticate(method, None, context)
                result = inner(requests, context)
            except E6AuthError as error:
                self._fail(method, error, context)
            finally:
                call_var.reset(call_token)
            return self._responses(result, call, method, context) if streamed_responses else result

        factory = (
            grpc.stream_stream_rpc_method_handler
            if streamed_responses
            else grpc.stream_unary_rpc_method_handler
        )
        guarded_handler: RpcHandler = factory(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return guarded_handler


class AioAuthInterceptor(_Interceptor, grpc.aio.ServerInterceptor):
    """The interceptor for ``grpc.aio.server``.

    Verification may read the token store, so it runs in a worker thread and never blocks the
    event loop; a call the cache alone can answer is answered on the loop.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[RpcHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> RpcHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrapped_handler(handler, handler_call_details.method)

    def _wrap_handler(self, handler: RpcHandler, method: str) -> RpcHandler:
        public = method in self._public
        unary_request = handler.unary_unary is not None or handler.unary_stream is not None
        if public and not unary_request:
            return handler
        # Streamed requests carry no session id before the handler reads them: such methods
        # are served only to bearer tokens, checked up front.
        factory = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        kind = next(name for name in factory if getattr(handler, name) is not None)
        deserializer = handler.request_deserializer
        wrapped: RpcHandler = factory[kind](
            self._wrap(getattr(handler, kind), method, public, unary_request),
            request_deserializer=_lenient(deserializer) if unary_request else deserializer,
            response_serializer=handler.response_serializer,
        )
        return wrapped

    async def _refuse(
        self, method: str, error: E6AuthError, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Log, audit and answer a refused call (``context.abort`` raises)."""
        await context.abort(*refused(self._authenticator, method, error, context))

    async def _fail(
        self, method: str, error: E6AuthError, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        """Answer an error a handler raised with its status (``context.abort`` raises)."""
        await context.abort(*failed(self._authenticator, method, error, context))

    async def _principal_or_abort(
        self, method: str, request: object, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Principal:
        peer = client_address(context, self._authenticator.trusted_proxies)
        try:
            return await asyncio.to_thread(
                authenticate_call, self._authenticator, context.invocation_metadata(), request, peer
            )
        except E6AuthError as error:
            await self._refuse(method, error, context)
            raise  # abort() raises; this line only tells type checkers so

    async def _begin(
        self,
        method: str,
        public: bool,
        request: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        started: float,
    ) -> CallContext:
        """Bind the call, refuse an unparsable body, and authenticate it unless it is public.

        grpc.aio runs each call in a task of its own, with a copy of the context: what a call
        binds ends with it, and needs no reset.
        """
        call = CallContext.new(context.invocation_metadata())
        call_var.set(call)
        if request is _UNDECODABLE:
            await self._refuse(method, _malformed(), context)
        if not public:
            # A cache hit needs no I/O: answered on the event loop, without a thread hop.
            call.principal = cached_principal(
                self._authenticator, call.metadata, request, started
            ) or await self._principal_or_abort(method, request, context)
        return call

    def _wrap(
        self, behavior: AioHandler, method: str, public: bool, unary_request: bool
    ) -> AioHandler:
        """Any kind of method: a coroutine function grpc.aio awaits for the response, or for a
        streamed response one that writes each (so the call stays bound while it streams)."""

        # Else a coroutine function: a response, or None from a streaming one that writes.
        yields = inspect.isasyncgenfunction(behavior)

        async def authenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = self._authenticator.call_started()
            body = request if unary_request else None
            call = await self._begin(method, public, body, context, started)
            try:
                if not yields:
                    return await behavior(request, context)
                async for response in behavior(request, context):
                    await context.write(response)
                return None
            except E6AuthError as error:
                await self._fail(method, error, context)
            finally:
                if call.principal is not None:
                    self._authenticator.call_finished(call.principal, started)

        return authenticated
