"""
Volume delete (C{volume.delete}, object C{<pool>/<name>}): destroy the
zvol (forced: first the unrecorded snapshots' clones found hanging on it),
forget its record, then destroy the base snapshot it was cloned from (a VM
disk kept after its VM).  The checks (mapped, a VM's disk, what hangs on
it) are L{comet.model.storage.volumes.Volumes.delete_volume}'s, before.

Repair: finished (zvol destroyed, record forgotten, origin snapshot
destroyed; forced: the unrecorded clones it found and the zvol's snapshots
too).  A plain one ZFS refuses (snapshots, clones) is reported and left,
as its live 409 left it.
"""

from __future__ import annotations

import enum
import re
from typing import Awaitable, Callable, Sequence

from twisted.logger import Logger

from comet.errors import CometError, Conflict, NotFound
from comet.model.operations.context import Context, OperationType
from comet.model.storage.servers import destroy_all
from comet.store import IntentRecord

log = Logger()

KIND = "volume.delete"


class Step(enum.Enum):
    #: (Forced only, when unrecorded clones hang on it.)
    DESTROY_LEFTOVERS = "destroy leftovers"
    DESTROY_ZVOL = "destroy zvol"
    #: (A recorded volume only.)
    FORGET_RECORD = "forget record"
    #: (A volume cloned from a base volume's snapshot only: a VM's disk kept.)
    DESTROY_ORIGIN = "destroy origin"


async def run(op, records, zfs, pool, name: str, record, clones: list[str], force: bool,
              explain: Callable[[], Awaitable]) -> None:
    """
    Destroy volume C{name} of C{pool} under intent C{op}.

    @param records: the L{comet.store.Storage} tables.
    @param zfs: the ZFS adapter of C{pool}'s server.
    @param record: its record, or C{None} (a zvol Comet did not record).
    @param clones: the unrecorded clones to destroy first (forced), dependents first.
    @param explain: raises the L{Conflict} saying what hangs on the zvol
        (called when ZFS refuses a plain destroy).
    """
    zvol = f"{pool.dataset}/{name}"
    if clones:
        async with op.step(Step.DESTROY_LEFTOVERS, server=pool.server, zvol=zvol,
                           clones=clones, force=True):
            await destroy_all(zfs, clones)
    async with op.step(Step.DESTROY_ZVOL, server=pool.server, zvol=zvol, force=force):
        try:
            await zfs.destroy(zvol, recursive=force)
        except NotFound:
            if record is None:
                raise NotFound(
                    f"volume {name!r} does not exist in storage pool {pool.name!r}"
                ) from None
        except Conflict:
            if not force:
                # Say what hangs on it, and how to clear it.
                await explain()
            raise
    if record is None:
        return
    # The origin is in the intent before the record that names it goes: a
    # crash between the two steps still leaves the repair knowing it.
    async with op.step(Step.FORGET_RECORD, server=pool.server, zvol=zvol,
                       snapshot=record.origin):
        await records.delete_volume(pool.name, name)
    if record.origin:
        # The snapshot of a base volume this disk was cloned from.
        async with op.step(Step.DESTROY_ORIGIN, server=pool.server, snapshot=record.origin):
            try:
                await zfs.destroy(record.origin)
            except NotFound:
                pass
            except CometError:
                log.failure("destroying {snapshot}", snapshot=record.origin)


async def repair(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
    pool, name = obj.split("/", 1)
    server = next(s.detail["server"] for s in steps if s.detail.get("server"))
    zfs = ctx.storage.server(server).zfs
    zvol = next(s.detail["zvol"] for s in steps if s.detail.get("zvol"))
    # A forced delete: the unrecorded clones it had found, then the zvol with its snapshots.
    force = any(s.detail.get("force") for s in steps)
    await destroy_all(zfs, [c for s in steps for c in s.detail.get("clones", [])])
    try:
        await zfs.destroy(zvol, recursive=force)
    except NotFound:
        pass
    except Conflict as e:
        if force or not re.search(r"has children|dependent clones", e.reason):
            raise
        # As the live delete answered: 409, the volume and its record stay.
        return f"{zvol} on {server} was not destroyed ({e.reason}): the volume stays"
    records = ctx.storage.records
    record = await records.volume(pool, name)
    origins = [s.detail["snapshot"] for s in steps if s.detail.get("snapshot")]
    if record is not None:
        await records.delete_volume(pool, name)
        origins = [record.origin] if record.origin else []
    for origin in origins:
        try:
            await zfs.destroy(origin)
        except NotFound:
            pass
    return f"the delete of {zvol} on {server} was finished"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
