"""
Storage rows: pool registrations and activation states, and the volumes
Comet created (with the VM each is a disk of, its CHAP account and where it
is exported).
"""

from __future__ import annotations

import sqlite3

import attrs

from comet.errors import Conflict, NotFound
from comet.store._db import Database


@attrs.frozen
class PoolRecord:
    name: str
    server: str
    dataset: str
    #: 1 if registered through the API, 0 if it only records the state of a
    #: pool from the configuration.
    registered: int
    #: 1 if Comet created the dataset when the pool was registered.
    made_dataset: int
    active: int
    created: int


@attrs.frozen
class VolumeRecord:
    id: int
    pool: str
    name: str
    #: The zvol's full dataset name on its server.
    zvol: str
    #: Bytes, as created.
    capacity: int
    #: The VM whose disk it is, and its device name there (both or neither).
    vm_uuid: str | None
    dev: str | None
    #: 1 for a VM's own disk (made with the VM, destroyed with it).
    own: int
    #: The snapshot it was cloned from, when Comet made that snapshot for it.
    origin: str | None
    chap_user: str
    chap_secret: str
    #: UUID of the libvirt secret holding C{chap_secret} on a compute host.
    secret_uuid: str
    #: The iSCSI target name while exported, else C{None}.
    target: str | None
    #: The compute host it is exported to, else C{None}.
    exported_to: str | None
    created: int


_POOL_COLUMNS = "name, server, dataset, registered, made_dataset, active, created"
_VOLUME_COLUMNS = (
    "id, pool, name, zvol, capacity, vm_uuid, dev, own, origin, chap_user, chap_secret,"
    " secret_uuid, target, exported_to, created"
)


def _pool(conn, name):
    row = conn.execute(
        f"SELECT {_POOL_COLUMNS} FROM storage_pools WHERE name = ?", (name,)
    ).fetchone()
    return PoolRecord(**dict(row)) if row is not None else None


def _pools(conn):
    rows = conn.execute(f"SELECT {_POOL_COLUMNS} FROM storage_pools ORDER BY name")
    return [PoolRecord(**dict(r)) for r in rows]


def _register(conn, name, server, dataset, made_dataset, now):
    try:
        conn.execute(
            "INSERT INTO storage_pools (name, server, dataset, registered, made_dataset,"
            " active, created) VALUES (?, ?, ?, 1, ?, 1, ?)",
            (name, server, dataset, int(made_dataset), now),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"storage pool {name!r} already exists") from None
    return _pool(conn, name)


def _unregister(conn, name):
    used = conn.execute(
        "SELECT COUNT(*) FROM storage_volumes WHERE pool = ?", (name,)
    ).fetchone()[0]
    if used:
        raise Conflict(f"storage pool {name!r} holds {used} volume(s); delete them first")
    conn.execute("DELETE FROM storage_pools WHERE name = ? AND registered = 1", (name,))


def _set_active(conn, name, server, dataset, active, now):
    if _pool(conn, name) is None:
        conn.execute(
            "INSERT INTO storage_pools (name, server, dataset, registered, active, created)"
            " VALUES (?, ?, ?, 0, ?, ?)",
            (name, server, dataset, int(active), now),
        )
    else:
        conn.execute("UPDATE storage_pools SET active = ? WHERE name = ?", (int(active), name))
    return _pool(conn, name)


def _volume(conn, pool, name):
    row = conn.execute(
        f"SELECT {_VOLUME_COLUMNS} FROM storage_volumes WHERE pool = ? AND name = ?",
        (pool, name),
    ).fetchone()
    return VolumeRecord(**dict(row)) if row is not None else None


def _volumes(conn, pool):
    rows = conn.execute(
        f"SELECT {_VOLUME_COLUMNS} FROM storage_volumes WHERE pool = ? ORDER BY name", (pool,)
    )
    return [VolumeRecord(**dict(r)) for r in rows]


def _of_vm(conn, vm_uuid):
    rows = conn.execute(
        f"SELECT {_VOLUME_COLUMNS} FROM storage_volumes WHERE vm_uuid = ? ORDER BY dev",
        (vm_uuid,),
    )
    return [VolumeRecord(**dict(r)) for r in rows]


def _add_volume(conn, fields):
    columns = ", ".join(fields)
    marks = ", ".join("?" for _ in fields)
    try:
        conn.execute(
            f"INSERT INTO storage_volumes ({columns}) VALUES ({marks})", tuple(fields.values())
        )
    except sqlite3.IntegrityError:
        raise Conflict(
            f"volume {fields['name']!r} already exists in storage pool {fields['pool']!r}"
        ) from None
    return _volume(conn, fields["pool"], fields["name"])


def _update_volume(conn, pool, name, changes):
    if _volume(conn, pool, name) is None:
        raise NotFound(f"volume {name!r} does not exist in storage pool {pool!r}")
    sets = ", ".join(f"{c} = ?" for c in changes)
    conn.execute(
        f"UPDATE storage_volumes SET {sets} WHERE pool = ? AND name = ?",
        (*changes.values(), pool, name),
    )
    return _volume(conn, pool, name)


def _delete_volume(conn, pool, name):
    conn.execute("DELETE FROM storage_volumes WHERE pool = ? AND name = ?", (pool, name))


class Storage:
    """The C{storage_pools} and C{storage_volumes} tables."""

    #: Volume columns the model may change.
    MUTABLE = ("vm_uuid", "dev", "target", "exported_to", "chap_secret")

    def __init__(self, db: Database):
        self._db = db

    def pool(self, name: str):
        """The row of pool C{name}, or C{None}."""
        return self._db.transact(_pool, name)

    def pools(self):
        return self._db.transact(_pools)

    def register_pool(self, name, server, dataset, made_dataset, now):
        return self._db.transact(_register, name, server, dataset, made_dataset, now)

    def unregister_pool(self, name):
        return self._db.transact(_unregister, name)

    def set_active(self, name, server, dataset, active, now):
        return self._db.transact(_set_active, name, server, dataset, active, now)

    def volume(self, pool: str, name: str):
        """The row of a volume, or C{None}."""
        return self._db.transact(_volume, pool, name)

    def volumes(self, pool: str):
        return self._db.transact(_volumes, pool)

    def volumes_of_vm(self, vm_uuid: str):
        return self._db.transact(_of_vm, vm_uuid)

    def add_volume(self, **fields):
        return self._db.transact(_add_volume, fields)

    def update_volume(self, pool: str, name: str, **changes):
        unknown = set(changes) - set(self.MUTABLE)
        if unknown or not changes:
            raise ValueError(f"not mutable: {unknown}")
        return self._db.transact(_update_volume, pool, name, changes)

    def delete_volume(self, pool: str, name: str):
        return self._db.transact(_delete_volume, pool, name)
