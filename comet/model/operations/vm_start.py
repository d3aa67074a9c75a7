"""
VM start (C{vm.start}; C{cluster.start} when a cluster start runs it): place
the VM (if it is not), export its disks, define its domain, start it.

Repair: a domain found running means the start completed (kept); otherwise
it is undone (domain undefined if this start placed the VM, disks
unexported, placement released).
"""

from __future__ import annotations

import enum
import secrets
from typing import Awaitable, Callable, Sequence

from twisted.logger import Logger

from comet.errors import CometError
from comet.model.cpus import domain_cpu
from comet.model.operations import net_down, net_up, nic_attach
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import (
    ACTIVE, domain_state, place, remove_domain, step_hosts, unplace, vm_record,
)
from comet.store import IntentRecord, VMRecord
from comet.store.vms import COMET_DOMAIN_PREFIX
from comet.virt import CometMetadata, DomainSpec, NicSpec

log = Logger()


class Step(enum.Enum):
    PLACE = "place"
    EXPORT_DISKS = "export disks"
    DEFINE_DOMAIN = "define domain"
    START_DOMAIN = "start domain"


async def run(ctx: Context, record: VMRecord, kind: str = "vm.start",
              progress: Callable[[int, int], object] | None = None) -> None:
    """
    Place (if needed), export the disks (C{progress(moved, total)}: the
    bytes of a local-copy mode VM's disks copied to its host), define and start.  A failure at
    any step undoes the steps before it: no half-defined domain, no
    placement record, no export is left behind.  Each step is an intent
    record first (L{comet.model.intents}), for the reconciler.
    """
    async with ctx.intents.operation(kind, record.uuid) as op:
        placed_now = record.host is None
        if placed_now:
            async with op.step(Step.PLACE):
                record = await place(ctx, record)
        host = record.host
        undo: list[Callable[[], Awaitable]] = []
        try:
            async with op.step(Step.EXPORT_DISKS, host=host):
                disks = await ctx.disks.attach(record, host, progress)
            undo.append(lambda: ctx.disks.detach(record, host))
            spec = DomainSpec(
                name=record.domain_name,
                uuid=record.uuid,
                memory_mb=record.memory,
                cpus=record.cpus,
                cpu=domain_cpu(ctx.hosts.config(host).cpu_mode, record.cpu_model),
                domain_type=ctx.hosts.config(host).domain_type,
                disks=disks,
                nics=nic_specs(ctx, record, host),
                metadata=CometMetadata(cluster=record.cluster, vm=record.name),
                # A random password for each start: no one uses it, but QEMU lets
                # the console change a display's password live only if it has one.
                vnc_password=secrets.token_urlsafe(6),
            )
            await net_up.for_vm(ctx, record, host)
            async with op.step(Step.DEFINE_DOMAIN, host=host, domain=record.domain_name):
                await ctx.libvirt.define(host, spec)
            if placed_now:
                undo.append(lambda: ctx.libvirt.undefine(host, record.domain_name))
            async with op.step(Step.START_DOMAIN, host=host, domain=record.domain_name):
                await ctx.libvirt.start(host, record.domain_name)
        except BaseException as e:
            for step in reversed(undo):
                try:
                    await step()
                except Exception:
                    log.failure("undoing a failed start of VM {vm}", vm=record.name)
            if placed_now:
                await ctx.vms.set_host(record.uuid, None)
            await net_down.for_vm(ctx, record, host)
            if isinstance(e, CometError):
                e.reason = f"starting VM {record.name!r} on {host!r} failed: {e.reason}"
            raise


def nic_specs(ctx: Context, record: VMRecord, host: str) -> tuple[NicSpec, ...]:
    """
    The VM's NICs on C{host}'s bridges (placement chose a host that offers
    them), each as a hot-plug makes it (L{nic_attach.nic_spec}: a private
    one with the network's MTU).
    """
    return tuple(nic_attach.nic_spec(ctx, record, nic, host) for nic in record.nics)


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    domain = f"{COMET_DOMAIN_PREFIX}{uuid}"
    hosts = step_hosts(steps)
    if record is None:
        removed = [h for h in hosts if await remove_domain(ctx, h, domain)]
        return "the VM no longer exists" + (
            f"; its domain was removed from {', '.join(removed)}" if removed else "")
    placed_now = any(s.step == Step.PLACE.value for s in steps)
    if record.host is None:
        removed = [h for h in hosts if await remove_domain(ctx, h, domain)]
        await ctx.disks.detach(record, None)
        await ctx.disks.forget_secrets(record, hosts)
        return "the start was undone" + (
            f" (domain removed from {', '.join(removed)})" if removed else "")
    state = await domain_state(ctx, record.host, domain)
    if state in ACTIVE:
        return f"VM {record.name!r} was found {state} on {record.host}: the start had completed"
    if placed_now:
        await unplace(ctx, record)
        await net_down.for_vm(ctx, record, record.host)
        await ctx.disks.forget_secrets(record, hosts)
        return (f"the start of VM {record.name!r} was undone: domain undefined, disks"
                f" unexported, placement on {record.host} released")
    await ctx.disks.detach(record, record.host)
    return (f"the start of VM {record.name!r} was undone: disks unexported; it stays"
            f" shut off on {record.host}")


OPERATION = OperationType(kinds=("vm.start", "cluster.start"), steps=Step, repair=repair)
