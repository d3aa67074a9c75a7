"""
VM create (C{vm.create}): record the VM, then make its own disks (a clone
of its template's base volume), then, if it is provisioned, its first-boot
seed (L{comet.model.provision}: an ISO written to a volume of its own).  If
making the disks or the seed fails, the record is removed again.

Repair: undone (its disks, the clone and base snapshot it may have made,
the seed volume, and its record), unless its last step was done.
"""

from __future__ import annotations

import enum
import json
import uuid as _uuid
from typing import Sequence

import attrs
from twisted.internet.threads import deferToThread

from comet.errors import Conflict
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import vm_record
from comet.model.provision import Provisioning, default_hostname, seed_iso
from comet.store import IntentRecord, VMRecord


class Step(enum.Enum):
    RECORD = "record"
    MAKE_DISKS = "make disks"
    #: (A provisioned VM only.)
    MAKE_SEED = "make seed"


async def run(ctx: Context, cluster: str, name: str | None, template, memory: int | None,
              cpus: int | None, nics=None,
              provisioning: Provisioning | None = None,
              cpu_model: str | None = None, disk_mode: str | None = None) -> VMRecord:
    """
    Record a new VM of C{cluster} made from template record C{template} and
    give it its own disks; its record.  C{nics}: its NICs
    (L{comet.model.nics.NicRequest}s), C{None} for the template's.  The VM is locked from before its
    record exists: a delete (or a start) of the new VM while its disks are
    being made would race the clone and could leave it orphaned; it is a
    409 "being created" instead.  With C{provisioning} (its C{hostname}
    C{None}: from the VM's name), the VM gets a first-boot seed.
    C{cpu_model}: the CPU model the VM needs (C{None}: none); C{disk_mode}:
    where it runs its disks (C{None}: the template's).
    """
    if provisioning is not None and template.disk_pool is None:
        raise Conflict(f"template {template.name!r} has no disk: a VM made from it has no"
                       " storage pool to hold a first-boot seed (user_data, ssh_keys, hostname)")
    uuid = str(_uuid.uuid4())
    lock = ctx.locks.lock(uuid, f"VM {name!r}" if name else "the new VM", "being created")
    async with lock, ctx.intents.operation("vm.create", uuid) as op:
        async with op.step(Step.RECORD):
            record = await ctx.vms.create(
                cluster, name, template.name, memory, cpus, uuid, int(ctx.clock.seconds()),
                None if nics is None else [(nic.network, nic.mac) for nic in nics], ctx.vnis,
                cpu_model, disk_mode,
            )
        try:
            async with op.step(Step.MAKE_DISKS, pool=template.disk_pool,
                               base=template.disk_volume, seed=provisioning is not None):
                await ctx.disks.create(record, template)
        except BaseException:
            await ctx.vms.delete(record.uuid)
            raise
        if provisioning is not None:
            try:
                async with op.step(Step.MAKE_SEED, pool=template.disk_pool):
                    record = await _make_seed(ctx, record, template, provisioning)
            except BaseException:
                # (create_seed removed its volume; the disks go too.)
                await ctx.disks.delete(record)
                await ctx.vms.delete(record.uuid)
                raise
    return record


async def _make_seed(ctx: Context, record: VMRecord, template,
                     provisioning: Provisioning) -> VMRecord:
    if provisioning.hostname is None:
        provisioning = attrs.evolve(provisioning, hostname=default_hostname(record.name))
    # pycdlib is pure Python CPU work: a thread, not the reactor.
    image = await deferToThread(seed_iso, provisioning, record.uuid)
    await ctx.disks.create_seed(record, template, image)
    return await ctx.vms.set_provision(record.uuid, json.dumps(provisioning.summary()))


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    make = next((s for s in steps if s.step == Step.MAKE_DISKS.value), None)
    seed = next((s for s in steps if s.step == Step.MAKE_SEED.value), None)
    # The last step (the seed's if there was to be one) done: complete.
    # (The last step is no longer marked done: a row so marked was written
    # by an earlier Comet, before the operation's end.)
    last = seed if make is not None and make.detail.get("seed") else make
    if record is not None and last is not None and last.state == "done":
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
