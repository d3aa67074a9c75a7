"""
Snapshot take (C{snapshot}, object the VM's uuid): one ZFS snapshot of
each of the VM's volumes, in one C{zfs snapshot} command per storage server
(atomic there) after a C{sync} on it, then the snapshot's record.  The
checks and the VM's lock are L{comet.model.storage.snapshots.VMSnapshotModel.create}'s.

Repair: a recorded snapshot is kept; otherwise the ZFS snapshots it took
are destroyed.
"""

from __future__ import annotations

import enum
import json
from typing import Sequence

from comet.errors import NotFound
from comet.model.operations.context import Context, OperationType
from comet.model.storage.names import zfs_snapname
from comet.model.storage.servers import undo
from comet.store import IntentRecord

KIND = "snapshot"


class Step(enum.Enum):
    #: (One a storage server.)
    TAKE = "take"
    RECORD = "record"


async def run(op, servers, snapshots, clock, uuid: str, snapshot: str, records,
              by_server: dict[str, list[str]]):
    """
    Take snapshot C{snapshot} of VM C{uuid} under intent C{op}; a failure
    destroys the ZFS snapshots taken.

    @param servers: the L{comet.model.storage.servers.Servers}.
    @param snapshots: the C{vm_snapshots} table.
    @param records: the records of the VM's volumes.
    @param by_server: storage server -> the zvols of C{records} on it.
    @return: the snapshot's record.
    """
    done: list[tuple[str, list[str]]] = []
    try:
        for server, zvols in by_server.items():
            zfs = servers.server(server).zfs
            taken = [f"{z}@{zfs_snapname(snapshot)}" for z in zvols]
            async with op.step(Step.TAKE, name=snapshot, server=server, snapshots=taken):
                await zfs.sync()
                await zfs.snapshot(zvols, zfs_snapname(snapshot))
            done.append((server, zvols))
        volumes = json.dumps([f"{r.pool}/{r.name}" for r in records])
        async with op.step(Step.RECORD, name=snapshot):
            return await snapshots.add(uuid, snapshot, volumes, int(clock.seconds()))
    except BaseException:
        for server, zvols in done:
            zfs = servers.server(server).zfs
            for zvol in zvols:
                await undo(zfs.destroy(f"{zvol}@{zfs_snapname(snapshot)}"),
                           f"destroying {zvol}@{zfs_snapname(snapshot)}")
        raise


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    name = steps[0].detail["name"]
    try:
        await ctx.storage.snapshots.get(uuid, name)
        return f"snapshot {name!r} was complete and recorded: kept"
    except NotFound:
        pass
    destroyed = []
    for step in steps:
        if step.step != Step.TAKE.value:
            continue
        zfs = ctx.storage.server(step.detail["server"]).zfs
        for snapshot in step.detail["snapshots"]:
            try:
                await zfs.destroy(snapshot)
                destroyed.append(snapshot)
            except NotFound:
                pass
    return f"snapshot {name!r} was not recorded; destroyed: {', '.join(destroyed) or 'nothing'}"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
