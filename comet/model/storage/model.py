"""
L{StorageModel}: the one object the web layer (servers, pools, volumes)
and the daemon's wiring are handed.  It builds the parts of
L{comet.model.storage} over the same tables, runners and clock, hands them
their collaborators, and answers the web layer's questions by asking them.
"""

from __future__ import annotations

from typing import Mapping

from comet.model.downloads import Downloads
from comet.model.initiators import Initiators
from comet.model.intents import Intents
from comet.model.locks import Locks
from comet.model.storage.branches import Branches
from comet.model.storage.exports import Exports
from comet.model.storage.localcopies import LocalCopies
from comet.model.storage.owners import VMOwners
from comet.model.storage.pools import Pool, PoolSpace, Pools
from comet.model.storage.servers import Servers
from comet.model.storage.vmdisks import StorageDisks
from comet.model.storage.volumes import Volume, Volumes


class StorageModel:
    """
    Storage servers, pools and volumes; its parts are public attributes
    for the models and the reconciler that work with them.

    @param store: the L{comet.store.Storage} tables.
    @param runners: storage server address -> L{comet.remote.IRunner}.
    @param config: the daemon's L{comet.config.Config}.
    @param hypervisors: the libvirt adapter (CHAP secrets on compute hosts).
    @param tasks: the L{comet.model.tasks.TaskRunner}.
    @param clock: C{seconds()}.
    @param downloads: the L{comet.model.downloads.Downloads} that fetch
        images (by default over the reactor, with C{config.storage}'s policy
        and limits).
    @param vms: the C{vms} table (whose disk a volume is), or C{None}.
    @param snapshots: the C{vm_snapshots} table, or C{None}.
    @param intents: where multi-step changes record their steps (none unless given).
    @param locks: one operation per volume at a time (in memory only unless given).
    @param events: the L{comet.model.events.EventLog} told of volumes created and deleted.
    @param host_runners: C{{address: IRunner}} of the compute hosts with C{ssh}
        (their local ZFS, for local-copy mode VMs' disks).
    """

    def __init__(self, store, runners: Mapping[str, object], config, hypervisors, tasks, clock,
                 downloads=None, owner: str = "comet", vms=None, snapshots=None,
                 intents=None, locks=None, events=None, host_runners=None):
        if downloads is None:
            from twisted.internet import reactor

            downloads = Downloads(reactor, config.storage)
        self._config = config
        #: The C{storage_volumes} and C{storage_pools} tables: what Comet recorded.
        self.records = store
        #: The C{vm_snapshots} table, forgotten with the VM.
        self.snapshots = snapshots
        self.hypervisors = hypervisors
        self.intents = intents if intents is not None else Intents()
        self.locks = locks if locks is not None else Locks()
        #: The initiator address each export admits (L{comet.model.initiators}).
        self.initiators = Initiators(config.hosts)
        self.owners = VMOwners(vms)
        self.server_set = Servers(runners, owner)
        self.pool_set = Pools(store, self.server_set, config.storagepools, clock)
        self.exporter = Exports(store, self.server_set, self.pool_set, hypervisors,
                                self.initiators, config.storage.iqn_domain, clock,
                                self.intents, self.locks, self.owners)
        self.branches = Branches(store, self.pool_set, snapshots)
        #: Local-copy mode VMs' disks on their hosts' ZFS.
        self.local_copies = LocalCopies(store, self.pool_set, {h.name: h for h in config.hosts},
                                        host_runners or {}, owner)
        self.volume_set = Volumes(store, self.pool_set, tasks, clock, downloads, self.intents,
                                  self.locks, self.owners, snapshots, events=events,
                                  local=self.local_copies)
        #: The disks of VMs (the L{comet.model.operations.VMDisks} the VM operations are given).
        self.disks = StorageDisks(store, self.pool_set, self.volume_set, self.exporter,
                                  self.branches, hypervisors, snapshots, self.local_copies)

    @property
    def downloads(self) -> Downloads:
        """Where images come from (L{comet.model.downloads})."""
        return self.volume_set.downloads

    @downloads.setter
    def downloads(self, downloads: Downloads) -> None:
        self.volume_set.downloads = downloads

    async def stop(self) -> None:
        """Stop every runner (kills commands still running)."""
        await self.server_set.stop()

    # Servers -------------------------------------------------------------------

    def servers(self) -> list[str]:
        return self.server_set.hosts()

    def server(self, host: str):
        """Storage server C{host} (L{comet.model.storage.servers.Server}); 404 if unknown."""
        return self.server_set.server(host)

    async def server_state(self, host: str) -> str:
        return await self.server_set.state(host)

    async def zpools(self, host: str) -> list:
        return await self.server_set.zpools(host)

    async def targets(self, host: str) -> list:
        return await self.server_set.targets(host)

    # Pools ---------------------------------------------------------------------

    async def pools(self) -> list[Pool]:
        return await self.pool_set.pools()

    async def pool(self, name: str) -> Pool:
        return await self.pool_set.pool(name)

    async def space(self, pool: Pool) -> PoolSpace:
        return await self.pool_set.space(pool)

    async def create_pool(self, name: str, server: str, dataset: str) -> Pool:
        return await self.pool_set.create_pool(name, server, dataset)

    async def delete_pool(self, name: str) -> None:
        await self.pool_set.delete_pool(name)

    async def set_active(self, name: str, active: bool) -> Pool:
        return await self.pool_set.set_active(name, active)

    # Volumes -------------------------------------------------------------------

    async def volumes(self, pool_name: str) -> list[Volume]:
        return await self.volume_set.volumes(pool_name)

    async def volume(self, pool_name: str, name: str) -> Volume:
        return await self.volume_set.volume(pool_name, name)

    async def create_volume(self, pool_name: str, name: str,
                            capacity_gb: int | None = None, url: str | None = None,
                            format: str | None = None, sha256: str | None = None):
        return await self.volume_set.create_volume(pool_name, name,
                                                   capacity_gb=capacity_gb, url=url,
                                                   format=format, sha256=sha256)

    async def delete_volume(self, pool_name: str, name: str, force: bool = False) -> None:
        await self.volume_set.delete_volume(pool_name, name, force=force)

    async def resize_volume(self, pool_name: str, name: str, capacity_gb: int) -> Volume:
        return await self.volume_set.resize_volume(pool_name, name, capacity_gb)

    async def vm_of(self, volume: Volume):
        return await self.volume_set.vm_of(volume)

    async def snapshots_of_volume(self, volume: str) -> list:
        return await self.volume_set.snapshots_of_volume(volume)

    # Exports -------------------------------------------------------------------

    async def exports(self, server: str) -> list:
        """The volume records exported from C{server}'s pools, as recorded."""
        return await self.exporter.recorded(server)

    async def restore_export(self, record) -> str | None:
        """L{comet.model.storage.exports.Exports.restore}."""
        return await self.exporter.restore(record)
