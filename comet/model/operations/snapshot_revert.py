"""
Snapshot revert (C{snapshot.revert}, object the VM's uuid): every volume of
the snapshot brought back to it, by C{zfs rollback} (to a volume's newest
snapshot) or by a branch (L{comet.model.storage.branches.branch}: to an
older one, or one on a branch set aside by an earlier revert); a volume
exported to a host is unexported first and exported again after; then the
snapshot is made current.  The checks (the VM must not be running; every
snapshot located first), the plan and the VM's lock are
L{comet.model.storage.snapshots.VMSnapshotModel.revert}'s.

Repair: finished, since a rollback cannot be undone: each volume rolled
back or branched (resuming a branch where it stopped), re-exported to the
host it was exported to, the snapshot made current.
"""

from __future__ import annotations

import enum
from typing import Sequence

from comet.errors import NotFound
from comet.model.operations.context import Context, OperationType
from comet.model.operations.domains import vm_record
from comet.model.storage.branches import branch
from comet.model.storage.servers import undo
from comet.store import IntentRecord

KIND = "snapshot.revert"


class Step(enum.Enum):
    #: The whole plan, written first.
    PLAN = "plan"
    #: (Each of these, one a volume.)
    UNEXPORT = "unexport"
    ROLLBACK = "rollback"
    BRANCH = "branch"
    EXPORT = "export"
    SET_CURRENT = "set current"


async def run(op, exports, records, snapshots, uuid: str, snapshot: str, plan, steps) -> None:
    """
    Revert VM C{uuid} to snapshot C{snapshot} under intent C{op}.

    @param exports: the L{comet.model.storage.exports.Exports}.
    @param records: the C{volumes} table.
    @param snapshots: the C{vm_snapshots} table.
    @param plan: (record, pool, zfs, holder, newer) for each volume.
    @param steps: for each volume of C{plan}, what the C{plan} step writes
        (volume, server, host, rollback, source, token).
    """
    # The whole plan first: a crash before a volume's own step still
    # leaves the reconciler knowing what to finish.
    async with op.step(Step.PLAN, name=snapshot, volumes=steps):
        pass
    for (volume, pool, zfs, holder, newer), step in zip(plan, steps):
        key, host = step["volume"], step["host"]
        if host is not None:
            async with op.step(Step.UNEXPORT, name=snapshot, volume=key, host=host):
                await exports.unexport(volume)
        try:
            if step["rollback"]:
                async with op.step(Step.ROLLBACK, name=snapshot, volume=key):
                    await zfs.rollback(step["rollback"])
            else:
                async with op.step(Step.BRANCH, name=snapshot, volume=key):
                    await branch(zfs, pool.dataset, volume.name, step["source"],
                                 step["token"], undo)
        finally:
            if host is not None:
                async with op.step(Step.EXPORT, name=snapshot, volume=key, host=host):
                    current = await records.volume(volume.pool, volume.name)
                    await exports.export(pool, current, host)
    async with op.step(Step.SET_CURRENT, name=snapshot):
        await snapshots.set_current(uuid, snapshot)


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    name = steps[0].detail["name"]
    plan = next((s.detail["volumes"] for s in steps if s.step == Step.PLAN.value), [])
    storage = ctx.storage
    vm = await vm_record(ctx, uuid)
    done = []
    for item in plan:
        pool_name, volume_name = item["volume"].split("/", 1)
        record = await storage.records.volume(pool_name, volume_name)
        if record is None:
            continue
        if record.target or record.exported_to:
            # As the revert itself does: no target serves a volume changing under it.
            await storage.exporter.unexport(record)
        zfs = storage.server(item["server"]).zfs
        if item["rollback"]:
            # Again if it had run: nothing wrote to the volume since (the VM is off).
            await zfs.rollback(item["rollback"])
            done.append(f"{item['volume']} rolled back")
        else:
            pool = await storage.pool(pool_name)
            done.append(await branch(zfs, pool.dataset, volume_name, item["source"],
                                     item["token"]))
    for item in plan:
        pool_name, volume_name = item["volume"].split("/", 1)
        record = await storage.records.volume(pool_name, volume_name)
        host = item["host"]
        if (host is None or record is None or record.target or vm is None
                or vm.host != host or record.vm_uuid != uuid):
            continue
        await storage.exporter.export(await storage.pool(pool_name), record, host)
        done.append(f"{item['volume']} exported to {host} again")
    try:
        await storage.snapshots.set_current(uuid, name)
    except NotFound:
        pass
    return (f"the revert to snapshot {name!r} was finished"
            + (f": {'; '.join(done)}" if done else ""))


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
