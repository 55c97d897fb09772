"""``e6auth user``: people and service accounts, their passwords, roles and web sessions."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from e6auth.cli.common import (
    EXIT_OK,
    Refused,
    group,
    human,
    iso,
    open_store,
    print_json,
    print_table,
)
from e6auth.credentials.usernames import normalize_username

if TYPE_CHECKING:
    from e6auth.cli.common import Commands
    from e6auth.settings import Settings


def add_commands(commands: Commands) -> None:
    user_commands = group(commands, "user", "manage users")
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
    add.set_defaults(handler=_add)
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
    owners.set_defaults(handler=_owners)
    passwd = user_commands.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read it from stdin")
    passwd.set_defaults(handler=_passwd)
    for action, enabled in (("disable", False), ("enable", True)):
        toggle = user_commands.add_parser(action, help=f"{action} a user")
        toggle.add_argument("name")
        toggle.set_defaults(handler=_toggle, enabled=enabled)
    admin = user_commands.add_parser(
        "admin", help="make a user an administrator of the web page, or no longer one"
    )
    admin.add_argument("name")
    grant = admin.add_mutually_exclusive_group(required=True)
    grant.add_argument("--on", dest="admin", action="store_true", help="grant it")
    grant.add_argument("--off", dest="admin", action="store_false", help="revoke it")
    admin.set_defaults(handler=_admin)
    signout = user_commands.add_parser(
        "signout", help="end every web page session of a user, on every replica"
    )
    signout.add_argument("name")
    signout.set_defaults(handler=_signout)
    users = user_commands.add_parser("list", help="list users")
    users.add_argument("--json", action="store_true")
    users.set_defaults(handler=_list)


def _read_password(args: argparse.Namespace, name: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    first = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass("Repeat it: ") != first:
        raise Refused("the two passwords differ")
    return first


def _add(args: argparse.Namespace, settings: Settings) -> int:
    if args.service or args.owner:
        return _add_service_account(args, settings)
    normalize_username(args.name)  # refuse junk before asking for a password
    password = None if args.no_password else _read_password(args, args.name)
    with open_store(settings) as store:
        user = store.create_user(args.name, password, admin=args.admin)
    login = "password and tokens" if user.has_password else "tokens only"
    role = ", administrator" if user.admin else ""
    print(f"added user {user.name} ({login}{role})")
    return EXIT_OK


def _add_service_account(args: argparse.Namespace, settings: Settings) -> int:
    if not args.service:
        raise Refused("--owner is for service accounts: add --service")
    if args.admin:
        raise Refused("a service account cannot be an administrator")
    if not args.owner:
        raise Refused("a service account needs --owner ADMIN (an administrator who manages it)")
    with open_store(settings) as store:
        user = store.create_service_account(args.name, args.owner)
    print(f"added service account {user.name} (tokens only; owners {', '.join(user.owners)})")
    return EXIT_OK


def _owners(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        if args.add or args.remove:
            owners = store.set_service_owners(
                args.name, add=args.add or (), remove=args.remove or ()
            )
        else:
            name = normalize_username(args.name)
            found = [user for user in store.list_users() if user.service and user.name == name]
            if not found:
                raise Refused(f"{name} is no service account")
            owners = found[0].owners
    print(f"{args.name.lower()} is owned by {', '.join(owners)}")
    return EXIT_OK


def _passwd(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password(args, args.name)
    with open_store(settings) as store:
        store.set_password(args.name, password)
    print(f"changed the password of {args.name.lower()}")
    return EXIT_OK


def _toggle(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        if args.enabled:
            store.enable_user(args.name)
        else:
            store.disable_user(args.name)
    print(f"{'enabled' if args.enabled else 'disabled'} user {args.name.lower()}")
    return EXIT_OK


def _admin(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        store.set_admin(args.name, args.admin)
    state = "is now an administrator" if args.admin else "is no longer an administrator"
    print(f"{args.name.lower()} {state}")
    return EXIT_OK


def _signout(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        store.sign_out_everywhere(args.name)
    print(f"signed {args.name.lower()} out of every web page session")
    return EXIT_OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with open_store(settings) as store:
        users = store.list_users()
    if args.json:
        print_json(
            [
                {
                    "name": user.name,
                    "disabled": user.disabled,
                    "password": user.has_password,
                    "admin": user.admin,
                    "created_at": iso(user.created_at),
                    # Only service accounts say so: a person's entry is as it always was.
                    **({"service": True, "owners": list(user.owners)} if user.service else {}),
                }
                for user in users
            ]
        )
        return EXIT_OK
    print_table(
        ["NAME", "STATUS", "PASSWORD", "ADMIN", "CREATED (UTC)"],
        [
            [
                user.name,
                "disabled" if user.disabled else "enabled",
                "yes" if user.has_password else "service" if user.service else "no",
                "yes" if user.admin else "no",
                human(user.created_at),
            ]
            for user in users
        ],
    )
    return EXIT_OK
