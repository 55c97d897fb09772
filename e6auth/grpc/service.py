"""The e6data ``QueryEngineService``: the connector handshake and the query endpoint.

Every method but ``authenticate`` and ``getCataloges`` runs behind :class:`AuthInterceptor`, which
has already put the caller's principal in :func:`current_principal`; errors are raised as
:class:`~e6auth.errors.E6AuthError` and the interceptor turns them into statuses.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from e6auth.background.audit import AuditLog, token_id_of
from e6auth.errors import E6AuthError, QueryCancelled, ShuttingDown
from e6auth.grpc import e6x_engine_pb2 as pb
from e6auth.grpc import e6x_engine_pb2_grpc as pb_grpc
from e6auth.grpc.caller import client_address
from e6auth.grpc.expiry import expiry_metadata
from e6auth.grpc.interceptor import current_principal
from e6auth.query import QueryBackend, QueryManager
from e6auth.query.queries import QueryDone
from e6auth.verify.authenticator import Authenticator
from e6auth.verify.principal import Principal

__all__ = ["ENGINE_IP", "QueryEngineService", "add_to_server"]

# Returned as engineIP and echoed back by the connector (body and `plannerip` header). It is
# opaque to the client and e6auth does not route on it.
ENGINE_IP = "e6auth"


def _owner() -> str:
    """Whose queries a call may see: its session's, or for bearer calls its token's (for OIDC
    JWTs, its user's: a new JWT of the same user goes on with the user's queries)."""
    principal = current_principal()
    if principal.session_id is not None:
        return f"session:{principal.session_id}"
    if principal.token_id is not None:
        return f"token:{principal.token_id}"
    if principal.method == "oidc":
        # Without a user in the store an OIDC principal has no user id of its own: its name is.
        return f"oidc:{principal.username}"
    return f"user:{principal.user_id}"


def _user() -> str:
    """The call's user name: whose share of the gateway it takes, across all their sessions
    and tokens, and as whom statements run (a database role, where ``query_role`` maps one)."""
    return current_principal().username


def _optional(text: str) -> str | None:
    return text or None


class QueryEngineService:
    """The servicer. Method names are the protocol's (camelCase), so they are kept as they are."""

    def __init__(
        self, authenticator: Authenticator, queries: QueryManager, backend: QueryBackend
    ) -> None:
        self._authenticator = authenticator
        self._queries = queries
        self._backend = backend

    # -- the handshake -------------------------------------------------------------------------

    def authenticate(
        self, request: pb.AuthenticateRequest, context: grpc.ServicerContext
    ) -> pb.AuthenticateResponse:
        if self._queries.draining:
            raise ShuttingDown()  # before the credential is even looked at: nothing to audit
        peer = client_address(context, self._authenticator.trusted_proxies)
        audit = self._authenticator.audit
        try:
            principal = self._authenticator.verify(request.user, request.password, peer=peer)
            # Audited as ok only with a session the client can use: made, and (from a cached
            # credential) cached on that credential's terms, so a store outage does not make
            # "handshake ok" a connection whose first call fails.
            session_id = self._authenticator.create_session(principal)
        except E6AuthError as error:
            if audit is not None:
                _audit_handshake(audit, request, peer, error=error)
            raise
        if audit is not None:
            _audit_handshake(audit, request, peer, principal=principal)
        warnings = expiry_metadata(principal)
        if warnings:
            context.send_initial_metadata(warnings)
        return pb.AuthenticateResponse(sessionId=session_id)

    # -- queries -------------------------------------------------------------------------------

    def prepareStatement(
        self, request: pb.PrepareStatementRequest, _context: grpc.ServicerContext
    ) -> pb.PrepareStatementResponse:
        return self._prepare(request.queryString, None, request.schema, request.sessionId)

    def prepareStatementV2(
        self, request: pb.PrepareStatementV2Request, _context: grpc.ServicerContext
    ) -> pb.PrepareStatementResponse:
        return self._prepare(
            request.queryString, _optional(request.catalog), request.schema, request.sessionId
        )

    def _prepare(
        self, sql: str, catalog: str | None, schema: str, session_id: str
    ) -> pb.PrepareStatementResponse:
        principal = current_principal()
        query_id = self._queries.prepare(
            _owner(),
            sql,
            catalog=catalog,
            schema=_optional(schema),
            read_only=principal.read_only,
            user=principal.username,
        )
        return pb.PrepareStatementResponse(
            engineIP=ENGINE_IP, queryId=query_id, sessionId=session_id
        )

    def executeStatement(
        self, request: pb.ExecuteStatementRequest, context: grpc.ServicerContext
    ) -> pb.ExecuteStatementResponse:
        self._queries.execute(_owner(), request.queryId, on_done=self._audit_query(context))
        return pb.ExecuteStatementResponse(sessionId=request.sessionId)

    def executeStatementV2(
        self, request: pb.ExecuteStatementV2Request, context: grpc.ServicerContext
    ) -> pb.ExecuteStatementResponse:
        self._queries.execute(_owner(), request.queryId, on_done=self._audit_query(context))
        return pb.ExecuteStatementResponse(sessionId=request.sessionId)

    def _audit_query(self, context: grpc.ServicerContext) -> QueryDone | None:
        """What records the statement in the audit once it has run: its result is known only
        then, on the worker."""
        audit = self._authenticator.audit
        if audit is None:
            return None
        principal = current_principal()
        peer = client_address(context, self._authenticator.trusted_proxies)

        def done(query_id: str, statement: str, result: str) -> None:
            audit.query(principal, peer=peer, query_id=query_id, statement=statement, result=result)

        return done

    def getResultMetadata(
        self, request: pb.GetResultMetadataRequest, context: grpc.ServicerContext
    ) -> pb.GetResultMetadataResponse:
        metadata = self._queries.metadata(_owner(), request.queryId, active=context.is_active)
        return pb.GetResultMetadataResponse(resultMetaData=metadata, sessionId=request.sessionId)

    def getNextResultBatch(
        self, request: pb.GetNextResultBatchRequest, context: grpc.ServicerContext
    ) -> pb.GetNextResultBatchResponse:
        batch = self._queries.next_batch(_owner(), request.queryId, active=context.is_active)
        return pb.GetNextResultBatchResponse(resultBatch=batch, sessionId=request.sessionId)

    def status(
        self, request: pb.StatusRequest, _context: grpc.ServicerContext
    ) -> pb.StatusResponse:
        finished, rows = self._queries.status(_owner(), request.queryId)
        return pb.StatusResponse(status=finished, rowCount=rows, sessionId=request.sessionId)

    def clearOrCancelQuery(
        self, request: pb.ClearOrCancelQueryRequest, _context: grpc.ServicerContext
    ) -> pb.ClearOrCancelQueryResponse:
        # The connector sends this on every cursor close, also for ids it never executed.
        self._queries.clear(_owner(), request.queryId)
        return pb.ClearOrCancelQueryResponse(sessionId=request.sessionId)

    def clear(self, request: pb.ClearRequest, _context: grpc.ServicerContext) -> pb.ClearResponse:
        self._queries.clear(_owner(), request.queryId)
        return pb.ClearResponse(sessionId=request.sessionId)

    def cancelQuery(
        self, request: pb.CancelQueryRequest, _context: grpc.ServicerContext
    ) -> pb.CancelQueryResponse:
        self._queries.cancel(_owner(), request.queryId)
        return pb.CancelQueryResponse(sessionId=request.sessionId)

    def explain(
        self, request: pb.ExplainRequest, _context: grpc.ServicerContext
    ) -> pb.ExplainResponse:
        plan = self._queries.explain(_owner(), request.queryId)
        return pb.ExplainResponse(explain=plan, sessionId=request.sessionId)

    def dryRun(self, request: pb.DryRunRequest, context: grpc.ServicerContext) -> pb.DryRunResponse:
        value = self._dry_run(request.queryString, "", request.schema, context)
        return pb.DryRunResponse(dryrunValue=value)

    def dryRunV2(
        self, request: pb.DryRunRequestV2, context: grpc.ServicerContext
    ) -> pb.DryRunResponse:
        value = self._dry_run(request.queryString, request.catalog, request.schema, context)
        return pb.DryRunResponse(dryrunValue=value)

    def _dry_run(self, sql: str, catalog: str, schema: str, context: grpc.ServicerContext) -> str:
        """A dry run: audited like a query (its id starts with ``dry-run-``), stopped when the
        client cancels the call, and one of the user's waiting calls while it runs."""
        principal = current_principal()
        query_id = "dry-run-" + secrets.token_urlsafe(12)
        result = "error"
        try:
            with self._queries.waiting_call(_user()):
                run = self._queries.start_dry_run(
                    sql,
                    catalog=_optional(catalog),
                    schema=_optional(schema),
                    read_only=principal.read_only,
                    user=principal.username,
                )
                context.add_callback(run.cancel)  # called when the call ends, a cancel included
                value = run.result()
            result = "ok"
            return value
        except QueryCancelled:
            result = "cancelled"
            raise
        finally:
            audit = self._authenticator.audit
            if audit is not None:
                peer = client_address(context, self._authenticator.trusted_proxies)
                audit.query(principal, peer=peer, query_id=query_id, statement=sql, result=result)

    # -- catalog browsing ----------------------------------------------------------------------

    def getCataloges(
        self, _request: pb.GetCatalogesRequest, _context: grpc.ServicerContext
    ) -> pb.GetCatalogesResponse:
        return pb.GetCatalogesResponse(
            catalogResponses=[
                pb.CatalogResponse(name=name, isDefault=is_default)
                for name, is_default in self._backend.catalogs()
            ]
        )

    def getSchemaNames(
        self, request: pb.GetSchemaNamesRequest, _context: grpc.ServicerContext
    ) -> pb.GetSchemaNamesResponse:
        with self._browsing():
            schemas = self._backend.schemas(None)
        return pb.GetSchemaNamesResponse(schemas=schemas, sessionId=request.sessionId)

    def getSchemaNamesV2(
        self, request: pb.GetSchemaNamesV2Request, _context: grpc.ServicerContext
    ) -> pb.GetSchemaNamesResponse:
        with self._browsing():
            schemas = self._backend.schemas(_optional(request.catalog))
        return pb.GetSchemaNamesResponse(schemas=schemas, sessionId=request.sessionId)

    def getTables(
        self, request: pb.GetTablesRequest, _context: grpc.ServicerContext
    ) -> pb.GetTablesResponse:
        with self._browsing():
            tables = self._backend.tables(None, _optional(request.schema))
        return pb.GetTablesResponse(tables=tables, sessionId=request.sessionId)

    def getTablesV2(
        self, request: pb.GetTablesV2Request, _context: grpc.ServicerContext
    ) -> pb.GetTablesResponse:
        with self._browsing():
            tables = self._backend.tables(_optional(request.catalog), _optional(request.schema))
        return pb.GetTablesResponse(tables=tables, sessionId=request.sessionId)

    def getColumns(
        self, request: pb.GetColumnsRequest, _context: grpc.ServicerContext
    ) -> pb.GetColumnsResponse:
        with self._browsing():
            columns = self._backend.columns(None, _optional(request.schema), request.table)
        return self._columns(columns, request.sessionId)

    def getColumnsV2(
        self, request: pb.GetColumnsV2Request, _context: grpc.ServicerContext
    ) -> pb.GetColumnsResponse:
        with self._browsing():
            columns = self._backend.columns(
                _optional(request.catalog), _optional(request.schema), request.table
            )
        return self._columns(columns, request.sessionId)

    @contextmanager
    def _browsing(self) -> Iterator[None]:
        """A browse call reads the database on the server's thread: it counts among the user's
        waiting calls (current_principal also asserts the interceptor ran)."""
        with self._queries.waiting_call(_user()):
            yield

    @staticmethod
    def _columns(columns: list[tuple[str, str]], session_id: str) -> pb.GetColumnsResponse:
        return pb.GetColumnsResponse(
            fieldInfo=[pb.GFieldInfo(fieldName=name, fieldType=kind) for name, kind in columns],
            sessionId=session_id,
        )


def _audit_handshake(
    audit: AuditLog,
    request: pb.AuthenticateRequest,
    peer: str,
    *,
    principal: Principal | None = None,
    error: E6AuthError | None = None,
) -> None:
    token_id = token_id_of(request.password)
    audit.handshake(
        request.user,
        method="password" if token_id is None else "token",
        peer=peer,
        principal=principal,
        error=error,
        token_id=token_id,
    )


def add_to_server(service: QueryEngineService, server: Any) -> None:
    """Register the service on a ``grpc.server`` or ``grpc.aio.server``."""
    # The generated registration function carries no annotations.
    pb_grpc.add_QueryEngineServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
