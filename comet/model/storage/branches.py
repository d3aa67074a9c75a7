"""
What reverts leave on a volume: a revert to an older snapshot sets the
current data aside as a branch (C{<name>-old-<hex>}, keeping the newer
snapshots) and makes a clone the volume (L{branch}).  This module makes
branches, finds them, drops those no snapshot needs any more, and takes a
VM's snapshots (and every branch) off a volume that leaves the VM.
"""

from __future__ import annotations

import re

from comet.errors import NotFound
from comet.model.storage.names import zfs_snapname
from comet.model.storage.servers import destroy_all


async def branch(zfs, dataset: str, name: str, source: str, token: str, undo=None) -> str:
    """
    Make volume C{dataset/name} hold the data of snapshot C{source}: clone
    it as C{<name>-rv-<token>}, promote the clone, set the current data aside
    as C{<name>-old-<token>} and rename the clone to C{name}.

    Resumable: with C{undo=None} (the reconciler finishing a revert a crash
    cut short) it first looks at which of those names exist and carries on
    from there.  With C{undo} (a live revert), a failure puts things back.

    @return: what it did, for the reconciler's report.
    """
    zvol = f"{dataset}/{name}"
    fresh = f"{dataset}/{name}-rv-{token}"
    old = f"{dataset}/{name}-old-{token}"
    if undo is None:
        has_zvol, has_fresh, has_old = [await zfs.exists(n) for n in (zvol, fresh, old)]
        if has_old and has_zvol and not has_fresh:
            return f"{zvol} already held the data of {source}"
        if has_old and has_fresh and not has_zvol:
            await zfs.rename(fresh, zvol)
            return f"{fresh} renamed to {zvol}"
        if has_fresh:
            origin = (await zfs.get_properties(fresh, ["origin"]))["origin"]
            if origin not in (None, "-", ""):
                await zfs.promote(fresh)
        else:
            await zfs.clone(source, dataset, f"{name}-rv-{token}")
            await zfs.promote(fresh)
        await zfs.rename(zvol, old)
        await zfs.rename(fresh, zvol)
        return f"{zvol} now holds the data of {source} (the former data is {old})"
    await zfs.clone(source, dataset, f"{name}-rv-{token}")
    try:
        await zfs.promote(fresh)
    except BaseException:
        await undo(zfs.destroy(fresh), f"destroying {fresh}")
        raise
    await zfs.rename(zvol, old)
    try:
        await zfs.rename(fresh, zvol)
    except BaseException:
        await undo(zfs.rename(old, zvol), f"renaming back {zvol}")
        raise
    return f"{zvol} now holds the data of {source} (the former data is {old})"


class Branches:
    """
    @param store: the L{comet.store.Storage} tables.
    @param pools: the L{comet.model.storage.pools.Pools}.
    @param snapshots: the C{vm_snapshots} table (L{comet.store.Snapshots}), or C{None}.
    """

    def __init__(self, store, pools, snapshots=None):
        self._store = store
        self._pools = pools
        self._snapshots = snapshots

    async def of(self, zfs, pool, record) -> list[str]:
        """
        The zvols reverts of volume C{record} set aside or left half made
        (C{<name>-old-<hex>}, C{<name>-rv-<hex>}, see L{branch}): unrecorded
        zvols of its pool by those names.
        """
        pattern = re.compile(rf"{re.escape(record.name)}-(?:old|rv)-[0-9a-f]+")
        found = []
        for volume in await zfs.list_volumes(pool.dataset):
            if (pattern.fullmatch(volume.short_name)
                    and await self._store.volume(pool.name, volume.short_name) is None):
                found.append(volume.name)
        return found

    async def destroy_family(self, zfs, pool, record) -> None:
        """
        Destroy a VM disk with its snapshots and the branches reverts set
        aside (C{<name>-old-*}, C{<name>-rv-*}), clones before their origins.
        """
        await destroy_all(zfs, [record.zvol] + await self.of(zfs, pool, record))

    async def _unbranch(self, zfs, record, branches: list[str]) -> list[str]:
        """
        Make volume C{record}'s current data depend on none of its
        C{branches}: after a revert to an older snapshot it is a clone of
        one (or of a snapshot on one), so C{zfs promote} it until its origin
        (if any) is outside the family.  Its data is unchanged.  One
        sentence a promote.
        """
        if not branches:
            return []
        family = {record.zvol, *branches}
        done = []
        while True:
            try:
                origin = (await zfs.get_volume(record.zvol)).origin
            except NotFound:
                return done
            if not origin or origin.split("@", 1)[0] not in family:
                return done
            await zfs.promote(record.zvol)
            done.append(f"{record.zvol} promoted (it was a clone of {origin})")

    async def drop_empty(self, zfs, pool, record) -> list[str]:
        """
        Promote volume C{record} out of its branches (L{_unbranch}), then
        destroy the branches that hold no snapshot any more: the data a
        revert set aside is reachable only through its snapshots, so once
        they are deleted it is garbage.  What was done, one sentence each.
        """
        branches = await self.of(zfs, pool, record)
        done = await self._unbranch(zfs, record, branches)
        for zvol in branches:
            if not await zfs.list_snapshots(zvol):
                try:
                    await zfs.destroy(zvol)
                except NotFound:
                    continue
                done.append(f"{zvol} destroyed (a branch with no snapshot left)")
        return done

    async def strip(self, record, snapnames) -> list[str]:
        """
        Take a VM's snapshots off volume C{record}, keeping its current data:
        promote it out of the branches reverts made (L{_unbranch}), destroy
        every branch (with the snapshots it holds), then the ZFS snapshots
        C{<zvol>@<n>} for each C{n} of C{snapnames}.  Idempotent (a repair
        runs it again).  Used when the volume and the VM part: VM delete
        (attached volumes, kept disks), unmap, VM storage DELETE.

        @return: what was destroyed or promoted, one sentence each.
        """
        pool = await self._pools.pool(record.pool)
        zfs = self._pools.zfs(pool)
        branches = await self.of(zfs, pool, record)
        done = await self._unbranch(zfs, record, branches)
        await destroy_all(zfs, branches)
        done += [f"{b} destroyed" for b in branches]
        for snapname in snapnames:
            snapshot = f"{record.zvol}@{snapname}"
            try:
                await zfs.destroy(snapshot)
            except NotFound:
                continue
            done.append(f"{snapshot} destroyed")
        return done

    async def snapnames(self, vm_uuid: str) -> list[str]:
        """The ZFS snapshot names of VM C{vm_uuid}'s snapshots (C{comet-<name>})."""
        if self._snapshots is None:
            return []
        return [zfs_snapname(s.name) for s in await self._snapshots.list(vm_uuid)]

    async def leave_snapshots(self, vm_uuid: str, record) -> list[str]:
        """
        Volume C{record} leaves VM C{vm_uuid} (unmap, VM storage DELETE):
        the VM's snapshots stop covering it.  Its ZFS snapshots of them and
        its branches are destroyed (L{strip}) and the snapshot records no
        longer list it, so a later revert leaves it alone.
        """
        names = await self.snapnames(vm_uuid)
        if not names:
            return []
        done = await self.strip(record, names)
        await self._snapshots.drop_volume(vm_uuid, f"{record.pool}/{record.name}")
        return done
