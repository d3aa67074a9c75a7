"""Task rows: long jobs and how they ended."""

from __future__ import annotations

import sqlite3

import attrs

from comet.errors import NotFound
from comet.store._db import Database


@attrs.frozen
class TaskRecord:
    id: int
    status: str
    message: str
    target_uri: str
    #: Percent done, 0-100, or C{None} when the job cannot tell.
    progress: int | None
    #: Seconds since the epoch.
    created: int
    updated: int


_COLUMNS = "id, status, message, target_uri, progress, created, updated"


def _record(row: sqlite3.Row) -> TaskRecord:
    return TaskRecord(**dict(row))


#: Ids are SQLite INTEGERs (signed 64-bit); a larger one names no task, and
#: SQLite would refuse to even compare it (OverflowError, a 500).
_MAX_ID = 2**63 - 1


def _get(conn, task_id: int) -> TaskRecord:
    if not 0 <= task_id <= _MAX_ID:
        raise NotFound(f"task {task_id} does not exist")
    row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None:
        raise NotFound(f"task {task_id} does not exist")
    return _record(row)


def _create(conn, target_uri: str, message: str, now: int) -> TaskRecord:
    cursor = conn.execute(
        "INSERT INTO tasks (status, message, target_uri, progress, created, updated)"
        " VALUES ('running', ?, ?, 0, ?, ?)",
        (message, target_uri, now, now),
    )
    return _get(conn, cursor.lastrowid)


def _update(conn, task_id: int, now: int, changes: dict) -> TaskRecord:
    sets = ", ".join(f"{column} = ?" for column in changes)
    conn.execute(
        f"UPDATE tasks SET {sets}, updated = ? WHERE id = ?",
        (*changes.values(), now, task_id),
    )
    return _get(conn, task_id)


def _list(conn, status: str | None, limit: int | None = None, offset: int = 0,
          newest_first: bool = False) -> list[TaskRecord]:
    where, args = ("", []) if status is None else (" WHERE status = ?", [status])
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT {_COLUMNS} FROM tasks{where} ORDER BY id {order} LIMIT ? OFFSET ?"
    rows = conn.execute(sql, (*args, -1 if limit is None else limit, offset))
    return [_record(row) for row in rows]


def _prune(conn, before: int) -> int:
    """Delete the tasks that ended (finished or failed) before C{before}; how many."""
    cur = conn.execute("DELETE FROM tasks WHERE status != 'running' AND updated < ?", (before,))
    return cur.rowcount


def _fail_running(conn, message: str, now: int) -> list[int]:
    ids = [row[0] for row in conn.execute("SELECT id FROM tasks WHERE status = 'running'")]
    conn.execute(
        "UPDATE tasks SET status = 'failed', message = ?, updated = ? WHERE status = 'running'",
        (message, now),
    )
    return ids


class Tasks:
    """The C{tasks} table."""

    def __init__(self, db: Database):
        self._db = db

    def create(self, target_uri: str, message: str, now: int):
        return self._db.transact(_create, target_uri, message, now)

    def get(self, task_id: int):
        return self._db.transact(_get, task_id)

    def list(self, status: str | None = None, limit: int | None = None, offset: int = 0,
             newest_first: bool = False):
        return self._db.transact(_list, status, limit, offset, newest_first)

    def prune(self, before: int):
        """Delete the tasks that ended before C{before} (epoch seconds); how many."""
        return self._db.transact(_prune, before)

    def progress(self, task_id: int, progress: int | None, message: str, now: int):
        return self._db.transact(
            _update, task_id, now, {"progress": progress, "message": message}
        )

    def finish(self, task_id: int, status: str, message: str, now: int):
        changes = {"status": status, "message": message}
        if status == "finished":
            changes["progress"] = 100
        return self._db.transact(_update, task_id, now, changes)

    def fail_running(self, message: str, now: int):
        """Mark every task still C{running} as C{failed} with C{message}; return their ids."""
        return self._db.transact(_fail_running, message, now)
