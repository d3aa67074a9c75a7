"""
Users, their API tokens, and the audit log (migration 5).

The functions take an open SQLite connection, so that both the daemon (through
L{Database.transact}, in its database thread) and the C{comet-admin} tool (a
plain connection, no reactor) run the same SQL.  L{Users} is the daemon's
asynchronous face of them.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from comet.credentials import check_password_strength, hash_password, new_token, token_hash
from comet.errors import Conflict, InvalidInput, NotFound
from comet.store._db import Database

ROLES = ("admin", "operator", "viewer")


@attrs.frozen
class UserRecord:
    id: int
    name: str
    role: str
    #: The scrypt hash, or C{None} for a user who signs in with tokens only.
    password: str | None = attrs.field(repr=False)
    created: int


@attrs.frozen
class TokenRecord:
    id: int
    user: str
    created: int
    #: When it stops being accepted (seconds since the epoch); C{None}: never.
    expires: int | None = None


@attrs.frozen
class AuditRecord:
    id: int
    time: int
    user: str
    method: str
    uri: str
    status: int
    task_id: int | None


def add_user(conn, name: str, role: str, password: str | None, now: int | None = None) -> UserRecord:
    """
    Create a user; C{password} is hashed here (C{None}: tokens only), and
    refused when too short (L{check_password_strength}).
    """
    from comet.names import NAME_PATTERN, check_name

    if not check_name(name):
        raise InvalidInput(f"{name!r} is not a valid user name (it must match {NAME_PATTERN})")
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if password is not None:
        check_password_strength(password)
    hashed = hash_password(password) if password is not None else None
    now = int(time.time()) if now is None else now
    try:
        cur = conn.execute(
            "INSERT INTO users (name, role, password, created) VALUES (?, ?, ?, ?)",
            (name, role, hashed, now),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"user {name!r} already exists") from None
    return UserRecord(cur.lastrowid, name, role, hashed, now)


def replace_password_hash(conn, name: str, old: str, new: str) -> bool:
    """
    Store C{new} as C{name}'s password hash if it is still C{old} (a hash
    made again with today's parameters, same password): a password changed
    meanwhile is left alone.  Whether it was replaced.
    """
    cur = conn.execute(
        "UPDATE users SET password = ? WHERE name = ? AND password = ?", (new, name, old)
    )
    return cur.rowcount == 1


def _user(row) -> UserRecord:
    return UserRecord(row["id"], row["name"], row["role"], row["password"], row["created"])


def get_user(conn, name: str) -> UserRecord | None:
    row = conn.execute(
        "SELECT id, name, role, password, created FROM users WHERE name = ?", (name,)
    ).fetchone()
    return _user(row) if row is not None else None


def list_users(conn) -> list[UserRecord]:
    rows = conn.execute("SELECT id, name, role, password, created FROM users ORDER BY name")
    return [_user(row) for row in rows]


def count_users(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]


def create_token(conn, user: str, now: int | None = None,
                 lifetime: int | None = None) -> tuple[TokenRecord, str]:
    """
    A new token for C{user}: its record and the token itself (the only time
    it exists).  With C{lifetime} (seconds), it is refused from then on.
    """
    record = get_user(conn, user)
    if record is None:
        raise NotFound(f"user {user!r} does not exist")
    if lifetime is not None and lifetime <= 0:
        raise InvalidInput(f"a token's lifetime must be positive, not {lifetime} s")
    token = new_token()
    now = int(time.time()) if now is None else now
    expires = now + lifetime if lifetime is not None else None
    cur = conn.execute(
        "INSERT INTO api_tokens (user_id, hash, created, expires) VALUES (?, ?, ?, ?)",
        (record.id, token_hash(token), now, expires),
    )
    return TokenRecord(cur.lastrowid, user, now, expires), token


def list_tokens(conn) -> list[TokenRecord]:
    rows = conn.execute(
        "SELECT t.id, u.name, t.created, t.expires FROM api_tokens t"
        " JOIN users u ON u.id = t.user_id ORDER BY t.id"
    )
    return [TokenRecord(*row) for row in rows]


def delete_user(conn, name: str) -> None:
    """Delete a user; its tokens go with it (ON DELETE CASCADE); its audit entries stay."""
    if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
        raise NotFound(f"user {name!r} does not exist")


def set_role(conn, name: str, role: str) -> UserRecord:
    """Give C{name} the role C{role}: its tokens carry the new role from the next request."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if conn.execute("UPDATE users SET role = ? WHERE name = ?", (role, name)).rowcount == 0:
        raise NotFound(f"user {name!r} does not exist")
    return get_user(conn, name)


def revoke_token(conn, token_id: int) -> None:
    cur = conn.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,))
    if cur.rowcount == 0:
        raise NotFound(f"token {token_id} does not exist")


def user_of_token(conn, token: str, now: int | None = None) -> UserRecord | None:
    """The user a token belongs to, or C{None} (unknown or expired); looked up by its hash."""
    return _unexpired(owner_of_token_hash(conn, token_hash(token)), now)


def owner_of_token_hash(conn, digest: str) -> tuple[UserRecord, int | None] | None:
    """
    The user of the token whose stored form (L{token_hash}) is C{digest}, and
    when that token expires (C{None}: never).  Whether it has expired is the
    caller's question (L{_unexpired}): a cached answer outlives the moment.
    """
    row = conn.execute(
        "SELECT u.id, u.name, u.role, u.password, u.created, t.expires FROM api_tokens t"
        " JOIN users u ON u.id = t.user_id WHERE t.hash = ?",
        (digest,),
    ).fetchone()
    return (_user(row), row["expires"]) if row is not None else None


def _unexpired(owner: tuple[UserRecord, int | None] | None, now: float | None) -> UserRecord | None:
    if owner is None:
        return None
    user, expires = owner
    now = time.time() if now is None else now
    return user if expires is None or now < expires else None


def record_audit(conn, when: int, user: str, method: str, uri: str, status: int,
                 task_id: int | None) -> None:
    conn.execute(
        "INSERT INTO audit_log (time, user, method, uri, status, task_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (when, user, method, uri, status, task_id),
    )


def list_audit(conn, user: str | None = None, since: int | None = None,
               limit: int = 100, offset: int = 0) -> list[AuditRecord]:
    """Audit entries, oldest first, filtered by user and by time (C{time >= since})."""
    where, args = [], []  # type: list[str], list[Any]
    if user is not None:
        where.append("user = ?")
        args.append(user)
    if since is not None:
        where.append("time >= ?")
        args.append(since)
    sql = "SELECT id, time, user, method, uri, status, task_id FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id LIMIT ? OFFSET ?"
    return [AuditRecord(*row) for row in conn.execute(sql, args + [limit, offset])]


class Users:
    """
    The daemon's access to users, tokens and the audit log (in the database
    thread).  Token lookups are reads on the read-only connection, through a
    L{comet.store._readcache.ReadCache} that forgets everything as soon as a
    user or token row is written (a revocation by C{comet-admin} in another
    process included), so a revoked token is refused by the very next request.
    """

    def __init__(self, db: Database, cache: bool = True, clock=None):
        self.db = db
        self.tokens = db.cache("users") if cache else None
        self._clock = clock

    def get(self, name: str):
        return self.db.transact(get_user, name)

    def by_token(self, token: str) -> Deferred[UserRecord | None]:
        """The user of C{token}, or C{None}: unknown, revoked or expired now."""
        digest = token_hash(token)
        if self.tokens is None:
            found = self.db.read(owner_of_token_hash, digest)
        else:
            found = self.tokens.lookup(
                ("token", digest), lambda: self.db.read(owner_of_token_hash, digest)
            )
        now = self._clock.seconds() if self._clock is not None else None
        return found.addCallback(_unexpired, now)

    def replace_password_hash(self, name: str, old: str, new: str):
        return self.db.transact(replace_password_hash, name, old, new)

    def token_left(self, token: str) -> Deferred[int | None]:
        """Seconds until C{token} expires (C{None}: never, or no such token)."""
        def left(owner):
            if owner is None or owner[1] is None:
                return None
            now = self._clock.seconds() if self._clock is not None else time.time()
            return owner[1] - int(now)

        return self.db.read(owner_of_token_hash, token_hash(token)).addCallback(left)

    def create_token(self, user: str, lifetime: int | None = None):
        """A new token for C{user} (L{create_token}): its record and the token."""
        now = int(self._clock.seconds()) if self._clock is not None else None
        return self.db.transact(create_token, user, now, lifetime)

    def count(self):
        return self.db.transact(count_users)

    def audit(self, *args):
        return self.db.transact(record_audit, *args)

    def audit_log(self, **filters):
        return self.db.transact(lambda conn: list_audit(conn, **filters))
