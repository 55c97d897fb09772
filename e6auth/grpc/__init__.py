"""gRPC: the authenticating interceptor (for any grpcio or grpc.aio service) and the e6data
QueryEngineService gateway."""

from e6auth.grpc.interceptor import (
    AioAuthInterceptor,
    AuthInterceptor,
    authenticate_call,
    client_address,
    current_principal,
    peer_address,
)

__all__ = [
    "AioAuthInterceptor",
    "AuthInterceptor",
    "authenticate_call",
    "client_address",
    "current_principal",
    "peer_address",
]
