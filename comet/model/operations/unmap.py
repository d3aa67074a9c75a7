"""
Unmap (C{unmap}, object the volume's C{pool/name}): a volume taken off its
VM (it stays in its pool): for a VM placed on a host, hot-unplugged (and
waited for until the guest released it) and unexported; then the VM's
snapshots taken off it and the attachment forgotten.  The checks, the
locks and the task are
L{comet.model.storage.vmstorages.VMStorageModel.unmap}'s.

Repair: finished (L{comet.model.operations.attach.unplug}: hot-unplugged,
unexported once the guest released the disk, the VM's snapshots taken off
the volume, attachment forgotten).
"""

from __future__ import annotations

import enum
from typing import Awaitable, Callable, Sequence

from comet.errors import NotFound
from comet.model.operations.attach import unplug
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import vm_record
from comet.store import IntentRecord

KIND = "unmap"


class Step(enum.Enum):
    #: (These two for a VM placed on a host only.)
    DETACH_DEVICE = "detach device"
    UNEXPORT = "unexport"
    DROP_SNAPSHOTS = "drop snapshots"
    FORGET_ATTACHMENT = "forget attachment"


async def run(op, store, pools, exports, branches, hypervisors, vm, record,
              wait_released: Callable[[], Awaitable[None]]) -> None:
    """
    Take volume C{record} off VM C{vm} under intent C{op}.

    @param store: the L{comet.store.Storage} tables.
    @param pools: the L{comet.model.storage.pools.Pools}.
    @param exports: the L{comet.model.storage.exports.Exports}.
    @param branches: the L{comet.model.storage.branches.Branches}.
    @param hypervisors: the L{comet.virt.Hypervisors}.
    @param wait_released: waits until the guest released the disk.
    """
    host = vm.record.host
    if host is not None:
        pool = await pools.pool(record.pool)
        async with op.step(Step.DETACH_DEVICE, host=host, vm=vm.record.uuid):
            try:
                await hypervisors.detach_device(
                    host, vm.record.domain_name, exports.spec(pool, record))
            except NotFound:
                pass   # not in the domain (or its definition) any more
            await wait_released()
        if record.target:
            async with op.step(Step.UNEXPORT, host=host, target=record.target):
                await exports.unexport(record)
    async with op.step(Step.DROP_SNAPSHOTS, vm=vm.record.uuid):
        await branches.leave_snapshots(vm.record.uuid, record)
    async with op.step(Step.FORGET_ATTACHMENT, vm=vm.record.uuid):
        await store.update_volume(record.pool, record.name, vm_uuid=None, dev=None)


async def repair(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
    pool, name = obj.split("/", 1)
    record = await ctx.storage.records.volume(pool, name)
    uuid = steps[0].detail.get("vm")
    if record is None or record.vm_uuid is None or record.vm_uuid != uuid:
        return "the unmap had completed"
    await unplug(ctx, record, await vm_record(ctx, uuid))
    return f"the unmap of volume {name!r} was finished"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
