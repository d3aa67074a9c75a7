"""
C{comet-admin}: users and API tokens, on the database of a configuration.

It works on the SQLite file directly (no daemon needed, none disturbed: the
file is in WAL mode), so that the first admin can be made on a fresh install:

    comet-admin user add alice --role admin          # a token-only user
    comet-admin user add bob --role viewer --password-stdin < pw
    comet-admin user list
    comet-admin user role bob operator                # effective at the next request
    comet-admin user delete bob                       # its tokens go with it
    comet-admin token create alice [--expires DAYS]   # prints the token, once
    comet-admin token list
    comet-admin token revoke 3                        # effective at once
    comet-admin bootstrap                             # first admin, if no user yet
    comet-admin backup /backups/comet-2026-12-04.sqlite   # while the daemon runs
    comet-admin restore /backups/comet-2026-12-04.sqlite  # with the daemon stopped

A token is shown only when it is created: only its hash is stored.  Every
command but C{bootstrap} works on an existing database only: a mistyped
C{--config} must not quietly make an empty one.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from typing import TextIO

from comet import config as _config
from comet.admin_files import backup, restore
from comet.errors import CometError
from comet.store import NewerSchema, connect, in_transaction, users

__all__ = ["FIRST_ADMIN", "bootstrap", "connect", "main", "run"]

#: The user C{bootstrap} makes.
FIRST_ADMIN = "admin"


def bootstrap(path: str) -> str | None:
    """
    When the database has no user: make the admin L{FIRST_ADMIN} and return
    a token for it.  Otherwise C{None} (nothing is changed).
    """
    with connect(path) as conn:

        def first(conn):
            if users.count_users(conn) > 0:
                return None
            users.add_user(conn, FIRST_ADMIN, "admin", None)
            return users.create_token(conn, FIRST_ADMIN)[1]

        return in_transaction(conn, first)


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def run(argv: list[str], stdin: TextIO, stdout: TextIO) -> None:
    """Do what C{argv} says; a L{CometError} or L{ConfigError} says why it cannot."""
    args = _parser().parse_args(argv)
    path = _config.load(args.config).database.path
    if args.what == "bootstrap":
        token = bootstrap(path)
        if token is not None:
            stdout.write(
                f"comet-admin: created the user {FIRST_ADMIN!r} (role admin) in {path}.\n"
                f"Its API token, shown only now (keep it):\n{token}\n"
                f"Use it as: curl -H 'Authorization: Bearer {token}' ...\n"
            )
        return
    if args.what == "backup":
        backup(path, args.file)
        stdout.write(f"backed up {path} to {args.file} (mode 0600)\n")
        return
    if args.what == "restore":
        kept = restore(path, args.file)
        stdout.write(f"restored {path} from {args.file}; what it held before is kept as {kept}\n")
        return
    if not os.path.exists(path):
        raise CometError(f"the database {path} does not exist (is --config right? "
                         "`comet-admin bootstrap` makes a new one)")
    with connect(path, create=False) as conn:
        if args.what == "user" and args.action == "add":
            password = None
            if args.password_stdin:
                password = stdin.readline().rstrip("\r\n")
                if not password:
                    raise CometError("the password on standard input is empty")
            user = in_transaction(conn, users.add_user, args.name, args.role, password)
            stdout.write(f"user {user.name} ({user.role}) created\n")
        elif args.what == "user" and args.action == "list":
            for user in users.list_users(conn):
                login = "password+tokens" if user.password else "tokens"
                stdout.write(f"{user.name}\t{user.role}\t{login}\t{_when(user.created)}\n")
        elif args.what == "user" and args.action == "delete":
            in_transaction(conn, users.delete_user, args.name)
            stdout.write(f"user {args.name} deleted, with its tokens\n")
        elif args.what == "user" and args.action == "role":
            user = in_transaction(conn, users.set_role, args.name, args.role)
            stdout.write(f"user {user.name} is now {user.role}\n")
        elif args.what == "token" and args.action == "create":
            lifetime = round(args.expires * 86400) if args.expires is not None else None
            record, token = in_transaction(conn, users.create_token, args.user, None, lifetime)
            until = f", valid until {_when(record.expires)} UTC" if record.expires else ""
            stdout.write(f"token {record.id} for {record.user}{until} (shown only now):\n{token}\n")
        elif args.what == "token" and args.action == "list":
            for record in users.list_tokens(conn):
                expires = _when(record.expires) if record.expires is not None else "never"
                stdout.write(f"{record.id}\t{record.user}\t{_when(record.created)}"
                             f"\texpires {expires}\n")
        elif args.what == "token" and args.action == "revoke":
            in_transaction(conn, users.revoke_token, args.id)
            stdout.write(f"token {args.id} revoked\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comet-admin", description="Comet users and API tokens."
    )
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help="Comet's configuration file (default: the embedded default, comet.sqlite here)",
    )
    what = parser.add_subparsers(dest="what", required=True)
    user = what.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="add a user")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=users.ROLES)
    add.add_argument(
        "--password-stdin", action="store_true",
        help="read a password for HTTP Basic from the first line of standard input"
        " (without it: the user signs in with tokens only)",
    )
    user.add_parser("list", help="list users")
    delete = user.add_parser("delete", help="delete a user and its tokens")
    delete.add_argument("name")
    role = user.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=users.ROLES)
    token = what.add_parser("token", help="API tokens").add_subparsers(dest="action", required=True)
    create = token.add_parser("create", help="make a token for a user and print it (once)")
    create.add_argument("user")
    create.add_argument("--expires", metavar="DAYS", type=float, default=None,
                        help="refuse the token after DAYS days (default: never)")
    token.add_parser("list", help="list tokens (ids and users; never the tokens)")
    revoke = token.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("id", type=int)
    what.add_parser("bootstrap", help="if there is no user yet, make the admin 'admin' and print its token")
    copy = what.add_parser("backup", help="copy the database, consistently, while the daemon runs")
    copy.add_argument("file", help="the copy to make (mode 0600; must not exist)")
    back = what.add_parser("restore", help="put a backup in place of the database (daemon stopped)")
    back.add_argument("file", help="a file `comet-admin backup` made")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        run(sys.argv[1:] if argv is None else argv, sys.stdin, sys.stdout)
    except _config.ConfigError as e:
        sys.stderr.write(f"comet-admin: configuration error: {e}\n")
        return 1
    except CometError as e:
        sys.stderr.write(f"comet-admin: {e.reason}\n")
        return 1
    except NewerSchema as e:
        sys.stderr.write(f"comet-admin: {e}\n")
        return 1
    except (sqlite3.Error, OSError) as e:
        sys.stderr.write(f"comet-admin: database error: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
