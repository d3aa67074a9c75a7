"""
VM migrate (C{vm.migrate}): a running or paused VM moved live to another
host.  Its disks are admitted to the destination first (the tgt targets let
the destination's initiator in, its libvirt gets the CHAP secrets), then
libvirt migrates the domain (live, its definition moved with it, the pause
for the last copy bounded; cancelled after a timeout, the guest going on at
the source), then the placement and the exports' records move to the
destination, and last the source's admission is withdrawn.

Repair (and a migration that failed in a way it cannot be sure of): which
host won is read from both hosts (L{settle}).  The domain active on the
destination and not on the source, or running there while the source still
holds it paused (libvirt resumes the destination only once the copy is
complete), means the migration happened: it is finished (placement and
exports recorded to the destination, the source's leftover domain removed,
its admission withdrawn).  Otherwise the guest is still at the source: the
destination's domain (an incoming one libvirt did not finish) is removed,
its admission withdrawn, and a guest the migration left paused at the source
is resumed if it ran before.  Both hosts holding it active otherwise (libvirt
still settling an interrupted migration) is left for a later pass.
"""

from __future__ import annotations

import enum
from typing import Awaitable, Callable, Sequence

from twisted.internet.task import deferLater
from twisted.logger import Logger

from comet.errors import CometError, Conflict
from comet.model.operations import net_down, net_up
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import ACTIVE, domain_state, remove_domain, vm_record
from comet.store import IntentRecord, VMRecord
from comet.virt import MigrationProgress

log = Logger()

KIND = "vm.migrate"

#: Seconds between two reads of a migration's progress.
POLL_INTERVAL = 0.5
#: Seconds the libvirt call may run past the migration timeout (the job is
#: cancelled at the timeout; cancelling takes a moment).
ABORT_GRACE = 60.0


class Step(enum.Enum):
    EXPORT_TO_DESTINATION = "export to destination"
    MIGRATE = "migrate"
    MOVE_PLACEMENT = "move placement"
    WITHDRAW_FROM_SOURCE = "withdraw from source"


Progress = Callable[[MigrationProgress], Awaitable[None]]


async def run(ctx: Context, record: VMRecord, dest: str, state: str, timeout: float,
              max_downtime_ms: int, progress: Progress | None = None) -> str:
    """
    L{_run}, with the VM's private network set up on C{dest} first (claimed
    there while the VM moves) and torn down afterwards from whichever of the
    two hosts no longer needs it; not when the migration is left for the
    reconciler (which host runs the VM is unknown: its sweep settles both).
    """
    vni = net_up.private_vni(record) if ctx.networks is not None else None
    if vni is None:
        return await _run(ctx, record, dest, state, timeout, max_downtime_ms, progress)
    ctx.networks.claim(dest, vni)
    try:
        await net_up.run(ctx, dest, vni)
        return await _run(ctx, record, dest, state, timeout, max_downtime_ms, progress)
    finally:
        ctx.networks.unclaim(dest, vni)
        if record.uuid not in ctx.intents.pending:
            await net_down.for_vm(ctx, record, record.host, dest)


async def _run(ctx: Context, record: VMRecord, dest: str, state: str, timeout: float,
               max_downtime_ms: int, progress: Progress | None = None) -> str:
    """
    Migrate VM C{record} (running or paused, C{state}) from its host to
    C{dest}; what happened, one sentence.  A migration that fails leaves
    the VM where it runs (normally the source: the destination's admission
    is withdrawn) and raises.

    @param timeout: seconds the migration may take before it is cancelled.
    @param progress: called with each reading of libvirt's job.
    """
    source, domain = record.host, record.domain_name
    detail = {"host": source, "to": dest, "domain": domain, "state": state}
    began = ctx.clock.seconds()
    async with ctx.intents.operation(KIND, record.uuid) as op:
        try:
            async with op.step(Step.EXPORT_TO_DESTINATION, **detail):
                await ctx.disks.admit(record, dest)
            async with op.step(Step.MIGRATE, **detail):
                await _migrate(ctx, source, dest, domain, timeout, max_downtime_ms, progress)
        except BaseException as e:
            if op.halted:
                raise
            try:
                winner, what = await settle(ctx, record, source, dest, state)
            except CometError as unsure:
                log.warn("the failed migration of VM {vm} is left for the reconciler: {why}",
                         vm=record.name, why=unsure.reason)
                op.leave_for_repair()
                raise e
            if winner != dest:
                if isinstance(e, CometError):
                    e.reason = (f"migrating VM {record.name!r} from {source!r} to {dest!r}"
                                f" failed: {e.reason}; {what}")
                raise
            log.warn("migrating VM {vm} reported {error}, yet it runs on {dest}: {what}",
                     vm=record.name, error=e, dest=dest, what=what)
            return f"VM {record.name!r} migrated from {source!r} to {dest!r} ({what})"
        try:
            async with op.step(Step.MOVE_PLACEMENT, **detail):
                await ctx.vms.set_host(record.uuid, dest)
                await ctx.disks.hand_over(record, source, dest)
            async with op.step(Step.WITHDRAW_FROM_SOURCE, **detail):
                await ctx.disks.withdraw(record, source, keep=dest)
        except CometError as e:
            if op.halted:
                raise
            # The guest runs on the destination: never undone.  The records
            # and the source's admission are the reconciler's to finish
            # (meanwhile it leaves both hosts' domains alone).
            op.leave_for_repair()
            return (f"VM {record.name!r} migrated from {source!r} to {dest!r}; recording the"
                    f" move or withdrawing its disks from {source!r} failed ({e.reason}):"
                    " the reconciler finishes it")
    seconds = ctx.clock.seconds() - began
    return f"VM {record.name!r} migrated from {source!r} to {dest!r} in {seconds:.1f} s"


async def _migrate(ctx: Context, source: str, dest: str, domain: str, timeout: float,
                   max_downtime_ms: int, progress: Progress | None) -> None:
    """
    The libvirt migration, its job read every L{POLL_INTERVAL} seconds for
    C{progress} and cancelled once C{timeout} seconds have passed.
    """
    migration = ctx.libvirt.migrate(source, dest, domain, max_downtime_ms,
                                    timeout + ABORT_GRACE)
    deadline = ctx.clock.seconds() + timeout
    cancelled = False
    while not migration.called:
        await deferLater(ctx.clock, POLL_INTERVAL, lambda: None)
        if migration.called:
            break
        if not cancelled and ctx.clock.seconds() >= deadline:
            cancelled = True
            try:
                await ctx.hypervisors.abort_migration(source, domain)
            except CometError as e:
                log.warn("cancelling the migration of {domain} failed: {why}",
                         domain=domain, why=e.reason)
            continue
        try:
            reading = await ctx.hypervisors.migration_progress(source, domain)
        except CometError:
            continue   # between two phases, or the source is busy: next time
        if reading is not None and progress is not None:
            await progress(reading)
    try:
        await migration
    except CometError as e:
        if cancelled:
            raise Conflict(f"the migration did not complete within {timeout:g} s and was"
                           f" cancelled ({e.reason})") from None
        raise


async def settle(ctx: Context, record: VMRecord, source: str, dest: str,
                 state: str) -> tuple[str, str]:
    """
    Make the VM's record, domains and exports agree with the host it runs
    on, read live on both: C{(winner, what was done)}.  C{state} is what the
    VM was (C{running}, C{paused}) before the migration.

    @raise CometError: a host does not answer, or both still hold the
        domain active (libvirt settling an interrupted migration): try later.
    """
    domain = record.domain_name
    at_source = await domain_state(ctx, source, domain)
    at_dest = await domain_state(ctx, dest, domain)
    if at_dest in ACTIVE and at_source in ACTIVE:
        if at_dest == "running" and at_source == "paused":
            winner = dest
        elif at_dest == "paused" and at_source == "running":
            winner = source
        else:
            raise Conflict(f"VM {record.name!r} is {at_source} on {source} and {at_dest} on"
                           f" {dest}: the migration is not settled yet")
    elif at_dest in ACTIVE or (at_dest is not None and at_source is None):
        winner = dest
    else:
        winner = source
    loser = dest if winner == source else source
    removed = await remove_domain(ctx, loser, domain)
    if record.host != winner:
        await ctx.vms.set_host(record.uuid, winner)
    await ctx.disks.hand_over(record, loser, winner)
    await ctx.disks.withdraw(record, loser, keep=winner)
    what = [f"it runs on {winner}" if winner == dest else f"it stays on {winner}"]
    if removed:
        what.append(f"its domain on {loser} was removed")
    if winner == source and at_source == "paused" and state == "running":
        await ctx.hypervisors.resume(source, domain)
        what.append("it was resumed there")
    what.append(f"its disks are exported to {winner} alone")
    return winner, ", ".join(what)


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    record = await vm_record(ctx, uuid)
    if record is None:
        return "the VM no longer exists"
    detail = steps[0].detail
    source, dest = detail["host"], detail["to"]
    winner, what = await settle(ctx, record, source, dest, detail.get("state", "running"))
    done = "had completed" if winner == dest else "did not happen"
    return f"the migration of VM {record.name!r} from {source} to {dest} {done}: {what}"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
