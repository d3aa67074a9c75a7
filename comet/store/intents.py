"""
Intent rows: the steps of multi-step changes, written before each step runs.

An operation (one VM start, one volume create, ...) has an id and one row per
step it has begun: C{planned} when written, C{done} once the step returned.
When the operation ends, in success or after undoing its own failure, its
rows are deleted.  So every row in the table belongs to an operation that a
process was running when it died (or is running now).
"""

from __future__ import annotations

import json

import attrs

from comet.store._db import Database


@attrs.frozen
class IntentRecord:
    id: int
    operation: str
    #: The task the operation ran under, if any.
    task_id: int | None
    #: C{vm.start}, C{volume.create}, ...
    kind: str
    #: What it acts on: a VM's uuid, C{<pool>/<volume>}.
    object: str
    step: str
    #: What the step touches, by name (host, zvol, ...).
    detail: dict
    #: C{planned} or C{done}.
    state: str
    #: Seconds since the epoch.
    created: int
    updated: int


_COLUMNS = "id, operation, task_id, kind, object, step, detail, state, created, updated"


def _record(row) -> IntentRecord:
    fields = dict(row)
    fields["detail"] = json.loads(fields["detail"])
    return IntentRecord(**fields)


def _plan(conn, operation, task_id, kind, obj, step, detail, now, done_row=None) -> int:
    if done_row is not None:
        _done(conn, done_row, now)
    cursor = conn.execute(
        "INSERT INTO intents (operation, task_id, kind, object, step, detail, state,"
        " created, updated) VALUES (?, ?, ?, ?, ?, ?, 'planned', ?, ?)",
        (operation, task_id, kind, obj, step, json.dumps(detail, sort_keys=True), now, now),
    )
    return cursor.lastrowid


def _done(conn, row_id: int, now: int) -> None:
    conn.execute("UPDATE intents SET state = 'done', updated = ? WHERE id = ?", (now, row_id))


def _finish(conn, operation: str) -> None:
    conn.execute("DELETE FROM intents WHERE operation = ?", (operation,))


def _list(conn) -> list[IntentRecord]:
    return [_record(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM intents ORDER BY id")]


class Intents:
    """The C{intents} table."""

    def __init__(self, db: Database):
        self._db = db

    def plan(self, operation: str, task_id: int | None, kind: str, obj: str, step: str,
             detail: dict, now: int, done_row: int | None = None):
        """
        Record that C{step} is about to run; the row's id.  C{done_row}: a
        step of the same operation that has ended, marked C{done} in the same
        transaction (one write per step instead of two).
        """
        return self._db.transact(_plan, operation, task_id, kind, obj, step, detail, now,
                                 done_row)

    def finish(self, operation: str):
        """The operation ended: forget its steps."""
        return self._db.transact(_finish, operation)

    def list(self):
        """Every step of every operation not yet ended, oldest first."""
        return self._db.transact(_list)
