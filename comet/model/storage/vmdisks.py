"""
The disks of VMs on storage (the L{comet.model.operations.VMDisks} protocol
the VM operations call): a VM's own disk cloned from its template's base volume,
its disks exported to the host it starts on and unexported when it
stops, and destroyed (or released) with it.
"""

from __future__ import annotations

from comet.errors import Conflict, NotFound
from comet.model.provision import SEED_SIZE
from comet.model.disk_modes import LOCAL
from comet.model.storage.names import ROOT_DEV, SEED_DEV, base_snapshot_name, vm_disk_name
from comet.model.storage.servers import undo
from comet.virt import DiskSpec


class StorageDisks:
    """
    @param store: the L{comet.store.Storage} tables.
    @param pools: the L{comet.model.storage.pools.Pools}.
    @param volumes: the L{comet.model.storage.volumes.Volumes}.
    @param exports: the L{comet.model.storage.exports.Exports}.
    @param branches: the L{comet.model.storage.branches.Branches}.
    @param hypervisors: the libvirt adapter (CHAP secrets on compute hosts).
    @param snapshots: the C{vm_snapshots} table, or C{None}.
    @param local: the L{comet.model.storage.localcopies.LocalCopies} of
        local-copy mode VMs (C{None}: no host offers that mode).
    """

    def __init__(self, store, pools, volumes, exports, branches, hypervisors, snapshots=None,
                 local=None):
        self._store = store
        self._hypervisors = hypervisors
        self._pools = pools
        self._volumes = volumes
        self._exports = exports
        self._branches = branches
        self._snapshots = snapshots
        self._local = local

    async def check_disk(self, pool_name: str, volume: str) -> None:
        """The template hook: the base volume must exist."""
        await self._volumes.volume(pool_name, volume)

    async def create(self, vm, template) -> None:
        """Clone the template's base volume into the VM's own disk."""
        if template.disk_pool is None:
            return
        pool = await self._pools.pool(template.disk_pool)
        if not pool.active:
            raise Conflict(f"storage pool {pool.name!r} is inactive; it places no VM")
        zfs = self._pools.zfs(pool)
        base = f"{pool.dataset}/{template.disk_volume}"
        name = vm_disk_name(vm.uuid)
        snapshot = f"{base}@{base_snapshot_name(vm.uuid)}"
        try:
            await zfs.get_volume(base)
        except NotFound:
            raise NotFound(f"the base volume {template.disk_volume!r} of template"
                           f" {template.name!r} does not exist in pool {pool.name!r}") from None
        await zfs.snapshot([base], base_snapshot_name(vm.uuid))
        try:
            clone = await zfs.clone(snapshot, pool.dataset, name)
        except BaseException:
            await undo(zfs.destroy(snapshot), f"destroying {snapshot}")
            raise
        try:
            await self._store.add_volume(**self._volumes.new_record(
                pool, name, clone.size, vm_uuid=vm.uuid, dev=ROOT_DEV, own=1, origin=snapshot))
        except BaseException:
            await undo(zfs.destroy(clone.name), f"destroying {clone.name}")
            await undo(zfs.destroy(snapshot), f"destroying {snapshot}")
            raise

    async def create_seed(self, vm, template, image: bytes) -> None:
        """
        Write C{image}, the VM's first-boot seed (L{comet.model.provision}),
        to a volume of its own in the pool of its disk: an own disk with
        device L{SEED_DEV}, so that it is exported (as a CD-ROM) wherever the
        VM starts, moves with it on a migration and goes with it on delete.
        """
        if template.disk_pool is None:
            raise Conflict(f"template {template.name!r} has no disk: a VM made from it"
                           " has no storage pool to hold its first-boot seed")
        pool = await self._pools.pool(template.disk_pool)
        if not pool.active:
            raise Conflict(f"storage pool {pool.name!r} is inactive; it places no VM")
        zfs = self._pools.zfs(pool)
        name = vm_disk_name(vm.uuid, SEED_DEV)
        volume = await zfs.create_volume(pool.dataset, name, max(len(image), SEED_SIZE))
        try:
            stream = await zfs.open_writer(volume.name)
            try:
                await stream.write(image)
            except BaseException:
                await undo(stream.abort(), f"ending the write of {volume.name}")
                raise
            await stream.finish()
            await self._store.add_volume(**self._volumes.new_record(
                pool, name, volume.size, vm_uuid=vm.uuid, dev=SEED_DEV, own=1))
        except BaseException:
            await undo(zfs.destroy(volume.name), f"destroying {volume.name}")
            raise

    async def attach(self, vm, host: str, progress=None) -> list[DiskSpec]:
        """
        Export each of the VM's disks to C{host} with CHAP; the iSCSI disks.
        A local-copy mode VM's disks are copied to C{host}'s own ZFS instead
        (L{LocalCopies.copy_in}); the block disks there.
        """
        if vm.disk_mode == LOCAL:
            if self._local is None:
                raise Conflict(f"VM {vm.name!r} runs its disks locally, but no host offers it")
            return await self._local.copy_in(vm, host, progress)
        disks = []
        done = []
        try:
            for record in await self._store.volumes_of_vm(vm.uuid):
                pool = await self._pools.pool(record.pool)
                if not pool.active:
                    raise Conflict(f"storage pool {pool.name!r} is inactive; it places no VM")
                disks.append(await self._exports.export(pool, record, host))
                done.append(record)
        except BaseException:
            for record in reversed(done):
                await undo(self._exports.unexport_d(record), f"unexporting {record.zvol}")
            raise
        return disks

    async def detach(self, vm, host: str) -> None:
        """
        Stop exporting the VM's disks (and remove their CHAP secrets from
        C{host}); sync back those whose newest data is on a host (on C{host},
        or on any if C{None}) and remove the copies there
        (L{LocalCopies.copy_back}).
        """
        if self._local is not None:
            await self._local.copy_back(vm, host)
        for record in await self._store.volumes_of_vm(vm.uuid):
            if record.target or record.exported_to:
                await self._exports.unexport(record)

    async def fence(self, vm) -> None:
        """
        Stop exporting the VM's disks on their storage servers alone (its
        host is fenced: off for good, it is not asked to forget its secrets).
        """
        for record in await self._store.volumes_of_vm(vm.uuid):
            if record.target or record.exported_to:
                await self._exports.unexport(record, forget_secret=False)

    async def _exported(self, vm) -> list:
        return [r for r in await self._store.volumes_of_vm(vm.uuid) if r.target]

    async def admit(self, vm, host: str) -> None:
        """
        Let C{host} open the VM's exported disks too (a migration's
        destination): the exports stay recorded to the VM's host.
        """
        for record in await self._exported(vm):
            await self._exports.admit(record, host)

    async def withdraw(self, vm, host: str, keep: str) -> None:
        """C{host} may no longer open the VM's disks, which C{keep} goes on using."""
        for record in await self._exported(vm):
            await self._exports.withdraw(record, host, keep)

    async def hand_over(self, vm, source: str, dest: str) -> None:
        """The VM's disks, admitted to both hosts, are now exported to C{dest} alone."""
        for record in await self._exported(vm):
            await self._exports.hand_over(record, source, dest)

    async def delete(self, vm, keep_storage: bool = False) -> None:
        """
        Destroy the VM's own disks (with their snapshots, branches and base
        snapshots) unless C{keep_storage} (its seed, always); release the others, and the own
        ones kept, as plain volumes without the VM's snapshots
        (L{comet.model.storage.branches.Branches.strip}): nothing of the VM
        stays on a volume that outlives it.  The snapshot records go last,
        so that a repair running it again still knows which ZFS snapshots
        are the VM's.
        """
        names = await self._branches.snapnames(vm.uuid)
        for record in await self._store.volumes_of_vm(vm.uuid):
            if record.target:
                await self._exports.unexport(record)
            # (A seed is no data: it goes even when the disks are kept.)
            if not record.own or (keep_storage and record.dev != SEED_DEV):
                await self._branches.strip(record, names)
                await self._store.update_volume(record.pool, record.name, vm_uuid=None,
                                                dev=None, own=0)
                continue
            pool = await self._pools.pool(record.pool)
            zfs = self._pools.zfs(pool)
            if self._local is not None:
                await self._local.drop_caches(record)
            await self._branches.destroy_family(zfs, pool, record)
            if record.origin:
                try:
                    await zfs.destroy(record.origin)
                except NotFound:
                    pass
            await self._store.delete_volume(record.pool, record.name)
        if self._snapshots is not None:
            await self._snapshots.forget(vm.uuid)

    async def forget_secrets(self, vm, hosts) -> None:
        """CHAP secrets an interrupted export may have defined on C{hosts}."""
        for volume in await self._store.volumes_of_vm(vm.uuid):
            if volume.exported_to is not None:
                continue
            for host in hosts:
                try:
                    await self._hypervisors.undefine_secret(host, volume.secret_uuid)
                except NotFound:
                    pass

    async def discard_create(self, vm_uuid: str, pool_name: str, base: str) -> None:
        """
        Destroy the disk an interrupted create of VM C{vm_uuid} may have
        cloned in pool C{pool_name}, the snapshot of base volume C{base}
        it was cloned from, and the seed volume it may have made.
        """
        pool = await self._pools.pool(pool_name)
        zfs = self._pools.zfs(pool)
        for name in (f"{pool.dataset}/{vm_disk_name(vm_uuid, SEED_DEV)}",
                     f"{pool.dataset}/{vm_disk_name(vm_uuid)}",
                     f"{pool.dataset}/{base}@{base_snapshot_name(vm_uuid)}"):
            try:
                await zfs.destroy(name)
            except NotFound:
                pass
