"""A small OIDC issuer for tests: real keys, real signatures, its JWKS served over loopback HTTP.

It signs JWTs with PyJWT, publishes the public halves of the keys it is told to (as a JWKS and an
OpenID discovery document), counts every request, and can be taken down or made to hang to test
outages. Stdlib HTTP in a thread: nothing in it is e6auth's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "e6auth-gateway"
JWKS_PATH = "/jwks"
DISCOVERY_PATH = "/.well-known/openid-configuration"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class Issuer:
    """``issuer.token(sub="alice")`` is a JWT signed with the current key; ``issuer.url`` is both
    its ``iss`` and the base of its discovery document."""

    def __init__(self, *, clock: Any = time.time) -> None:
        self.clock = clock
        self.keys: dict[str, PrivateKey] = {}
        self.published: list[str] = []
        self.current = ""
        self.jwks_requests = 0
        self.discovery_requests = 0
        self.status = 200
        self.hang_seconds = 0.0
        self.discovery_issuer: str | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.jwks_url = self.url + JWKS_PATH
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self.rotate("k1")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- keys --------------------------------------------------------------------------------

    def add_key(self, kid: str, *, kind: str = "RSA") -> None:
        self.keys[kid] = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if kind == "RSA"
            else ec.generate_private_key(ec.SECP256R1())
        )

    def rotate(self, kid: str, *, kind: str = "RSA", keep_old: bool = True) -> None:
        """Sign with a new key ``kid`` from now on, and publish it (with the old ones, unless
        ``keep_old`` is false)."""
        self.add_key(kid, kind=kind)
        self.published = [*self.published, kid] if keep_old else [kid]
        self.current = kid

    def algorithm(self, kid: str) -> str:
        return "RS256" if isinstance(self.keys[kid], rsa.RSAPrivateKey) else "ES256"

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            public = self.keys[kid].public_key()
            if isinstance(public, rsa.RSAPublicKey):
                jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
            else:
                jwk = ECAlgorithm.to_jwk(public, as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": self.algorithm(kid)})
        return {"keys": keys}

    def public_pem(self, kid: str | None = None) -> bytes:
        return (
            self.keys[kid or self.current]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    # -- tokens ------------------------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, *, kid: str | None = None, **claims: Any) -> str:
        """A JWT signed with key ``kid`` (default: the current one); ``claim=None`` omits it."""
        kid = kid or self.current
        return jwt.encode(
            self.claims(**claims),
            self.keys[kid],
            algorithm=self.algorithm(kid),
            headers={"kid": kid},
        )

    def forged(self, header: dict[str, Any], secret: bytes | None = None, **claims: Any) -> str:
        """A JWT with any header, signed with HMAC-SHA256 under ``secret`` (or not at all):
        what an attacker can make without a private key."""
        encoded = [_b64(json.dumps(part).encode()) for part in (header, self.claims(**claims))]
        signing_input = ".".join(encoded)
        signature = (
            _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
            if secret is not None
            else ""
        )
        return f"{signing_input}.{signature}"

    # -- the HTTP side -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == JWKS_PATH:
                    issuer.jwks_requests += 1
                    body = issuer.jwks()
                elif self.path == DISCOVERY_PATH:
                    issuer.discovery_requests += 1
                    body = {
                        "issuer": issuer.discovery_issuer or issuer.url,
                        "jwks_uri": issuer.jwks_url,
                    }
                else:
                    self.send_error(404)
                    return
                if issuer.hang_seconds:
                    time.sleep(issuer.hang_seconds)
                if issuer.status != 200:
                    self.send_error(issuer.status)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class TokenEndpoint:
    """The issuer's OAuth token endpoint for the client-credentials grant, over HTTPS (the
    connector accepts no other): ``client_id`` with ``client_secret`` (HTTP Basic) gets a JWT whose
    ``sub`` is the client id."""

    def __init__(
        self, issuer: Issuer, client_id: str, client_secret: str, cert: Path, key: Path
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.requests = 0
        self.granted = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}/token"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                expected = base64.b64encode(
                    f"{endpoint.client_id}:{endpoint.client_secret}".encode()
                ).decode()
                if (
                    form.get("grant_type") != ["client_credentials"]
                    or self.headers.get("Authorization") != f"Basic {expected}"
                ):
                    self.send_error(401)
                    return
                endpoint.granted += 1
                data = json.dumps(
                    {
                        "access_token": endpoint.issuer.token(sub=endpoint.client_id),
                        "token_type": "Bearer",
                        "expires_in": 300,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
