"""The ``e6auth`` command: a thin layer over :class:`~e6auth.store.TokenStore`."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from e6auth.errors import (
    E6AuthError,
    InvalidTokenSecret,
    MalformedCredential,
    StoreUnavailable,
    TokenExpired,
    TokenRevoked,
    TokenRotatedOut,
    UnknownToken,
    UserDisabled,
)
from e6auth.keys import ensure_home
from e6auth.logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from e6auth.peppers import add_pepper_file, pepper_file
from e6auth.policy import DEFAULT_ROTATION_GRACE, MAX_ROTATION_GRACE, POLICY_SETTINGS, Policy
from e6auth.tokens import check_checksum, looks_like_token, split_token
from e6auth.usernames import normalize_username

# Each command imports what it runs, in its handler: `e6auth --help` loads neither pydantic nor
# SQLAlchemy, `token list` no Alembic, and only `serve` loads gRPC and the web page.
if TYPE_CHECKING:
    from pydantic import ValidationError

    from e6auth.authenticator import Authenticator
    from e6auth.settings import Settings
    from e6auth.store.audit_store import AuthEvent, QueryEvent
    from e6auth.store.records import TokenInfo
    from e6auth.store.token_store import TokenStore

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, "Settings"], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    from pydantic import ValidationError

    from e6auth.settings import Settings

    try:
        settings = Settings(**_setting_overrides(args))
    except ValidationError as exc:
        print(f"e6auth: invalid settings:\n{_describe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose, settings)
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except E6AuthError as exc:
        print(f"e6auth: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """No abbreviated options: `--password` must not quietly mean `--password-stdin`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="e6auth", description="Users, tokens and the token store of e6auth.")
    parser.add_argument("--home", help="state folder (default: $E6AUTH_HOME or ~/.e6auth)")
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the token store (default: SQLite in the state folder)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    _add_log_flags(parser, default=None)
    parser.set_defaults(handler=lambda _args, _settings: _usage(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    db = commands.add_parser("db", help="schema migrations")
    db.set_defaults(handler=lambda _args, _settings: _usage(db))
    db_commands = db.add_subparsers(metavar="ACTION", parser_class=_Parser)
    db_commands.add_parser("upgrade", help="upgrade the schema to this version").set_defaults(
        handler=_db_upgrade
    )
    db_commands.add_parser("current", help="show the schema revision").set_defaults(
        handler=_db_current
    )

    user = commands.add_parser("user", help="manage users")
    user.set_defaults(handler=lambda _args, _settings: _usage(user))
    user_commands = user.add_subparsers(metavar="ACTION", parser_class=_Parser)
    add = user_commands.add_parser("add", help="add a user")
    add.add_argument("name")
    source = add.add_mutually_exclusive_group()
    source.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    source.add_argument("--no-password", action="store_true", help="tokens only: no password login")
    source.add_argument(
        "--service",
        action="store_true",
        help="a service account: no person, tokens only, no web sign-in (needs --owner)",
    )
    add.add_argument(
        "--admin",
        action="store_true",
        help="sees and deletes every user's tokens on the web page",
    )
    add.add_argument(
        "--owner",
        action="append",
        metavar="ADMIN",
        help="with --service: an administrator who manages its tokens (repeatable)",
    )
    add.set_defaults(handler=_user_add)
    owners = user_commands.add_parser(
        "owners", help="show, add or remove the administrators who own a service account"
    )
    owners.add_argument("name", help="the service account")
    owners.add_argument(
        "--add", action="append", metavar="ADMIN", help="make an administrator an owner too"
    )
    owners.add_argument(
        "--remove", action="append", metavar="ADMIN", help="an owner no more (one must stay)"
    )
    owners.set_defaults(handler=_user_owners)
    passwd = user_commands.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    passwd.set_defaults(handler=_user_passwd)
    for action, enabled in (("disable", False), ("enable", True)):
        toggle = user_commands.add_parser(action, help=f"{action} a user")
        toggle.add_argument("name")
        toggle.set_defaults(handler=_user_toggle, enabled=enabled)
    admin = user_commands.add_parser(
        "admin", help="make a user an administrator of the web page, or no longer one"
    )
    admin.add_argument("name")
    grant = admin.add_mutually_exclusive_group(required=True)
    grant.add_argument("--on", dest="admin", action="store_true", help="grant it")
    grant.add_argument("--off", dest="admin", action="store_false", help="revoke it")
    admin.set_defaults(handler=_user_admin)
    signout = user_commands.add_parser(
        "signout", help="end every web page session of a user, on every replica"
    )
    signout.add_argument("name")
    signout.set_defaults(handler=_user_signout)
    users = user_commands.add_parser("list", help="list users")
    users.add_argument("--json", action="store_true")
    users.set_defaults(handler=_user_list)

    token = commands.add_parser("token", help="manage personal access tokens")
    token.set_defaults(handler=lambda _args, _settings: _usage(token))
    token_commands = token.add_subparsers(metavar="ACTION", parser_class=_Parser)
    create = token_commands.add_parser("create", help="create a token (shown once)")
    create.add_argument("--user", required=True)
    create.add_argument("--comment")
    create.add_argument("--expires-days", type=int, metavar="N")
    create.add_argument(
        "--allow-from",
        action="append",
        metavar="CIDR",
        help="use only from this address range (repeatable; default: from anywhere)",
    )
    create.add_argument(
        "--read-only", action="store_true", help="the gateway runs its statements read-only"
    )
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=_token_create)
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--user")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_token_list)
    delete = token_commands.add_parser("delete", help="delete (revoke) tokens")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=_token_delete)
    audit = commands.add_parser("audit", help="show the audit trail (logins, refusals, queries)")
    audit.add_argument(
        "--user", help="only this user's events, or an unknown name's (unknown:<hex> as shown)"
    )
    audit.add_argument("--since", metavar="WHEN", help="from: 1h, 30m, 7d, 2026-11-01, ISO time")
    audit.add_argument("--until", metavar="WHEN", help="before: same forms as --since")
    audit.add_argument("--queries", action="store_true", help="statements run, not auth events")
    audit.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="newest N")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=_audit)
    _add_policy_commands(commands, token_commands, listing)
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
    _add_log_flags(serve, default=argparse.SUPPRESS)
    serve.add_argument(
        "--demo",
        action="store_true",
        help="sample data, a demo user and a fresh token, with a connector snippet to paste",
    )
    serve.set_defaults(handler=_serve)
    return parser


def _positive_int(text: str) -> int:
    """An option's whole number, at least 1 (digits only: no sign, no spaces)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("a whole number, at least 1")
    return int(text)


_DURATION = re.compile(r"(\d{1,6})([smhdw])", re.ASCII)
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _duration(text: str) -> dt.timedelta | None:
    """``90m``, ``36h``, ``7d``, ``2w`` as a timedelta; None for any other text."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        return None
    return dt.timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _add_log_flags(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        type=str.lower,
        default=default,
        help="log lines as text or JSON objects (default text)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        type=str.upper,
        default=default,
        help="least severe records logged (default WARNING; -v, -vv: INFO, DEBUG)",
    )


def _configure_logging(verbosity: int, settings: Settings | None = None) -> None:
    """Before the settings are read: -v alone; then the settings' level and format, made more
    verbose (never less) by -v."""
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    if settings is None:
        configure_logging(level=level)
        return
    configured = logging.getLevelNamesMapping()[settings.log_level]
    level = configured if verbosity == 0 else min(level, configured)
    configure_logging(level=level, log_format=settings.log_format)


SETTING_FLAGS = (
    "home",
    "database_url",
    "host",
    "port",
    "query_url",
    "query_role",
    "catalog",
    "statement_timeout_seconds",
    "tls_cert",
    "tls_key",
    "metrics_port",
    "http_port",
    "http_host",
    "log_format",
    "log_level",
)


def _setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    flags = {name: getattr(args, name, None) for name in SETTING_FLAGS}
    return {name: value for name, value in flags.items() if value is not None}


def _describe(exc: ValidationError) -> str:
    # Never echo the input: a mistyped setting may be a secret.
    return "\n".join(
        f"  {'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors(include_input=False)
    )


def _open_store(settings: Settings) -> TokenStore:
    from e6auth.store.token_store import TokenStore

    return TokenStore.from_settings(settings)


# -- db ----------------------------------------------------------------------------------------


def _db_upgrade(_args: argparse.Namespace, settings: Settings) -> int:
    from e6auth.store.engine import engine_from_settings
    from e6auth.store.migrate import current_revision, head_revision, upgrade

    engine = engine_from_settings(settings)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if after != head_revision():
        print(f"e6auth: schema at {after or 'empty'}, expected {head_revision()}", file=sys.stderr)
        return EXIT_FAILED
    if before == after:
        print(f"schema already at revision {after}")
    else:
        print(f"schema upgraded from {before or 'empty'} to {after}")
    return EXIT_OK


def _db_current(_args: argparse.Namespace, settings: Settings) -> int:
    from e6auth.store.engine import engine_from_settings
    from e6auth.store.migrate import current_revision, head_revision

    engine = engine_from_settings(settings)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else f"needs `e6auth db upgrade` to {head}"
    print(f"{current or 'empty'} ({state})")
    return EXIT_OK


# -- users -------------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace, name: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    first = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass("Repeat it: ") != first:
        raise _Refused("the two passwords differ")
    return first


class _Refused(E6AuthError):
    reason = "cli_refused"


def _user_add(args: argparse.Namespace, settings: Settings) -> int:
    if args.service or args.owner:
        return _service_account_add(args, settings)
    normalize_username(args.name)  # refuse junk before asking for a password
    password = None if args.no_password else _read_password(args, args.name)
    store = _open_store(settings)
    try:
        user = store.create_user(args.name, password, admin=args.admin)
    finally:
        store.close()
    login = "password and tokens" if user.has_password else "tokens only"
    role = ", administrator" if user.admin else ""
    print(f"added user {user.name} ({login}{role})")
    return EXIT_OK


def _service_account_add(args: argparse.Namespace, settings: Settings) -> int:
    if not args.service:
        raise _Refused("--owner is for service accounts: add --service")
    if args.admin:
        raise _Refused("a service account cannot be an administrator")
    if not args.owner:
        raise _Refused("a service account needs --owner ADMIN (an administrator who manages it)")
    store = _open_store(settings)
    try:
        user = store.create_service_account(args.name, args.owner)
    finally:
        store.close()
    print(f"added service account {user.name} (tokens only; owners {', '.join(user.owners)})")
    return EXIT_OK


def _user_owners(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        if args.add or args.remove:
            owners = store.set_service_owners(
                args.name, add=args.add or (), remove=args.remove or ()
            )
        else:
            name = normalize_username(args.name)
            found = [user for user in store.list_users() if user.service and user.name == name]
            if not found:
                raise _Refused(f"{name} is no service account")
            owners = found[0].owners
    finally:
        store.close()
    print(f"{args.name.lower()} is owned by {', '.join(owners)}")
    return EXIT_OK


def _user_passwd(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args, args.name)
    store = _open_store(settings)
    try:
        store.set_password(args.name, password)
    finally:
        store.close()
    print(f"changed the password of {args.name.lower()}")
    return EXIT_OK


def _user_toggle(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        if args.enabled:
            store.enable_user(args.name)
        else:
            store.disable_user(args.name)
    finally:
        store.close()
    print(f"{'enabled' if args.enabled else 'disabled'} user {args.name.lower()}")
    return EXIT_OK


def _user_admin(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        store.set_admin(args.name, args.admin)
    finally:
        store.close()
    state = "is now an administrator" if args.admin else "is no longer an administrator"
    print(f"{args.name.lower()} {state}")
    return EXIT_OK


def _user_signout(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        store.sign_out_everywhere(args.name)
    finally:
        store.close()
    print(f"signed {args.name.lower()} out of every web page session")
    return EXIT_OK


def _user_list(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        users = store.list_users()
    finally:
        store.close()
    if args.json:
        _print_json(
            [
                {
                    "name": user.name,
                    "disabled": user.disabled,
                    "password": user.has_password,
                    "admin": user.admin,
                    "created_at": _iso(user.created_at),
                    # Only service accounts say so: a person's entry is as it always was.
                    **({"service": True, "owners": list(user.owners)} if user.service else {}),
                }
                for user in users
            ]
        )
        return EXIT_OK
    _print_table(
        ["NAME", "STATUS", "PASSWORD", "ADMIN", "CREATED (UTC)"],
        [
            [
                user.name,
                "disabled" if user.disabled else "enabled",
                "yes" if user.has_password else "service" if user.service else "no",
                "yes" if user.admin else "no",
                _human(user.created_at),
            ]
            for user in users
        ],
    )
    return EXIT_OK


# -- tokens ------------------------------------------------------------------------------------


def _token_create(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        new = store.create_token(
            args.user,
            comment=args.comment,
            expires_days=args.expires_days,
            allow_from=args.allow_from,
            read_only=args.read_only,
        )
        _audit_token_changes(settings, store, "token_created", [new.id], new.user)
    finally:
        store.close()
    if args.json:
        _print_json(
            {
                "id": new.id,
                "token": new.token,
                "expires_at": _iso(new.expires_at),
                "allow_from": _json_ranges(new.allow_from),
                "scope": new.scope,
            }
        )
        return EXIT_OK
    expiry = f"expires {_human(new.expires_at)} UTC" if new.expires_at else "never expires"
    limits = "".join(
        f"; {limit}" for limit in (_shown_scope(new.scope), _shown_ranges(new.allow_from)) if limit
    )
    print(f"Created token {new.id} for {new.user} ({expiry}{limits}).\n")
    print(f"    {new.token}\n")
    print("Copy it now: it will not be shown again.")
    return EXIT_OK


def _token_list(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        tokens = store.list_tokens(args.user)
        now = store.now()
    finally:
        store.close()
    if args.expiring_within is not None:
        tokens = _expiring(tokens, now, args.expiring_within)
    if args.json:
        _print_json([_token_json(token, now) for token in tokens])
        return EXIT_OK
    _print_table(
        ["ID", "USER", "COMMENT", "CREATED (UTC)", "EXPIRES", "LAST USED", "STATUS", "LIMITS"],
        [
            [
                token.id,
                token.user,
                token.comment or "",
                _human(token.created_at),
                _human(token.expires_at) if token.expires_at else "never",
                _human(token.last_used_at) if token.last_used_at else "never",
                token.status(now),
                ", ".join(
                    limit
                    for limit in (_shown_scope(token.scope), _shown_ranges(token.allow_from))
                    if limit
                ),
            ]
            for token in tokens
        ],
    )
    return EXIT_OK


def _token_json(token: TokenInfo, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": token.id,
        "user": token.user,
        "comment": token.comment,
        "created_at": _iso(token.created_at),
        "expires_at": _iso(token.expires_at),
        "last_used_at": _iso(token.last_used_at),
        "last_used_peers": list(token.last_used_peers),
        "revoked_at": _iso(token.revoked_at),
        "status": token.status(now),
        "allow_from": _json_ranges(token.allow_from),
        "scope": token.scope,
    }


def _json_ranges(ranges: tuple[str, ...] | None) -> list[str] | None:
    return None if ranges is None else list(ranges)


def _shown_scope(scope: str) -> str:
    return "" if scope == "all" else scope.replace("_", "-")


def _shown_ranges(ranges: tuple[str, ...] | None) -> str:
    return "" if ranges is None else "from " + " ".join(ranges)


def _token_delete(args: argparse.Namespace, settings: Settings) -> int:
    ids: list[str] = list(dict.fromkeys(args.ids))
    if not args.yes and not _confirm(f"Delete {len(ids)} token(s) ({', '.join(ids)})? [y/N] "):
        print("nothing deleted", file=sys.stderr)
        return EXIT_FAILED
    store = _open_store(settings)
    try:
        result = store.delete_tokens(ids)
        _audit_token_changes(settings, store, "token_deleted", result.deleted)
    finally:
        store.close()
    for token_id in result.deleted:
        print(f"deleted {token_id}")
    for token_id in result.already_deleted:
        print(f"{token_id} was already deleted")
    for token_id in result.unknown:
        print(f"e6auth: no token {token_id}", file=sys.stderr)
    return EXIT_OK if result.all_found else EXIT_FAILED


def _audit_token_changes(
    settings: Settings,
    store: TokenStore,
    kind: str,
    token_ids: Sequence[str],
    username: str | None = None,
) -> None:
    """Note a change in the audit trail. The change is made: a failed note is reported, not
    raised, so that a new token's secret is still shown."""
    if not settings.audit or not token_ids:
        return
    from e6auth.store.audit_store import AuditStore, AuthEvent

    now = store.now()
    events = [
        AuthEvent(now, kind, "ok", username=username, token_id=token_id, method="cli")
        for token_id in token_ids
    ]
    try:
        AuditStore(store.engine).write(events)
    except E6AuthError as exc:
        print(f"e6auth: warning: not recorded in the audit trail: {exc.detail}", file=sys.stderr)


def _confirm(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


# -- audit -------------------------------------------------------------------------------------

MAX_TABLE_STATEMENT = 60


def _moment(option: str, text: str | None, now: dt.datetime) -> dt.datetime | None:
    """``1h`` (that long ago), ``2026-11-01`` (midnight UTC) or an ISO time (UTC unless it says)."""
    if text is None:
        return None
    ago = _duration(text)
    if ago is not None:
        return now - ago
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise _Refused(
            f"{option}: expected a duration (30m, 1h, 7d, 2w), a date or an ISO time"
        ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from e6auth.store.audit_store import AuditStore

    user = _audit_user(args.user)
    store = _open_store(settings)
    try:
        now = store.now()
        since = _moment("--since", args.since, now)
        until = _moment("--until", args.until, now)
        audit = AuditStore(store.engine)
        if args.queries:
            queries = audit.query_events(user=user, since=since, until=until, limit=args.limit)
        else:
            events = audit.auth_events(user=user, since=since, until=until, limit=args.limit)
    finally:
        store.close()
    if args.queries:
        _print_queries(queries, as_json=args.json)
    else:
        _print_auth_events(events, as_json=args.json)
    return EXIT_OK


def _audit_user(text: str | None) -> str | None:
    """A user name, or the stored form of an unknown one (``unknown:<hex>``), which takes the
    attempts made with that name."""
    if text is None:
        return None
    from e6auth.audit import is_hashed_name

    return text if is_hashed_name(text) else normalize_username(text)


def _print_auth_events(events: list[AuthEvent], *, as_json: bool) -> None:
    _print_records(
        [
            {
                "at": event.at,
                "kind": event.kind,
                "result": event.result,
                "reason": event.reason,
                "user": event.username,
                "token_id": event.token_id,
                "peer": event.peer,
                "method": event.method,
            }
            for event in events
        ],
        {"at": "TIME (UTC)", "kind": "KIND", "result": "RESULT", "reason": "REASON"}
        | {"user": "USER", "token_id": "TOKEN", "peer": "PEER", "method": "METHOD"},
        as_json=as_json,
    )


def _print_queries(events: list[QueryEvent], *, as_json: bool) -> None:
    _print_records(
        [
            {
                "at": event.at,
                "user": event.username,
                "token_id": event.token_id,
                "peer": event.peer,
                "result": event.result,
                "query_id": event.query_id,
                "statement": event.statement,
            }
            for event in events
        ],
        {"at": "TIME (UTC)", "user": "USER", "token_id": "TOKEN", "peer": "PEER"}
        | {"result": "RESULT", "query_id": "QUERY ID", "statement": "STATEMENT"},
        as_json=as_json,
    )


def _print_records(
    records: list[dict[str, Any]], columns: dict[str, str], *, as_json: bool
) -> None:
    """Audit records as a JSON array (times in ISO 8601), or as a table under ``columns``'
    titles (times readable, empty for none, statements on one bounded line)."""
    if as_json:
        _print_json([{**record, "at": _iso(record["at"])} for record in records])
        return
    rows = []
    for record in records:
        shown = {**record, "at": _human(record["at"])}
        if "statement" in shown:
            shown["statement"] = _one_line(shown["statement"], MAX_TABLE_STATEMENT)
        rows.append(["" if shown[key] is None else str(shown[key]) for key in columns])
    _print_table(list(columns.values()), rows)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# -- policy, rotation, leaks, peppers ----------------------------------------------------------

# `e6auth token check` exit codes: a script triaging a leaked string can tell the outcomes apart.
CHECK_EXIT = {
    "active": EXIT_OK,
    "malformed": 3,
    "unknown id": 4,
    "wrong secret": 5,
    "expired": 6,
    "revoked": 7,
    "rotated-out": 8,
    "user disabled": 9,
}


def _add_policy_commands(
    commands: Any, token_commands: Any, listing: argparse.ArgumentParser
) -> None:
    listing.add_argument(
        "--expiring-within",
        type=_span,
        metavar="SPAN",
        help="only active tokens expiring within SPAN (7d, 36h, 90m, 2w)",
    )
    rotate = token_commands.add_parser(
        "rotate", help="give a token a new secret; the old one works for a grace window"
    )
    rotate.add_argument("id", metavar="ID")
    rotate.add_argument(
        "--grace-hours",
        type=float,
        default=DEFAULT_ROTATION_GRACE / dt.timedelta(hours=1),
        metavar="N",
        help="how long the old secret keeps working (default 24; 0: not at all)",
    )
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(handler=_token_rotate)
    unused = token_commands.add_parser(
        "revoke-unused", help="revoke tokens unused for the policy's number of days"
    )
    unused.add_argument("--dry-run", action="store_true", help="list them, revoke nothing")
    unused.add_argument(
        "--days",
        type=_positive_int,
        metavar="N",
        help="instead of the policy's revoke_unused_after_days",
    )
    unused.add_argument("--json", action="store_true")
    unused.set_defaults(handler=_token_revoke_unused)
    check = token_commands.add_parser(
        "check", help="say what a token read from stdin is, never printing it"
    )
    check.add_argument("--offline", action="store_true", help="shape and checksum only")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=_token_check)

    policy = commands.add_parser("policy", help="the token and login policy")
    policy.set_defaults(handler=lambda _args, _settings: _usage(policy))
    policy_commands = policy.add_subparsers(metavar="ACTION", parser_class=_Parser)
    show = policy_commands.add_parser("show", help="the effective policy and where it comes from")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_policy_show)

    pepper = commands.add_parser("pepper", help="the keys token digests are made with")
    pepper.set_defaults(handler=lambda _args, _settings: _usage(pepper))
    pepper_commands = pepper.add_subparsers(metavar="ACTION", parser_class=_Parser)
    pepper_commands.add_parser(
        "add", help="generate a new pepper for new tokens and rotations"
    ).set_defaults(handler=_pepper_add)
    peppers = pepper_commands.add_parser("list", help="pepper ids and the tokens using each")
    peppers.add_argument("--json", action="store_true")
    peppers.set_defaults(handler=_pepper_list)


def _span(text: str) -> dt.timedelta:
    span = _duration(text)
    if span is None or not span:
        raise argparse.ArgumentTypeError("a span is a number and a unit: 90m, 36h, 7d, 2w")
    return span


def _expiring(tokens: list[TokenInfo], now: dt.datetime, span: dt.timedelta) -> list[TokenInfo]:
    """Active tokens that expire within ``span``, the soonest first."""
    soon = [
        (token.expires_at, token)
        for token in tokens
        if token.status(now) == "active"
        and token.expires_at is not None
        and token.expires_at <= now + span
    ]
    return [token for _, token in sorted(soon, key=lambda pair: pair[0])]


def _policy_show(args: argparse.Namespace, settings: Settings) -> int:
    policy = Policy.from_settings(settings)
    values = policy.as_dict()
    sources = {name: _setting_source(settings, name) for name in POLICY_SETTINGS}
    if args.json:
        _print_json(
            {name: {"value": values[name], "source": sources[name]} for name in POLICY_SETTINGS}
        )
        return EXIT_OK
    _print_table(
        ["SETTING", "VALUE", "FROM"],
        [[name, _policy_value(values[name]), sources[name]] for name in POLICY_SETTINGS],
    )
    return EXIT_OK


def _policy_value(value: bool | int | None) -> str:
    if value is None:
        return "off"
    if isinstance(value, bool):
        return "allowed" if value else "refused (tokens only)"
    return str(value)


def _setting_source(settings: Settings, name: str) -> str:
    """Where a setting's value came from: flags, environment and config file all set it on the
    model; the environment is told apart by its variable (names are not case-sensitive)."""
    if name not in settings.model_fields_set:
        return "default"
    variable = f"E6AUTH_{name}".upper()
    if any(key.upper() == variable for key in os.environ):
        return f"environment ({variable})"
    return "config file"


def _token_rotate(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 <= args.grace_hours <= MAX_ROTATION_GRACE / dt.timedelta(hours=1):
        raise _Refused(
            f"--grace-hours must be from 0 to {MAX_ROTATION_GRACE / dt.timedelta(hours=1):g}"
        )
    store = _open_store(settings)
    try:
        new = store.rotate_token(args.id, grace=dt.timedelta(hours=args.grace_hours))
        _audit_token_changes(settings, store, "token_rotated", [new.id], new.user)
    finally:
        store.close()
    if args.json:
        _print_json(
            {
                "id": new.id,
                "token": new.token,
                "expires_at": _iso(new.expires_at),
                "previous_valid_until": _iso(new.previous_valid_until),
            }
        )
        return EXIT_OK
    if args.grace_hours:
        old = f"the old secret works until {_human(new.previous_valid_until)} UTC"
    else:
        old = "the old secret no longer works"
    print(f"Rotated token {new.id} of {new.user}: {old}.\n")
    print(f"    {new.token}\n")
    print("Copy it now: it will not be shown again.")
    return EXIT_OK


def _token_revoke_unused(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        if args.days is None and store.policy.revoke_unused_after_days is None:
            raise _Refused(
                "the policy revokes no unused tokens: set revoke_unused_after_days or give --days"
            )
        found = store.revoke_unused(dry_run=args.dry_run, after_days=args.days)
        if not args.dry_run:
            revoked = [token.id for token in found]
            _audit_token_changes(settings, store, "token_revoked_unused", revoked)
        now = store.now()
    finally:
        store.close()
    if args.json:
        _print_json([_token_json(token, now) for token in found])
        return EXIT_OK
    verb = "would revoke" if args.dry_run else "revoked"
    for token in found:
        last = _human(token.last_used_at) if token.last_used_at else "never"
        print(f"{verb} {token.id} of {token.user} (last used {last})")
    if not found:
        print("no unused tokens")
    return EXIT_OK


def _token_check(args: argparse.Namespace, settings: Settings) -> int:
    # Nothing read here is ever printed: not the token, not a part of it but its public id.
    text = sys.stdin.read().strip()
    report: dict[str, Any] = {"shape": "valid", "id": None}
    if not looks_like_token(text):
        report["shape"] = "not an e6auth token"
        return _check_report(args, report, "malformed")
    report["id"] = split_token(text).id
    try:
        check_checksum(text)
    except MalformedCredential:
        report["shape"] = "e6auth token with a wrong checksum (mistyped or altered)"
        return _check_report(args, report, "malformed")
    if args.offline:
        return _check_report(args, report, None)
    try:
        store = _open_store(settings)
    except StoreUnavailable as exc:
        _check_report(args, report, None)
        print(f"e6auth: token store unreachable, offline check only: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    # Imported here, like serve's: the other management commands need no verify pipeline.
    from e6auth.authenticator import Authenticator

    authenticator = Authenticator(store, cache_ttl_seconds=0, password_cache_ttl_seconds=0)
    try:
        status, grace_until = _check_status(authenticator, text)
        info = store.find_token_info(report["id"])
    finally:
        authenticator.close()
    if info is not None:
        report.update(
            user=info.user,
            created_at=_iso(info.created_at),
            expires_at=_iso(info.expires_at),
            revoked_at=_iso(info.revoked_at),
            last_used_at=_iso(info.last_used_at),
        )
    if grace_until is not None:
        report["previous_secret_valid_until"] = _iso(grace_until)
    return _check_report(args, report, status)


def _check_status(authenticator: Authenticator, token: str) -> tuple[str, dt.datetime | None]:
    try:
        principal = authenticator.inspect_token(token)
    except UnknownToken:
        return "unknown id", None
    except InvalidTokenSecret:
        return "wrong secret", None
    except TokenExpired:
        return "expired", None
    except TokenRotatedOut:
        return "rotated-out", None
    except TokenRevoked:
        return "revoked", None
    except UserDisabled:
        return "user disabled", None
    return "active", principal.grace_until


def _check_report(args: argparse.Namespace, report: dict[str, Any], status: str | None) -> int:
    if status is not None:
        report["status"] = status
    if args.json:
        _print_json(report)
    else:
        for name, value in report.items():
            if value is not None:
                print(f"{name.replace('_', ' ')}: {value}")
    return EXIT_OK if status is None else CHECK_EXIT[status]


def _pepper_add(_args: argparse.Namespace, settings: Settings) -> int:
    if settings.pepper is not None or settings.peppers is not None:
        raise _Refused(
            "the peppers are configured in the settings (pepper, peppers): add the new one there "
            "as <id>:<key> with a higher id"
        )
    pepper_id = add_pepper_file(settings.home)
    print(
        f"added pepper {pepper_id} ({pepper_file(settings.home, pepper_id)}, mode 0600): new "
        "tokens and rotations use it once the gateways restart; back it up"
    )
    return EXIT_OK


def _pepper_list(args: argparse.Namespace, settings: Settings) -> int:
    store = _open_store(settings)
    try:
        usage = store.pepper_usage()
        known = store.pepper_ids
    finally:
        store.close()
    rows: list[dict[str, Any]] = [
        {"id": pepper_id, "tokens": count, "state": _pepper_state(pepper_id, known)}
        for pepper_id, count in usage.items()
    ]
    if args.json:
        _print_json(rows)
        return EXIT_OK
    _print_table(
        ["ID", "TOKENS", "STATE"],
        [[str(row["id"]), str(row["tokens"]), row["state"]] for row in rows],
    )
    return EXIT_OK


def _pepper_state(pepper_id: int, known: tuple[int, ...]) -> str:
    if pepper_id == known[-1]:
        return "current"
    return "known" if pepper_id in known else "MISSING: its tokens cannot verify"


# -- serve -------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the management commands should not pay for loading gRPC.
    from e6auth.engine import create_demo_database
    from e6auth.grpc.server import build_gateway, run_until_signalled

    if args.demo and settings.query_url is None:
        ensure_home(settings.home)
        settings = settings.model_copy(
            update={"query_url": create_demo_database(settings.home / DEMO_DATABASE_FILE)}
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


DEMO_USER = "demo"
DEMO_DATABASE_FILE = "demo.db"


def _print_demo(store: TokenStore, settings: Settings, port: int) -> None:
    if store.find_user(DEMO_USER) is None:
        store.create_user(DEMO_USER)
    new = store.create_token(DEMO_USER, comment="e6auth serve --demo", expires_days=1)
    secure = ", secure=True" if settings.tls_cert else ""
    snippet = DEMO_SNIPPET.format(
        host=settings.host, port=port, user=DEMO_USER, token=new.token, secure=secure
    )
    print(
        f"Demo user {DEMO_USER!r}, token {new.id} (expires {_human(new.expires_at)} UTC):\n\n"
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


DEMO_QUERY = "SELECT * FROM customers LIMIT 5"
DEMO_SNIPPET = (
    "    from e6data_python_connector import Connection\n"
    '    conn = Connection(host="{host}", port={port}, username="{user}",\n'
    '                      password="{token}", database="main"{secure})\n'
    "    cursor = conn.cursor()\n"
    f'    cursor.execute("{DEMO_QUERY}")\n'
    "    print(cursor.fetchall())\n"
)


# -- output ------------------------------------------------------------------------------------


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _human(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_json(value: object, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2), file=out or sys.stdout)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


if __name__ == "__main__":
    sys.exit(main())
