"""
VM create (C{vm.create}): record the VM, then make its own disks (a clone
of its template's base volume).  If making the disks fails, the record is
removed again.

Repair: undone (its disks, the clone and base snapshot it may have made,
and its record), unless its disks were made.
"""

from __future__ import annotations

import enum
import uuid as _uuid
from typing import Sequence

from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import vm_record
from comet.store import IntentRecord, VMRecord


class Step(enum.Enum):
    RECORD = "record"
    MAKE_DISKS = "make disks"


async def run(ctx: Context, cluster: str, name: str | None, template, memory: int | None,
              cpus: int | None, nics=None) -> VMRecord:
    """
    Record a new VM of C{cluster} made from template record C{template} and
    give it its own disks; its record.  C{nics}: its NICs
    (L{comet.model.nics.NicRequest}s), C{None} for the template's.  The VM is locked from before its
    record exists: a delete (or a start) of the new VM while its disks are
    being made would race the clone and could leave it orphaned; it is a
    409 "being created" instead.
    """
    uuid = str(_uuid.uuid4())
    lock = ctx.locks.lock(uuid, f"VM {name!r}" if name else "the new VM", "being created")
    async with lock, ctx.intents.operation("vm.create", uuid) as op:
        async with op.step(Step.RECORD):
            record = await ctx.vms.create(
                cluster, name, template.name, memory, cpus, uuid, int(ctx.clock.seconds()),
                None if nics is None else [(nic.network, nic.mac) for nic in nics], ctx.vnis,
            )
        try:
            async with op.step(Step.MAKE_DISKS, pool=template.disk_pool,
                               base=template.disk_volume):
                await ctx.disks.create(record, template)
        except BaseException:
            await ctx.vms.delete(record.uuid)
            raise
    return record


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    make = next((s for s in steps if s.step == Step.MAKE_DISKS.value), None)
    # (The last step is no longer marked done: a row so marked was written
    # by an earlier Comet, before the operation's end.)
    if record is not None and make is not None and make.state == "done":
        return f"VM {record.name!r} was complete: kept"
    if record is not None:
        await ctx.disks.delete(record)
    if make is not None and make.detail.get("pool"):
        await ctx.disks.discard_create(uuid, make.detail["pool"], make.detail["base"])
    if record is not None:
        await ctx.vms.delete(uuid)
        return f"the create of VM {record.name!r} was undone (disks and record removed)"
    return "the VM had not been recorded; whatever disk it made was removed"


OPERATION = OperationType(kinds=("vm.create",), steps=Step, repair=repair)
