"""
Private network set-up (C{net.up}) on one host, for one cluster's VNI: its
bridge, then its VXLAN device (L{comet.model.networks}).  A VM start runs it
after placing the VM and before defining its domain; a migration runs it on
the destination before moving the VM.

Repair: the network is made complete if the host needs it now, else
removed (L{comet.model.networks.Networks.settle}).
"""

from __future__ import annotations

import enum
from typing import Sequence

from comet.model.nics import PRIVATE
from comet.model.networks import net_object, parse_object
from comet.model.operations.context import Context, OperationType
from comet.store import IntentRecord

KIND = "net.up"


class Step(enum.Enum):
    CREATE_BRIDGE = "create bridge"
    CREATE_TUNNEL = "create tunnel"


async def run(ctx: Context, host: str, vni: int) -> None:
    """Make C{host}'s bridge and tunnel of C{vni} (what exists already is kept)."""
    networks = ctx.networks
    network = networks.host(host)
    async with networks.lock(host, vni):
        async with ctx.intents.operation(KIND, net_object(host, vni)) as op:
            async with op.step(Step.CREATE_BRIDGE, host=host, vni=vni):
                await network.add_bridge(vni)
            async with op.step(Step.CREATE_TUNNEL, host=host, vni=vni):
                await network.add_tunnel(vni)


def private_vni(record) -> int | None:
    """The VNI of VM C{record}'s cluster if it has a private NIC, else C{None}."""
    if record.vni is not None and any(nic.network == PRIVATE for nic in record.nics):
        return record.vni
    return None


async def for_vm(ctx: Context, record, host: str) -> None:
    """Set up on C{host} the private network VM C{record} needs, if any."""
    vni = private_vni(record)
    if vni is not None and ctx.networks is not None:
        await run(ctx, host, vni)


async def repair(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
    host, vni = parse_object(obj)
    what = await ctx.networks.settle(host, vni)
    return what or f"the network of VNI {vni} on {host} was as needed"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
