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
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias
from urllib.parse import unquote

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from e6auth.background.audit import token_id_of
from e6auth.errors import E6AuthError, MalformedRequest, MissingCredentials, Throttled
from e6auth.logs import REQUEST_ID_HEADER, CallSlot, bind_call, call_var, current_request_id
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.principal import Principal
from e6auth.verify.proxies import FORWARDED_FOR, TrustedProxies
from e6auth.verify.restrictions import Peer
from e6auth.verify.sessions import TOUCH_GRANULARITY_SECONDS as SESSION_GRANULARITY

__all__ = [
    "DEFAULT_PUBLIC_METHODS",
    "AioAuthInterceptor",
    "AuthInterceptor",
    "authenticate_call",
    "client_address",
    "current_principal",
    "peer_address",
]

log = logging.getLogger("e6auth.grpc")

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
SESSION_FIELD = "sessionId"
MAX_AUTHORIZATION_LENGTH = 8192
RETRY_AFTER = "retry-after"
"""Trailing metadata of a throttled call: whole seconds to wait, as HTTP's Retry-After."""

PRINCIPAL = 1
"""Where a call's principal is in its slot (:data:`e6auth.logs.CallSlot`)."""


def current_principal() -> Principal:
    """The principal of the call being handled; raises if the call was not authenticated."""
    slot = call_var.get()
    principal: Principal | None = slot[PRINCIPAL] if type(slot) is list else None
    if principal is None:
        raise MissingCredentials("no authenticated principal for this call")
    return principal


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


Metadata = Iterable[tuple[str, str | bytes]]
AnyContext: TypeAlias = "grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]"


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


def authenticate_call(
    authenticator: Authenticator, metadata: Metadata | None, request: object, peer: Peer
) -> Principal:
    """The principal for one call: the bearer token if there is one, else the session id.

    ``peer`` may be a callable: asking gRPC for the peer address costs more than a cache hit,
    so it is resolved only when the last-used recorder wants it.
    """
    authorization = _authorization(metadata)
    if authorization is not None:
        if isinstance(authorization, bytes) or len(authorization) > MAX_AUTHORIZATION_LENGTH:
            raise MissingCredentials("unusable authorization metadata")
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise MissingCredentials("authorization metadata is not a bearer token")
        return authenticator.verify_token(credential.strip(), peer=peer)
    session_id = getattr(request, SESSION_FIELD, "")
    if not isinstance(session_id, str) or not session_id:
        raise MissingCredentials("no session id and no bearer token")
    return authenticator.verify_session(session_id, peer=peer)


def _cached_principal(
    authenticator: Authenticator, metadata: Metadata | None, request: object, now: float
) -> Principal | None:
    """The call's principal when the cache alone can tell (most calls of a connection), else
    None: then :func:`authenticate_call` decides, and refuses what it must."""
    authorization = _authorization(metadata)
    session_id = None if authorization is not None else getattr(request, SESSION_FIELD, None)
    return authenticator.cached_call(authorization, session_id, now)


def _authorization(metadata: Metadata | None) -> str | bytes | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value
    return None


def _status(error: E6AuthError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.grpc_status, grpc.StatusCode.INTERNAL)


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


def _set_error_trailers(
    context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any], error: E6AuthError
) -> None:
    """The trailers of a refused or failed call: its request id, to find its log lines by, and
    for a throttled attempt how long to wait."""
    trailers: tuple[tuple[str, str], ...] = ()
    request_id = current_request_id()
    if request_id is not None:
        trailers = ((REQUEST_ID_HEADER, request_id),)
    if isinstance(error, Throttled):
        trailers = (*trailers, (RETRY_AFTER, str(error.retry_after_seconds)))
    if trailers:
        context.set_trailing_metadata(trailers)


def _handler_failed(
    method: str, error: E6AuthError, context: grpc.ServicerContext, proxies: TrustedProxies
) -> None:
    """Answer an :class:`~e6auth.errors.E6AuthError` a sync handler raised with its status,
    logged and with its trailers (``context.abort`` raises)."""
    _log_refusal(method, error, client_address(context, proxies))
    _set_error_trailers(context, error)
    context.abort(_status(error), error.client_message())


def _answer_refusal(
    authenticator: Authenticator,
    method: str,
    error: E6AuthError,
    peer: str,
    context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any],
) -> None:
    """What every call the interceptor refuses gets, sync or grpc.aio, before its abort: a log
    line, an audit event and the error trailers. The one refusal path of both interceptors."""
    _log_refusal(method, error, peer)
    _audit_refusal(authenticator, method, error, peer, context.invocation_metadata())
    _set_error_trailers(context, error)


def _log_refusal(method: str, error: E6AuthError, peer: str) -> None:
    # The detail names users and token ids, never secrets.
    log.info("refused %s from %s: %s (%s)", method, peer, error.reason, error.detail)


def _audit_refusal(
    authenticator: Authenticator,
    method: str,
    error: E6AuthError,
    peer: str,
    metadata: Metadata | None,
) -> None:
    audit = authenticator.audit
    if audit is None:
        return
    authorization = _authorization(metadata)
    credential = authorization.strip().partition(" ")[2] if isinstance(authorization, str) else ""
    audit.refused_call(method, error, peer, token_id=token_id_of(credential.strip()))


Handler = Callable[[Any, grpc.ServicerContext], Any]
# Generic only in the type stubs: a string, so that nothing subscripts it at run time.
RpcHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class AuthInterceptor(grpc.ServerInterceptor):
    """The interceptor for ``grpc.server``."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        public_methods: Iterable[str] = DEFAULT_PUBLIC_METHODS,
    ) -> None:
        self._authenticator = authenticator
        self._public = frozenset(public_methods)
        # Wrapping builds closures: done once per method and handler, not on every call.
        self._wrapped: dict[str, tuple[RpcHandler, RpcHandler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], RpcHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> RpcHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap_handler(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap_handler(self, handler: RpcHandler, method: str) -> RpcHandler:
        public = method in self._public
        # The wrapper parses the request body itself (grpcio hands it the bytes): an unparsable
        # body is then refused as MalformedRequest, where grpcio would answer INTERNAL and log a
        # traceback, and without a deserializer wrapped around grpcio's (a call more per RPC).
        parse = handler.request_deserializer or _as_is
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, method, public, parse),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap(handler.unary_stream, method, public, parse),
                response_serializer=handler.response_serializer,
            )
        if public:
            return handler
        # Streaming requests carry no session id before the handler reads them: such methods
        # are served only to bearer tokens, checked up front.
        return self._guard_stream(handler, method)

    def _principal_or_abort(
        self, method: str, request: object, context: grpc.ServicerContext
    ) -> Principal:
        def peer() -> str:
            return client_address(context, self._authenticator.trusted_proxies)

        try:
            return authenticate_call(
                self._authenticator, context.invocation_metadata(), request, peer
            )
        except E6AuthError as error:
            self._refuse(method, error, context)
            raise  # _refuse() aborts; this line only tells type checkers so

    def _refuse(self, method: str, error: E6AuthError, context: grpc.ServicerContext) -> None:
        """Log, audit and answer a refused call (``context.abort`` raises)."""
        address = client_address(context, self._authenticator.trusted_proxies)
        _answer_refusal(self._authenticator, method, error, address, context)
        context.abort(_status(error), error.client_message())

    def _wrap(self, behavior: Handler, method: str, public: bool, parse: Deserializer) -> Handler:
        if public:
            return self._wrap_public(behavior, method, parse)
        authenticator = self._authenticator
        clock = authenticator.call_clock

        # Every authenticated call of the server runs this: it is written for few frames and
        # few attribute reads (each costs throughput at saturation, measured).
        def authenticated(body: bytes, context: grpc.ServicerContext) -> Any:
            metadata = context.invocation_metadata()
            # The call's slot (logs.bind_call), kept here to put the principal in.
            slot: CallSlot = [metadata, None]
            call_token = call_var.set(slot)
            try:
                try:
                    request = parse(body)
                except DecodeError:
                    self._refuse(method, _malformed(), context)
                    raise  # _refuse() aborts; this line only tells type checkers so
                started = clock()
                # _cached_principal, inline: a call less on every RPC (measured).
                authorization = None
                for key, value in metadata or ():
                    if key == "authorization":
                        authorization = value
                        break
                principal = authenticator.cached_call(
                    authorization,
                    getattr(request, SESSION_FIELD, None) if authorization is None else None,
                    started,
                )
                if principal is None:
                    try:
                        principal = authenticate_call(
                            authenticator,
                            metadata,
                            request,
                            lambda: client_address(context, authenticator.trusted_proxies),
                        )
                    except E6AuthError as error:
                        self._refuse(method, error, context)
                        raise  # _refuse() aborts; this line only tells type checkers so
                slot[PRINCIPAL] = principal
                try:
                    return behavior(request, context)
                except E6AuthError as error:
                    _handler_failed(method, error, context, authenticator.trusted_proxies)
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
                try:
                    request = parse(body)
                except DecodeError:
                    self._refuse(method, _malformed(), context)
                    raise  # _refuse() aborts; this line only tells type checkers so
                return behavior(request, context)
            except E6AuthError as error:
                _handler_failed(method, error, context, self._authenticator.trusted_proxies)
            finally:
                call_var.reset(call_token)

        return public

    def _guard_stream(self, handler: RpcHandler, method: str) -> RpcHandler:
        inner: Any = handler.stream_unary or handler.stream_stream

        def guarded(requests: Any, context: grpc.ServicerContext) -> Any:
            slot: CallSlot = [context.invocation_metadata(), None]
            call_token = call_var.set(slot)
            try:
                slot[PRINCIPAL] = self._principal_or_abort(method, None, context)
                return inner(requests, context)
            finally:
                call_var.reset(call_token)

        factory = (
            grpc.stream_unary_rpc_method_handler
            if handler.stream_unary is not None
            else grpc.stream_stream_rpc_method_handler
        )
        guarded_handler: RpcHandler = factory(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return guarded_handler


AioHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class AioAuthInterceptor(grpc.aio.ServerInterceptor):
    """The interceptor for ``grpc.aio.server``.

    Verification may read the token store, so it runs in a worker thread and never blocks the
    event loop; a call the cache alone can answer is answered on the loop.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        public_methods: Iterable[str] = DEFAULT_PUBLIC_METHODS,
    ) -> None:
        self._authenticator = authenticator
        self._public = frozenset(public_methods)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[RpcHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> RpcHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or (handler.unary_unary is None and method in self._public):
            return handler
        if handler.unary_unary is None:
            return self._guard_stream(handler, method)
        behavior: Any = handler.unary_unary  # an async function under grpc.aio
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(behavior, method, method in self._public),
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    async def _principal_or_abort(
        self, method: str, request: object, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Principal:
        peer = client_address(context, self._authenticator.trusted_proxies)
        try:
            return await asyncio.to_thread(
                authenticate_call, self._authenticator, context.invocation_metadata(), request, peer
            )
        except E6AuthError as error:
            _answer_refusal(self._authenticator, method, error, peer, context)
            await context.abort(_status(error), error.client_message())
            raise  # abort() raises; this line only tells type checkers so

    def _guard_stream(self, handler: RpcHandler, method: str) -> RpcHandler:
        """Streaming methods: authenticated by bearer metadata before the handler runs."""
        inner: Any
        factory: Any
        if handler.unary_stream is not None:
            inner, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        elif handler.stream_unary is not None:
            inner, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        else:
            inner, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler

        # grpc.aio runs each call in a task of its own, with a copy of the context: what a call
        # binds ends with it, and needs no reset.
        async def guarded_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            slot: CallSlot = [context.invocation_metadata(), None]
            call_var.set(slot)
            slot[PRINCIPAL] = await self._principal_or_abort(method, None, context)
            return await inner(request, context)

        async def guarded_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            slot: CallSlot = [context.invocation_metadata(), None]
            call_var.set(slot)
            slot[PRINCIPAL] = await self._principal_or_abort(method, None, context)
            async for item in inner(request, context):
                yield item

        guarded = guarded_unary if handler.stream_unary is not None else guarded_stream
        guarded_handler: RpcHandler = factory(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return guarded_handler

    def _wrap(self, behavior: AioHandler, method: str, public: bool) -> AioHandler:
        async def authenticated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            slot: CallSlot = [context.invocation_metadata(), None]
            call_var.set(slot)
            started = self._authenticator.call_started()
            peer = client_address(context, self._authenticator.trusted_proxies)
            if request is _UNDECODABLE:
                error = _malformed()
                _answer_refusal(self._authenticator, method, error, peer, context)
                await context.abort(_status(error), error.client_message())
            principal = None
            if not public:
                # A cache hit needs no I/O: answered on the event loop, without a thread hop.
                principal = _cached_principal(
                    self._authenticator, context.invocation_metadata(), request, started
                ) or await self._principal_or_abort(method, request, context)
            slot[PRINCIPAL] = principal
            try:
                return await behavior(request, context)
            except E6AuthError as error:
                _log_refusal(method, error, peer)
                _set_error_trailers(context, error)
                await context.abort(_status(error), error.client_message())
            finally:
                if principal is not None:
                    self._authenticator.call_finished(principal, started)

        return authenticated
