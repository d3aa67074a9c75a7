"""
NIC attach (C{nic.attach}, object the VM's uuid): a NIC given to a VM: the
NIC recorded, then, for a VM placed on a host, its network made there (a
C{private} NIC: the cluster's bridge and tunnel, by
L{comet.model.operations.net_up}, an operation of its own) and the NIC
hot-plugged into its domain (live if it runs, into its definition too).  A
failure undoes what was done.  The checks (the network offered on the VM's
host, the MAC free) and the lock are L{comet.model.vm_nics.VMNicModel.add}'s.

Repair: kept if the domain has the NIC (the hot-plug went in before the
crash); otherwise undone: the NIC forgotten (the client never heard of
success) and, for a C{private} NIC, the network torn down on the VM's host
unless it is still needed there (L{comet.model.operations.net_down}).
"""

from __future__ import annotations

import enum
from typing import Sequence

import attrs

from comet.errors import Conflict, NotFound, Unavailable
from comet.model.nics import PRIVATE, bridge
from comet.model.operations import net_down, net_up
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import vm_record
from comet.store import IntentRecord, VMRecord
from comet.virt import NicSpec

KIND = "nic.attach"


class Step(enum.Enum):
    RECORD_NIC = "record nic"
    #: (For a VM placed on a host only.)
    ATTACH_DEVICE = "attach device"


def nic_spec(ctx: Context, record: VMRecord, nic, host: str) -> NicSpec:
    """
    NIC C{nic} of VM C{record} on C{host}'s bridge for its network (a
    C{private} one with the network's MTU), as a hot-plug and a start
    (L{comet.model.operations.vm_start.nic_specs}) define it; L{Conflict} if C{host} has none
    (no tunnel address for C{private}, no bridge for another network).
    """
    joins = bridge(nic, record.vni, dict(ctx.hosts.config(host).bridges))
    private = nic.network == PRIVATE
    if joins is None or (private and not ctx.hosts.config(host).tunnel_address):
        raise Conflict(f"compute host {host!r}, where VM {record.name!r} is, offers no bridge"
                       f" for network {nic.network!r}")
    return NicSpec(mac=nic.mac, bridge=joins, mtu=ctx.private_mtu if private else None)


async def has_nic(hypervisors, host: str, domain: str, mac: str) -> bool:
    """Whether C{domain} on C{host} has a NIC of MAC C{mac} now (no such domain: it has none)."""
    try:
        description = await hypervisors.describe(host, domain)
    except NotFound:
        return False
    return mac in [n.mac for n in description.spec.nics]


async def run(ctx: Context, record: VMRecord, network: str, mac: str, most: int):
    """
    Give VM C{record} a NIC on C{network} with MAC C{mac} (chosen by the
    caller: the repair finds the NIC by it), hot-plugged if the VM is placed
    on a host.  The VM's record after it and the new NIC (a
    L{comet.store.NicRecord}).
    """
    host = record.host
    async with ctx.intents.operation(KIND, record.uuid) as op:
        async with op.step(Step.RECORD_NIC, vm=record.uuid, network=network, mac=mac):
            record, nic = await ctx.vms.add_nic(record.uuid, network, mac, ctx.vnis, most)
        if host is None:
            return record, nic
        try:
            spec = nic_spec(ctx, record, nic, host)
            if network == PRIVATE and ctx.networks is not None:
                await net_up.run(ctx, host, record.vni)
            async with op.step(Step.ATTACH_DEVICE, host=host, mac=mac, bridge=spec.bridge):
                try:
                    await ctx.hypervisors.attach_device(host, record.domain_name, spec)
                except Unavailable:
                    # Whether the NIC went in, only the host knows: the
                    # reconciler asks it once it answers (L{repair}).
                    op.leave_for_repair()
                    raise
        except BaseException:
            if not op.halted:
                await forget(ctx, record, mac, host)
            raise
    return record, nic


async def forget(ctx: Context, record: VMRecord, mac: str, host: str | None) -> VMRecord:
    """
    Forget NIC C{mac} of VM C{record} (its domain does not have it), then
    L{teardown} its network on C{host}.  The VM's record after it.
    """
    nic = next((n for n in record.nics if n.mac == mac), None)
    try:
        record = await ctx.vms.remove_nic(record.uuid, mac)
    except NotFound:
        pass
    await teardown(ctx, record, nic, host)
    return record


async def teardown(ctx: Context, record: VMRecord, nic, host: str | None) -> None:
    """
    After VM C{record} lost C{nic} (a L{comet.store.NicRecord}, or C{None}):
    for a C{private} NIC, the cluster's network on C{host} torn down unless
    still needed there (another NIC, another VM); a host that does not
    answer is left to the reconciler's sweep.
    """
    if nic is not None and host is not None:
        # As if the VM had that NIC alone: net_down acts for a private one only.
        await net_down.for_vm(ctx, attrs.evolve(record, nics=(nic,)), host)


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    if record is None:
        return "the VM no longer exists"
    mac = steps[0].detail["mac"]
    if mac not in [n.mac for n in record.nics]:
        return f"the VM has no NIC {mac}: nothing to undo"
    host = record.host
    if host is not None and await has_nic(ctx.hypervisors, host, record.domain_name, mac):
        # The hot-plug went in before the crash: the attach completed.
        return f"the attach of NIC {mac} had completed (the domain has it): kept"
    await forget(ctx, record, mac, host)
    return f"the attach of NIC {mac} was undone"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
