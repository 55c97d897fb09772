"""The no-auth twin of the interceptor, the baseline the gRPC and interceptor benchmarks measure
authentication against: every unary-unary call runs as a fixed principal, nothing verified.

Apart from verifying it does what :class:`~e6auth.grpc.AuthInterceptor` does on a call it lets
through: the call's context is bound as the real one binds it (``current_principal()`` works),
handlers are wrapped once per method, and an :class:`~e6auth.errors.E6AuthError` from a handler
becomes its gRPC status. A baseline that did less would flatter the real interceptor. Other
kinds of method pass through unwrapped. It lived in ``e6auth.testing`` until a benchmark's
baseline was found to have no place in a library's test helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from e6auth.errors import E6AuthError
from e6auth.grpc.refusals import status_code
from e6auth.logs import CallContext, call_var
from e6auth.verify.principal import Principal

__all__ = ["FixedPrincipalInterceptor"]

RpcHandler = Any  # grpc.RpcMethodHandler, generic only in its type stubs
Continuation = Callable[[grpc.HandlerCallDetails], RpcHandler | None]


class FixedPrincipalInterceptor(grpc.ServerInterceptor):
    """Runs every unary-unary call as ``principal``. Never put it in front of a real service."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self._wrapped: dict[str, tuple[RpcHandler, RpcHandler]] = {}

    def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> RpcHandler | None:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        behavior = handler.unary_unary
        principal = self.principal

        def as_principal(request: Any, context: grpc.ServicerContext) -> Any:
            # The call's context, bound as the real interceptor binds it, principal known.
            call = CallContext()
            call.metadata = None
            call.principal = principal
            call.request_id = None
            token = call_var.set(call)
            try:
                return behavior(request, context)
            except E6AuthError as error:
                # The real interceptor's translation, so that statuses match production.
                context.abort(status_code(error), error.client_message())
            finally:
                call_var.reset(token)

        wrapped = grpc.unary_unary_rpc_method_handler(
            as_principal,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped
