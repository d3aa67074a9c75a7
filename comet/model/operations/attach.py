"""
Attach (C{attach}, object the volume's C{pool/name}): a volume given to a
VM: the attachment recorded, then, for a VM placed on a host, the volume
exported there and hot-plugged into its domain.  A failure undoes what was
done.  The checks (the volume free, the device name) and the locks are
L{comet.model.storage.vmstorages.VMStorageModel.attach}'s.

Repair: undone (hot-unplugged, unexported, attachment forgotten: the client
never heard of success) unless its last step was marked done or the domain
has the disk already (undoing that would need the guest to release it).
"""

from __future__ import annotations

import enum
from typing import Sequence

from comet.errors import NotFound
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import has_disk, vm_record, wait_released
from comet.store import IntentRecord

KIND = "attach"


class Step(enum.Enum):
    RECORD_ATTACHMENT = "record attachment"
    #: (These two for a VM placed on a host only.)
    EXPORT = "export"
    ATTACH_DEVICE = "attach device"


async def run(op, store, volumes, exports, hypervisors, vm, pool, volume: str, live, record,
              dev: str, host: str | None):
    """
    Attach volume C{volume} (C{live}; its record C{record}, or C{None} if it has none yet)
    of C{pool} to VM C{vm} as C{dev} under intent C{op}, and to its domain
    on C{host} if it is placed.

    @param store: the L{comet.store.Storage} tables.
    @param volumes: the L{comet.model.storage.volumes.Volumes}.
    @param exports: the L{comet.model.storage.exports.Exports}.
    @param hypervisors: the L{comet.virt.Hypervisors}.
    @return: the volume's record, attached.
    """
    async with op.step(Step.RECORD_ATTACHMENT, vm=vm.record.uuid, dev=dev):
        if record is None:
            record = await store.add_volume(**volumes.new_record(
                pool, volume, live.capacity, vm_uuid=vm.record.uuid, dev=dev))
        else:
            record = await store.update_volume(pool.name, volume,
                                               vm_uuid=vm.record.uuid, dev=dev)
    if host is not None:
        try:
            async with op.step(Step.EXPORT, host=host):
                spec = await exports.export(pool, record, host)
            try:
                async with op.step(Step.ATTACH_DEVICE, host=host):
                    await hypervisors.attach_device(host, vm.record.domain_name, spec)
            except BaseException:
                await exports.unexport(record)
                raise
        except BaseException:
            await store.update_volume(pool.name, volume, vm_uuid=None, dev=None)
            raise
    return record


async def unplug(ctx: Context, record, vm) -> None:
    """
    Take volume C{record} off VM record C{vm}: hot-unplug, unexport, the
    VM's snapshots off it, forget the attachment (an attach undone, an
    unmap finished).
    """
    storage = ctx.storage
    if vm is not None and vm.host is not None:
        pool = await storage.pool(record.pool)
        try:
            await storage.hypervisors.detach_device(
                vm.host, vm.domain_name, storage.exporter.spec(pool, record))
        except NotFound:
            pass
        # As a live unmap: the target outlives the guest's hold on the disk
        # (a Conflict keeps the operation for the next pass).
        await wait_released(storage.hypervisors, ctx.clock, vm.host, vm.domain_name, record.dev,
                            f"VM {vm.name!r} did not release disk {record.dev}")
    if record.target or record.exported_to:
        await storage.exporter.unexport(record)
    await storage.branches.leave_snapshots(record.vm_uuid, record)
    await storage.records.update_volume(record.pool, record.name, vm_uuid=None, dev=None)


async def repair(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
    pool, name = obj.split("/", 1)
    record = await ctx.storage.records.volume(pool, name)
    uuid = steps[0].detail.get("vm")
    if record is None or record.vm_uuid != uuid:
        return "the volume is not attached to the VM: nothing to undo"
    # (Rows of an earlier Comet: the last step is no longer marked done.)
    if any(s.step == Step.ATTACH_DEVICE.value and s.state == "done" for s in steps):
        return "the attach had completed: kept"
    vm = await vm_record(ctx, uuid)
    if vm is not None and vm.host is not None and record.dev and await has_disk(
            ctx.storage.hypervisors, vm.host, vm.domain_name, record.dev):
        # The device went in before the crash: undoing it would need the
        # guest to release it (a guest without hot-unplug never does).
        return "the attach had completed (the domain has the disk): kept"
    await unplug(ctx, record, vm)
    return f"the attach of volume {name!r} was undone"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
