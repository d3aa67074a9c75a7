"""
Lock and owner rows: one operation at a time per object, and which daemon
process holds the database.

A lock is a row keyed by the object it guards (a VM uuid, C{<pool>/<volume>}):
taking it is an INSERT, which the primary key refuses for a second one, so
two operations on one object cannot both get it, whichever process asks.  An
owner is a daemon process (a random id per start) with what tells whether it
still runs; the policy (who is alive, when to refuse to start) is in
L{comet.model.locks}, the SQL here.
"""

from __future__ import annotations

from typing import Callable

import attrs

from comet.store._db import Database


@attrs.frozen
class LockRecord:
    #: A VM uuid or C{<pool>/<volume>}.
    object: str
    #: The task the operation runs as, if any.
    task_id: int | None
    #: What is being done, as a 409 says it: C{stopping}, C{creating volume 'x'}.
    doing: str
    owner: str
    #: Seconds since the epoch.
    acquired: int


@attrs.frozen
class OwnerRecord:
    #: Random, one per process start.
    owner: str
    pid: int
    hostname: str
    #: The host's boot id (empty where unknown): a pid means nothing across boots.
    boot: str
    #: The process's start time in clock ticks since boot (C{None} where
    #: unknown): a pid reused by another process has another.
    proc_start: int | None
    started: int
    renewed: int


_LOCK_COLUMNS = "object, task_id, doing, owner, acquired"
_OWNER_COLUMNS = "owner, pid, hostname, boot, proc_start, started, renewed"


def _lock(row) -> LockRecord:
    return LockRecord(**dict(row))


def _owner(row) -> OwnerRecord:
    return OwnerRecord(**dict(row))


def _get_lock(conn, obj: str) -> LockRecord | None:
    row = conn.execute(f"SELECT {_LOCK_COLUMNS} FROM locks WHERE object = ?", (obj,)).fetchone()
    return None if row is None else _lock(row)


def _acquire(conn, obj, task_id, doing, owner, now) -> LockRecord | None:
    cursor = conn.execute(
        "INSERT OR IGNORE INTO locks (object, task_id, doing, owner, acquired)"
        " VALUES (?, ?, ?, ?, ?)",
        (obj, task_id, doing, owner, now),
    )
    if cursor.rowcount == 1:
        return None
    return _get_lock(conn, obj)


def _release(conn, obj: str, owner: str) -> int:
    return conn.execute("DELETE FROM locks WHERE object = ? AND owner = ?", (obj, owner)).rowcount


def _set_task(conn, obj: str, owner: str, task_id: int) -> None:
    conn.execute("UPDATE locks SET task_id = ? WHERE object = ? AND owner = ?",
                 (task_id, obj, owner))


def _locks(conn) -> list[LockRecord]:
    return [_lock(r) for r in conn.execute(f"SELECT {_LOCK_COLUMNS} FROM locks ORDER BY object")]


def _owners(conn) -> list[OwnerRecord]:
    return [_owner(r) for r in conn.execute(f"SELECT {_OWNER_COLUMNS} FROM owners ORDER BY started")]


def owners_on(conn) -> list[OwnerRecord]:
    """Every daemon recorded as an owner, on a blocking connection (C{comet-admin restore})."""
    return _owners(conn)


def _add_owner(conn, me: OwnerRecord) -> None:
    conn.execute(
        f"INSERT INTO owners ({_OWNER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        attrs.astuple(me),
    )


def _take_lease(conn, me: OwnerRecord, alive: Callable[[OwnerRecord], bool]) -> OwnerRecord | None:
    for other in _owners(conn):
        if other.owner != me.owner and alive(other):
            return other
    _add_owner(conn, me)
    return None


def _renew(conn, owner: str, now: int) -> bool:
    return conn.execute("UPDATE owners SET renewed = ? WHERE owner = ?", (now, owner)).rowcount == 1


def _touch(conn, owner: str) -> bool:
    # A write that changes nothing: it needs the write lock and a commit, as
    # any change does, and its row count says whether the row is there.
    return conn.execute("UPDATE owners SET renewed = renewed WHERE owner = ?",
                        (owner,)).rowcount == 1


def _drop_owner(conn, owner: str) -> None:
    conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))


def _release_dead(conn, me: str, alive: Callable[[OwnerRecord], bool]):
    owners = {o.owner: o for o in _owners(conn) if o.owner != me}
    dead = {name for name, o in owners.items() if not alive(o)}
    released = []
    for lock in _locks(conn):
        if lock.owner == me or (lock.owner in owners and lock.owner not in dead):
            continue
        _release(conn, lock.object, lock.owner)
        released.append((lock, owners.get(lock.owner)))
    for name in dead:
        _drop_owner(conn, name)
    return released


class Locks:
    """The C{locks} and C{owners} tables."""

    def __init__(self, db: Database):
        self._db = db

    def acquire(self, obj: str, task_id: int | None, doing: str, owner: str, now: int):
        """Take the lock on C{obj}: C{None}, or the L{LockRecord} that holds it already."""
        return self._db.transact(_acquire, obj, task_id, doing, owner, now)

    def release(self, obj: str, owner: str):
        """Release C{owner}'s lock on C{obj} (no other owner's); how many rows went (0 or 1)."""
        return self._db.transact(_release, obj, owner)

    def set_task(self, obj: str, owner: str, task_id: int):
        """Name the task the operation holding the lock runs as."""
        return self._db.transact(_set_task, obj, owner, task_id)

    def get(self, obj: str):
        """The lock on C{obj}, or C{None}."""
        return self._db.transact(_get_lock, obj)

    def list(self):
        return self._db.transact(_locks)

    def owners(self):
        return self._db.transact(_owners)

    def take_lease(self, me: OwnerRecord, alive: Callable[[OwnerRecord], bool]):
        """
        In one transaction: the first other owner C{alive} says still runs
        (then nothing is written), or C{None} after recording C{me}.
        """
        return self._db.transact(_take_lease, me, alive)

    def renew(self, owner: str, now: int):
        """Bump C{owner}'s renewal; whether its row was still there."""
        return self._db.transact(_renew, owner, now)

    def touch(self, owner: str):
        """
        Write C{owner}'s row unchanged, in a transaction of the database
        thread: whether the row is there (C{/health}: the database takes a
        write, and the lease is still this owner's).
        """
        return self._db.transact(_touch, owner)

    def drop_owner(self, owner: str):
        return self._db.transact(_drop_owner, owner)

    def release_dead(self, me: str, alive: Callable[[OwnerRecord], bool]):
        """
        In one transaction: delete the locks of owners other than C{me} that
        are dead (C{alive} says no, or no longer recorded) and the rows of the
        dead owners; the (lock, owner or C{None}) pairs released.
        """
        return self._db.transact(_release_dead, me, alive)
