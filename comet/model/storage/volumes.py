"""
Volumes: zvols in a pool's dataset, as ZFS shows them, with Comet's record
(who made it, which VM it belongs to, its CHAP account, where it is
exported).  Creating one (empty or from a download) runs as a task;
deleting one destroys only what Comet made.  Here are the checks, the
locks and the task; the steps are the operations'
(L{comet.model.operations.volume_create}, L{comet.model.operations.volume_delete}).
"""

from __future__ import annotations

import secrets
import uuid as _uuid
from urllib.parse import urlparse

import attrs

from comet.errors import Conflict, InvalidInput, NotFound
from comet.model.clusters import validate_name
from comet.model.operations import volume_create, volume_delete, volume_resize
from comet.model.events import or_silent
from comet.model.downloads import scrub
from comet.model.storage.download import check_server, check_sha256, requested_format
from comet.model.storage.names import GiB, volume_lock, zfs_snapname
from comet.model.storage.pools import Pool
from comet.model.tasks import Target
from comet.remote.zfs import DECOMPRESSORS


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
        mapped = self.record is not None and self.record.mapped_to is not None
        return "mapped" if self.target or mapped else "unmapped"


def _how(record) -> str:
    """How a mapped volume is mapped, for a 409's reason."""
    if record.target:
        return f"exported to {record.exported_to}"
    return f"its newest data is in a local copy on host {record.copy_host}"


def new_record(pool, name: str, size: int, now: int, **more) -> dict:
    """The fields of a new volume record: a fresh CHAP account and libvirt secret uuid."""
    fields = dict(
        pool=pool.name, name=name, zvol=f"{pool.dataset}/{name}", capacity=size,
        chap_user=f"comet-{secrets.token_hex(6)}", chap_secret=secrets.token_urlsafe(24),
        secret_uuid=str(_uuid.uuid4()), created=now,
    )
    fields.update(more)
    return fields


def check_url(url: str) -> None:
    """L{InvalidInput} unless C{url} is an http or https URL with a host."""
    try:
        parsed = urlparse(url)
        # .hostname and .port raise ValueError for "http://a]" or "http://a:x".
        usable = parsed.scheme in ("http", "https") and parsed.hostname
        parsed.port
    except ValueError:
        usable = False
    if not usable:
        raise InvalidInput(f"url must be an http or https URL, not {scrub(url)!r}")


class Volumes:
    """
    @param store: the L{comet.store.Storage} tables.
    @param pools: the L{comet.model.storage.pools.Pools}.
    @param tasks: the L{comet.model.tasks.TaskRunner}.
    @param clock: C{seconds()}.
    @param downloads: the L{comet.model.downloads.Downloads} that fetch images.
    @param intents: the L{comet.model.intents.Intents}.
    @param locks: the L{comet.model.locks.Locks}.
    @param owners: the L{comet.model.storage.owners.VMOwners}.
    @param snapshots: the C{vm_snapshots} table, or C{None}.
    """

    def __init__(self, store, pools, tasks, clock, downloads, intents, locks, owners,
                 snapshots=None, events=None, local=None):
        self._store = store
        #: The L{comet.model.storage.localcopies.LocalCopies} (their caches go
        #: with a deleted volume), or C{None}.
        self._local = local
        self._events = or_silent(events)
        self._pools = pools
        self._tasks = tasks
        self._clock = clock
        #: Where images come from (L{comet.model.downloads}).
        self.downloads = downloads
        self._intents = intents
        self._locks = locks
        self._owners = owners
        self._snapshots = snapshots

    def _now(self) -> int:
        return int(self._clock.seconds())

    async def volumes(self, pool_name: str) -> list[Volume]:
        """The zvols in a pool's dataset, live, with Comet's records."""
        pool = await self._pools.pool(pool_name)
        records = {r.name: r for r in await self._store.volumes(pool.name)}
        live = await self._pools.zfs(pool).list_volumes(pool.dataset)
        return [Volume(pool, v.short_name, v.size, v.used, records.get(v.short_name))
                for v in live]

    async def volume(self, pool_name: str, name: str) -> Volume:
        pool = await self._pools.pool(pool_name)
        validate_name("volume", name)
        record = await self._store.volume(pool.name, name)
        try:
            live = await self._pools.zfs(pool).get_volume(f"{pool.dataset}/{name}")
        except NotFound:
            raise NotFound(f"volume {name!r} does not exist in storage pool {pool.name!r}"
                           ) from None
        return Volume(pool, name, live.size, live.used, record)

    async def _check_new_volume(self, pool, name: str) -> None:
        validate_name("volume", name)
        if not pool.active:
            raise Conflict(f"storage pool {pool.name!r} is inactive; it accepts no new volume")
        zvol = f"{pool.dataset}/{name}"
        if (await self._store.volume(pool.name, name) is not None
                or await self._pools.zfs(pool).exists(zvol)):
            raise Conflict(f"volume {name!r} already exists in storage pool {pool.name!r}")

    def new_record(self, pool, name: str, size: int, **more) -> dict:
        """L{new_record}, created now."""
        return new_record(pool, name, size, self._now(), **more)

    def lock(self, pool: str, name: str, doing: str):
        """The lock of volume C{pool}/C{name}, for an operation C{doing}."""
        return volume_lock(self._locks, pool, name, doing)

    async def create_volume(self, pool_name: str, name: str,
                            capacity_gb: int | None = None, url: str | None = None,
                            format: str | None = None, sha256: str | None = None):
        """
        Start a task that creates volume C{name}: empty, of C{capacity_gb}
        GiB, or holding the image downloaded from C{url} (of C{format}, by
        default the URL's suffix's; a compressed one needs C{capacity_gb}:
        its size is known only once decompressed; a qcow2 one may give it,
        the volume then at least that large), whose bytes as
        downloaded must have SHA-256 C{sha256} if given.  Answers the task.
        """
        pool = await self._pools.pool(pool_name)
        fmt = requested_format(capacity_gb, url, format, sha256)
        compressed = fmt in DECOMPRESSORS
        if capacity_gb is not None and (isinstance(capacity_gb, bool)
                                        or not isinstance(capacity_gb, int) or capacity_gb < 1):
            raise InvalidInput(f"capacity is a whole number of GB (at least 1), not {capacity_gb!r}")
        if url is not None:
            check_url(url)
        if sha256 is not None:
            sha256 = check_sha256(sha256)
        validate_name("volume", name)
        if url is not None:
            # An address known now to be out of bounds is a 400, not a task.
            await self.downloads.check(url)
            # What the server lacks for the format is a 409, not a task.
            await check_server(self._pools.zfs(pool), pool, fmt)
        image = volume_create.Image(
            compression=fmt if compressed else None,
            size=capacity_gb * GiB if capacity_gb is not None else None, sha256=sha256,
            qcow2=fmt == "qcow2")
        self._intents.check(f"{pool.name}/{name}")
        lock = self.lock(pool.name, name, "being created")
        await lock.acquire()

        async def job(task):
            try:
                await lock.set_task(task.id)
                async with self._intents.operation(volume_create.KIND,
                                                   f"{pool.name}/{name}") as op:
                    zfs = self._pools.zfs(pool)

                    async def add_record(size):
                        await self._store.add_volume(**self.new_record(pool, name, size))
                        self._events.emit("volume.created", {"pool": pool.name, "volume": name})

                    if url is None:
                        return await volume_create.run_empty(op, zfs, pool, name,
                                                             capacity_gb * GiB, add_record)
                    return await volume_create.run_download(op, self.downloads, zfs, pool, name,
                                                            url, task, add_record, image)
            finally:
                await lock.release()

        try:
            await self._check_new_volume(pool, name)
            return await self._tasks.start(
                Target("volume", {"pool": pool.name, "volume": name}), job,
                f"creating volume {name!r} in storage pool {pool.name!r}"
            )
        except BaseException:
            await lock.release()
            raise

    async def delete_volume(self, pool_name: str, name: str, force: bool = False) -> None:
        """
        Destroy a volume Comet created: 409 while mapped or a VM's disk, or
        while ZFS snapshots or clones hang on it.  With C{force} (an admin's
        way to clear what an earlier Comet, or a hand, left), the snapshots
        and clones of it that no record owns are destroyed with it; what a
        record owns (a VM's snapshot, a recorded volume cloned from it) or
        what does not carry Comet's tag stays a 409, and nothing is destroyed.
        """
        pool = await self._pools.pool(pool_name)
        validate_name("volume", name)
        async with self.lock(pool.name, name, "being deleted"):
            await self.delete_locked(pool, name, force)
        self._events.emit("volume.deleted", {"pool": pool.name, "volume": name})

    async def delete_locked(self, pool, name: str, force: bool = False) -> None:
        """L{delete_volume}, the volume's lock held by the caller."""
        record = await self._store.volume(pool.name, name)
        if record is not None and record.mapped_to:
            raise Conflict(f"volume {name!r} is mapped ({_how(record)}); unmap it first")
        if record is not None and record.vm_uuid and await self._owners.exists(record.vm_uuid):
            raise Conflict(f"volume {name!r} is a disk of VM {record.vm_uuid}; detach it first")
        zfs = self._pools.zfs(pool)
        if record is not None and self._local is not None:
            await self._local.drop_caches(record)
        clones: list[str] = []
        if force:
            clones = await self._check_leftovers(pool, zfs, name, force=True)
        async with self._intents.operation(volume_delete.KIND, f"{pool.name}/{name}") as op:
            await volume_delete.run(
                op, self._store, zfs, pool, name, record, clones, force,
                explain=lambda: self._check_leftovers(pool, zfs, name, force=False))

    async def resize_volume(self, pool_name: str, name: str, capacity_gb: int) -> Volume:
        """
        Grow volume C{name} to C{capacity_gb} GiB; the volume after.  Only
        Comet's own volumes, only while not mapped (an exported LUN keeps the
        size it was exported with: stop the VM first), and only growing
        (shrinking would cut the guest's data off): a 409 otherwise.  The
        same size is a no-op.
        """
        if isinstance(capacity_gb, bool) or not isinstance(capacity_gb, int) or capacity_gb < 1:
            raise InvalidInput(f"capacity is a whole number of GB (at least 1), not {capacity_gb!r}")
        pool = await self._pools.pool(pool_name)
        validate_name("volume", name)
        async with self.lock(pool.name, name, "being resized"):
            volume = await self.volume(pool.name, name)
            record, size = volume.record, capacity_gb * GiB
            if record is None:
                raise Conflict(f"volume {name!r} was not made by Comet; it is not resized")
            if record.mapped_to:
                raise Conflict(f"volume {name!r} is mapped ({_how(record)}):"
                               " it keeps its size; stop its VM (or unmap it) first")
            if size < volume.capacity:
                raise Conflict(f"volume {name!r} is {volume.capacity} bytes; it can only grow"
                               f" ({capacity_gb} GB is smaller)")
            if size == volume.capacity:
                return volume
            async with self._intents.operation(volume_resize.KIND, f"{pool.name}/{name}") as op:
                live = await volume_resize.run(op, self._store, self._pools.zfs(pool), pool,
                                               name, size)
        self._events.emit("volume.changed", {"pool": pool.name, "volume": name,
                                             "capacity": live.size})
        return await self.volume(pool.name, name)

    async def _check_leftovers(self, pool, zfs, name: str, force: bool) -> list[str]:
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
        for snapshot in await self.snapshots_of_volume(key) if self._snapshots else []:
            if f"{zvol}@{zfs_snapname(snapshot.name)}" in snapshots:
                vm = await self._owners.name(snapshot.vm_uuid)
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
        return await self._snapshots.with_volume(volume)

    async def vm_of(self, volume: Volume):
        """The record of the VM whose disk C{volume} is, or C{None}."""
        if volume.record is None:
            return None
        return await self._owners.record(volume.record.vm_uuid)
