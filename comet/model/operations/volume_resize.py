"""
Volume resize (C{volume.resize}, object C{<pool>/<name>}): grow the zvol
(C{zfs set volsize}), then write its new size into its record.  The checks
(Comet's volume, not mapped, only growing) are
L{comet.model.storage.volumes.Volumes.resize_volume}'s, before.

Repair: the record takes the size the zvol has (ZFS is the truth: the
C{zfs set} either happened or did not).
"""

from __future__ import annotations

import enum
from typing import Sequence

from comet.errors import NotFound
from comet.model.operations.context import Context, OperationType
from comet.store import IntentRecord

KIND = "volume.resize"


class Step(enum.Enum):
    SET_VOLSIZE = "set volsize"


async def run(op, records, zfs, pool, name: str, size: int):
    """Grow volume C{name} of C{pool} to C{size} bytes under intent C{op}; the zvol after."""
    zvol = f"{pool.dataset}/{name}"
    async with op.step(Step.SET_VOLSIZE, server=pool.server, zvol=zvol, size=size):
        live = await zfs.resize(zvol, size)
        await records.update_volume(pool.name, name, capacity=live.size)
    return live


async def repair(ctx: Context, obj: str, steps: Sequence[IntentRecord]) -> str:
    pool, name = obj.split("/", 1)
    detail = steps[-1].detail
    zfs = ctx.storage.server(detail["server"]).zfs
    try:
        live = await zfs.get_volume(detail["zvol"])
    except NotFound:
        return f"{detail['zvol']} is gone: nothing to record"
    if await ctx.storage.records.volume(pool, name) is not None:
        await ctx.storage.records.update_volume(pool, name, capacity=live.size)
    return f"the record of {detail['zvol']} on {detail['server']} has its size, {live.size} bytes"


OPERATION = OperationType(kinds=(KIND,), steps=Step, repair=repair)
