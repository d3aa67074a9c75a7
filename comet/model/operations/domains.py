"""
A VM's placement and its domain: the pieces the VM operations (start, stop,
delete), their repairs and the reconciler's look for leftovers share, and
whether a domain holds a disk (attach, unmap and the VM storage model).
"""

from __future__ import annotations

from typing import Sequence

from twisted.internet.task import deferLater

from comet.errors import Conflict, NotFound
from comet.model.disk_modes import LOCAL
from comet.model.events import or_silent
from comet.model.nics import networks_of
from comet.model.operations.context import Context
from comet.model.placement import choose_host
from comet.store import IntentRecord, VMRecord

#: The domain states in which a domain runs (destroy it before undefining it).
ACTIVE = ("running", "paused", "other")


async def place(ctx: Context, record: VMRecord) -> VMRecord:
    """
    Choose a host for C{record} and record the placement.  A placed VM's
    memory counts as committed on its host from that moment (see
    L{comet.model.hosts.HostModel}), and choices are made one at a time, so
    concurrent starts (a cluster start) never give the same free memory to
    two VMs.  The hosts' figures are asked for before the lock, so the
    starts queued behind it share one read of them (L{HostModel.figures});
    the commitments are read under it.
    """
    figures = ctx.hosts.figures()
    async with ctx.placing:
        candidates = await ctx.hosts.candidates(figures, record.cpu_model)
        if record.disk_mode == LOCAL:
            candidates = [c for c in candidates if ctx.hosts.config(c.name).local_dataset]
            if not candidates:
                raise Conflict(
                    f"VM {record.name!r} runs its disks locally (disk_mode local), and no"
                    " available host has a local_dataset for them")
        host = choose_host(candidates, record.memory, record.cpus, networks_of(record.nics),
                           record.cpu_model)
        return await ctx.vms.set_host(record.uuid, host)


async def unplace(ctx: Context, record: VMRecord) -> None:
    """Undefine a shut-off VM's domain, unexport its disks, release the placement."""
    try:
        await ctx.libvirt.undefine(record.host, record.domain_name)
    except NotFound:
        pass
    await ctx.disks.detach(record, record.host)
    await ctx.vms.set_host(record.uuid, None)
    # No libvirt event says it (an undefine is not a state): watchers of
    # the VM's host (C{comet vm list --watch}) learn it here.
    or_silent(ctx.events).emit("vm.changed", {"cluster": record.cluster, "name": record.name},
                               host=None)


async def vm_record(ctx: Context, uuid: str) -> VMRecord | None:
    """The VM's record now, C{None} if there is none."""
    try:
        return await ctx.vms.by_uuid(uuid)
    except NotFound:
        return None


async def domain_state(ctx: Context, host: str, domain: str) -> str | None:
    """The domain's state read live, C{None} if it does not exist; L{Unavailable} passes."""
    try:
        return await ctx.hypervisors.domain_state(host, domain)
    except NotFound:
        return None


async def remove_domain(ctx: Context, host: str, domain: str) -> bool:
    """Destroy (if it runs) and undefine C{domain} on C{host}; whether it was there."""
    state = await domain_state(ctx, host, domain)
    if state is None:
        return False
    if state in ACTIVE:
        await ctx.hypervisors.destroy(host, domain)
    try:
        await ctx.hypervisors.undefine(host, domain)
    except NotFound:
        pass
    return True


def step_hosts(steps: Sequence[IntentRecord]) -> list[str]:
    """The hosts an operation's steps name."""
    return sorted({s.detail["host"] for s in steps if s.detail.get("host")})


#: Seconds a guest has to release a disk detached while it runs.
UNPLUG_TIMEOUT = 30.0
#: Seconds between two looks at whether it did.
UNPLUG_POLL = 0.5


async def has_disk(hypervisors, host: str, domain: str, dev: str) -> bool:
    """Whether C{domain} on C{host} has disk C{dev} now (no such domain: it has none)."""
    try:
        description = await hypervisors.describe(host, domain)
    except NotFound:
        return False
    return dev in [d.target for d in description.spec.disks]


async def wait_released(hypervisors, clock, host: str, domain: str, dev: str, who: str) -> None:
    """
    Wait until C{domain} on C{host} no longer has disk C{dev}.  Libvirt
    answers a live detach once the guest released the disk or after 5 s,
    whichever comes first; a guest slower than that (TCG, a busy one) still
    holds it.  Its target must outlive that: once deleted, the volume can be
    exported again under the same name and CHAP account, and the old QEMU
    would reconnect to it.  Still there after L{UNPLUG_TIMEOUT} seconds:
    L{Conflict} (C{who} says what did not happen), the volume stays attached
    (and its domain definition without it: a retry detaches again).
    Used by a live unmap and by the reconciler finishing one.
    """
    deadline = clock.seconds() + UNPLUG_TIMEOUT
    while True:
        if not await has_disk(hypervisors, host, domain, dev):
            return
        if clock.seconds() >= deadline:
            raise Conflict(f"{who} within {UNPLUG_TIMEOUT:g} s; it stays attached."
                           " Try again (the guest must accept the unplug)")
        await deferLater(clock, UNPLUG_POLL, lambda: None)
