"""
Storage rows: pool registrations and activation states, and the volumes
Comet created (with the VM each is a disk of, its CHAP account and where it
is exported).
"""

from __future__ import annotations

import json
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
    #: The tgt target id of its export while exported (C{None} before migration 9).
    tid: int | None = None
    #: The compute host whose local ZFS holds a copy that may be newer than
    #: this one (local-copy mode, L{comet.model.storage.localcopies}), else C{None}.
    copy_host: str | None = None

    @property
    def mapped_to(self) -> str | None:
        """
        The compute host that uses the volume now, or C{None}: the one it is
        exported to, or the one whose local copy may hold its newest data.
        """
        return self.exported_to if self.target else self.copy_host


_POOL_COLUMNS = "name, server, dataset, registered, made_dataset, active, created"
_VOLUME_COLUMNS = (
    "id, pool, name, zvol, capacity, vm_uuid, dev, own, origin, chap_user, chap_secret,"
    " secret_uuid, target, exported_to, created, tid, copy_host"
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
    MUTABLE = ("vm_uuid", "dev", "own", "target", "exported_to", "chap_secret", "tid", "capacity",
               "copy_host")

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


@attrs.frozen
class SnapshotRecord:
    id: int
    vm_uuid: str
    name: str
    #: The snapshot that was current when this one was taken, C{""} for none.
    parent: str
    current: int
    #: JSON list of C{"pool/volume"} it holds a ZFS snapshot of.
    volumes: str
    created: int


_SNAPSHOT_COLUMNS = "id, vm_uuid, name, parent, current, volumes, created"


def _snapshots(conn, vm_uuid):
    rows = conn.execute(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM vm_snapshots WHERE vm_uuid = ? ORDER BY id", (vm_uuid,)
    )
    return [SnapshotRecord(**dict(r)) for r in rows]


def _snapshot(conn, vm_uuid, name):
    row = conn.execute(
        f"SELECT {_SNAPSHOT_COLUMNS} FROM vm_snapshots WHERE vm_uuid = ? AND name = ?",
        (vm_uuid, name),
    ).fetchone()
    if row is None:
        raise NotFound(f"snapshot {name!r} does not exist")
    return SnapshotRecord(**dict(row))


def _add_snapshot(conn, vm_uuid, name, volumes, now):
    row = conn.execute(
        "SELECT name FROM vm_snapshots WHERE vm_uuid = ? AND current = 1", (vm_uuid,)
    ).fetchone()
    parent = row[0] if row is not None else ""
    try:
        conn.execute(
            "INSERT INTO vm_snapshots (vm_uuid, name, parent, current, volumes, created)"
            " VALUES (?, ?, ?, 0, ?, ?)",
            (vm_uuid, name, parent, volumes, now),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"snapshot {name!r} already exists") from None
    _set_current(conn, vm_uuid, name)
    return _snapshot(conn, vm_uuid, name)


def _set_current(conn, vm_uuid, name):
    conn.execute("UPDATE vm_snapshots SET current = 0 WHERE vm_uuid = ?", (vm_uuid,))
    conn.execute(
        "UPDATE vm_snapshots SET current = 1 WHERE vm_uuid = ? AND name = ?", (vm_uuid, name)
    )


def _delete_snapshot(conn, vm_uuid, name):
    gone = _snapshot(conn, vm_uuid, name)
    conn.execute(
        "UPDATE vm_snapshots SET parent = ? WHERE vm_uuid = ? AND parent = ?",
        (gone.parent, vm_uuid, name),
    )
    conn.execute("DELETE FROM vm_snapshots WHERE id = ?", (gone.id,))
    if gone.current and gone.parent:
        _set_current(conn, vm_uuid, gone.parent)


def _drop_volume(conn, vm_uuid, volume):
    for snapshot in _snapshots(conn, vm_uuid):
        volumes = json.loads(snapshot.volumes)
        if volume in volumes:
            volumes.remove(volume)
            conn.execute("UPDATE vm_snapshots SET volumes = ? WHERE id = ?",
                         (json.dumps(volumes), snapshot.id))


def _with_volume(conn, volume):
    rows = conn.execute(f"SELECT {_SNAPSHOT_COLUMNS} FROM vm_snapshots ORDER BY id")
    return [r for r in (SnapshotRecord(**dict(row)) for row in rows)
            if volume in json.loads(r.volumes)]


def _forget_snapshots(conn, vm_uuid):
    conn.execute("DELETE FROM vm_snapshots WHERE vm_uuid = ?", (vm_uuid,))


class Snapshots:
    """The C{vm_snapshots} table: each VM's snapshot tree."""

    def __init__(self, db: Database):
        self._db = db

    def list(self, vm_uuid: str):
        return self._db.transact(_snapshots, vm_uuid)

    def get(self, vm_uuid: str, name: str):
        return self._db.transact(_snapshot, vm_uuid, name)

    def add(self, vm_uuid: str, name: str, volumes: str, now: int):
        """Record a snapshot, child of the current one, and make it current."""
        return self._db.transact(_add_snapshot, vm_uuid, name, volumes, now)

    def set_current(self, vm_uuid: str, name: str):
        return self._db.transact(_set_current, vm_uuid, name)

    def delete(self, vm_uuid: str, name: str):
        """Remove a snapshot; its children become its parent's."""
        return self._db.transact(_delete_snapshot, vm_uuid, name)

    def drop_volume(self, vm_uuid: str, volume: str):
        """Volume C{volume} (C{"pool/name"}) is in none of the VM's snapshots any more."""
        return self._db.transact(_drop_volume, vm_uuid, volume)

    def with_volume(self, volume: str):
        """Every VM's snapshots that list C{volume} (C{"pool/name"})."""
        return self._db.transact(_with_volume, volume)

    def forget(self, vm_uuid: str):
        return self._db.transact(_forget_snapshots, vm_uuid)
