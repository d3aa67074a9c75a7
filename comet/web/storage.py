"""
Storage: C{/storageservers}, C{/storageservers/:host},
C{/storageservers/:host/storagezpools}, C{/storagepools},
C{/storagepools/:name} (actions C{activate}, C{deactivate}),
C{/storagepools/:pool/storagevolumes}, C{/storagepools/:pool/storagevolumes/:volume}.
"""

from __future__ import annotations

from comet.errors import NotFound
from comet.model.storage import Pool, Volume, snapshot_actions
from comet.web._schemas import (BOOL, COUNT, NAME, STRING, TIME, URI, actions, enum, listing,
                                nullable, obj, resource)
from comet.web._table import OPERATOR, Response, Routes
from comet.web.paths import PATHS
from comet.web.tasks import TASK, task_response
from comet.web.volume_requests import CAPACITY, VOLUME_CREATE

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()


#: A ZFS dataset path: components that follow the name rule, joined by C{/}.
DATASET = {
    "type": "string",
    "maxLength": 255,
    "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,63})*$",
}
#: A storage server's address, as the configuration names it.
SERVER = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.:-]{0,252}$"}

#: What storage operations answer when no storage is configured (404), a
#: server does not answer (503) or a command fails on it (502), besides
#: their own 409s.
_STORAGE_ERRORS = (404, 409, 502, 503)

SERVER_SUMMARY = resource("StorageServerSummary", host=SERVER, href=URI)
SERVER_SCHEMA = resource(
    "StorageServer",
    host=SERVER,
    state=enum("reachable", "unreachable"),
    storagezpools=URI,
    href=URI,
    actions=actions(),
)
ZPOOL = resource(
    "Zpool", host=SERVER, zpool=STRING, size=COUNT, allocated=COUNT, free=COUNT, health=STRING
)
POOL_STATES = enum("active", "inactive")
POOL_SUMMARY = resource("StoragePoolSummary", name=NAME, state=POOL_STATES, server=SERVER,
                        href=URI)
POOL = resource(
    "StoragePool",
    name=NAME,
    state=POOL_STATES,
    path=DATASET,
    capacity=COUNT,
    allocated=COUNT,
    available=COUNT,
    server=SERVER,
    zpool=STRING,
    configured=BOOL,
    volumes=URI,
    href=URI,
    actions=actions("activate", "deactivate"),
)
VOLUME_STATES = enum("mapped", "unmapped")
VOLUME_SUMMARY = resource("StorageVolumeSummary", name=STRING, state=VOLUME_STATES,
                          capacity=COUNT, href=URI)
VOLUME = resource(
    "StorageVolume",
    name=STRING,
    state=VOLUME_STATES,
    host=SERVER,
    zpool=STRING,
    target=nullable(STRING),
    exported_to=nullable(STRING),
    local_copy=nullable(STRING),
    capacity=COUNT,
    used=COUNT,
    vm=nullable(URI),
    managed=BOOL,
    href=URI,
    actions=actions(),
)


def _storage(models):
    if models.storage is None:
        raise NotFound("no storage is configured")
    return models.storage


def _server(models, host: str) -> str:
    if host not in _storage(models).servers():
        raise NotFound(f"storage server {host!r} does not exist")
    return host


# Servers ----------------------------------------------------------------------


@routes.route("GET", "storageservers", answers={200: listing(SERVER_SUMMARY)}, errors=(404,))
async def list_servers(models, request, body):
    """List the configured storage servers."""
    return [
        {"host": host, "href": PATHS.href("storageserver", host=host)}
        for host in _storage(models).servers()
    ]


@routes.route("GET", "storageserver", answers={200: SERVER_SCHEMA})
async def get_server(models, request, body, host):
    """Describe a storage server: whether it answers now."""
    _server(models, host)
    return {
        "host": host,
        "state": await models.storage.server_state(host),
        "storagezpools": PATHS.href("storageserver.zpools", host=host),
        "href": PATHS.href("storageserver", host=host),
        "actions": {},
    }


@routes.route("GET", "storageserver.zpools", answers={200: listing(ZPOOL)}, errors=_STORAGE_ERRORS)
async def list_zpools(models, request, body, host):
    """The ZFS pools of a storage server, read live."""
    _server(models, host)
    return [
        {"host": host, "zpool": p.name, "size": p.size, "allocated": p.allocated,
         "free": p.free, "health": p.health}
        for p in await models.storage.zpools(host)
    ]


# Pools --------------------------------------------------------------------------


def pool_summary(pool: Pool) -> dict:
    return {"name": pool.name, "state": "active" if pool.active else "inactive",
            "server": pool.server, "href": PATHS.href("storagepool", name=pool.name)}


async def pool_representation(models, pool: Pool) -> dict:
    space = await models.storage.space(pool)
    return {
        "name": pool.name,
        "state": "active" if pool.active else "inactive",
        "path": pool.dataset,
        "capacity": space.capacity,
        "allocated": space.allocated,
        "available": space.available,
        "server": pool.server,
        "zpool": pool.zpool,
        "configured": pool.configured,
        "volumes": PATHS.href("storagevolumes", pool=pool.name),
        "href": PATHS.href("storagepool", name=pool.name),
        "actions": PATHS.actions("storagepool", pool.actions, name=pool.name),
    }


@routes.route("GET", "storagepools", answers={200: listing(POOL_SUMMARY)}, errors=(404,))
async def list_pools(models, request, body):
    """List the storage pools (configured and registered)."""
    return [pool_summary(p) for p in await _storage(models).pools()]


@routes.route("POST", "storagepools", obj(("name", "server", "dataset"),
                                          name=NAME, server=SERVER, dataset=DATASET),
              answers={201: POOL}, errors=_STORAGE_ERRORS)
async def create_pool(models, request, body):
    """Register a pool: a dataset on a configured storage server (created if absent)."""
    if not _storage(models).servers():
        # As the template's disk names a pool that does not exist: the
        # document, which lists the configured servers, can list none.
        raise NotFound("no storage server is configured")
    pool = await _storage(models).create_pool(body["name"], body["server"], body["dataset"])
    href = PATHS.href("storagepool", name=pool.name)
    return Response(await pool_representation(models, pool), 201, {"Location": href})


@routes.route("GET", "storagepool", answers={200: POOL}, errors=_STORAGE_ERRORS)
async def get_pool(models, request, body, name):
    """Describe a pool, with its space read live."""
    return await pool_representation(models, await _storage(models).pool(name))


@routes.route("DELETE", "storagepool", obj(), answers={204: None}, errors=_STORAGE_ERRORS)
async def delete_pool(models, request, body, name):
    """Unregister a pool that holds no volume."""
    await _storage(models).delete_pool(name)
    return Response(code=204)


def _pool_action(active: bool):
    async def handler(models, request, body, name):
        pool = await _storage(models).set_active(name, active)
        return await pool_representation(models, pool)

    handler.__doc__ = ("Activate" if active else "Deactivate") + " the pool."
    return handler


for _active in (True, False):
    routes.route("POST", "storagepool.activate" if _active else "storagepool.deactivate", obj(),
                 answers={200: POOL}, errors=_STORAGE_ERRORS)(_pool_action(_active))


# Volumes ------------------------------------------------------------------------


def volume_href(volume: Volume) -> str:
    return PATHS.href("storagevolume", pool=volume.pool.name, volume=volume.name)


async def _vm_href(models, volume: Volume) -> str | None:
    vm = await models.storage.vm_of(volume)
    return PATHS.href("vm", cluster=vm.cluster, name=vm.name) if vm is not None else None


async def volume_representation(models, volume: Volume) -> dict:
    record = volume.record
    return {
        "name": volume.name,
        "state": volume.state,
        "host": volume.pool.server,
        "zpool": volume.pool.zpool,
        "target": volume.target,
        "exported_to": record.exported_to if record is not None else None,
        # Local-copy mode: the compute host whose copy may be newer than this
        # one (the volume's newest data is there until it is synced back).
        "local_copy": record.copy_host if record is not None else None,
        "capacity": volume.capacity,
        "used": volume.used,
        "vm": await _vm_href(models, volume),
        "managed": record is not None,
        "href": volume_href(volume),
        "actions": {},
    }


@routes.route("GET", "storagevolumes", answers={200: listing(VOLUME_SUMMARY)},
              errors=_STORAGE_ERRORS)
async def list_volumes(models, request, body, pool):
    """List the volumes of a pool (read live from ZFS)."""
    return [
        {"name": v.name, "state": v.state, "capacity": v.capacity, "href": volume_href(v)}
        for v in await _storage(models).volumes(pool)
    ]


@routes.route(
    "POST",
    "storagevolumes",
    VOLUME_CREATE,
    answers={202: TASK},
    errors=_STORAGE_ERRORS,
)
async def create_volume(models, request, body, pool):
    """Create a volume, empty (capacity in GB) or from an image URL: a task."""
    task = await _storage(models).create_volume(
        pool, body["name"], capacity_gb=body.get("capacity"), url=body.get("url"),
        format=body.get("format"), sha256=body.get("sha256"),
    )
    return task_response(task)


@routes.route("GET", "storagevolume", answers={200: VOLUME}, errors=_STORAGE_ERRORS)
async def get_volume(models, request, body, pool, volume):
    """Describe a volume, with its size and use read live."""
    return await volume_representation(models, await _storage(models).volume(pool, volume))


@routes.route("PUT", "storagevolume", obj(("capacity",), capacity=CAPACITY),
              answers={200: VOLUME}, errors=_STORAGE_ERRORS)
async def update_volume(models, request, body, pool, volume):
    """
    Grow a volume to C{capacity} GB (409: not Comet's, mapped, or smaller
    than it is; the same size changes nothing).  Unlike other PUTs it
    changes the zvol itself, at once.
    """
    return await volume_representation(
        models, await _storage(models).resize_volume(pool, volume, body["capacity"]))


@routes.route("DELETE", "storagevolume", obj(force=BOOL), answers={204: None},
              errors=_STORAGE_ERRORS)
async def delete_volume(models, request, body, pool, volume):
    """
    Destroy a volume (409 while it is mapped or a VM's disk, or while ZFS
    snapshots or clones hang on it); C{force}: also the snapshots and clones
    of it that no record owns (admins only, as every volume DELETE).
    """
    await _storage(models).delete_volume(pool, volume, force=body.get("force", False))
    return Response(code=204)


# A VM's volumes --------------------------------------------------------------------


DEV = {"type": "string", "pattern": r"^vd[a-z]$"}

VM_STORAGE = resource(
    "VMStorage",
    name=NAME,
    dev=DEV,
    pool=NAME,
    vol=NAME,
    state=VOLUME_STATES,
    target=nullable(STRING),
    volume=URI,
    href=URI,
    actions=actions("unmap"),
)


def vm_storage_representation(storage) -> dict:
    vm, record = storage.vm.record, storage.record
    params = dict(cluster=vm.cluster, name=vm.name, zvol=record.name)
    return {
        "name": record.name,
        "dev": record.dev,
        "pool": record.pool,
        "vol": record.name,
        "state": storage.state,
        "target": record.target,
        "volume": PATHS.href("storagevolume", pool=record.pool, volume=record.name),
        "href": PATHS.href("vm.storage", **params),
        "actions": PATHS.actions("vm.storage", storage.actions, **params),
    }


def _vm_storages(models):
    if models.vm_storages is None:
        raise NotFound("no storage is configured")
    return models.vm_storages


@routes.route("GET", "vm.storages", answers={200: listing(VM_STORAGE)}, errors=_STORAGE_ERRORS)
async def list_vm_storages(models, request, body, cluster, name):
    """List the volumes attached to a VM."""
    return [vm_storage_representation(s) for s in await _vm_storages(models).list(cluster, name)]


@routes.route("POST", "vm.storages", obj(("pool", "vol"), pool=NAME, vol=NAME, dev=DEV),
              answers={201: VM_STORAGE}, errors=_STORAGE_ERRORS)
async def attach_vm_storage(models, request, body, cluster, name):
    """Attach a volume to the VM (hot-plug if it runs); 409 if another VM has it."""
    storage = await _vm_storages(models).attach(
        cluster, name, body["pool"], body["vol"], body.get("dev"))
    representation = vm_storage_representation(storage)
    return Response(representation, 201, {"Location": representation["href"]})


@routes.route("GET", "vm.storage", answers={200: VM_STORAGE}, errors=_STORAGE_ERRORS)
async def get_vm_storage(models, request, body, cluster, name, zvol):
    """Describe a volume attached to the VM."""
    return vm_storage_representation(await _vm_storages(models).get(cluster, name, zvol))


@routes.route("DELETE", "vm.storage", obj(), answers={204: None}, errors=_STORAGE_ERRORS)
async def delete_vm_storage(models, request, body, cluster, name, zvol):
    """Detach the volume and destroy it (409 while the VM runs)."""
    await _vm_storages(models).delete(cluster, name, zvol)
    return Response(code=204)


@routes.route("POST", "vm.storage.unmap", obj(), answers={202: TASK}, errors=_STORAGE_ERRORS)
async def unmap_vm_storage(models, request, body, cluster, name, zvol):
    """Detach the volume from the VM; it stays in its pool (a task)."""
    task = await _vm_storages(models).unmap(cluster, name, zvol)
    return task_response(task)


# A VM's snapshots ------------------------------------------------------------------



SNAPSHOT = resource(
    "VMSnapshot",
    name=NAME,
    created=TIME,
    parent={"anyOf": [NAME, {"const": ""}]},
    current=BOOL,
    href=URI,
    actions=actions("revert"),
)


def snapshot_representation(vm, snapshot) -> dict:
    params = dict(cluster=vm.record.cluster, name=vm.name, snapshot=snapshot.name)
    return {
        "name": snapshot.name,
        "created": snapshot.created,
        "parent": snapshot.parent,
        "current": bool(snapshot.current),
        "href": PATHS.href("vm.snapshot", **params),
        "actions": PATHS.actions("vm.snapshot", snapshot_actions(vm), **params),
    }


def _vm_snapshots(models):
    if models.vm_snapshots is None:
        raise NotFound("no storage is configured")
    return models.vm_snapshots


@routes.route("GET", "vm.snapshots", answers={200: listing(SNAPSHOT)}, errors=_STORAGE_ERRORS)
async def list_snapshots(models, request, body, cluster, name):
    """List the VM's snapshots, oldest first."""
    vm, snapshots = await _vm_snapshots(models).list(cluster, name)
    return [snapshot_representation(vm, s) for s in snapshots]


@routes.route("POST", "vm.snapshots", obj(name=NAME), role=OPERATOR, answers={201: SNAPSHOT},
              errors=_STORAGE_ERRORS)
async def create_snapshot(models, request, body, cluster, name):
    """Snapshot all the VM's volumes at once (works while it runs)."""
    vm, snapshot = await _vm_snapshots(models).create(cluster, name, body.get("name"))
    representation = snapshot_representation(vm, snapshot)
    return Response(representation, 201, {"Location": representation["href"]})


@routes.route("GET", "vm.snapshot", answers={200: SNAPSHOT}, errors=_STORAGE_ERRORS)
async def get_snapshot(models, request, body, cluster, name, snapshot):
    """Describe one snapshot."""
    return snapshot_representation(*await _vm_snapshots(models).get(cluster, name, snapshot))


@routes.route("DELETE", "vm.snapshot", obj(), role=OPERATOR, answers={204: None},
              errors=_STORAGE_ERRORS)
async def delete_snapshot(models, request, body, cluster, name, snapshot):
    """Delete a snapshot (its children become its parent's)."""
    await _vm_snapshots(models).delete(cluster, name, snapshot)
    return Response(code=204)


@routes.route("POST", "vm.snapshot.revert", obj(), role=OPERATOR, answers={200: SNAPSHOT},
              errors=_STORAGE_ERRORS)
async def revert_snapshot(models, request, body, cluster, name, snapshot):
    """Roll the VM's volumes back to the snapshot (the VM must be off)."""
    return snapshot_representation(*await _vm_snapshots(models).revert(cluster, name, snapshot))
