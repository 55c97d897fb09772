"""``e6auth token``: create, list, delete, rotate and check personal access tokens, revoke the
unused ones."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from e6auth.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Refused,
    confirm,
    group,
    human,
    iso,
    open_store,
    positive_int,
    print_json,
    print_table,
    span,
)
from e6auth.credentials.tokens import check_token, looks_like_token, split_token
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
from e6auth.verify.policy import DEFAULT_ROTATION_GRACE, MAX_ROTATION_GRACE

if TYPE_CHECKING:
    from e6auth.cli.common import Commands
    from e6auth.settings import Settings
    from e6auth.store.records import TokenInfo
    from e6auth.store.token_store import TokenStore
    from e6auth.verify.authenticator import Authenticator

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


def add_commands(commands: Commands) -> None:
    token_commands = group(commands, "token", "manage personal access tokens")
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
    create.set_defaults(handler=_create)
    listing = token_commands.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--user")
    listing.add_argument("--json", action="store_true")
    listing.add_argument(
        "--expiring-within",
        type=span,
        metavar="SPAN",
        help="only active tokens expiring within SPAN (7d, 36h, 90m, 2w)",
    )
    listing.set_defaults(handler=_list)
    delete = token_commands.add_parser("delete", help="delete (revoke) tokens")
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(handler=_delete)
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
    rotate.set_defaults(handler=_rotate)
    unused = token_commands.add_parser(
        "revoke-unused", help="revoke tokens unused for the policy's number of days"
    )
    unused.add_argument("--dry-run", action="store_true", help="list them, revoke nothing")
    unused.add_argument(
        "--days",
        type=positive_int,
        metavar="N",
        help="instead of the policy's revoke_unused_after_days",
    )
    unused.add_argument("--json", action="store_true")
    unused.set_defaults(handler=_revoke_unused)
    check = token_commands.add_parser(
        "check", help="say what a token read from stdin is, never printing it"
    )
    check.add_argument("--offline", action="store_true", help="shape and checksum only")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=_check)


# -- create, list, delete ----------------------------------------------------------------------


def _create(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        new = store.create_token(
            args.user,
            comment=args.comment,
            expires_days=args.expires_days,
            allow_from=args.allow_from,
            read_only=args.read_only,
        )
        _audit_changes(settings, store, "token_created", [new.id], new.user)
    if args.json:
        print_json(
            {
                "id": new.id,
                "token": new.token,
                "expires_at": iso(new.expires_at),
                "allow_from": _json_ranges(new.allow_from),
                "scope": new.scope,
            }
        )
        return EXIT_OK
    expiry = f"expires {human(new.expires_at)} UTC" if new.expires_at else "never expires"
    limits = "".join(
        f"; {limit}" for limit in (_shown_scope(new.scope), _shown_ranges(new.allow_from)) if limit
    )
    print(f"Created token {new.id} for {new.user} ({expiry}{limits}).\n")
    print(f"    {new.token}\n")
    print("Copy it now: it will not be shown again.")
    return EXIT_OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        tokens = store.list_tokens(args.user)
        now = store.now()
    if args.expiring_within is not None:
        tokens = _expiring(tokens, now, args.expiring_within)
    if args.json:
        print_json([_token_json(token, now) for token in tokens])
        return EXIT_OK
    print_table(
        ["ID", "USER", "COMMENT", "CREATED (UTC)", "EXPIRES", "LAST USED", "STATUS", "LIMITS"],
        [
            [
                token.id,
                token.user,
                token.comment or "",
                human(token.created_at),
                human(token.expires_at) if token.expires_at else "never",
                human(token.last_used_at) if token.last_used_at else "never",
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


def _expiring(tokens: list[TokenInfo], now: dt.datetime, within: dt.timedelta) -> list[TokenInfo]:
    """Active tokens that expire within ``within``, the soonest first."""
    soon = [
        (token.expires_at, token)
        for token in tokens
        if token.status(now) == "active"
        and token.expires_at is not None
        and token.expires_at <= now + within
    ]
    return [token for _, token in sorted(soon, key=lambda pair: pair[0])]


def _token_json(token: TokenInfo, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": token.id,
        "user": token.user,
        "comment": token.comment,
        "created_at": iso(token.created_at),
        "expires_at": iso(token.expires_at),
        "last_used_at": iso(token.last_used_at),
        "last_used_peers": list(token.last_used_peers),
        "revoked_at": iso(token.revoked_at),
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


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    ids: list[str] = list(dict.fromkeys(args.ids))
    if not args.yes and not confirm(f"Delete {len(ids)} token(s) ({', '.join(ids)})? [y/N] "):
        print("nothing deleted", file=sys.stderr)
        return EXIT_FAILED
    with open_store(settings) as store:
        result = store.delete_tokens(ids)
        _audit_changes(settings, store, "token_deleted", result.deleted)
    for token_id in result.deleted:
        print(f"deleted {token_id}")
    for token_id in result.already_deleted:
        print(f"{token_id} was already deleted")
    for token_id in result.unknown:
        print(f"e6auth: no token {token_id}", file=sys.stderr)
    return EXIT_OK if result.all_found else EXIT_FAILED


def _audit_changes(
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
    from e6auth.store.audit import AuditStore, AuthEvent

    now = store.now()
    events = [
        AuthEvent(now, kind, "ok", username=username, token_id=token_id, method="cli")
        for token_id in token_ids
    ]
    try:
        AuditStore(store.engine).write(events)
    except E6AuthError as exc:
        print(f"e6auth: warning: not recorded in the audit trail: {exc.detail}", file=sys.stderr)


# -- rotate, revoke-unused ---------------------------------------------------------------------


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    if not 0 <= args.grace_hours <= MAX_ROTATION_GRACE / dt.timedelta(hours=1):
        raise Refused(
            f"--grace-hours must be from 0 to {MAX_ROTATION_GRACE / dt.timedelta(hours=1):g}"
        )
    with open_store(settings) as store:
        new = store.rotate_token(args.id, grace=dt.timedelta(hours=args.grace_hours))
        _audit_changes(settings, store, "token_rotated", [new.id], new.user)
    if args.json:
        print_json(
            {
                "id": new.id,
                "token": new.token,
                "expires_at": iso(new.expires_at),
                "previous_valid_until": iso(new.previous_valid_until),
            }
        )
        return EXIT_OK
    if args.grace_hours:
        old = f"the old secret works until {human(new.previous_valid_until)} UTC"
    else:
        old = "the old secret no longer works"
    print(f"Rotated token {new.id} of {new.user}: {old}.\n")
    print(f"    {new.token}\n")
    print("Copy it now: it will not be shown again.")
    return EXIT_OK


def _revoke_unused(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        if args.days is None and store.policy.revoke_unused_after_days is None:
            raise Refused(
                "the policy revokes no unused tokens: set revoke_unused_after_days or give --days"
            )
        found = store.revoke_unused(dry_run=args.dry_run, after_days=args.days)
        if not args.dry_run:
            revoked = [token.id for token in found]
            _audit_changes(settings, store, "token_revoked_unused", revoked)
        now = store.now()
    if args.json:
        print_json([_token_json(token, now) for token in found])
        return EXIT_OK
    verb = "would revoke" if args.dry_run else "revoked"
    for token in found:
        last = human(token.last_used_at) if token.last_used_at else "never"
        print(f"{verb} {token.id} of {token.user} (last used {last})")
    if not found:
        print("no unused tokens")
    return EXIT_OK


# -- check: what a (leaked) string is ----------------------------------------------------------


def _check(args: argparse.Namespace, settings: Settings) -> int:
    # Nothing read here is ever printed: not the token, not a part of it but its public id.
    text = sys.stdin.read().strip()
    report: dict[str, Any] = {"shape": "valid", "id": None}
    if not looks_like_token(text):
        report["shape"] = "not an e6auth token"
        return _check_report(args, report, "malformed")
    report["id"] = split_token(text).id
    try:
        check_token(text)
    except MalformedCredential:
        report["shape"] = "e6auth token with a wrong checksum (mistyped or altered)"
        return _check_report(args, report, "malformed")
    if args.offline:
        return _check_report(args, report, None)
    try:
        store = open_store(settings)
    except StoreUnavailable as exc:
        _check_report(args, report, None)
        print(f"e6auth: token store unreachable, offline check only: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    # Imported here, like serve's: the other management commands need no verify pipeline.
    from e6auth.verify.authenticator import Authenticator
    from e6auth.verify.parameters import CacheParameters

    authenticator = Authenticator(
        store, cache=CacheParameters(ttl_seconds=0, password_ttl_seconds=0)
    )
    try:
        status, grace_until = _check_status(authenticator, text)
        info = store.find_token_info(report["id"])
    finally:
        authenticator.close()
    if info is not None:
        report.update(
            user=info.user,
            created_at=iso(info.created_at),
            expires_at=iso(info.expires_at),
            revoked_at=iso(info.revoked_at),
            last_used_at=iso(info.last_used_at),
        )
    if grace_until is not None:
        report["previous_secret_valid_until"] = iso(grace_until)
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
        print_json(report)
    else:
        for name, value in report.items():
            if value is not None:
                print(f"{name.replace('_', ' ')}: {value}")
    return EXIT_OK if status is None else CHECK_EXIT[status]
