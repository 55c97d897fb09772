"""How the interceptors answer a call they refuse, or one whose handler raised an
:class:`~e6auth.errors.E6AuthError`: one path for the sync and the grpc.aio interceptor.

Both functions log, set the trailers (the request id to find the call's log lines by, and for a
throttled attempt how long to wait) and return the status and public message to abort with; a
refusal is audited too. The caller aborts (``context.abort`` raises in a sync server and is
awaited under grpc.aio): what a client gets back cannot depend on the server it called.
"""

from __future__ import annotations

import logging

import grpc

from e6auth.background.audit import token_id_of
from e6auth.errors import E6AuthError, Throttled
from e6auth.grpc.caller import AnyContext, authorization, client_address
from e6auth.logs import REQUEST_ID_HEADER, current_request_id
from e6auth.verify.authenticator import Authenticator

__all__ = ["RETRY_AFTER", "failed", "refused", "status_code"]

log = logging.getLogger("e6auth.grpc")

RETRY_AFTER = "retry-after"
"""Trailing metadata of a throttled call: whole seconds to wait, as HTTP's Retry-After."""

Answer = tuple[grpc.StatusCode, str]


def status_code(error: E6AuthError) -> grpc.StatusCode:
    """The gRPC status an error declares (``grpc_status``); INTERNAL for a name gRPC lacks."""
    return getattr(grpc.StatusCode, error.grpc_status, grpc.StatusCode.INTERNAL)


def refused(
    authenticator: Authenticator, method: str, error: E6AuthError, context: AnyContext
) -> Answer:
    """What every call the interceptors refuse gets before its abort: a log line, an audit
    event and the error trailers."""
    peer = client_address(context, authenticator.trusted_proxies)
    _log(method, error, peer)
    audit = authenticator.audit
    if audit is not None:
        presented = authorization(context.invocation_metadata())
        credential = presented.strip().partition(" ")[2] if isinstance(presented, str) else ""
        audit.refused_call(method, error, peer, token_id=token_id_of(credential.strip()))
    _set_trailers(context, error)
    return status_code(error), error.client_message()


def failed(
    authenticator: Authenticator, method: str, error: E6AuthError, context: AnyContext
) -> Answer:
    """What a call whose handler raised ``error`` gets before its abort: a log line and the
    error trailers (no audit event: the call was let in)."""
    _log(method, error, client_address(context, authenticator.trusted_proxies))
    _set_trailers(context, error)
    return status_code(error), error.client_message()


def _log(method: str, error: E6AuthError, peer: str) -> None:
    # The detail names users and token ids, never secrets.
    log.info("refused %s from %s: %s (%s)", method, peer, error.reason, error.detail)


def _set_trailers(context: AnyContext, error: E6AuthError) -> None:
    trailers: tuple[tuple[str, str], ...] = ()
    request_id = current_request_id()
    if request_id is not None:
        trailers = ((REQUEST_ID_HEADER, request_id),)
    if isinstance(error, Throttled):
        trailers = (*trailers, (RETRY_AFTER, str(error.retry_after_seconds)))
    if trailers:
        context.set_trailing_metadata(trailers)
