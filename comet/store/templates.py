"""Template rows: what a new VM is made from."""

from __future__ import annotations

import json
import sqlite3

import attrs

from comet.errors import Conflict, NotFound
from comet.store._db import Database


def _networks(value) -> tuple[str, ...]:
    """The stored JSON list of C{{"network": NAME}} as names (or names as given)."""
    if isinstance(value, str):
        return tuple(nic["network"] for nic in json.loads(value))
    return tuple(value)


@attrs.frozen
class TemplateRecord:
    id: int
    name: str
    #: MiB.
    memory: int
    cpus: int
    #: The base volume a VM's disk is cloned from, or both C{None}.
    disk_pool: str | None
    disk_volume: str | None
    created: int
    #: The networks of the NICs VMs made from it get, in order.
    nics: tuple[str, ...] = attrs.field(default=(), converter=_networks)
    #: The CPU model VMs made from it need (L{comet.model.cpus}), or C{None}.
    cpu_model: str | None = None
    #: Where VMs made from it run their disks: C{iscsi} (on the storage
    #: server) or C{local} (a copy on the compute host's ZFS,
    #: L{comet.model.storage.localcopies}).
    disk_mode: str = "iscsi"


_COLUMNS = "id, name, memory, cpus, disk_pool, disk_volume, created, nics, cpu_model, disk_mode"


def _get(conn, name: str) -> TemplateRecord:
    row = conn.execute(f"SELECT {_COLUMNS} FROM templates WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"template {name!r} does not exist")
    return TemplateRecord(**dict(row))


def _by_id(conn, template_id: int) -> TemplateRecord:
    row = conn.execute(f"SELECT {_COLUMNS} FROM templates WHERE id = ?", (template_id,)).fetchone()
    return TemplateRecord(**dict(row))


def _list(conn) -> list[TemplateRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM templates ORDER BY name")
    return [TemplateRecord(**dict(r)) for r in rows]


def nics_json(networks) -> str:
    """The C{nics} column for NICs on C{networks}, in order."""
    return json.dumps([{"network": network} for network in networks])


def _create(conn, name, memory, cpus, disk_pool, disk_volume, now, nics=(),
            cpu_model=None, disk_mode="iscsi") -> TemplateRecord:
    try:
        conn.execute(
            "INSERT INTO templates (name, memory, cpus, disk_pool, disk_volume, created, nics,"
            " cpu_model, disk_mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, memory, cpus, disk_pool, disk_volume, now, nics_json(nics), cpu_model,
             disk_mode),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"template {name!r} already exists") from None
    return _get(conn, name)


def _update(conn, name: str, changes: dict) -> TemplateRecord:
    current = _get(conn, name)
    if changes:
        sets = ", ".join(f"{column} = ?" for column in changes)
        try:
            conn.execute(
                f"UPDATE templates SET {sets} WHERE id = ?", (*changes.values(), current.id)
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"template {changes.get('name')!r} already exists") from None
    return _get(conn, changes.get("name", name))


def _delete(conn, name: str) -> None:
    current = _get(conn, name)
    users = conn.execute(
        "SELECT COUNT(*) FROM vms WHERE template_id = ?", (current.id,)
    ).fetchone()[0]
    if users:
        raise Conflict(f"template {name!r} is used by {users} VM(s)")
    conn.execute("DELETE FROM templates WHERE id = ?", (current.id,))


class Templates:
    """The C{templates} table."""

    #: Columns a client may change.
    MUTABLE = ("name", "memory", "cpus", "disk_pool", "disk_volume", "nics", "cpu_model",
               "disk_mode")

    def __init__(self, db: Database):
        self._db = db

    def get(self, name: str):
        return self._db.transact(_get, name)

    def list(self):
        return self._db.transact(_list)

    def create(self, name, memory, cpus, disk_pool, disk_volume, now, nics=(), cpu_model=None,
               disk_mode="iscsi"):
        """
        C{nics}: the networks of the NICs VMs made from it get; C{cpu_model}:
        the CPU model they need (C{None}: none); C{disk_mode}: C{iscsi} or C{local}.
        """
        return self._db.transact(_create, name, memory, cpus, disk_pool, disk_volume, now, nics,
                                 cpu_model, disk_mode)

    def update(self, name: str, /, **changes):
        unknown = set(changes) - set(self.MUTABLE)
        if unknown:
            raise ValueError(f"not mutable: {unknown}")
        if "nics" in changes:
            changes = {**changes, "nics": nics_json(changes["nics"])}
        return self._db.transact(_update, name, changes)

    def delete(self, name: str):
        return self._db.transact(_delete, name)
