"""gRPC: the authenticating interceptor (for any grpcio or grpc.aio service) and the e6data
QueryEngineService gateway."""

from e6auth.grpc.caller import authenticate_call, client_address, peer_address
from e6auth.grpc.interceptor import AioAuthInterceptor, AuthInterceptor, current_principal

__all__ = [
    "AioAuthInterceptor",
    "AuthInterceptor",
    "authenticate_call",
    "client_address",
    "current_principal",
    "peer_address",
]
