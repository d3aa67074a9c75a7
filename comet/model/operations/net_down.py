"""
Private network tear-down (C{net.down}) on one host, for one cluster's VNI:
its VXLAN device, then its bridge, if the host no longer needs them (no VM
of the cluster with a private NIC placed there, none migrating there).  A
VM stop, delete or failed start runs it after releasing the placement; a
migration runs it on the host the VM left (or on the destination, when the
VM stayed).

Repair: as L{comet.model.operations.net_up}'s, the network is made to match
what the host needs now.
"""

from __future__ import annotations

import enum

from twisted.logger import Logger

from comet.errors import CometError
from comet.model.networks import net_object
from comet.model.operations.context import Context, OperationType
from comet.model.operations.net_up import private_vni, repair

log = Logger()

KIND = "net.down"


class Step(enum.Enum):
    DELETE_TUNNEL = "delete tunnel"
    DELETE_BRIDGE = "delete bridge"


async def run(ctx: Context, host: str, vni: int) -> bool:
    """Remove C{host}'s tunnel and bridge of C{vni} unless it needs them; whether it did."""
    networks = ctx.networks
    network = networks.host(host)
    async with networks.lock(host, vni):
        if vni in await networks.needed(host):
            return False
        async with ctx.intents.operation(KIND, net_object(host, vni)) as op:
            async with op.step(Step.DELETE_TUNNEL, host=host, vni=vni):
                await network.remove(vni, "vxlan")
            async with op.step(Step.DELETE_BRIDGE, host=host, vni=vni):
                await network.remove(vni, "bridge")
    return True


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)


async def for_vm(ctx: Context, record, *hosts: str | None) -> None:
    """
    Tear down on each of C{hosts} the private network of VM C{record}'s
    cluster if it is no longer needed there.  A host that does not answer
    is logged and left to the reconciler's sweep: the VM's own operation
    went well, and a leftover bridge harms no one until then.
    """
    vni = private_vni(record)
    if vni is None or ctx.networks is None:
        return
    for host in {h for h in hosts if h is not None}:
        try:
            await run(ctx, host, vni)
        except CometError as e:
            log.warn("tearing down the private network of VNI {vni} on {host} failed ({why});"
                     " the reconciler removes it", vni=vni, host=host, why=e.reason)
