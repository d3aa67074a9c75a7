"""
VM delete (C{vm.delete}): power off (a forced delete of a running VM),
unplace, delete its disks (or keep them, C{keep_storage}), forget its record.

Repair: finished (powered off, unplaced, disks destroyed unless kept, the
VM's snapshots taken off the volumes it leaves, record forgotten).
"""

from __future__ import annotations

import enum
from typing import Sequence

from comet.model.operations import net_down
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import ACTIVE, remove_domain, unplace, vm_record
from comet.store import IntentRecord, VMRecord


class Step(enum.Enum):
    POWER_OFF = "power off"
    UNPLACE = "unplace"
    DELETE_DISKS = "delete disks"
    FORGET_RECORD = "forget record"


async def run(ctx: Context, record: VMRecord, phase: str, keep_storage: bool = False) -> None:
    """
    Delete the VM of C{record}, in C{phase} now (the caller checked it may
    be deleted and holds its lock): a running one is powered off.
    """
    keep = {"keep_storage": keep_storage}
    async with ctx.intents.operation("vm.delete", record.uuid) as op:
        if phase in ACTIVE:
            async with op.step(Step.POWER_OFF, host=record.host, **keep):
                await ctx.libvirt.destroy(record.host, record.domain_name)
        if record.host is not None:
            async with op.step(Step.UNPLACE, host=record.host, **keep):
                await unplace(ctx, record)
        async with op.step(Step.DELETE_DISKS, **keep):
            await ctx.disks.delete(record, keep_storage=keep_storage)
        async with op.step(Step.FORGET_RECORD, **keep):
            await ctx.vms.delete(record.uuid)
    await net_down.for_vm(ctx, record, record.host)


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    if record is None:
        return "the delete had completed"
    if record.host is not None:
        await remove_domain(ctx, record.host, record.domain_name)
        await unplace(ctx, record)
    keep = bool(steps[0].detail.get("keep_storage"))
    await ctx.disks.delete(record, keep_storage=keep)
    await ctx.vms.delete(uuid)
    await net_down.for_vm(ctx, record, record.host)
    return f"the delete of VM {record.name!r} was finished"


OPERATION = OperationType(kinds=("vm.delete",), steps=Step, repair=repair)
