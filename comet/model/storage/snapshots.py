"""
A VM's snapshots: C{/cluster/:c/vms/:v/snapshots}.  A snapshot is one ZFS
snapshot of each of the VM's volumes, taken in one C{zfs snapshot} command
per storage server (atomic there) after a C{sync} on it (so what a running
guest wrote through tgt is in it).  The tree (parent, current) is in
SQLite.  Revert rolls each volume back to its newest snapshot, or branches
(L{comet.model.storage.branches.branch}) to an older one.
"""

from __future__ import annotations

import secrets

from comet.errors import Conflict, NotFound
from comet.model.clusters import validate_name
from comet.model.events import or_silent
from comet.model.operations import snapshot_delete, snapshot_revert, snapshot_take
from comet.model.storage.names import zfs_snapname


def revert_refusal(vm) -> str | None:
    """
    Why C{vm} cannot be reverted to a snapshot now (the reason of the 409),
    or C{None}: only while it runs nowhere or is shut off.  The one rule of
    L{VMSnapshotModel.revert} and of L{snapshot_actions}.
    """
    if vm.phase not in ("stopped", "shutoff"):
        return f"VM {vm.name!r} is {vm.state}; power it off before a revert"
    return None


def snapshot_actions(vm) -> list[str]:
    """The actions valid now on each snapshot of C{vm}."""
    return ["revert"] if revert_refusal(vm) is None else []


class VMSnapshotModel:
    """
    @param store: the L{comet.store.Storage} tables.
    @param servers: the L{comet.model.storage.servers.Servers}.
    @param pools: the L{comet.model.storage.pools.Pools}.
    @param exports: the L{comet.model.storage.exports.Exports}.
    @param branches: the L{comet.model.storage.branches.Branches}.
    @param intents: the L{comet.model.intents.Intents}.
    @param clock: C{seconds()}.
    @param vms: the L{comet.model.vms.VMModel}.
    @param snapshots: the C{vm_snapshots} table (L{comet.store.Snapshots}).
    """

    def __init__(self, store, servers, pools, exports, branches, intents, clock, vms,
                 snapshots, events=None):
        self._store = store
        self._events = or_silent(events)
        self._servers = servers
        self._pools = pools
        self._exports = exports
        self._branches = branches
        self._intents = intents
        self._clock = clock
        self._vms = vms
        self._snapshots = snapshots

    async def list(self, cluster: str, name: str):
        vm = await self._vms.get(cluster, name)
        return vm, await self._snapshots.list(vm.record.uuid)

    async def get(self, cluster: str, name: str, snapshot: str):
        validate_name("snapshot", snapshot)
        vm = await self._vms.get(cluster, name)
        return vm, await self._snapshots.get(vm.record.uuid, snapshot)

    async def _volumes(self, records):
        """(server, [zvol, ...]) for each server the records are on."""
        by_server: dict[str, list[str]] = {}
        for record in records:
            pool = await self._pools.pool(record.pool)
            by_server.setdefault(pool.server, []).append(record.zvol)
        return by_server

    async def create(self, cluster: str, name: str, snapshot: str | None = None):
        vm = await self._vms.get(cluster, name)
        uuid = vm.record.uuid
        existing = {s.name for s in await self._snapshots.list(uuid)}
        if snapshot is None:
            snapshot = next(f"snap-{n}" for n in range(1, len(existing) + 2)
                            if f"snap-{n}" not in existing)
        validate_name("snapshot", snapshot)
        if snapshot in existing:
            raise Conflict(f"snapshot {snapshot!r} of VM {name!r} already exists")
        records = await self._store.volumes_of_vm(uuid)
        if not records:
            raise Conflict(f"VM {name!r} has no volume to snapshot")
        await self._refuse_local(vm, records)
        async with self._vms.lock(vm, f"taking snapshot {snapshot}"), \
                self._intents.operation(snapshot_take.KIND, uuid) as op:
            record = await snapshot_take.run(op, self._servers, self._snapshots, self._clock,
                                             uuid, snapshot, records,
                                             await self._volumes(records))
        self._events.emit("snapshot.created",
                          {"cluster": cluster, "name": name, "snapshot": snapshot})
        return vm, record

    async def _refuse_local(self, vm, records=None) -> None:
        """
        A 409 while a disk of C{vm} (C{records}: its volumes, if the caller
        has read them) has its newest data in a local copy on its host
        (local-copy mode, running): snapshots are of the storage server's
        copy, which is synced when the VM stops.
        """
        if records is None:
            records = await self._store.volumes_of_vm(vm.record.uuid)
        for record in records:
            if record.copy_host is not None:
                raise Conflict(
                    f"VM {vm.record.name!r} runs its disks in a local copy on host"
                    f" {record.copy_host} (disk_mode local): its snapshots are taken, deleted"
                    " and reverted while it is stopped")

    async def volumes_of(self, snapshot_record) -> list:
        """The records of the volumes snapshot C{snapshot_record} lists (those still recorded)."""
        return await snapshot_delete.volumes_of(self._store, snapshot_record)

    async def locate(self, volume, snapname: str) -> str | None:
        """
        The zvol of C{volume}'s family (itself, or a branch a revert set
        aside: C{<name>-old-<hex>}) that holds snapshot C{snapname}.
        """
        return await snapshot_delete.locate(self._pools, volume, snapname)

    async def delete(self, cluster: str, name: str, snapshot: str) -> None:
        """
        Destroy the snapshot's ZFS snapshots, then the branches that hold no
        snapshot any more (L{comet.model.storage.branches.Branches.drop_empty}),
        then its record.  A snapshot a revert branched from (the origin of a
        branch set aside that holds newer snapshots) is a 409, found before
        anything is destroyed.  Garbage from earlier reverts (empty
        branches; the current data a clone of a branch) is tidied first:
        each of those commands leaves the volume's data as it was, so they
        need no intent.
        """
        vm, record = await self.get(cluster, name, snapshot)
        uuid = vm.record.uuid
        snapname = zfs_snapname(snapshot)
        await self._refuse_local(vm)
        async with self._vms.lock(vm, f"deleting snapshot {snapshot}"):
            plan, volumes = [], []
            for volume in await self.volumes_of(record):
                pool = await self._pools.pool(volume.pool)
                zfs = self._pools.zfs(pool)
                volumes.append((volume, pool, zfs))
                await self._branches.drop_empty(zfs, pool, volume)
                holder = await self.locate(volume, snapname)
                if holder is None:
                    continue
                for other in await zfs.list_volumes(pool.dataset):
                    if other.origin == f"{holder}@{snapname}":
                        raise Conflict(
                            f"snapshot {snapshot!r} is the origin of {other.name} (the data a"
                            " revert set aside); delete the newer snapshots first")
                plan.append((pool.server, f"{holder}@{snapname}", f"{volume.pool}/{volume.name}"))
            async with self._intents.operation(snapshot_delete.KIND, uuid) as op:
                await snapshot_delete.run(op, self._servers, self._branches, self._snapshots,
                                          uuid, snapshot, plan, volumes)
        self._events.emit("snapshot.deleted",
                          {"cluster": cluster, "name": name, "snapshot": snapshot})

    async def revert(self, cluster: str, name: str, snapshot: str):
        """
        Bring every volume back to C{snapshot}; the VM must not be running.
        To the newest snapshot of a volume: C{zfs rollback}.  To an older
        one (or one on a branch set aside by an earlier revert): clone it,
        promote the clone, set the current data aside as
        C{<name>-old-<hex>} (keeping the newer snapshots) and give the clone
        the volume's name.  A volume exported to a host is unexported first
        and exported again after, so its target serves the reverted data.

        Each step is an intent: a revert cut short is finished by the
        reconciler, since a rollback cannot be undone.
        """
        vm, record = await self.get(cluster, name, snapshot)
        refused = revert_refusal(vm)
        if refused is not None:
            raise Conflict(refused)
        await self._refuse_local(vm)
        uuid = vm.record.uuid
        async with self._vms.lock(vm, f"reverting to snapshot {snapshot}"):
            volumes = await self.volumes_of(record)
            snapname = zfs_snapname(snapshot)
            plan = []
            # Locate every snapshot first, so that a missing one changes nothing.
            for volume in volumes:
                holder = await self.locate(volume, snapname)
                if holder is None:
                    raise NotFound(f"volume {volume.name!r} has no snapshot {snapshot!r}")
                pool = await self._pools.pool(volume.pool)
                zfs = self._pools.zfs(pool)
                newer = False
                if holder == volume.zvol:
                    names = [s.snapname for s in await zfs.list_snapshots(volume.zvol)]
                    newer = names.index(snapname) < len(names) - 1
                plan.append((volume, pool, zfs, holder, newer))
            steps = []
            for volume, pool, zfs, holder, newer in plan:
                rollback = holder == volume.zvol and not newer
                steps.append({
                    "volume": f"{volume.pool}/{volume.name}", "server": pool.server,
                    "host": volume.exported_to if volume.target else None,
                    "rollback": f"{volume.zvol}@{snapname}" if rollback else None,
                    "source": None if rollback else f"{holder}@{snapname}",
                    "token": None if rollback else secrets.token_hex(4),
                })
            async with self._intents.operation(snapshot_revert.KIND, uuid) as op:
                await snapshot_revert.run(op, self._exports, self._store, self._snapshots,
                                          uuid, snapshot, plan, steps)
        self._events.emit("snapshot.reverted",
                          {"cluster": cluster, "name": name, "snapshot": snapshot})
        return await self.get(cluster, name, snapshot)
