"""
Storage pools: a ZFS dataset on one storage server, configured (in the
config file) or registered through the API, active (it takes new volumes
and places VMs) or not.
"""

from __future__ import annotations

import attrs
from twisted.logger import Logger

from comet.errors import CometError, Conflict, InvalidInput, NotFound
from comet.model.clusters import validate_name
from comet.remote import zfs as _zfs

log = Logger()


def check_dataset(dataset: str) -> str:
    try:
        return _zfs.check_dataset(dataset)
    except InvalidInput:
        raise InvalidInput(f"{dataset!r} is not a dataset name like tank/comet") from None


@attrs.frozen
class Pool:
    name: str
    server: str
    dataset: str
    active: bool
    #: From the configuration (cannot be deleted through the API).
    configured: bool

    @property
    def zpool(self) -> str:
        return self.dataset.split("/", 1)[0]

    @property
    def actions(self) -> list[str]:
        """The actions valid now: what C{set_active} accepts and C{actions} lists."""
        return ["deactivate"] if self.active else ["activate"]


@attrs.frozen
class PoolSpace:
    pool: Pool
    capacity: int
    allocated: int
    available: int


class Pools:
    """
    The pools: configured ones with their recorded activation, and
    registered ones.

    @param store: the L{comet.store.Storage} tables.
    @param servers: the L{comet.model.storage.servers.Servers}.
    @param configured: the C{[storagepool]} sections of the configuration.
    @param clock: C{seconds()}.
    """

    def __init__(self, store, servers, configured, clock):
        self._store = store
        self._servers = servers
        self._configured = {p.name: p for p in configured}
        self._clock = clock
        self._known: dict[str, tuple[PoolSpace, float]] = {}

    def _now(self) -> int:
        return int(self._clock.seconds())

    async def pools(self) -> list[Pool]:
        rows = {r.name: r for r in await self._store.pools()}
        result = []
        for name, cfg in self._configured.items():
            row = rows.get(name)
            result.append(Pool(name, cfg.server, cfg.dataset,
                               bool(row.active) if row else True, True))
        for name, row in rows.items():
            if row.registered and name not in self._configured:
                result.append(Pool(name, row.server, row.dataset, bool(row.active), False))
        return sorted(result, key=lambda p: p.name)

    async def pool(self, name: str) -> Pool:
        validate_name("storage pool", name)
        row = await self._store.pool(name)
        cfg = self._configured.get(name)
        if cfg is not None:
            return Pool(name, cfg.server, cfg.dataset, bool(row.active) if row else True, True)
        if row is None or not row.registered:
            raise NotFound(f"storage pool {name!r} does not exist")
        return Pool(name, row.server, row.dataset, bool(row.active), False)

    def zfs(self, pool: Pool):
        """The ZFS adapter of C{pool}'s server."""
        return self._servers.server(pool.server).zfs

    async def space(self, pool: Pool) -> PoolSpace:
        space = await self.zfs(pool).dataset_space(pool.dataset)
        result = PoolSpace(pool, space.capacity, space.used, space.available)
        self._known[pool.name] = (result, self._clock.seconds())
        return result

    def known_space(self) -> dict[str, tuple[PoolSpace, float]]:
        """
        Each pool's space as last read (by L{space}), with when: what the
        metrics export without asking a storage server per scrape.
        """
        return dict(self._known)

    async def create_pool(self, name: str, server: str, dataset: str) -> Pool:
        """Register a pool; its dataset is created (tagged) if absent."""
        validate_name("storage pool", name)
        check_dataset(dataset)
        if server not in self._servers:
            raise InvalidInput(f"storage server {server!r} is not configured")
        if name in self._configured or await self._store.pool(name) is not None:
            raise Conflict(f"storage pool {name!r} already exists")
        for other in await self.pools():
            if other.server == server and other.dataset == dataset:
                raise Conflict(f"dataset {dataset} on {server} is already pool {other.name!r}")
        zfs = self._servers.server(server).zfs
        made = False
        if not await zfs.exists(dataset):
            await zfs.create_dataset(dataset)
            made = True
        try:
            await self._store.register_pool(name, server, dataset, made, self._now())
        except BaseException:
            if made:
                await zfs.destroy(dataset)
            raise
        return await self.pool(name)

    async def delete_pool(self, name: str) -> None:
        """Unregister a pool (409 if it holds volumes); a dataset Comet made goes too."""
        pool = await self.pool(name)
        if pool.configured:
            raise Conflict(
                f"storage pool {name!r} comes from the configuration; remove it there"
            )
        row = await self._store.pool(name)
        if await self._store.volumes(name):
            raise Conflict(f"storage pool {name!r} holds volumes; delete them first")
        zfs = self.zfs(pool)
        if row.made_dataset:
            try:
                live = await zfs.list_volumes(pool.dataset)
            except NotFound:
                live = []
            if live:
                raise Conflict(
                    f"storage pool {name!r} holds {len(live)} volume(s) in {pool.dataset}"
                )
        await self._store.unregister_pool(name)
        self._known.pop(name, None)
        if row.made_dataset:
            try:
                await zfs.destroy(pool.dataset)
            except NotFound:
                pass
            except CometError:
                log.failure("destroying the dataset of deleted pool {pool}", pool=name)

    async def set_active(self, name: str, active: bool) -> Pool:
        pool = await self.pool(name)
        action = "activate" if active else "deactivate"
        if action not in pool.actions:
            raise Conflict(f"storage pool {name!r} is {'active' if active else 'inactive'};"
                           f" {action} is not possible")
        await self._store.set_active(name, pool.server, pool.dataset, active, self._now())
        return await self.pool(name)
