"""
The volumes of a VM: C{/cluster/:c/vms/:v/storages}.  Attaching to a VM
that is placed on a host exports the volume there and plugs it in (live if
the VM runs); unmapping does the reverse, once the guest released the disk.
A volume whose newest data is in a local copy on a host (a local-copy mode
VM's, L{comet.model.storage.localcopies}) is unplugged and synced back
instead (L{comet.model.operations.unmap_local}).
"""

from __future__ import annotations

import re

import attrs

from comet.errors import Conflict, InvalidInput, NotFound
from comet.model.clusters import validate_name
from comet.model.disk_modes import LOCAL
from comet.model.locks import acquire_all, release_all
from comet.model.operations import attach, unmap, unmap_local
from comet.model.operations.domains import has_disk, wait_released
from comet.model.tasks import Target

_DEV = re.compile(r"^vd[a-z]$")

def unmap_refusal(vm) -> str | None:
    """
    Why no volume can be unmapped from C{vm} now (the reason of the 409), or
    C{None} when unmap is valid.  L{VMStorageModel.unmap} refuses by it and
    L{VMStorage.actions} lists by it, so the two cannot disagree.
    """
    if vm.phase == "unknown":
        return (f"VM {vm.name!r} is on host {vm.record.host!r}, which does not answer;"
                " unmap is not possible now")
    return None


def local_refusal(vm) -> str | None:
    """
    Why no volume can be attached to a local-copy mode VM now: while it is
    placed, its disks are copies on its host, made at its start (an attach
    would have to copy the volume in and plug it as a block device: not
    built; unmapping syncs one back, L{comet.model.operations.unmap_local}).
    """
    if vm.record.disk_mode == LOCAL and vm.record.host is not None:
        return (f"VM {vm.name!r} runs its disks in local copies on host {vm.record.host!r}"
                " (disk_mode local): volumes are attached to it while it is stopped")
    return None


def is_local(vm, record) -> bool:
    """
    Whether volume C{record} leaves VM C{vm} by a local unmap
    (L{comet.model.operations.unmap_local}): its newest data is in a local
    copy on a host, or its VM runs its disks there.
    """
    return record.copy_host is not None or (
        vm.record.disk_mode == LOCAL and vm.record.host is not None)


@attrs.frozen
class VMStorage:
    """A volume attached to a VM."""

    vm: object
    record: object

    @property
    def state(self) -> str:
        return "mapped" if self.record.target else "unmapped"

    @property
    def actions(self) -> list[str]:
        """The actions valid now (L{unmap_refusal})."""
        return ["unmap"] if unmap_refusal(self.vm) is None else []


class VMStorageModel:
    """
    @param store: the L{comet.store.Storage} tables.
    @param pools: the L{comet.model.storage.pools.Pools}.
    @param volumes: the L{comet.model.storage.volumes.Volumes}.
    @param exports: the L{comet.model.storage.exports.Exports}.
    @param branches: the L{comet.model.storage.branches.Branches}.
    @param owners: the L{comet.model.storage.owners.VMOwners}.
    @param hypervisors: the libvirt adapter.
    @param intents: the L{comet.model.intents.Intents}.
    @param tasks: the L{comet.model.tasks.TaskRunner}.
    @param clock: C{seconds()} and C{callLater()}.
    @param vms: the L{comet.model.vms.VMModel}.
    @param local: the L{comet.model.storage.localcopies.LocalCopies} (local-copy mode).
    """

    def __init__(self, store, pools, volumes, exports, branches, owners, hypervisors, intents,
                 tasks, clock, vms, local=None):
        self._store = store
        self._pools = pools
        self._volumes = volumes
        self._exports = exports
        self._branches = branches
        self._owners = owners
        self._hypervisors = hypervisors
        self._intents = intents
        self._tasks = tasks
        self._clock = clock
        self._vms = vms
        self._local = local

    async def list(self, cluster: str, name: str) -> list[VMStorage]:
        vm = await self._vms.get(cluster, name)
        return [VMStorage(vm, r) for r in await self._store.volumes_of_vm(vm.record.uuid)]

    async def get(self, cluster: str, name: str, volume: str) -> VMStorage:
        validate_name("volume", volume)
        for storage in await self.list(cluster, name):
            if storage.record.name == volume:
                return storage
        raise NotFound(f"VM {name!r} has no volume {volume!r}")

    async def attach(self, cluster: str, name: str, pool_name: str, volume: str,
                     dev: str | None = None) -> VMStorage:
        """Attach a volume (hot-plug if the VM runs); 409 if another VM has it."""
        store = self._store
        vm = await self._vms.get(cluster, name)
        pool_name = (await self._pools.pool(pool_name)).name
        validate_name("volume", volume)
        async with self._vms.lock(vm, "attaching a volume"), \
                self._volumes.lock(pool_name, volume, f"being attached to VM {name!r}"):
            vm = await self._vms.get(cluster, name)
            if vm.phase == "unknown":
                raise Conflict(f"VM {name!r} is on host {vm.record.host!r}, which does not"
                               " answer; a volume cannot be attached now")
            refused = local_refusal(vm)
            if refused is not None:
                raise Conflict(refused)
            live = await self._volumes.volume(pool_name, volume)
            pool = live.pool
            record = live.record
            mine = await store.volumes_of_vm(vm.record.uuid)
            if record is not None and record.vm_uuid is not None:
                if record.vm_uuid == vm.record.uuid:
                    raise Conflict(f"volume {volume!r} is already attached to VM {name!r}")
                if await self._owners.exists(record.vm_uuid):
                    raise Conflict(f"volume {volume!r} is attached to another VM")
            if any(r.name == volume for r in mine):
                raise Conflict(f"VM {name!r} already has a volume named {volume!r}")
            used = {r.dev for r in mine}
            if dev is None:
                dev = next((f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz"
                            if f"vd{c}" not in used), None)
                if dev is None:
                    raise Conflict(f"VM {name!r} has no free device name")
            elif not _DEV.fullmatch(dev):
                raise InvalidInput(f"dev must be a device name like vdb, not {dev!r}")
            elif dev in used:
                raise Conflict(f"VM {name!r} already has a disk {dev}")
            host = vm.record.host
            async with self._intents.operation(attach.KIND, f"{pool.name}/{volume}") as op:
                await attach.run(op, store, self._volumes, self._exports, self._hypervisors,
                                 vm, pool, volume, live, record, dev, host)
            return VMStorage(vm, await store.volume(pool.name, volume))

    async def _detach(self, vm, record) -> bool:
        """Take volume C{record} off VM C{vm}; whether it was synced back from a host."""
        record = await self._store.volume(record.pool, record.name) or record
        if is_local(vm, record):
            if self._local is None:
                raise Conflict(f"volume {record.name!r} is in a local copy on host"
                               f" {record.copy_host!r}, but no host offers local copies")
            async with self._intents.operation(unmap_local.KIND,
                                               f"{record.pool}/{record.name}") as op:
                await unmap_local.run(op, self._store, self._local, self._branches,
                                      self._hypervisors, vm, record,
                                      lambda: self._wait_released(vm, record))
            return record.copy_host is not None
        async with self._intents.operation(unmap.KIND, f"{record.pool}/{record.name}") as op:
            await unmap.run(op, self._store, self._pools, self._exports, self._branches,
                            self._hypervisors, vm, record,
                            lambda: self._wait_released(vm, record))
        return False

    async def _wait_released(self, vm, record) -> None:
        await wait_released(self._hypervisors, self._clock, vm.record.host,
                            vm.record.domain_name, record.dev,
                            f"VM {vm.name!r} did not release disk {record.dev} (volume"
                            f" {record.name!r})")

    async def unmap(self, cluster: str, name: str, volume: str):
        """Start a task that detaches a volume from the VM (it stays in its pool)."""
        storage = await self.get(cluster, name, volume)
        vm = storage.vm
        refused = unmap_refusal(vm)
        if refused is not None:
            raise Conflict(refused)
        record = storage.record
        locks = [self._vms.lock(vm, f"unmapping {volume}"),
                 self._volumes.lock(record.pool, record.name,
                                    f"being unmapped from VM {name!r}")]
        await acquire_all(locks)

        async def job(task):
            try:
                for lock in locks:
                    await lock.set_task(task.id)
                # Read again under the locks: the VM may have started or
                # stopped since (whether its disk is a local copy).
                now = await self._vms.get(cluster, name)
                refused = unmap_refusal(now)
                if refused is not None:
                    raise Conflict(refused)
                synced = await self._detach(now, record)
            finally:
                await release_all(locks)
            if synced:
                return (f"volume {volume!r} was detached from VM {name!r}, its local copy"
                        " synced back to its storage server")
            return f"volume {volume!r} was detached from VM {name!r}"

        try:
            return await self._tasks.start(
                Target("vm storage", {"cluster": cluster, "name": name, "zvol": volume}), job,
                f"unmapping volume {volume!r} from VM {name!r}")
        except BaseException:
            await release_all(locks)
            raise

    async def delete(self, cluster: str, name: str, volume: str) -> None:
        """Detach a volume and destroy it; 409 while the VM runs."""
        storage = await self.get(cluster, name, volume)
        vm = storage.vm
        if vm.phase in ("running", "paused", "other", "unknown"):
            raise Conflict(f"VM {name!r} is {vm.state}; a volume can be deleted only while"
                           " it is shut off")
        record = storage.record
        async with self._vms.lock(vm, f"deleting volume {volume}"), \
                self._volumes.lock(record.pool, record.name, "being deleted"):
            await self._detach(vm, record)
            await self._volumes.delete_locked(await self._pools.pool(record.pool), record.name)
