"""``e6auth serve``: the gateway, with its web page and metrics if asked, or a demo."""

from __future__ import annotations

import argparse
import secrets
import sys
from typing import TYPE_CHECKING

from e6auth.cli.common import EXIT_FAILED, EXIT_OK, add_log_flags, human
from e6auth.credentials.keys import ensure_home

if TYPE_CHECKING:
    from e6auth.cli.common import Commands
    from e6auth.settings import Settings
    from e6auth.store.token_store import TokenStore

DEMO_USER = "demo"
DEMO_DATABASE_FILE = "demo.db"
DEMO_QUERY = "SELECT * FROM customers LIMIT 5"
DEMO_SNIPPET = (
    "    from e6data_python_connector import Connection\n"
    '    conn = Connection(host="{host}", port={port}, username="{user}",\n'
    '                      password="{token}", database="main"{secure})\n'
    "    cursor = conn.cursor()\n"
    f'    cursor.execute("{DEMO_QUERY}")\n'
    "    print(cursor.fetchall())\n"
)


def add_commands(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="run the gateway (e6data QueryEngineService)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    serve.add_argument("--query-url", help="SQLAlchemy URL queries run on (default: SQLite)")
    serve.add_argument(
        "--query-role",
        metavar="TEMPLATE",
        help="PostgreSQL role each user's statements run as, e.g. 'e6_{username}'",
    )
    serve.add_argument("--catalog", help="catalog name the gateway answers to (default 'default')")
    serve.add_argument(
        "--statement-timeout",
        dest="statement_timeout_seconds",
        type=float,
        metavar="SECONDS",
        help="stop statements running longer (default 300; 0: no timeout)",
    )
    serve.add_argument("--tls-cert", help="PEM certificate chain; with --tls-key, serve TLS")
    serve.add_argument("--tls-key", help="PEM private key")
    serve.add_argument(
        "--http-port",
        type=int,
        metavar="N",
        help="serve the Access Tokens web page on this port (0 picks a free one; default off)",
    )
    serve.add_argument("--http-host", help="address of the web page (default: --host)")
    serve.add_argument(
        "--metrics-port",
        type=int,
        metavar="N",
        help="serve Prometheus metrics on http://HOST:N/metrics (0 picks a free port)",
    )
    # Also after the command, where they are natural to type; SUPPRESS keeps the global ones.
    add_log_flags(serve, default=argparse.SUPPRESS)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="sample data, a demo user and a fresh token, with a connector snippet to paste",
    )
    # Runs until stopped: with the garbage collector on (see e6auth.cli.main).
    serve.set_defaults(handler=_serve, long_running=True)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the management commands should not pay for loading gRPC.
    from e6auth.grpc.server import build_gateway, run_until_signalled
    from e6auth.query import create_demo_database

    if args.demo and settings.query_url is None:
        ensure_home(settings.home)
        settings = settings.replace(
            query_url=create_demo_database(settings.home / DEMO_DATABASE_FILE)
        )
    try:
        gateway = build_gateway(settings)
    except OSError as exc:  # a port in use, a certificate file that cannot be read
        print(f"e6auth: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.demo:
        _print_demo(gateway.authenticator.store, settings, gateway.port)
        if gateway.web is not None:
            _print_demo_page(gateway.authenticator.store, gateway.web.url)
    if gateway.metrics_port is not None:
        print(
            f"e6auth metrics on http://{settings.host}:{gateway.metrics_port}/metrics", flush=True
        )
    if gateway.web is not None:
        print(f"e6auth Access Tokens page on {gateway.web.url}", flush=True)
    print(f"e6auth serving on {settings.host}:{gateway.port}; Ctrl-C stops", flush=True)
    run_until_signalled(gateway)
    return EXIT_OK


def _print_demo(store: TokenStore, settings: Settings, port: int) -> None:
    if store.find_user(DEMO_USER) is None:
        store.create_user(DEMO_USER)
    new = store.create_token(DEMO_USER, comment="e6auth serve --demo", expires_days=1)
    secure = ", secure=True" if settings.tls_cert else ""
    snippet = DEMO_SNIPPET.format(
        host=settings.host, port=port, user=DEMO_USER, token=new.token, secure=secure
    )
    print(
        f"Demo user {DEMO_USER!r}, token {new.id} (expires {human(new.expires_at)} UTC):\n\n"
        f"    {new.token}\n\nPaste into Python (pip install e6data-python-connector):\n\n"
        f"{snippet}",
        flush=True,
    )


def _print_demo_page(store: TokenStore, url: str) -> None:
    """Give the demo user a fresh password (made anew at every start, as the demo token is),
    so that the page can be tried at once."""
    if not store.policy.password_logins:
        print(f"Access Tokens page: {url} (password sign-in is off by policy)\n", flush=True)
        return
    password = secrets.token_urlsafe(12)
    store.set_password(DEMO_USER, password)
    print(
        f"Access Tokens page: {url}\nSign in as {DEMO_USER!r} with the password {password}\n",
        flush=True,
    )
