"""
VM rows: Comet's record of each VM.

A VM that is stopped exists only here (and in its volumes); C{host} is set
while it is placed on a compute host, which is the record that a domain for it
may exist there.
"""

from __future__ import annotations

import json
import sqlite3

import attrs
from twisted.internet.defer import Deferred

from comet.errors import Conflict, InvalidInput, NotFound
from comet.store._db import Database
from comet.store.placements import Move, PlacementRuns, generation

#: Every domain Comet defines is named this and the VM's uuid.
COMET_DOMAIN_PREFIX = "comet-"


@attrs.frozen
class NicRecord:
    """One NIC of a VM: its place in the VM's list, its network, its MAC."""

    index: int
    network: str
    mac: str


def _nics(value) -> tuple[NicRecord, ...]:
    """The NICs from the C{group_concat} of L{_SELECT} (or given as records)."""
    if not value:
        return ()
    if isinstance(value, str):
        nics = []
        for item in value.split(","):
            index, network, mac = item.split(" ")
            nics.append(NicRecord(int(index), network, mac))
        value = nics
    return tuple(sorted(value, key=lambda n: n.index))


@attrs.frozen
class VMRecord:
    id: int
    cluster: str
    name: str
    uuid: str
    #: The name of the template the VM was made from (a template in use
    #: cannot be deleted, so it is always there).
    template: str | None
    #: MiB.
    memory: int
    cpus: int
    #: The compute host the VM is placed on, or C{None} when it is stopped.
    host: str | None
    created: int
    #: Its NICs, in order.
    nics: tuple[NicRecord, ...] = attrs.field(default=(), converter=_nics)
    #: Its cluster's VXLAN network identifier (L{comet.model.networks}),
    #: C{None} while no VM of the cluster has had a private NIC.
    vni: int | None = None
    #: What the VM's first-boot seed says (L{comet.model.provision}), as
    #: JSON text (its C{summary}: no user-data, only its size and hash), or
    #: C{None} when it has no seed.
    provision: str | None = None
    #: The CPU model it needs (L{comet.model.cpus}), or C{None}.
    cpu_model: str | None = None
    #: Where it runs its disks: C{iscsi} (on the storage server) or C{local}
    #: (a copy on its host's ZFS, L{comet.model.storage.localcopies}).
    disk_mode: str = "iscsi"

    @property
    def domain_name(self) -> str:
        """The libvirt domain name: stable across renames of the VM and its cluster."""
        return f"{COMET_DOMAIN_PREFIX}{self.uuid}"


_SELECT = (
    "SELECT v.id, c.name AS cluster, v.name, v.uuid, t.name AS template,"
    " v.memory, v.cpus, v.host, v.created,"
    " (SELECT group_concat(n.idx || ' ' || n.network || ' ' || n.mac, ',')"
    "  FROM vm_nics n WHERE n.vm_id = v.id),"
    " (SELECT vni FROM cluster_networks WHERE cluster_id = v.cluster_id), v.provision,"
    " v.cpu_model, v.disk_mode"
    " FROM vms v JOIN clusters c ON c.id = v.cluster_id"
    " LEFT JOIN templates t ON t.id = v.template_id"
)


def _record(row) -> VMRecord:
    # Positional: _SELECT's columns are VMRecord's fields, in order (a list of
    # 1,000 VMs builds 1,000 of these; no dict per row).
    return VMRecord(*row)


def _get(conn, cluster: str, name: str) -> VMRecord:
    row = conn.execute(f"{_SELECT} WHERE c.name = ? AND v.name = ?", (cluster, name)).fetchone()
    if row is None:
        if conn.execute("SELECT 1 FROM clusters WHERE name = ?", (cluster,)).fetchone() is None:
            raise NotFound(f"cluster {cluster!r} does not exist")
        raise NotFound(f"VM {name!r} does not exist in cluster {cluster!r}")
    return _record(row)


def _by_uuid(conn, uuid: str) -> VMRecord:
    row = conn.execute(f"{_SELECT} WHERE v.uuid = ?", (uuid,)).fetchone()
    if row is None:
        raise NotFound(f"no VM has uuid {uuid}")
    return _record(row)


def _cluster_id(conn, cluster: str) -> int:
    row = conn.execute("SELECT id FROM clusters WHERE name = ?", (cluster,)).fetchone()
    if row is None:
        raise NotFound(f"cluster {cluster!r} does not exist")
    return row[0]


def _list(conn, cluster: str | None) -> list[VMRecord]:
    if cluster is None:
        rows = conn.execute(f"{_SELECT} ORDER BY c.name, v.name")
    else:
        _cluster_id(conn, cluster)
        rows = conn.execute(f"{_SELECT} WHERE c.name = ? ORDER BY v.name", (cluster,))
    return [_record(r) for r in rows]


def _records(conn, cluster: str | None) -> tuple[VMRecord, ...]:
    return tuple(_list(conn, cluster))


def _free_name(conn, cluster_id: int, prefix: str) -> str:
    """The template's name plus the smallest number no VM of the cluster has."""
    taken = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM vms WHERE cluster_id = ? AND name LIKE ? ESCAPE '\\'",
            (cluster_id, prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "-%"),
        )
    }
    n = 1
    while f"{prefix}-{n}" in taken:
        n += 1
    name = f"{prefix}-{n}"
    if len(name) > 64:
        raise InvalidInput(f"template name {prefix!r} is too long to name a VM after; give a name")
    return name


def _free_mac(conn, uuid: str, index: int) -> str:
    """The NIC's derived MAC, or the next derivation while that one is taken."""
    from comet.model.nics import derived_mac

    for attempt in range(64):
        mac = derived_mac(uuid, index, attempt)
        if conn.execute("SELECT 1 FROM vm_nics WHERE mac = ?", (mac,)).fetchone() is None:
            return mac
    raise Conflict(f"no free MAC could be derived for NIC {index}")  # pragma: no cover


def _vni(conn, cluster_id: int, vnis: range) -> int:
    """The cluster's VNI, given now (the smallest free one in C{vnis}) if it has none."""
    row = conn.execute(
        "SELECT vni FROM cluster_networks WHERE cluster_id = ?", (cluster_id,)).fetchone()
    if row is not None:
        return row[0]
    taken = {
        r[0] for r in conn.execute(
            "SELECT vni FROM cluster_networks WHERE vni BETWEEN ? AND ?",
            (vnis.start, vnis.stop - 1))
    }
    for vni in vnis:
        if vni not in taken:
            conn.execute(
                "INSERT INTO cluster_networks (cluster_id, vni) VALUES (?, ?)", (cluster_id, vni))
            return vni
    raise Conflict(f"every VNI of the range {vnis.start}-{vnis.stop - 1} is taken;"
                   " no more clusters can have a private network")


def _add_nics(conn, vm_id: int, cluster_id: int, uuid: str, nics, vnis: range,
              first: int = 0) -> None:
    for index, (network, mac) in enumerate(nics, first):
        if network == "private":
            _vni(conn, cluster_id, vnis)
        if mac is None:
            mac = _free_mac(conn, uuid, index)
        try:
            conn.execute(
                "INSERT INTO vm_nics (vm_id, idx, network, mac) VALUES (?, ?, ?, ?)",
                (vm_id, index, network, mac))
        except sqlite3.IntegrityError:
            raise Conflict(f"MAC {mac} is already another NIC's") from None


def _create(conn, cluster, name, template, memory, cpus, uuid, now, nics=None,
            vnis=range(0), cpu_model=None, disk_mode=None) -> VMRecord:
    cluster_id = _cluster_id(conn, cluster)
    row = conn.execute(
        "SELECT id, memory, cpus, nics, disk_mode FROM templates WHERE name = ?", (template,)
    ).fetchone()
    if row is None:
        raise NotFound(f"template {template!r} does not exist")
    template_id, t_memory, t_cpus, t_nics, t_disk_mode = row
    if nics is None:
        nics = [(nic["network"], None) for nic in json.loads(t_nics)]
    if name is None:
        name = _free_name(conn, cluster_id, template)
    try:
        conn.execute(
            "INSERT INTO vms (cluster_id, name, uuid, template_id, memory, cpus, host, created,"
            " cpu_model, disk_mode) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            (cluster_id, name, uuid, template_id, memory or t_memory, cpus or t_cpus, now,
             cpu_model, disk_mode or t_disk_mode),
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"VM {name!r} already exists in cluster {cluster!r}") from None
    vm_id = conn.execute("SELECT id FROM vms WHERE uuid = ?", (uuid,)).fetchone()[0]
    _add_nics(conn, vm_id, cluster_id, uuid, nics, vnis)
    return _get(conn, cluster, name)


def _add_nic(conn, uuid: str, network: str, mac: str | None, vnis: range, most: int
             ) -> tuple[VMRecord, NicRecord]:
    record = _by_uuid(conn, uuid)
    if len(record.nics) >= most:
        raise Conflict(f"VM {record.name!r} has {len(record.nics)} NICs, the most a VM may have")
    cluster_id = conn.execute("SELECT cluster_id FROM vms WHERE id = ?", (record.id,)).fetchone()[0]
    index = len(record.nics)
    _add_nics(conn, record.id, cluster_id, uuid, [(network, mac)], vnis, first=index)
    record = _by_uuid(conn, uuid)
    return record, record.nics[index]


def _remove_nic(conn, uuid: str, mac: str) -> VMRecord:
    record = _by_uuid(conn, uuid)
    gone = next((n for n in record.nics if n.mac == mac), None)
    if gone is None:
        raise NotFound(f"VM {record.name!r} has no NIC {mac}")
    conn.execute("DELETE FROM vm_nics WHERE vm_id = ? AND mac = ?", (record.id, mac))
    # The NICs after it move up one, in order (each index free before it is taken):
    # the index is the NIC's place in the domain's PCI order, so the guest's name for it.
    for nic in record.nics:
        if nic.index > gone.index:
            conn.execute("UPDATE vm_nics SET idx = ? WHERE vm_id = ? AND idx = ?",
                         (nic.index - 1, record.id, nic.index))
    return _by_uuid(conn, uuid)


def _update(conn, cluster: str, name: str, changes: dict) -> VMRecord:
    current = _get(conn, cluster, name)
    if changes:
        sets = ", ".join(f"{column} = ?" for column in changes)
        try:
            conn.execute(f"UPDATE vms SET {sets} WHERE id = ?", (*changes.values(), current.id))
        except sqlite3.IntegrityError:
            raise Conflict(
                f"VM {changes.get('name')!r} already exists in cluster {cluster!r}"
            ) from None
    return _by_uuid(conn, current.uuid)


def _set_host(conn, uuid: str, host: str | None) -> tuple[VMRecord, Move | None]:
    before = generation(conn)
    row = conn.execute("SELECT host FROM vms WHERE uuid = ?", (uuid,)).fetchone()
    conn.execute("UPDATE vms SET host = ? WHERE uuid = ?", (host, uuid))
    record = _by_uuid(conn, uuid)
    after = generation(conn)
    # A move others may replay only if it is all this transaction counted.
    move = (Move(before, after, record.cluster, uuid, row[0], host)
            if row is not None and after == before + 1 else None)
    return record, move


def _set_provision(conn, uuid: str, provision: str | None) -> VMRecord:
    conn.execute("UPDATE vms SET provision = ? WHERE uuid = ?", (provision, uuid))
    return _by_uuid(conn, uuid)


def _committed(conn) -> dict[str, int]:
    rows = conn.execute(
        "SELECT host, SUM(memory) FROM vms WHERE host IS NOT NULL GROUP BY host"
    )
    return {host: memory for host, memory in rows}


def _private_placements(conn, host: str | None) -> frozenset[tuple[str, int]]:
    rows = conn.execute(
        "SELECT DISTINCT v.host, cn.vni FROM vms v"
        " JOIN cluster_networks cn ON cn.cluster_id = v.cluster_id"
        " WHERE v.host IS NOT NULL AND (? IS NULL OR v.host = ?) AND EXISTS"
        " (SELECT 1 FROM vm_nics n WHERE n.vm_id = v.id AND n.network = 'private')",
        (host, host))
    return frozenset((h, vni) for h, vni in rows)


def _delete(conn, uuid: str) -> None:
    conn.execute("DELETE FROM vms WHERE uuid = ?", (uuid,))


class VMs:
    """The C{vms} table."""

    def __init__(self, db: Database, cache: bool = True):
        self._db = db
        #: Records and placements, valid until a VM, cluster or template row
        #: is written (L{comet.store._readcache}): a single-VM GET or a
        #: C{GET /cluster} reads no row then, however busy the daemon is.
        self._cache = db.cache("vms") if cache else None
        #: The runs last read and the placements made since (L{comet.store.placements}).
        self._runs = PlacementRuns()

    def _cached(self, key: tuple, fn, *args) -> Deferred:
        if self._cache is None:
            return self._db.read(fn, *args)
        return self._cache.lookup(key, lambda: self._db.read(fn, *args))

    def get(self, cluster: str, name: str) -> Deferred[VMRecord]:
        return self._cached(("vm", cluster, name), _get, cluster, name)

    def by_uuid(self, uuid: str):
        return self._db.transact(_by_uuid, uuid)

    def list(self, cluster: str | None = None) -> Deferred[list[VMRecord]]:
        """
        The VMs of C{cluster} (all VMs when C{None}), by name: from the cache
        while no VM, cluster or template row was written (reading 10,000 rows
        costs more than the rest of a list; a new list each call, the cached
        one is a tuple no caller can change).
        """
        return self._cached(("list", cluster), _records, cluster).addCallback(list)

    def placements(self):
        """
        C{(cluster, host, uuid)} of every VM (C{host} C{None} when stopped):
        what a count of VM states per cluster needs, without whole records.
        """
        return self.placement_runs().addCallback(
            lambda runs: tuple((c, h, u) for c, h, uuids in runs for u in uuids))

    def placement_runs(self):
        """
        L{placements} grouped: C{(cluster, host, uuids)} for each cluster and
        host (C{None}: stopped), every VM in one of them.  From the cache
        while no VM, cluster or template row was written: the same tuple, so
        a caller may keep what it derives from it until it changes.
        """
        return self._cached(("placement runs",), self._runs.read)

    def create(self, cluster, name, template, memory, cpus, uuid, now, nics=None,
               vnis: range = range(0), cpu_model: str | None = None,
               disk_mode: str | None = None):
        """
        Record a new VM.  Without a C{name}, it is the template's name plus the
        smallest free number, chosen in the same transaction as the insert, so
        concurrent creates never pick the same one.  C{memory} and C{cpus}
        default to the template's.

        @param nics: C{(network, mac)} pairs (C{mac} C{None}: derived from
            the uuid and the index), or C{None} for the template's NICs.  A
            MAC another NIC has is a L{Conflict}.
        @param vnis: the VNIs a cluster's private network may get (the
            cluster gets one here if a NIC is C{private} and it has none).
        @param cpu_model: the CPU model it needs (C{None}: none).
        @param disk_mode: C{iscsi} or C{local} (C{None}: the template's).
        """
        return self._db.transact(_create, cluster, name, template, memory, cpus, uuid, now,
                                 nics, vnis, cpu_model, disk_mode)

    def update(self, cluster: str, name: str, /, **changes):
        unknown = set(changes) - {"name", "memory", "cpus", "cpu_model"}
        if unknown:
            raise ValueError(f"not mutable: {unknown}")
        return self._db.transact(_update, cluster, name, changes)

    def free_mac(self, uuid: str, index: int):
        """The MAC derived for VM C{uuid}'s NIC at C{index} that no NIC has (read now)."""
        return self._db.read(_free_mac, uuid, index)

    def add_nic(self, uuid: str, network: str, mac: str | None, vnis: range, most: int):
        """
        Give VM C{uuid} one more NIC, last in its order: on C{network}, with
        C{mac} (C{None}: derived from the uuid and its index).  Its cluster
        gets a VNI from C{vnis} if the NIC is C{private} and it has none.
        Fires with C{(record, nic)}.

        @raise Conflict: C{mac} is another NIC's, the VM has C{most} NICs
            already, or no VNI is free.
        """
        return self._db.transact(_add_nic, uuid, network, mac, vnis, most)

    def remove_nic(self, uuid: str, mac: str):
        """
        Take NIC C{mac} from VM C{uuid}; the NICs after it move up one.  Fires
        with the VM's record.  L{NotFound} if the VM has no such NIC.
        """
        return self._db.transact(_remove_nic, uuid, mac)

    def set_provision(self, uuid: str, provision: str | None):
        """Record what VM C{uuid}'s first-boot seed says (JSON text)."""
        return self._db.transact(_set_provision, uuid, provision)

    def set_host(self, uuid: str, host: str | None):
        """
        Record where the VM is placed (C{None}: nowhere).  The move is noted
        as soon as it is committed (in the database thread): the placement
        runs' next read replays it (L{comet.store.placements}), and the read
        cache drops only the entries it changed.
        """
        return self._db.transact(_set_host, uuid, host, committed=self._moved).addCallback(
            lambda result: result[0])

    def _moved(self, result: tuple[VMRecord, Move | None]) -> None:
        """In the database thread, right after a placement committed."""
        record, move = result
        if move is None:
            return
        self._runs.note(move)
        if self._cache is not None:
            self._cache.written(move.before, move.after, (
                ("vm", record.cluster, record.name),
                ("list", record.cluster),
                ("list", None),
                ("placement runs",),
            ))

    def delete(self, uuid: str):
        return self._db.transact(_delete, uuid)

    def private_placements(self, host: str | None = None):
        """
        C{(host, vni)} for each host (or C{host} alone) where a VM with a
        private NIC is placed: the private networks the hosts need.
        """
        return self._db.read(_private_placements, host)

    def committed(self):
        """Host -> MiB given to the VMs placed there (running or not)."""
        return self._db.transact(_committed)
