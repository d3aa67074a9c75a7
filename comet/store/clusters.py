"""Cluster rows."""

from __future__ import annotations

import sqlite3

import attrs

from comet.errors import Conflict, NotFound
from comet.store._db import Database


@attrs.frozen
class ClusterRecord:
    id: int
    name: str
    description: str
    #: Seconds since the epoch.
    created: int


def _get(conn, name: str) -> ClusterRecord:
    row = conn.execute(
        "SELECT id, name, description, created FROM clusters WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        raise NotFound(f"cluster {name!r} does not exist")
    return ClusterRecord(**dict(row))


def _list(conn) -> tuple[ClusterRecord, ...]:
    rows = conn.execute("SELECT id, name, description, created FROM clusters ORDER BY name")
    return tuple(ClusterRecord(**dict(row)) for row in rows)


def _create(conn, name: str, description: str, now: int) -> ClusterRecord:
    try:
        conn.execute(
            "INSERT INTO clusters (name, description, created) VALUES (?, ?, ?)",
            (name, description, now),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"cluster {name!r} already exists") from None
    return _get(conn, name)


def _update(conn, name: str, new_name: str | None, description: str | None) -> ClusterRecord:
    current = _get(conn, name)
    try:
        conn.execute(
            "UPDATE clusters SET name = ?, description = ? WHERE id = ?",
            (
                new_name if new_name is not None else current.name,
                description if description is not None else current.description,
                current.id,
            ),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"cluster {new_name!r} already exists") from None
    return _get(conn, new_name if new_name is not None else name)


def _delete(conn, name: str) -> None:
    current = _get(conn, name)
    conn.execute("DELETE FROM clusters WHERE id = ?", (current.id,))


class Clusters:
    """The C{clusters} table."""

    def __init__(self, db: Database):
        self._db = db
        #: Shared with L{comet.store.vms.VMs}: stale when a VM, cluster or
        #: template row is written.
        self._cache = db.cache("vms")

    def get(self, name: str):
        return self._cache.lookup(("cluster", name), lambda: self._db.read(_get, name))

    def list(self):
        return self._cache.lookup(("clusters",), lambda: self._db.read(_list))

    def create(self, name: str, description: str, now: int):
        return self._db.transact(_create, name, description, now)

    def update(self, name: str, new_name: str | None = None, description: str | None = None):
        return self._db.transact(_update, name, new_name, description)

    def delete(self, name: str):
        return self._db.transact(_delete, name)
