"""
Local-copy mode's disks (issue 21): a VM whose disks are copied to its
compute host's own ZFS when it starts and synced back to the storage server
when it stops, so that it runs on local disks with no network I/O.

The copy of each volume lives on the host as C{<local_dataset>/<pool>/<name>}
(L{LocalCopies.local_volume}); L{comet.remote.zfs_sync.sync} moves it, whole
the first time and incrementally from the newest snapshot both copies hold.

Which copy is the volume is written down before the first byte moves: the
volume's C{copy_host} (L{comet.store.VolumeRecord}) names the host whose copy
may be newer than the storage server's.  It is set before a copy in and
cleared only once the copy is synced back, so a crash anywhere between
leaves it set, and the repair then syncs back again (a sync is safe to
repeat: a copy in that never finished left no volume there, or one the
storage server's copy equals; a copy back moves what changed).  The storage
server's copy is never written over by an older one: a sync whose
destination changed since their common snapshot is refused
(L{comet.errors.Conflict}), and while C{copy_host} is set nothing else may
change or export the storage server's copy (the callers' checks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.logger import Logger

from comet.errors import CometError, Conflict, NotFound, Unavailable
from comet.model.storage.names import SEED_DEV
from comet.remote.zfs import ZFS
from comet.remote.zfs_send import newest_common
from comet.remote.zfs_sync import is_sync, sync
from comet.virt import DiskSpec

log = Logger()


class LocalCopies:
    """
    @param store: the L{comet.store.Storage} tables.
    @param pools: the L{comet.model.storage.pools.Pools}.
    @param hosts: C{{host name: HostConfig}} of the compute hosts.
    @param runners: C{{address: IRunner}}: each compute host's ssh runner, by
        the address of its C{ssh} (L{comet.model._host_runners}).
    @param owner: the C{comet:owner} tag of what this Comet makes.

    Whether a copy synced back at a stop stays on its host as a cache (from
    which the next start there copies only what changed since) is the
    host's C{local_keep} (C{[[hosts]] local_keep}).
    """

    def __init__(self, store, pools, hosts: Mapping[str, object],
                 runners: Mapping[str, object], owner: str = "comet"):
        self._store = store
        self._pools = pools
        self._hosts = hosts
        self._runners = runners
        self._owner = owner

    # Where

    def local_volume(self, host: str, record) -> str:
        """The name of volume C{record}'s copy on C{host}: C{<local_dataset>/<pool>/<name>}."""
        return f"{self._config(host).local_dataset}/{record.pool}/{record.name}"

    def _config(self, host: str):
        config = self._hosts.get(host)
        if config is None or not config.local_dataset:
            raise Conflict(f"host {host!r} has no local_dataset: it runs no local-copy mode VM")
        return config

    def _host_zfs(self, host: str) -> ZFS:
        config = self._config(host)
        address = config.ssh.rpartition("@")[2]
        runner = self._runners.get(address)
        if runner is None:
            raise Unavailable(f"host {host!r} is unavailable: no ssh runner for {address}")
        return ZFS(runner, owner=self._owner)

    async def _server_zfs(self, record) -> ZFS:
        return self._pools.zfs(await self._pools.pool(record.pool))

    # Copying

    async def copy_in(self, vm, host: str,
                      progress: Callable[[int, int], object] | None = None) -> list[DiskSpec]:
        """
        Copy each of VM C{vm}'s disks to C{host}'s local dataset (each
        volume's C{copy_host} set first) and answer the block disks its
        domain gets there.  A disk whose copy is already there from this
        host (a cache, or a copy in repeated) moves only what changed.

        @param progress: called with (bytes moved so far, the bytes the
            volumes hold on their servers: about what a whole copy moves).
        """
        self._config(host)
        records = await self._store.volumes_of_vm(vm.uuid)
        for record in records:
            if record.copy_host not in (None, host):
                raise Conflict(
                    f"volume {record.name!r} of VM {vm.name!r} has its newest data on host"
                    f" {record.copy_host!r}: it must be synced back from there first")
        zfs = self._host_zfs(host)
        servers = [await self._server_zfs(record) for record in records]
        total = 0
        if progress is not None:
            for record, server in zip(records, servers):
                total += (await server.get_volume(record.zvol)).referenced
        disks = []
        moved = 0
        for record, server in zip(records, servers):
            local = self.local_volume(host, record)
            if record.copy_host is None:
                await self._drop_stale_cache(server, record, zfs, local)
                await self._store.update_volume(record.pool, record.name, copy_host=host)
            await self._ensure_parent(zfs, local)
            done = moved

            def counted(n, done=done):
                if progress is not None:
                    progress(done + n, total)

            synced = await sync(server.runner, record.zvol, zfs.runner, local,
                                owner=self._owner, progress=counted)
            moved += synced.moved
            disks.append(DiskSpec.block(record.dev, await zfs.device_of(local),
                                        cdrom=record.dev == SEED_DEV))
        return disks

    async def copy_back(self, vm, host: str | None = None) -> int:
        """
        Sync each of VM C{vm}'s disks whose newest data is on a host (on
        C{host} only, if given) back to its storage server
        (L{copy_back_volume}: the host's copy removed unless its host keeps
        it as a cache).

        @return: the bytes moved back.
        """
        moved = 0
        for record in await self._store.volumes_of_vm(vm.uuid):
            if record.copy_host is None or host not in (None, record.copy_host):
                continue
            moved += await self.copy_back_volume(record)
        return moved

    async def copy_back_volume(self, record, keep: bool | None = None) -> int:
        """
        Sync volume C{record}'s copy on its C{copy_host} back to its storage
        server, remove the host's copy and the storage server's sync
        snapshot (unless C{keep}: by default the host's C{local_keep}), and
        clear C{copy_host}.  A volume whose copy never arrived there (or was
        removed once synced back) only has C{copy_host} cleared: the storage
        server's copy is the volume.  Safe to repeat after a crash anywhere.

        A failure (the host does not answer, the storage server's copy
        changed since: L{Conflict}) leaves C{copy_host} set and the host's
        copy as it was, and its reason says where the newest data is.

        @return: the bytes moved back.
        """
        host = record.copy_host
        if host is None:
            return 0
        where = f"host {host!r}"
        try:
            local = self.local_volume(host, record)
            where = f"the copy {local} on host {host!r}"
            zfs = self._host_zfs(host)
            server = await self._server_zfs(record)
            synced = await sync(zfs.runner, local, server.runner, record.zvol,
                                owner=self._owner) if await zfs.exists(local) else None
        except CometError as e:
            e.reason = (f"syncing volume {record.name!r} back from host {host!r} failed:"
                        f" {e.reason} -- its newest data stays in {where} (the volume's"
                        " copy_host); nothing was removed")
            raise
        if keep is None:
            keep = bool(self._config(host).local_keep)
        if not keep:
            if synced is None:
                # A sync snapshot an interrupted copy in (or copy back) left.
                await _drop_sync_snapshots(server, record.zvol)
            else:
                # No copy is left to start an increment from: the sync
                # snapshot on the storage server would only be in the way (of
                # a revert, of a delete).  The host's copy goes first: a crash
                # between the two leaves that snapshot, which a repeat removes.
                await zfs.destroy(local, recursive=True)
                await _destroy_quietly(server, f"{record.zvol}@{synced.snapshot}")
        await self._store.update_volume(record.pool, record.name, copy_host=None)
        return 0 if synced is None else synced.moved

    async def drop_caches(self, record) -> None:
        """
        Remove the copies of volume C{record} kept as caches (C{local_keep})
        on the hosts, then the sync snapshots on its storage server that
        were their bases: called before the volume is destroyed, so that no
        copy of it stays on a host for good and no snapshot of Comet's holds
        the destroy back.  Best effort on the hosts: one that does not
        answer keeps its copy (logged), which a later volume of the same
        name finds stale (no snapshot in common) and drops at its first
        start there.  (A cache without its base is of no use: a crash
        between the two leaves the next start a whole copy, nothing worse.)
        """
        if not any(c.local_dataset and c.local_keep for c in self._hosts.values()):
            return   # (no command at all where no host keeps caches)
        await self._drop_host_caches(record)
        await _drop_sync_snapshots(await self._server_zfs(record), record.zvol)

    async def _drop_host_caches(self, record) -> None:
        for host, config in self._hosts.items():
            if not (config.local_dataset and config.local_keep):
                continue
            local = self.local_volume(host, record)
            try:
                await self._host_zfs(host).destroy(local, recursive=True)
            except NotFound:
                pass
            except CometError as e:
                log.warn("the cached copy {local} on host {host} stays: {reason}",
                         local=local, host=host, reason=e.reason)

    async def _drop_stale_cache(self, server: ZFS, record, zfs: ZFS, local: str) -> None:
        """
        A cached copy on the host (the storage server's copy being the
        volume) is of use only if it shares a snapshot with the storage
        server's (a revert there since removed it): else it goes, and the
        copy in is whole.
        """
        if not await zfs.exists(local):
            return
        if await newest_common(server.runner, record.zvol, zfs.runner, local) is None:
            await zfs.destroy(local, recursive=True)

    async def _ensure_parent(self, zfs: ZFS, local: str) -> None:
        """Make C{<local_dataset>/<pool>} (the local dataset itself is the operator's)."""
        parent = local.rsplit("/", 1)[0]
        if await zfs.exists(parent):
            return
        top = parent.rsplit("/", 1)[0]
        if not await zfs.exists(top):
            raise NotFound(f"the local dataset {top} does not exist on {zfs.host}")
        try:
            await zfs.create_dataset(parent)
        except Conflict:
            pass  # made meanwhile by another start


async def _destroy_quietly(zfs: ZFS, name: str) -> None:
    try:
        await zfs.destroy(name)
    except NotFound:
        pass


async def _drop_sync_snapshots(zfs: ZFS, volume: str) -> None:
    """Destroy C{volume}'s sync snapshots (L{comet.remote.zfs_sync}); none of the VM's own."""
    try:
        snapshots = await zfs.list_snapshots(volume)
    except NotFound:
        return
    for snapshot in snapshots:
        if is_sync(snapshot.snapname):
            await _destroy_quietly(zfs, snapshot.name)
