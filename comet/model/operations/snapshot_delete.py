"""
Snapshot delete (C{snapshot.delete}, object the VM's uuid): the ZFS
snapshot of each of the VM's volumes destroyed, then the branches that hold
no snapshot any more, then the snapshot's record.  The checks (a snapshot a
revert branched from is a 409), the tidying before and the VM's lock are
L{comet.model.storage.snapshots.VMSnapshotModel.delete}'s.

Repair: finished (the ZFS snapshots left destroyed, found by the steps
written and by the record, then the branches with no snapshot left, the
record forgotten).
"""

from __future__ import annotations

import enum
import json
from typing import Sequence

from comet.errors import Conflict, NotFound
from comet.model.operations.context import Context, OperationType
from comet.model.storage.names import zfs_snapname
from comet.store import IntentRecord

KIND = "snapshot.delete"


class Step(enum.Enum):
    #: (One a ZFS snapshot.)
    DESTROY = "destroy"
    DROP_BRANCHES = "drop branches"
    FORGET_RECORD = "forget record"


async def volumes_of(records, snapshot_record) -> list:
    """
    The records of the volumes snapshot C{snapshot_record} lists (those
    still recorded in the C{volumes} table C{records}).
    """
    result = []
    for item in json.loads(snapshot_record.volumes):
        pool, volume = item.split("/", 1)
        record = await records.volume(pool, volume)
        if record is not None:
            result.append(record)
    return result


async def locate(pools, volume, snapname: str) -> str | None:
    """
    The zvol of C{volume}'s family (itself, or a branch a revert set
    aside: C{<name>-old-<hex>}) that holds snapshot C{snapname}.

    @param pools: the L{comet.model.storage.pools.Pools}.
    """
    pool = await pools.pool(volume.pool)
    zfs = pools.zfs(pool)
    family = [volume.zvol] + [
        v.name for v in await zfs.list_volumes(pool.dataset)
        if v.short_name.startswith(f"{volume.name}-old-")
    ]
    for zvol in family:
        if snapname in [s.snapname for s in await zfs.list_snapshots(zvol)]:
            return zvol
    return None


async def run(op, servers, branches, snapshots, uuid: str, snapshot: str, plan, volumes) -> None:
    """
    Delete snapshot C{snapshot} of VM C{uuid} under intent C{op}.

    @param servers: the L{comet.model.storage.servers.Servers}.
    @param branches: the L{comet.model.storage.branches.Branches}.
    @param snapshots: the C{vm_snapshots} table.
    @param plan: (server, ZFS snapshot, pool/volume) for each ZFS snapshot to destroy.
    @param volumes: (record, pool, zfs) for each of the snapshot's volumes.
    """
    for server, zfs_snapshot, key in plan:
        async with op.step(Step.DESTROY, name=snapshot, server=server,
                           snapshot=zfs_snapshot, volume=key):
            await servers.server(server).zfs.destroy(zfs_snapshot)
    async with op.step(Step.DROP_BRANCHES, name=snapshot,
                       volumes=[f"{v.pool}/{v.name}" for v, _, _ in volumes]):
        for volume, pool, zfs in volumes:
            await branches.drop_empty(zfs, pool, volume)
    async with op.step(Step.FORGET_RECORD, name=snapshot):
        await snapshots.delete(uuid, snapshot)


async def repair(ctx: Context, uuid: str, steps: Sequence[IntentRecord]) -> str:
    storage = ctx.storage
    name = steps[0].detail["name"]
    destroyed, kept = [], []
    targets = [(s.detail["server"], s.detail["snapshot"]) for s in steps
               if s.step == Step.DESTROY.value]
    try:
        record = await storage.snapshots.get(uuid, name)
    except NotFound:
        record = None
    if record is not None:
        # The steps written are not all of them: find what is left by the record.
        for volume in await volumes_of(storage.records, record):
            holder = await locate(storage.pool_set, volume, zfs_snapname(name))
            if holder is not None:
                pool = await storage.pool(volume.pool)
                targets.append((pool.server, f"{holder}@{zfs_snapname(name)}"))
    for server, snapshot in dict.fromkeys(targets):
        zfs = storage.server(server).zfs
        try:
            await zfs.destroy(snapshot)
            destroyed.append(snapshot)
        except NotFound:
            pass
        except Conflict as e:
            kept.append(f"{snapshot} ({e.reason})")
    # The branches whose last snapshot went (as the run's "drop branches" step).
    volumes = {v for s in steps for v in s.detail.get("volumes", [])}
    volumes |= {s.detail["volume"] for s in steps if s.detail.get("volume")}
    if record is not None:
        volumes |= {f"{v.pool}/{v.name}" for v in await volumes_of(storage.records, record)}
    for key in sorted(volumes):
        volume = await storage.records.volume(*key.split("/", 1))
        if volume is not None:
            pool = await storage.pool(volume.pool)
            destroyed += await storage.branches.drop_empty(
                storage.server(pool.server).zfs, pool, volume)
    if record is not None:
        await storage.snapshots.delete(uuid, name)
    text = (f"the delete of snapshot {name!r} was finished; destroyed:"
            f" {', '.join(destroyed) or 'nothing more'}")
    if kept:
        text += f"; could not destroy: {', '.join(kept)}"
    return text


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
