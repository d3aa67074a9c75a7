"""
VM fence (C{vm.fence}): a VM of a host the admin declared dead for good
(C{POST /hosts/:h/evacuate {"fenced": true}}) is taken off it and started on
another host from its shared disks.  Its disks' exports are withdrawn on the
storage servers first (the targets deleted, which ends any session the
dead host still has: should it run after all, it can no longer write), then
its placement on the dead host is released, then it is started as any VM
is (L{comet.model.operations.vm_start}: placed by the placement rule, which
skips hosts in maintenance or not answering).  The dead host is never asked
anything: its domain and CHAP secrets stay there, and when it answers again
the reconciler removes the domain (a leftover: its VM is placed elsewhere
or nowhere).

A VM placed on the dead host but shut off there is started too: Comet
cannot ask the dead host which of its VMs ran.

Repair: the admin's word stands, so an interrupted fence is finished up to
the start: its exports withdrawn and its placement on the dead host
released.  Its start is not made again by the reconciler: a start that had
not run, or that its own repair (C{vm.start}) undoes, leaves the VM stopped,
and the repair says so (start it); a start that had completed leaves it
running where it was placed.
"""

from __future__ import annotations

import enum
from typing import Sequence

from comet.errors import CometError
from comet.model.operations import vm_start
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import ACTIVE, domain_state, vm_record
from comet.store import IntentRecord, VMRecord

KIND = "vm.fence"


class Step(enum.Enum):
    WITHDRAW_EXPORTS = "withdraw exports"
    RELEASE_PLACEMENT = "release placement"
    START_ELSEWHERE = "start elsewhere"


async def run(ctx: Context, record: VMRecord) -> str:
    """
    Take VM C{record} off its (dead) host and start it on another; what
    happened, one sentence.  A start that fails leaves the VM stopped,
    placed nowhere, and raises (its reason says so).
    """
    dead = record.host
    detail = {"host": dead, "domain": record.domain_name}
    async with ctx.intents.operation(KIND, record.uuid) as op:
        async with op.step(Step.WITHDRAW_EXPORTS, **detail):
            await ctx.disks.fence(record)
        async with op.step(Step.RELEASE_PLACEMENT, **detail):
            record = await ctx.vms.set_host(record.uuid, None)
        async with op.step(Step.START_ELSEWHERE, **detail):
            try:
                await vm_start.run(ctx, record)
            except CometError as e:
                e.reason = (f"VM {record.name!r} was taken off {dead!r} (exports withdrawn,"
                            f" placement released) but not started elsewhere: {e.reason}")
                raise
    record = await ctx.vms.by_uuid(record.uuid)
    return f"VM {record.name!r} was taken off {dead!r} and started on {record.host!r}"


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    if record is None:
        return "the VM no longer exists"
    dead = steps[0].detail["host"]
    if record.host == dead:
        await ctx.disks.fence(record)
        await ctx.vms.set_host(uuid, None)
        return (f"VM {record.name!r} was taken off {dead} (exports withdrawn, placement"
                " released); it was not started elsewhere: start it")
    if record.host is None:
        await ctx.disks.fence(record)
        return (f"VM {record.name!r} was taken off {dead}; it was not started elsewhere:"
                " start it")
    state = await domain_state(ctx, record.host, record.domain_name)
    if state in ACTIVE:
        return f"VM {record.name!r} was taken off {dead} and is {state} on {record.host}"
    return (f"VM {record.name!r} was taken off {dead}; its start on {record.host} was"
            " interrupted (undone by the start's own repair): start it")


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
