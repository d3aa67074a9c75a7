"""
NIC detach (C{nic.detach}, object the VM's uuid): a NIC taken off a VM: for
a VM placed on a host, hot-unplugged (live if it runs, from its definition
too) and waited for until the guest let it go; then the NIC forgotten (the
NICs after it move up one) and, for a C{private} NIC, the cluster's network
torn down on the VM's host unless another NIC there still needs it
(L{comet.model.operations.net_down}, an operation of its own).  The checks,
the lock and the task are L{comet.model.vm_nics.VMNicModel.remove}'s.

Repair: finished (hot-unplugged again, waited for, forgotten, the network
torn down if no longer needed).  A guest that still holds the NIC leaves it
for a later pass, as a live detach fails then: the record keeps a NIC while
the domain has it.
"""

from __future__ import annotations

import enum
from typing import Sequence

from twisted.internet.task import deferLater

from comet.errors import Conflict, NotFound, Unavailable
from comet.model.nics import bridge
from comet.model.operations import domains
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import vm_record
from comet.model.operations.nic_attach import forget, has_nic, teardown
from comet.store import IntentRecord, NicRecord, VMRecord
from comet.virt import NicSpec

KIND = "nic.detach"


class Step(enum.Enum):
    #: (For a VM placed on a host only.)
    DETACH_DEVICE = "detach device"
    FORGET_NIC = "forget nic"


async def unplug(ctx: Context, record: VMRecord, mac: str) -> None:
    """
    Hot-unplug NIC C{mac} from VM C{record}'s domain (and its definition),
    and wait until the domain no longer has it: libvirt answers a live
    detach after 5 s even if the guest has not let the device go (a guest
    without an OS never does).  Still there after
    L{comet.model.operations.domains.UNPLUG_TIMEOUT} seconds: L{Conflict},
    the NIC stays the VM's.
    """
    host, domain = record.host, record.domain_name
    nic = next((n for n in record.nics if n.mac == mac), None)
    joins = bridge(nic, record.vni, dict(ctx.hosts.bridges(host))) if nic is not None else None
    # libvirt finds the NIC by its MAC: a bridge no longer known only makes valid XML.
    spec = NicSpec(mac=mac, bridge=joins or "comet-detach")
    try:
        await ctx.hypervisors.detach_device(host, domain, spec)
    except NotFound:
        pass   # not in the domain (or its definition) any more
    deadline = ctx.clock.seconds() + domains.UNPLUG_TIMEOUT
    while await has_nic(ctx.hypervisors, host, domain, mac):
        if ctx.clock.seconds() >= deadline:
            raise Conflict(f"VM {record.name!r} did not release NIC {mac} within"
                           f" {domains.UNPLUG_TIMEOUT:g} s; it stays the VM's. Try again (the"
                           " guest must accept the unplug: one without an OS never does)")
        await deferLater(ctx.clock, domains.UNPLUG_POLL, lambda: None)


async def run(ctx: Context, record: VMRecord, mac: str) -> VMRecord:
    """Take NIC C{mac} off VM C{record}; its record after it."""
    host = record.host
    nic = next(n for n in record.nics if n.mac == mac)
    async with ctx.intents.operation(KIND, record.uuid) as op:
        if host is not None:
            async with op.step(Step.DETACH_DEVICE, vm=record.uuid, mac=mac,
                               network=nic.network, host=host):
                try:
                    await unplug(ctx, record, mac)
                except Unavailable:
                    # The unplug may be under way: the reconciler finishes
                    # it once the host answers (L{repair}).
                    op.leave_for_repair()
                    raise
        async with op.step(Step.FORGET_NIC, vm=record.uuid, mac=mac, network=nic.network):
            after = await ctx.vms.remove_nic(record.uuid, mac)
    await teardown(ctx, after, nic, host)
    return after


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    if record is None:
        return "the VM no longer exists"
    mac, network = steps[0].detail["mac"], steps[0].detail["network"]
    if mac not in [n.mac for n in record.nics]:
        # Forgotten before the crash; its network may be left.
        await teardown(ctx, record, NicRecord(0, network, mac), record.host)
        return f"the detach of NIC {mac} had completed"
    if record.host is not None:
        await unplug(ctx, record, mac)
    await forget(ctx, record, mac, record.host)
    return f"the detach of NIC {mac} was finished"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
