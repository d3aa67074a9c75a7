"""
VM stop (C{vm.stop}; C{cluster.stop} when a cluster stop runs it): shut the
guest down (powering it off only when forced), then undefine its domain,
unexport its disks and release its placement.

Repair: a domain found shut off (or gone) means the stop is finished
(undefined, unexported, placement released); a domain still running is
left running and the stop reported as not done.
"""

from __future__ import annotations

import enum
from typing import Sequence

from twisted.internet.task import deferLater

from comet.errors import Conflict, NotFound
from comet.model.operations import net_down
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import ACTIVE, domain_state, unplace, vm_record
from comet.store import IntentRecord, VMRecord

#: Seconds between two looks at a domain's state while waiting for it to stop.
POLL_INTERVAL = 0.5


class Step(enum.Enum):
    SHUT_DOWN = "shut down"
    UNPLACE = "unplace"


async def _wait_off(ctx: Context, host: str, domain: str, timeout: float) -> bool:
    """Whether the domain is shut off within C{timeout} seconds."""
    deadline = ctx.clock.seconds() + timeout
    while True:
        try:
            state = await ctx.libvirt.domain_state(host, domain)
        except NotFound:
            return True
        if state == "shutoff":
            return True
        if ctx.clock.seconds() >= deadline:
            return False
        await deferLater(ctx.clock, POLL_INTERVAL, lambda: None)


async def run(ctx: Context, record: VMRecord, timeout: float, force: bool,
              kind: str = "vm.stop") -> str:
    """
    Shut the VM down (waiting up to C{timeout} seconds, then powering it
    off only with C{force}; a L{Conflict} without), undefine it from its
    host and release its placement.  What happened, one sentence.
    """
    host, domain = record.host, record.domain_name
    libvirt = ctx.libvirt
    async with ctx.intents.operation(kind, record.uuid) as op:
        async with op.step(Step.SHUT_DOWN, host=host, domain=domain):
            state = await libvirt.domain_state(host, domain)
            how = "was already shut off"
            if state == "paused":
                if force:
                    await libvirt.destroy(host, domain)
                    state, how = "shutoff", "was paused; powered off"
                else:
                    await libvirt.resume(host, domain)
                    state = "running"
            if state in ("running", "other"):
                await libvirt.shutdown(host, domain)
                if await _wait_off(ctx, host, domain, timeout):
                    how = "shut down"
                elif force:
                    await libvirt.destroy(host, domain)
                    how = f"did not shut down within {timeout:g} s; powered off"
                else:
                    raise Conflict(
                        f"VM {record.name!r} did not shut down within {timeout:g} s;"
                        ' it is still running (pass {"force": true} to power it off)'
                    )
        async with op.step(Step.UNPLACE, host=host, domain=domain):
            await unplace(ctx, record)
    await net_down.for_vm(ctx, record, host)
    return f"VM {record.name!r} {how} and was removed from host {host!r}"


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    if record is None:
        return "the VM no longer exists"
    if record.host is None:
        await ctx.disks.detach(record, None)
        return f"VM {record.name!r} was found stopped: the stop had completed"
    state = await domain_state(ctx, record.host, record.domain_name)
    if state in ACTIVE:
        return (f"VM {record.name!r} is still {state} on {record.host}: the stop did not"
                " complete; stop it again")
    host = record.host
    await unplace(ctx, record)
    await net_down.for_vm(ctx, record, record.host)
    return (f"the stop of VM {record.name!r} was finished: domain undefined, disks"
            f" unexported, placement on {host} released")


OPERATION = OperationType(kinds=("vm.stop", "cluster.stop"), steps=Step, repair=repair)
