"""
Local unmap (C{unmap.local}, object the volume's C{pool/name}): a volume
taken off its VM while its newest data is in a local copy on a compute host
(local-copy mode, issue 21: its C{copy_host} is set) or while its VM runs in
that mode: for a VM placed on a host, its block disk hot-unplugged (and
waited for until the guest released it); then the host's copy synced back to
the storage server (the increment the guest wrote), removed there with the
storage server's sync snapshot, and C{copy_host} cleared
(L{comet.model.storage.localcopies.LocalCopies.copy_back_volume}); then the
VM's snapshots taken off it and the attachment forgotten.  The checks, the
locks and the task are
L{comet.model.storage.vmstorages.VMStorageModel.unmap}'s.

A kind of its own, beside L{comet.model.operations.unmap} (the iSCSI
unmap): its steps differ, and the testbed's SIGKILL tests of the unmap run
on an iSCSI guest.

A sync back that fails (the host does not answer, the storage server's copy
changed since: a 409) fails the operation with C{copy_host} still set and
the host's copy untouched: the volume stays attached to the VM (its disk
unplugged from the guest), its reason names where the newest data is, and
the VM's stop (or a new unmap) syncs it back.

Repair: finished, in order: the disk unplugged from the VM's domain if it
is placed (waited for as a live unmap waits: a guest still holding it keeps
the operation for the next pass), the sync back (safe to repeat: the host's
copy is removed only once the storage server has its data; a host that does
not answer keeps the operation for the next pass), the VM's snapshots taken
off the volume, the attachment forgotten.
"""

from __future__ import annotations

import enum
from typing import Awaitable, Callable, Sequence

from comet.errors import NotFound
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import vm_record, wait_released
from comet.store import IntentRecord

KIND = "unmap.local"


class Step(enum.Enum):
    #: (For a VM placed on a host only.)
    DETACH_DEVICE = "detach device"
    #: (For a volume whose C{copy_host} is set only.)
    SYNC_BACK = "sync back"
    DROP_SNAPSHOTS = "drop snapshots"
    FORGET_ATTACHMENT = "forget attachment"


async def detach_disk(hypervisors, host: str, domain: str, dev: str) -> None:
    """
    Unplug disk C{dev} from C{domain} on C{host} (live if it runs, and from
    its definition), as the domain describes it (a local copy's block
    device); nothing if it has no such disk (or there is no such domain).
    """
    try:
        description = await hypervisors.describe(host, domain)
    except NotFound:
        return
    for disk in description.spec.disks:
        if disk.target == dev:
            try:
                await hypervisors.detach_device(host, domain, disk)
            except NotFound:
                pass   # gone meanwhile


async def run(op, store, local, branches, hypervisors, vm, record,
              wait_released: Callable[[], Awaitable[None]]) -> None:
    """
    Take volume C{record} off VM C{vm} under intent C{op}, syncing its
    local copy back first.

    @param store: the L{comet.store.Storage} tables.
    @param local: the L{comet.model.storage.localcopies.LocalCopies}.
    @param branches: the L{comet.model.storage.branches.Branches}.
    @param hypervisors: the L{comet.virt.Hypervisors}.
    @param wait_released: waits until the guest released the disk.
    """
    uuid = vm.record.uuid
    host = vm.record.host
    if host is not None:
        async with op.step(Step.DETACH_DEVICE, host=host, vm=uuid):
            await detach_disk(hypervisors, host, vm.record.domain_name, record.dev)
            await wait_released()
    if record.copy_host is not None:
        async with op.step(Step.SYNC_BACK, host=record.copy_host, vm=uuid):
            # The unmapped volume has no VM left to start from a cache here.
            await local.copy_back_volume(record, keep=False)
    async with op.step(Step.DROP_SNAPSHOTS, vm=uuid):
        await branches.leave_snapshots(uuid, record)
    async with op.step(Step.FORGET_ATTACHMENT, vm=uuid):
        await store.update_volume(record.pool, record.name, vm_uuid=None, dev=None)


async def repair(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
    pool, name = obj.split("/", 1)
    storage = ctx.storage
    record = await storage.records.volume(pool, name)
    uuid = steps[0].detail.get("vm")
    if record is None or record.vm_uuid is None or record.vm_uuid != uuid:
        return "the unmap had completed"
    vm = await vm_record(ctx, uuid)
    if vm is not None and vm.host is not None:
        await detach_disk(storage.hypervisors, vm.host, vm.domain_name, record.dev)
        await wait_released(storage.hypervisors, ctx.clock, vm.host, vm.domain_name, record.dev,
                            f"VM {vm.name!r} did not release disk {record.dev}")
    synced = ""
    if record.copy_host is not None:
        await storage.local_copies.copy_back_volume(record, keep=False)
        synced = f", its local copy synced back from host {record.copy_host!r}"
    await storage.branches.leave_snapshots(uuid, record)
    await storage.records.update_volume(pool, name, vm_uuid=None, dev=None)
    return f"the unmap of volume {name!r} was finished{synced}"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
