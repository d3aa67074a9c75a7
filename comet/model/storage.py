"""
Storage: storage servers, pools (a ZFS dataset on one server), volumes
(zvols in a pool), and the disks of VMs, exported over iSCSI to the compute
host a VM runs on.

Everything Comet creates on a server carries the ZFS user property
C{comet:owner} (L{comet.remote.zfs.OWNER_PROPERTY}), and Comet destroys only
what carries it.  Live values (sizes, whether a zvol exists) are read from
ZFS each time; SQLite holds what Comet decided (registrations, activation,
which VM a volume belongs to, CHAP secrets, where a volume is exported).

A step that fails half way is undone: a volume whose download fails is
destroyed again, a VM disk whose clone fails takes its snapshot with it, a
VM start whose second export fails unexports the first.
"""

from __future__ import annotations

import datetime
import re
import secrets
import uuid as _uuid
from typing import Mapping
from urllib.parse import urlparse

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from comet.errors import CometError, Conflict, InvalidInput, NotFound, Unavailable
from comet.model.clusters import validate_name
from comet.model.downloads import Downloads, scrub
from comet.model.initiators import Initiators
from comet.model.intents import Intents
from comet.model.locks import Locks
from comet.model.tasks import Target
from comet.remote import tgt as _tgt
from comet.remote import zfs as _zfs
from comet.remote.tgt import TGT
from comet.remote.zfs import ZFS
from comet.virt import DiskSpec

log = Logger()

GiB = 1024**3

#: Seconds the reachability probe of a storage server may take.
PROBE_TIMEOUT = 5.0

#: Device name of a VM's own disk (made from its template).
ROOT_DEV = "vda"


def check_dataset(dataset: str) -> str:
    try:
        return _zfs.check_dataset(dataset)
    except InvalidInput:
        raise InvalidInput(f"{dataset!r} is not a dataset name like tank/comet") from None


def vm_disk_name(vm_uuid: str, dev: str = ROOT_DEV) -> str:
    """The name (in its pool) of a VM's own disk: C{vm-<uuid>-<dev>}."""
    return f"vm-{vm_uuid}-{dev}"


def base_snapshot_name(vm_uuid: str) -> str:
    """The snapshot of a template's base volume a VM's disk is cloned from."""
    return f"comet-base-{vm_uuid}"


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


@attrs.frozen
class Volume:
    """A volume in a pool, as ZFS shows it and as Comet recorded it (or not)."""

    pool: Pool
    name: str
    capacity: int
    used: int
    #: Comet's record, or C{None} for a zvol Comet did not create.
    record: object | None

    @property
    def target(self) -> str | None:
        return self.record.target if self.record is not None else None

    @property
    def state(self) -> str:
        return "mapped" if self.target else "unmapped"


class _Server:
    def __init__(self, runner, owner: str):
        self.runner = runner
        self.zfs = ZFS(runner, owner=owner)
        self.tgt = TGT(runner)


class StorageModel:
    """
    Storage servers, pools and volumes, and the VM disks hook
    (L{comet.model.operations.VMDisks}): C{create}, C{attach}, C{detach},
    C{delete}, C{forget_secrets}, C{discard_create}.

    @param store: the L{comet.store.Storage} tables.
    @param runners: storage server address -> L{comet.remote.IRunner}.
    @param config: the daemon's L{comet.config.Config}.
    @param hypervisors: the libvirt adapter (CHAP secrets on compute hosts).
    @param tasks: the L{comet.model.tasks.TaskRunner}.
    @param clock: C{seconds()}.
    @param downloads: the L{comet.model.downloads.Downloads} that fetch
        images (by default over the reactor, with C{config.storage}'s policy
        and limits).
    @param vms: the C{vms} table (L{comet.store.VMs}).
    @param snapshots: the C{vm_snapshots} table (L{comet.store.Snapshots}).
    @param intents: the L{comet.model.intents.Intents} of this process.
    @param locks: the L{comet.model.locks.Locks} of this process.
    """

    def __init__(self, store, runners: Mapping[str, object], config, hypervisors, tasks, clock,
                 downloads=None, owner: str = "comet", vms=None, snapshots=None,
                 intents: Intents | None = None, locks: Locks | None = None):
        self._store = store
        self._vms = vms
        #: The C{vm_snapshots} table, forgotten with the VM.
        self.snapshots = snapshots
        self._runners = dict(runners)
        self._servers = {host: _Server(r, owner) for host, r in self._runners.items()}
        self._config = config
        self.hypervisors = hypervisors
        self._tasks = tasks
        self._clock = clock
        if downloads is None:
            from twisted.internet import reactor

            downloads = Downloads(reactor, config.storage)
        #: Where images come from (L{comet.model.downloads}).
        self.downloads = downloads
        #: The initiator address each export admits (L{comet.model.initiators}).
        self.initiators = Initiators(config.hosts)
        self._configured = {p.name: p for p in config.storagepools}
        #: Where multi-step changes record their steps (none unless wired).
        self.intents = intents if intents is not None else Intents()
        #: One operation per volume at a time (in memory only unless wired).
        self.locks = locks if locks is not None else Locks()

    async def stop(self) -> None:
        """Stop every runner (kills commands still running)."""
        for runner in self._runners.values():
            try:
                await runner.stop()
            except Exception:
                log.failure("stopping the runner of {host}", host=getattr(runner, "host", "?"))

    def _now(self) -> int:
        return int(self._clock.seconds())

    def _server(self, host: str) -> _Server:
        try:
            return self._servers[host]
        except KeyError:
            raise NotFound(f"storage server {host!r} does not exist") from None

    # Servers -------------------------------------------------------------------

    def servers(self) -> list[str]:
        return [s.host for s in self._config.storageservers]

    async def server_state(self, host: str) -> str:
        """C{reachable} or C{unreachable}: a quick C{zpool list}."""
        server = self._server(host)
        try:
            await server.runner.run(_zfs.pool_list_argv(), timeout=PROBE_TIMEOUT)
        except Unavailable:
            return "unreachable"
        except CometError:
            # It answered (with an error): it is reachable.
            return "reachable"
        return "reachable"

    async def zpools(self, host: str) -> list:
        """The zpools of a server (L{comet.remote.zfs.Pool}); 503 if it does not answer."""
        return await self._server(host).zfs.pool_list()

    # Pools ---------------------------------------------------------------------

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

    async def space(self, pool: Pool) -> PoolSpace:
        space = await self._server(pool.server).zfs.dataset_space(pool.dataset)
        return PoolSpace(pool, space.capacity, space.used, space.available)

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
        zfs = self._server(server).zfs
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
        zfs = self._server(pool.server).zfs
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

    # Volumes -------------------------------------------------------------------

    async def volumes(self, pool_name: str) -> list[Volume]:
        """The zvols in a pool's dataset, live, with Comet's records."""
        pool = await self.pool(pool_name)
        records = {r.name: r for r in await self._store.volumes(pool.name)}
        live = await self._server(pool.server).zfs.list_volumes(pool.dataset)
        return [Volume(pool, v.short_name, v.size, v.used, records.get(v.short_name))
                for v in live]

    async def volume(self, pool_name: str, name: str) -> Volume:
        pool = await self.pool(pool_name)
        validate_name("volume", name)
        record = await self._store.volume(pool.name, name)
        try:
            live = await self._server(pool.server).zfs.get_volume(f"{pool.dataset}/{name}")
        except NotFound:
            raise NotFound(f"volume {name!r} does not exist in storage pool {pool.name!r}"
                           ) from None
        return Volume(pool, name, live.size, live.used, record)

    async def _check_new_volume(self, pool: Pool, name: str) -> None:
        validate_name("volume", name)
        if not pool.active:
            raise Conflict(f"storage pool {pool.name!r} is inactive; it accepts no new volume")
        zvol = f"{pool.dataset}/{name}"
        if (await self._store.volume(pool.name, name) is not None
                or await self._server(pool.server).zfs.exists(zvol)):
            raise Conflict(f"volume {name!r} already exists in storage pool {pool.name!r}")

    def _new_record(self, pool: Pool, name: str, size: int, **more) -> dict:
        fields = dict(
            pool=pool.name, name=name, zvol=f"{pool.dataset}/{name}", capacity=size,
            chap_user=f"comet-{secrets.token_hex(6)}", chap_secret=secrets.token_urlsafe(24),
            secret_uuid=str(_uuid.uuid4()), created=self._now(),
        )
        fields.update(more)
        return fields

    async def create_volume(self, pool_name: str, name: str,
                            capacity_gb: int | None = None, url: str | None = None):
        """
        Start a task that creates volume C{name}: empty, of C{capacity_gb}
        GiB, or holding the image downloaded from C{url}.  Answers the task.
        """
        pool = await self.pool(pool_name)
        if (capacity_gb is None) == (url is None):
            raise InvalidInput("give exactly one of capacity and url")
        if capacity_gb is not None and (isinstance(capacity_gb, bool)
                                        or not isinstance(capacity_gb, int) or capacity_gb < 1):
            raise InvalidInput(f"capacity is a whole number of GB (at least 1), not {capacity_gb!r}")
        if url is not None:
            try:
                parsed = urlparse(url)
                # .hostname and .port raise ValueError for "http://a]" or "http://a:x".
                usable = parsed.scheme in ("http", "https") and parsed.hostname
                parsed.port
            except ValueError:
                usable = False
            if not usable:
                raise InvalidInput(f"url must be an http or https URL, not {scrub(url)!r}")
        validate_name("volume", name)
        if url is not None:
            # An address known now to be out of bounds is a 400, not a task.
            await self.downloads.check(url)
        self.intents.check(f"{pool.name}/{name}")
        lock = self.volume_lock(pool.name, name, "being created")
        await lock.acquire()

        async def job(task):
            try:
                await lock.set_task(task.id)
                async with self.intents.operation("volume.create", f"{pool.name}/{name}") as op:
                    if url is None:
                        return await self._create_empty(op, pool, name, capacity_gb * GiB)
                    return await self._download(op, pool, name, url, task)
            finally:
                await lock.release()

        try:
            await self._check_new_volume(pool, name)
            return await self._tasks.start(
                Target("volume", {"pool": pool.name, "volume": name}), job, f"creating volume {name!r} in storage pool {pool.name!r}"
            )
        except BaseException:
            await lock.release()
            raise

    def volume_lock(self, pool: str, name: str, doing: str):
        """The lock of volume C{pool}/C{name} (L{comet.model.locks}), for an operation C{doing}."""
        return self.locks.lock(f"{pool}/{name}", f"volume {name!r} in storage pool {pool!r}",
                               doing)

    async def _create_empty(self, op, pool: Pool, name: str, size: int) -> str:
        zfs = self._server(pool.server).zfs
        zvol = f"{pool.dataset}/{name}"
        async with op.step("create zvol", server=pool.server, zvol=zvol):
            volume = await zfs.create_volume(pool.dataset, name, size, sparse=True)
        async with op.step("record", server=pool.server, zvol=zvol):
            await self._record_or_destroy(zfs, volume.name,
                                          self._new_record(pool, name, volume.size))
        return f"volume {name!r} ({volume.size} bytes) created in storage pool {pool.name!r}"

    async def _record_or_destroy(self, zfs, zvol: str, fields: dict):
        try:
            return await self._store.add_volume(**fields)
        except BaseException:
            await self._undo(zfs.destroy(zvol), f"destroying {zvol}")
            raise

    async def _undo(self, d: Deferred, what: str) -> None:
        try:
            await d
        except Exception:
            log.failure("undo step failed: {what}", what=what)

    async def _download(self, op, pool: Pool, name: str, url: str, task) -> str:
        if self.downloads.waiting:
            task.progress(0, "waiting for a download slot ([storage] max_downloads)")
        download = await self.downloads.start(url)
        try:
            return await self._write_download(op, pool, name, download, task)
        finally:
            download.close()

    async def _write_download(self, op, pool: Pool, name: str, download, task) -> str:
        zfs = self._server(pool.server).zfs
        response = download.response
        shown = scrub(download.url)
        if response.code != 200:
            await self._discard(response)
            raise NotFound(f"downloading {shown} failed: HTTP {response.code}")
        length = response.length
        if not isinstance(length, int) or length <= 0:
            await self._discard(response)
            raise InvalidInput(
                f"{shown} did not say its length (Content-Length); the volume cannot be sized"
            )
        size = -(-length // GiB) * GiB
        try:
            space = await zfs.dataset_space(pool.dataset)
            if length > space.available:
                raise Conflict(f"the image at {shown} ({length} bytes) is larger than what"
                               f" storage pool {pool.name!r} has available ({space.available})")
            async with op.step("create zvol", server=pool.server, zvol=f"{pool.dataset}/{name}"):
                volume = await zfs.create_volume(pool.dataset, name, size, sparse=True)
        except BaseException:
            await self._discard(response)
            raise
        try:
            async with op.step("write image", server=pool.server, zvol=volume.name):
                stream = await zfs.open_writer(volume.name)
                receiver = _Receiver(stream, length, task)
                response.deliverBody(receiver)
                try:
                    await receiver.done
                except Exception as e:
                    raise download.failure(e) from None
                await stream.finish()
            async with op.step("record", server=pool.server, zvol=volume.name):
                await self._store.add_volume(**self._new_record(pool, name, volume.size))
        except BaseException:
            await self._undo(zfs.destroy(volume.name), f"destroying {volume.name}")
            raise
        return (f"volume {name!r} ({volume.size} bytes) created in storage pool"
                f" {pool.name!r} from {shown} ({length} bytes)")

    async def _discard(self, response) -> None:
        try:
            import treq

            await treq.content(response)
        except Exception:
            pass

    async def delete_volume(self, pool_name: str, name: str, force: bool = False) -> None:
        """
        Destroy a volume Comet created: 409 while mapped or a VM's disk, or
        while ZFS snapshots or clones hang on it.  With C{force} (an admin's
        way to clear what an earlier Comet, or a hand, left), the snapshots
        and clones of it that no record owns are destroyed with it; what a
        record owns (a VM's snapshot, a recorded volume cloned from it) or
        what does not carry Comet's tag stays a 409, and nothing is destroyed.
        """
        pool = await self.pool(pool_name)
        validate_name("volume", name)
        async with self.volume_lock(pool.name, name, "being deleted"):
            await self._delete_volume(pool, name, force)

    async def _delete_volume(self, pool: Pool, name: str, force: bool = False) -> None:
        """L{delete_volume}, its lock held."""
        record = await self._store.volume(pool.name, name)
        if record is not None and record.target:
            raise Conflict(f"volume {name!r} is mapped (exported to {record.exported_to});"
                           " unmap it first")
        if record is not None and record.vm_uuid and await self._vm_exists(record.vm_uuid):
            raise Conflict(f"volume {name!r} is a disk of VM {record.vm_uuid}; detach it first")
        zfs = self._server(pool.server).zfs
        zvol = f"{pool.dataset}/{name}"
        clones: list[str] = []
        if force:
            clones = await self._check_leftovers(pool, zfs, name, force=True)
        async with self.intents.operation("volume.delete", f"{pool.name}/{name}") as op:
            if clones:
                async with op.step("destroy leftovers", server=pool.server, zvol=zvol,
                                   clones=clones, force=True):
                    await destroy_all(zfs, clones)
            async with op.step("destroy zvol", server=pool.server, zvol=zvol, force=force):
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
                        await self._check_leftovers(pool, zfs, name, force=False)
                    raise
            if record is not None:
                async with op.step("forget record", server=pool.server, zvol=zvol):
                    await self._store.delete_volume(pool.name, name)
                if record.origin:
                    # The snapshot of a base volume this disk was cloned from.
                    async with op.step("destroy origin", server=pool.server,
                                       snapshot=record.origin):
                        try:
                            await zfs.destroy(record.origin)
                        except NotFound:
                            pass
                        except CometError:
                            log.failure("destroying {snapshot}", snapshot=record.origin)

    async def _check_leftovers(self, pool: Pool, zfs, name: str, force: bool) -> list[str]:
        """
        What hangs on volume C{name}: its ZFS snapshots and the zvols of the
        pool cloned from them (and from those, and so on).  Raises
        L{Conflict} naming what a record owns (a VM snapshot, a recorded
        volume), then, unless C{force}, naming what no record owns, with the
        way to clear it; with C{force}, what does not carry Comet's tag.
        @return: the unrecorded clones to destroy before it, dependents first.
        """
        zvol = f"{pool.dataset}/{name}"
        try:
            snapshots = [s.name for s in await zfs.list_snapshots(zvol)]
        except NotFound:
            return []
        volumes = await zfs.list_volumes(pool.dataset)
        clones: list = []
        origins = set(snapshots)
        grew = True
        while grew:
            grew = False
            for volume in volumes:
                if volume.origin in origins and volume not in clones:
                    clones.append(volume)
                    origins |= {s.name for s in await zfs.list_snapshots(volume.name)}
                    grew = True
        recorded = []
        for clone in clones:
            if await self._store.volume(pool.name, clone.short_name) is not None:
                recorded.append(f"volume {clone.short_name!r} (a clone of {clone.origin};"
                                " delete it first)")
        key = f"{pool.name}/{name}"
        for snapshot in await self.snapshots_of_volume(key) if self.snapshots else []:
            if f"{zvol}@{zfs_snapname(snapshot.name)}" in snapshots:
                vm = await self._vm_name(snapshot.vm_uuid)
                recorded.append(f"snapshot {snapshot.name!r} of VM {vm} (delete it, or unmap"
                                " the volume from the VM, first)")
        if recorded:
            raise Conflict(f"volume {name!r} cannot be destroyed: {', '.join(recorded)}"
                           " depend on it")
        unrecorded = snapshots + [c.name for c in clones]
        if not unrecorded:
            return []
        if not force:
            raise Conflict(
                f"volume {name!r} cannot be destroyed: ZFS snapshots or clones of it that no"
                f" record of Comet owns hang on it ({', '.join(unrecorded)}; left by an"
                " earlier Comet or made by hand).  An admin's DELETE with"
                ' {"force": true} destroys them with the volume')
        for name_ in [zvol] + [c.name for c in clones]:
            await zfs.check_owned(name_, recursive=True)
        return [c.name for c in reversed(clones)]

    async def snapshots_of_volume(self, volume: str) -> list:
        """The VM snapshot records that list C{volume} (C{"pool/name"})."""
        return await self.snapshots.with_volume(volume)

    async def _vm_name(self, vm_uuid: str) -> str:
        if self._vms is not None:
            try:
                return repr((await self._vms.by_uuid(vm_uuid)).name)
            except NotFound:
                pass
        return vm_uuid

    async def _branches(self, zfs, pool: Pool, record) -> list[str]:
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

    async def _destroy_family(self, zfs, pool: Pool, record) -> None:
        """
        Destroy a VM disk with its snapshots and the branches reverts set
        aside (C{<name>-old-*}, C{<name>-rv-*}), clones before their origins.
        """
        await destroy_all(zfs, [record.zvol] + await self._branches(zfs, pool, record))

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

    async def drop_empty_branches(self, zfs, pool: Pool, record) -> list[str]:
        """
        Promote volume C{record} out of its branches (L{_unbranch}), then
        destroy the branches that hold no snapshot any more: the data a
        revert set aside is reachable only through its snapshots, so once
        they are deleted it is garbage.  What was done, one sentence each.
        """
        branches = await self._branches(zfs, pool, record)
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
        pool = await self.pool(record.pool)
        zfs = self._server(pool.server).zfs
        branches = await self._branches(zfs, pool, record)
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
        if self.snapshots is None:
            return []
        return [zfs_snapname(s.name) for s in await self.snapshots.list(vm_uuid)]

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
        await self.snapshots.drop_volume(vm_uuid, f"{record.pool}/{record.name}")
        return done

    async def _vm_exists(self, vm_uuid: str) -> bool:
        if self._vms is None:
            return True
        try:
            await self._vms.by_uuid(vm_uuid)
        except NotFound:
            return False
        return True

    async def vm_of(self, volume: Volume):
        """The record of the VM whose disk C{volume} is, or C{None}."""
        if volume.record is None:
            return None
        return await self.vm_record(volume.record.vm_uuid)

    async def vm_record(self, vm_uuid: str | None):
        """The record of the VM C{vm_uuid}, or C{None}."""
        if vm_uuid is None or self._vms is None:
            return None
        try:
            return await self._vms.by_uuid(vm_uuid)
        except NotFound:
            return None

    async def check_disk(self, pool_name: str, volume: str) -> None:
        """The template hook: the base volume must exist."""
        await self.volume(pool_name, volume)

    # VM disks (the VMDisks hook) ---------------------------------------------

    async def create(self, vm, template) -> None:
        """Clone the template's base volume into the VM's own disk."""
        if template.disk_pool is None:
            return
        pool = await self.pool(template.disk_pool)
        if not pool.active:
            raise Conflict(f"storage pool {pool.name!r} is inactive; it places no VM")
        zfs = self._server(pool.server).zfs
        base = f"{pool.dataset}/{template.disk_volume}"
        name = vm_disk_name(vm.uuid)
        snapshot = f"{base}@{base_snapshot_name(vm.uuid)}"
        try:
            await zfs.get_volume(base)
        except NotFound:
            raise NotFound(f"the base volume {template.disk_volume!r} of template"
                           f" {template.name!r} does not exist in pool {pool.name!r}") from None
        await zfs.snapshot([base], base_snapshot_name(vm.uuid))
        try:
            clone = await zfs.clone(snapshot, pool.dataset, name)
        except BaseException:
            await self._undo(zfs.destroy(snapshot), f"destroying {snapshot}")
            raise
        try:
            await self._store.add_volume(**self._new_record(
                pool, name, clone.size, vm_uuid=vm.uuid, dev=ROOT_DEV, own=1, origin=snapshot))
        except BaseException:
            await self._undo(zfs.destroy(clone.name), f"destroying {clone.name}")
            await self._undo(zfs.destroy(snapshot), f"destroying {snapshot}")
            raise

    def _iqn(self, pool: str, volume: str) -> str:
        today = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.timezone.utc)
        return _tgt.iqn(self._config.storage.iqn_domain, pool, volume, today.date())

    async def attach(self, vm, host: str) -> list[DiskSpec]:
        """Export each of the VM's disks to C{host} with CHAP; the iSCSI disks."""
        disks = []
        done = []
        try:
            for record in await self._store.volumes_of_vm(vm.uuid):
                pool = await self.pool(record.pool)
                if not pool.active:
                    raise Conflict(f"storage pool {pool.name!r} is inactive; it places no VM")
                disks.append(await self._export(pool, record, host))
                done.append(record)
        except BaseException:
            for record in reversed(done):
                await self._undo(self._unexport_d(record), f"unexporting {record.zvol}")
            raise
        return disks

    async def _export(self, pool: Pool, record, host: str) -> DiskSpec:
        server = self._server(pool.server)
        if record.target and record.exported_to not in (None, host):
            raise Conflict(f"volume {record.name!r} is mapped to {record.exported_to}")
        iqn = self._iqn(pool.name, record.name)
        device = await server.zfs.device_of(record.zvol)
        # Only the host it is exported to may log in, and only with the CHAP account.
        initiator = await self.initiators.address(host, pool.server)
        tid = await server.tgt.export(iqn, device, record.chap_user, record.chap_secret,
                                      initiator=initiator)
        usage = f"comet-{record.chap_user}"
        try:
            await self.hypervisors.define_secret(host, record.secret_uuid, usage, record.chap_secret)
            await self._store.update_volume(record.pool, record.name, target=iqn,
                                            exported_to=host, tid=tid)
        except BaseException:
            await self._undo(server.tgt.unexport(iqn), f"unexporting {iqn}")
            raise
        return self._spec(pool, record, iqn)

    def _spec(self, pool: Pool, record, iqn: str | None = None) -> DiskSpec:
        """The iSCSI disk a domain gets for C{record}."""
        return DiskSpec.iscsi(record.dev, iqn or record.target or self._iqn(pool.name, record.name),
                              pool.server, lun=_tgt.LUN, username=record.chap_user,
                              secret_usage=f"comet-{record.chap_user}")

    def _unexport_d(self, record) -> Deferred:
        from twisted.internet.defer import ensureDeferred

        return ensureDeferred(self._unexport(record))

    async def _unexport(self, record) -> None:
        pool = await self.pool(record.pool)
        server = self._server(pool.server)
        current = await self._store.volume(record.pool, record.name)
        iqn = (current.target if current is not None else None) or self._iqn(
            pool.name, record.name)
        host = (current.exported_to if current is not None else None) or record.exported_to
        await server.tgt.unexport(iqn)
        if host is not None:
            try:
                await self.hypervisors.undefine_secret(host, record.secret_uuid)
            except NotFound:
                pass
        await self._store.update_volume(record.pool, record.name, target=None,
                                        exported_to=None, tid=None)

    # Exports lost by their server (a reboot) --------------------------------

    async def exports(self, server: str) -> list:
        """The volume records exported from C{server}'s pools, as recorded."""
        records = []
        for pool in await self.pools():
            if pool.server == server:
                records += [r for r in await self._store.volumes(pool.name)
                            if r.target and r.exported_to]
        return records

    async def targets(self, server: str) -> list:
        """The tgt targets on C{server} now (L{comet.remote.tgt.Target}); 503 if it does not answer."""
        return await self._server(server).tgt.targets()

    async def restore_export(self, record) -> str | None:
        """
        Make the export of volume C{record} again as recorded, if its server
        lost it (a storage server that reboots loses every tgt target): the
        same target name (not this month's: the initiator reconnects to the
        name it knows), LUN 1 on the zvol's device now (minors can change
        with an import), its CHAP account and password, the compute host's
        initiator address, and the target id it had when that id is free.  QEMU's
        iSCSI initiator keeps trying to log in again and resumes the guest's
        I/O once the target is back.

        Holds the volume's lock and its VM's while it works, so no start,
        stop or unmap changes the export under it: one that runs is a
        L{Conflict} here (try again later).  Whether the export is still
        recorded, and missing or incomplete, is read again under them.

        @return: what was done, or C{None} if the export was there already
            (or is no longer recorded).
        """
        volume = f"{record.pool}/{record.name}"
        self.intents.check(volume)
        locks = [self.volume_lock(record.pool, record.name, "being exported again")]
        if record.vm_uuid is not None:
            # An interrupted operation on the VM is the reconciler's to finish first.
            self.intents.check(record.vm_uuid)
            vm = await self.vm_record(record.vm_uuid)
            label = f"VM {vm.name!r}" if vm is not None else f"VM {record.vm_uuid}"
            locks.insert(0, self.locks.lock(record.vm_uuid, label,
                                            "having its disks exported again"))
        await _acquire_all(locks)
        try:
            current = await self._store.volume(record.pool, record.name)
            if current is None or not current.target or not current.exported_to:
                return None
            pool = await self.pool(current.pool)
            server = self._server(pool.server)
            # Only the host it is exported to may log in (as L{_export} binds it).
            initiator = await self.initiators.address(current.exported_to, pool.server)
            found = next((t for t in await server.tgt.targets() if t.iqn == current.target),
                         None)
            if found is not None and export_intact(found, current, initiator):
                return None
            what = "was incomplete" if found is not None else "was missing"
            if found is not None:
                await server.tgt.unexport(current.target)
            device = await server.zfs.device_of(current.zvol)
            tid = await server.tgt.export(current.target, device, current.chap_user,
                                          current.chap_secret, initiator=initiator,
                                          tid=current.tid)
            if tid != current.tid:
                await self._store.update_volume(current.pool, current.name, tid=tid)
            return (f"the export of volume {current.pool}/{current.name} to"
                    f" {current.exported_to} {what} on {pool.server}: target {current.target}"
                    f" (tid {tid}) made again with LUN {_tgt.LUN} on {device} and CHAP account"
                    f" {current.chap_user}")
        finally:
            await _release_all(locks)

    async def detach(self, vm, host: str) -> None:
        """Stop exporting the VM's disks (and remove their CHAP secrets from C{host})."""
        for record in await self._store.volumes_of_vm(vm.uuid):
            if record.target or record.exported_to:
                await self._unexport(record)

    async def delete(self, vm, keep_storage: bool = False) -> None:
        """
        Destroy the VM's own disks (with their snapshots, branches and base
        snapshots) unless C{keep_storage}; release the others, and the own
        ones kept, as plain volumes without the VM's snapshots (L{strip}):
        nothing of the VM stays on a volume that outlives it.  The snapshot
        records go last, so that a repair running it again still knows
        which ZFS snapshots are the VM's.
        """
        names = await self.snapnames(vm.uuid)
        for record in await self._store.volumes_of_vm(vm.uuid):
            if record.target:
                await self._unexport(record)
            if not record.own or keep_storage:
                await self.strip(record, names)
                await self._store.update_volume(record.pool, record.name, vm_uuid=None,
                                                dev=None, own=0)
                continue
            pool = await self.pool(record.pool)
            zfs = self._server(pool.server).zfs
            await self._destroy_family(zfs, pool, record)
            if record.origin:
                try:
                    await zfs.destroy(record.origin)
                except NotFound:
                    pass
            await self._store.delete_volume(record.pool, record.name)
        if self.snapshots is not None:
            await self.snapshots.forget(vm.uuid)

    async def forget_secrets(self, vm, hosts) -> None:
        """CHAP secrets an interrupted export may have defined on C{hosts}."""
        for volume in await self._store.volumes_of_vm(vm.uuid):
            if volume.exported_to is not None:
                continue
            for host in hosts:
                try:
                    await self.hypervisors.undefine_secret(host, volume.secret_uuid)
                except NotFound:
                    pass

    async def discard_create(self, vm_uuid: str, pool_name: str, base: str) -> None:
        """
        Destroy the disk an interrupted create of VM C{vm_uuid} may have
        cloned in pool C{pool_name}, and the snapshot of base volume C{base}
        it was cloned from.
        """
        pool = await self.pool(pool_name)
        zfs = self._server(pool.server).zfs
        for name in (f"{pool.dataset}/{vm_disk_name(vm_uuid)}",
                     f"{pool.dataset}/{base}@{base_snapshot_name(vm_uuid)}"):
            try:
                await zfs.destroy(name)
            except NotFound:
                pass


def unmap_refusal(vm) -> str | None:
    """
    Why no volume can be unmapped from C{vm} now (the reason of the 409), or
    C{None} when unmap is valid.  L{VMStorageModel.unmap} refuses by it and
    L{VMStorage.actions} lists by it, so the two cannot disagree.
    """
    if vm.phase == "unknown":
        return (f"VM {vm.name!r} is on host {vm.record.host!r}, which does not answer;"
                " unmap is not possible now")
    return None


def revert_refusal(vm) -> str | None:
    """
    Why C{vm} cannot be reverted to a snapshot now (the reason of the 409),
    or C{None}: only while it runs nowhere or is shut off.  The one rule of
    L{VMSnapshotModel.revert} and of L{snapshot_actions}.
    """
    if vm.phase not in ("stopped", "shutoff"):
        return f"VM {vm.name!r} is {vm.state}; power it off before a revert"
    return None


def snapshot_actions(vm) -> list[str]:
    """The actions valid now on each snapshot of C{vm}."""
    return ["revert"] if revert_refusal(vm) is None else []


@attrs.frozen
class VMStorage:
    """A volume attached to a VM."""

    vm: object
    record: object

    @property
    def state(self) -> str:
        return "mapped" if self.record.target else "unmapped"

    @property
    def actions(self) -> list[str]:
        """The actions valid now (L{unmap_refusal})."""
        return ["unmap"] if unmap_refusal(self.vm) is None else []


_DEV = re.compile(r"^vd[a-z]$")

#: Seconds a guest has to release a disk detached while it runs.
UNPLUG_TIMEOUT = 30.0
#: Seconds between two looks at whether it did.
UNPLUG_POLL = 0.5


class VMStorageModel:
    """
    The volumes of a VM: C{/cluster/:c/vms/:v/storages}.  Attaching to a VM
    that is placed on a host exports the volume there and plugs it in (live
    if the VM runs); detaching does the reverse.

    @param storage: the L{StorageModel}.
    @param vms: the L{comet.model.vms.VMModel}.
    """

    def __init__(self, storage: StorageModel, vms):
        self._storage = storage
        self._vms = vms

    async def list(self, cluster: str, name: str) -> list[VMStorage]:
        vm = await self._vms.get(cluster, name)
        return [VMStorage(vm, r) for r in await self._storage._store.volumes_of_vm(vm.record.uuid)]

    async def get(self, cluster: str, name: str, volume: str) -> VMStorage:
        validate_name("volume", volume)
        for storage in await self.list(cluster, name):
            if storage.record.name == volume:
                return storage
        raise NotFound(f"VM {name!r} has no volume {volume!r}")

    async def attach(self, cluster: str, name: str, pool_name: str, volume: str,
                     dev: str | None = None) -> VMStorage:
        """Attach a volume (hot-plug if the VM runs); 409 if another VM has it."""
        store = self._storage._store
        vm = await self._vms.get(cluster, name)
        pool_name = (await self._storage.pool(pool_name)).name
        validate_name("volume", volume)
        async with self._vms._lock(vm, "attaching a volume"), \
                self._storage.volume_lock(pool_name, volume, f"being attached to VM {name!r}"):
            vm = await self._vms.get(cluster, name)
            if vm.phase == "unknown":
                raise Conflict(f"VM {name!r} is on host {vm.record.host!r}, which does not"
                               " answer; a volume cannot be attached now")
            live = await self._storage.volume(pool_name, volume)
            pool = live.pool
            record = live.record
            mine = await store.volumes_of_vm(vm.record.uuid)
            if record is not None and record.vm_uuid is not None:
                if record.vm_uuid == vm.record.uuid:
                    raise Conflict(f"volume {volume!r} is already attached to VM {name!r}")
                if await self._storage._vm_exists(record.vm_uuid):
                    raise Conflict(f"volume {volume!r} is attached to another VM")
            if any(r.name == volume for r in mine):
                raise Conflict(f"VM {name!r} already has a volume named {volume!r}")
            used = {r.dev for r in mine}
            if dev is None:
                dev = next((f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz"
                            if f"vd{c}" not in used), None)
                if dev is None:
                    raise Conflict(f"VM {name!r} has no free device name")
            elif not _DEV.fullmatch(dev):
                raise InvalidInput(f"dev must be a device name like vdb, not {dev!r}")
            elif dev in used:
                raise Conflict(f"VM {name!r} already has a disk {dev}")
            host = vm.record.host
            async with self._storage.intents.operation("attach", f"{pool.name}/{volume}") as op:
                async with op.step("record attachment", vm=vm.record.uuid, dev=dev):
                    if record is None:
                        record = await store.add_volume(**self._storage._new_record(
                            pool, volume, live.capacity, vm_uuid=vm.record.uuid, dev=dev))
                    else:
                        record = await store.update_volume(pool.name, volume,
                                                           vm_uuid=vm.record.uuid, dev=dev)
                if host is not None:
                    try:
                        async with op.step("export", host=host):
                            spec = await self._storage._export(pool, record, host)
                        try:
                            async with op.step("attach device", host=host):
                                await self._storage.hypervisors.attach_device(
                                    host, vm.record.domain_name, spec)
                        except BaseException:
                            await self._storage._unexport(record)
                            raise
                    except BaseException:
                        await store.update_volume(pool.name, volume, vm_uuid=None, dev=None)
                        raise
            return VMStorage(vm, await store.volume(pool.name, volume))

    async def _detach(self, vm, record) -> None:
        host = vm.record.host
        async with self._storage.intents.operation("unmap", f"{record.pool}/{record.name}") as op:
            if host is not None:
                pool = await self._storage.pool(record.pool)
                async with op.step("detach device", host=host, vm=vm.record.uuid):
                    try:
                        await self._storage.hypervisors.detach_device(
                            host, vm.record.domain_name, self._storage._spec(pool, record))
                    except NotFound:
                        pass   # not in the domain (or its definition) any more
                    await self._wait_released(vm, record)
                if record.target:
                    async with op.step("unexport", host=host, target=record.target):
                        await self._storage._unexport(record)
            async with op.step("drop snapshots", vm=vm.record.uuid):
                await self._storage.leave_snapshots(vm.record.uuid, record)
            async with op.step("forget attachment", vm=vm.record.uuid):
                await self._storage._store.update_volume(record.pool, record.name,
                                                         vm_uuid=None, dev=None)

    async def _wait_released(self, vm, record) -> None:
        await wait_released(self._storage.hypervisors, self._storage._clock, vm.record.host,
                            vm.record.domain_name, record.dev,
                            f"VM {vm.name!r} did not release disk {record.dev} (volume"
                            f" {record.name!r})")

    async def unmap(self, cluster: str, name: str, volume: str):
        """Start a task that detaches a volume from the VM (it stays in its pool)."""
        storage = await self.get(cluster, name, volume)
        vm = storage.vm
        refused = unmap_refusal(vm)
        if refused is not None:
            raise Conflict(refused)
        record = storage.record
        locks = [self._vms._lock(vm, f"unmapping {volume}"),
                 self._storage.volume_lock(record.pool, record.name,
                                           f"being unmapped from VM {name!r}")]
        await _acquire_all(locks)

        async def job(task):
            try:
                for lock in locks:
                    await lock.set_task(task.id)
                await self._detach(vm, record)
            finally:
                await _release_all(locks)
            return f"volume {volume!r} was detached from VM {name!r}"

        try:
            return await self._storage._tasks.start(
                Target("vm storage", {"cluster": cluster, "name": name, "zvol": volume}), job, f"unmapping volume {volume!r} from VM {name!r}")
        except BaseException:
            await _release_all(locks)
            raise

    async def delete(self, cluster: str, name: str, volume: str) -> None:
        """Detach a volume and destroy it; 409 while the VM runs."""
        storage = await self.get(cluster, name, volume)
        vm = storage.vm
        if vm.phase in ("running", "paused", "other", "unknown"):
            raise Conflict(f"VM {name!r} is {vm.state}; a volume can be deleted only while"
                           " it is shut off")
        record = storage.record
        async with self._vms._lock(vm, f"deleting volume {volume}"), \
                self._storage.volume_lock(record.pool, record.name, "being deleted"):
            await self._detach(vm, record)
            await self._storage._delete_volume(await self._storage.pool(record.pool),
                                               record.name)


async def _acquire_all(locks) -> None:
    """Take every lock of C{locks}, or none (those taken are released again)."""
    taken = []
    try:
        for lock in locks:
            await lock.acquire()
            taken.append(lock)
    except BaseException:
        await _release_all(taken)
        raise


async def _release_all(locks) -> None:
    for lock in reversed(locks):
        await lock.release()


async def destroy_all(zfs, names) -> None:
    """
    Destroy zvols C{names} with their snapshots, clones before their
    origins: whatever ZFS refuses for a dependent clone is tried again
    after the others, until a pass destroys nothing (then its L{Conflict}).
    """
    names = list(names)
    while names:
        left, error = [], None
        for name in names:
            try:
                await zfs.destroy(name, recursive=True)
            except NotFound:
                pass
            except Conflict as e:
                left.append(name)
                error = e
        if len(left) == len(names):
            raise error
        names = left


def export_intact(target, record, initiator: str | None = None) -> bool:
    """
    Whether tgt C{target} is volume C{record}'s whole export: a device on
    LUN 1, its CHAP account bound, and (if given) initiator address
    C{initiator} let in.
    """
    return (target.device is not None and record.chap_user in target.accounts
            and (initiator is None or initiator in target.acl))


async def has_disk(hypervisors, host: str, domain: str, dev: str) -> bool:
    """Whether C{domain} on C{host} has disk C{dev} now (no such domain: it has none)."""
    try:
        description = await hypervisors.describe(host, domain)
    except NotFound:
        return False
    return dev in [d.target for d in description.spec.disks]


async def wait_released(hypervisors, clock, host: str, domain: str, dev: str, who: str) -> None:
    """
    Wait until C{domain} on C{host} no longer has disk C{dev}.  Libvirt
    answers a live detach once the guest released the disk or after 5 s,
    whichever comes first; a guest slower than that (TCG, a busy one) still
    holds it.  Its target must outlive that: once deleted, the volume can be
    exported again under the same name and CHAP account, and the old QEMU
    would reconnect to it.  Still there after L{UNPLUG_TIMEOUT} seconds:
    L{Conflict} (C{who} says what did not happen), the volume stays attached
    (and its domain definition without it: a retry detaches again).
    Used by a live unmap and by the reconciler finishing one.
    """
    deadline = clock.seconds() + UNPLUG_TIMEOUT
    while True:
        if not await has_disk(hypervisors, host, domain, dev):
            return
        if clock.seconds() >= deadline:
            raise Conflict(f"{who} within {UNPLUG_TIMEOUT:g} s; it stays attached."
                           " Try again (the guest must accept the unplug)")
        await deferLater(clock, UNPLUG_POLL, lambda: None)


def zfs_snapname(name: str) -> str:
    """The ZFS snapshot name of VM snapshot C{name} on each of its volumes."""
    return f"comet-{name}"


class VMSnapshotModel:
    """
    A VM's snapshots: C{/cluster/:c/vms/:v/snapshots}.  A snapshot is one ZFS
    snapshot of each of the VM's volumes, taken in one C{zfs snapshot}
    command per storage server (atomic there) after a C{sync} on it (so what
    a running guest wrote through tgt is in it).  The tree (parent, current)
    is in SQLite.  Revert rolls each volume back; ZFS can roll back only to
    a volume's newest snapshot, so reverting to an older one is a 409 until
    the newer ones are deleted.
    """

    def __init__(self, storage: StorageModel, vms, snapshots):
        self._storage = storage
        self._vms = vms
        self._snapshots = snapshots

    async def list(self, cluster: str, name: str):
        vm = await self._vms.get(cluster, name)
        return vm, await self._snapshots.list(vm.record.uuid)

    async def get(self, cluster: str, name: str, snapshot: str):
        validate_name("snapshot", snapshot)
        vm = await self._vms.get(cluster, name)
        return vm, await self._snapshots.get(vm.record.uuid, snapshot)

    async def _volumes(self, records):
        """(server, [zvol, ...]) for each server the records are on."""
        by_server: dict[str, list[str]] = {}
        for record in records:
            pool = await self._storage.pool(record.pool)
            by_server.setdefault(pool.server, []).append(record.zvol)
        return by_server

    async def create(self, cluster: str, name: str, snapshot: str | None = None):
        vm = await self._vms.get(cluster, name)
        uuid = vm.record.uuid
        existing = {s.name for s in await self._snapshots.list(uuid)}
        if snapshot is None:
            snapshot = next(f"snap-{n}" for n in range(1, len(existing) + 2)
                            if f"snap-{n}" not in existing)
        validate_name("snapshot", snapshot)
        if snapshot in existing:
            raise Conflict(f"snapshot {snapshot!r} of VM {name!r} already exists")
        records = await self._storage._store.volumes_of_vm(uuid)
        if not records:
            raise Conflict(f"VM {name!r} has no volume to snapshot")
        async with self._vms._lock(vm, f"taking snapshot {snapshot}"), \
                self._storage.intents.operation("snapshot", uuid) as op:
            done: list[tuple[str, list[str]]] = []
            try:
                for server, zvols in (await self._volumes(records)).items():
                    zfs = self._storage._server(server).zfs
                    snapshots = [f"{z}@{zfs_snapname(snapshot)}" for z in zvols]
                    async with op.step("take", name=snapshot, server=server, snapshots=snapshots):
                        await zfs.sync()
                        await zfs.snapshot(zvols, zfs_snapname(snapshot))
                    done.append((server, zvols))
                import json

                volumes = json.dumps([f"{r.pool}/{r.name}" for r in records])
                async with op.step("record", name=snapshot):
                    record = await self._snapshots.add(uuid, snapshot, volumes,
                                                       int(self._storage._clock.seconds()))
            except BaseException:
                for server, zvols in done:
                    zfs = self._storage._server(server).zfs
                    for zvol in zvols:
                        await self._storage._undo(zfs.destroy(f"{zvol}@{zfs_snapname(snapshot)}"),
                                                  f"destroying {zvol}@{zfs_snapname(snapshot)}")
                raise
        return vm, record

    async def _snapshot_records(self, snapshot_record):
        import json

        result = []
        for item in json.loads(snapshot_record.volumes):
            pool, volume = item.split("/", 1)
            record = await self._storage._store.volume(pool, volume)
            if record is not None:
                result.append(record)
        return result

    async def _locate(self, volume, snapname: str) -> str | None:
        """
        The zvol of C{volume}'s family (itself, or a branch a revert set
        aside: C{<name>-old-<hex>}) that holds snapshot C{snapname}.
        """
        pool = await self._storage.pool(volume.pool)
        zfs = self._storage._server(pool.server).zfs
        family = [volume.zvol] + [
            v.name for v in await zfs.list_volumes(pool.dataset)
            if v.short_name.startswith(f"{volume.name}-old-")
        ]
        for zvol in family:
            if snapname in [s.snapname for s in await zfs.list_snapshots(zvol)]:
                return zvol
        return None

    async def delete(self, cluster: str, name: str, snapshot: str) -> None:
        """
        Destroy the snapshot's ZFS snapshots, then the branches that hold no
        snapshot any more (L{StorageModel.drop_empty_branches}), then its
        record.  A snapshot a revert branched from (the origin of a branch
        set aside that holds newer snapshots) is a 409, found before
        anything is destroyed.  Garbage from earlier reverts (empty
        branches; the current data a clone of a branch) is tidied first:
        each of those commands leaves the volume's data as it was, so they
        need no intent.
        """
        vm, record = await self.get(cluster, name, snapshot)
        uuid = vm.record.uuid
        snapname = zfs_snapname(snapshot)
        async with self._vms._lock(vm, f"deleting snapshot {snapshot}"):
            plan, volumes = [], []
            for volume in await self._snapshot_records(record):
                pool = await self._storage.pool(volume.pool)
                zfs = self._storage._server(pool.server).zfs
                volumes.append((volume, pool, zfs))
                await self._storage.drop_empty_branches(zfs, pool, volume)
                holder = await self._locate(volume, snapname)
                if holder is None:
                    continue
                for other in await zfs.list_volumes(pool.dataset):
                    if other.origin == f"{holder}@{snapname}":
                        raise Conflict(
                            f"snapshot {snapshot!r} is the origin of {other.name} (the data a"
                            " revert set aside); delete the newer snapshots first")
                plan.append((pool.server, f"{holder}@{snapname}", f"{volume.pool}/{volume.name}"))
            async with self._storage.intents.operation("snapshot.delete", uuid) as op:
                for server, zfs_snapshot, key in plan:
                    async with op.step("destroy", name=snapshot, server=server,
                                       snapshot=zfs_snapshot, volume=key):
                        await self._storage._server(server).zfs.destroy(zfs_snapshot)
                async with op.step("drop branches", name=snapshot,
                                   volumes=[f"{v.pool}/{v.name}" for v, _, _ in volumes]):
                    for volume, pool, zfs in volumes:
                        await self._storage.drop_empty_branches(zfs, pool, volume)
                async with op.step("forget record", name=snapshot):
                    await self._snapshots.delete(uuid, snapshot)

    async def revert(self, cluster: str, name: str, snapshot: str):
        """
        Bring every volume back to C{snapshot}; the VM must not be running.
        To the newest snapshot of a volume: C{zfs rollback}.  To an older
        one (or one on a branch set aside by an earlier revert): clone it,
        promote the clone, set the current data aside as
        C{<name>-old-<hex>} (keeping the newer snapshots) and give the clone
        the volume's name.  A volume exported to a host is unexported first
        and exported again after, so its target serves the reverted data.

        Each step is an intent: a revert cut short is finished by the
        reconciler (L{finish_revert}), since a rollback cannot be undone.
        """
        vm, record = await self.get(cluster, name, snapshot)
        refused = revert_refusal(vm)
        if refused is not None:
            raise Conflict(refused)
        uuid = vm.record.uuid
        async with self._vms._lock(vm, f"reverting to snapshot {snapshot}"):
            volumes = await self._snapshot_records(record)
            snapname = zfs_snapname(snapshot)
            plan = []
            # Locate every snapshot first, so that a missing one changes nothing.
            for volume in volumes:
                holder = await self._locate(volume, snapname)
                if holder is None:
                    raise NotFound(f"volume {volume.name!r} has no snapshot {snapshot!r}")
                pool = await self._storage.pool(volume.pool)
                zfs = self._storage._server(pool.server).zfs
                newer = False
                if holder == volume.zvol:
                    names = [s.snapname for s in await zfs.list_snapshots(volume.zvol)]
                    newer = names.index(snapname) < len(names) - 1
                plan.append((volume, pool, zfs, holder, newer))
            steps = []
            for volume, pool, zfs, holder, newer in plan:
                rollback = holder == volume.zvol and not newer
                steps.append({
                    "volume": f"{volume.pool}/{volume.name}", "server": pool.server,
                    "host": volume.exported_to if volume.target else None,
                    "rollback": f"{volume.zvol}@{snapname}" if rollback else None,
                    "source": None if rollback else f"{holder}@{snapname}",
                    "token": None if rollback else secrets.token_hex(4),
                })
            async with self._storage.intents.operation("snapshot.revert", uuid) as op:
                # The whole plan first: a crash before a volume's own step still
                # leaves the reconciler knowing what to finish.
                async with op.step("plan", name=snapshot, volumes=steps):
                    pass
                for (volume, pool, zfs, holder, newer), step in zip(plan, steps):
                    key, host = step["volume"], step["host"]
                    if host is not None:
                        async with op.step("unexport", name=snapshot, volume=key, host=host):
                            await self._storage._unexport(volume)
                    try:
                        if step["rollback"]:
                            async with op.step("rollback", name=snapshot, volume=key):
                                await zfs.rollback(step["rollback"])
                        else:
                            async with op.step("branch", name=snapshot, volume=key):
                                await branch(zfs, pool.dataset, volume.name, step["source"],
                                             step["token"], self._storage._undo)
                    finally:
                        if host is not None:
                            async with op.step("export", name=snapshot, volume=key, host=host):
                                current = await self._storage._store.volume(
                                    volume.pool, volume.name)
                                await self._storage._export(pool, current, host)
                async with op.step("set current", name=snapshot):
                    await self._snapshots.set_current(uuid, snapshot)
        return await self.get(cluster, name, snapshot)


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


class _Receiver(Protocol):
    """
    Streams an HTTP response body into a volume writer, with flow control
    (the response is paused while the pipe to C{dd} is full), reporting
    progress to the task.
    """

    def __init__(self, stream, length: int, task):
        self._stream = stream
        self._length = length
        self._task = task
        self._received = 0
        self._last = -1
        self._error: BaseException | None = None
        self.done: Deferred = Deferred()

    def connectionMade(self):
        self._stream.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes):
        if self._error is not None:
            return
        self._received += len(data)
        d = self._stream.write(data)
        d.addErrback(self._failed)
        percent = min(99, 100 * self._received // self._length)
        if percent // 5 != self._last // 5:
            self._last = percent
            self._task.progress(percent, f"{self._received} of {self._length} bytes")

    def _failed(self, failure):
        if self._error is None:
            self._error = failure.value
            try:
                self.transport.stopProducing()
            except Exception:
                pass

    def connectionLost(self, reason):
        self._stream.unregisterProducer()
        if self._error is not None:
            self._stream.abort().addErrback(lambda _: None)
            self.done.errback(self._error)
        elif reason.check(ResponseDone) or (
                reason.check(PotentialDataLoss) and self._received == self._length):
            if self._received != self._length:
                self._stream.abort().addErrback(lambda _: None)
                self.done.errback(Unavailable(
                    f"the download ended after {self._received} of {self._length} bytes"))
            else:
                self.done.callback(None)
        else:
            self._stream.abort().addErrback(lambda _: None)
            self.done.errback(Unavailable(f"the download failed: {reason.getErrorMessage()}"))
