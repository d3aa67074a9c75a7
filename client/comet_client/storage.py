"""C{comet pool}, C{comet volume}, C{comet snapshot} and C{comet server}."""

from __future__ import annotations

import click

from comet_client import names
from comet_client.api import path
from comet_client.cli import App, command_group, json_option, pass_app, wait_option
from comet_client.compute import body_of, vm_path

# --- pools ---------------------------------------------------------------------

pool = command_group("pool", "Storage pools: ZFS datasets where volumes live.")


@pool.command("list")
@json_option
@pass_app
def pool_list(app: App, as_json):
    """List the storage pools."""
    app.show(app.client.get("/storagepools"), as_json)


@pool.command("show")
@click.argument("name", type=names.POOL)
@json_option
@pass_app
def pool_show(app: App, name, as_json):
    """Describe a pool, with its space read live."""
    app.show(app.client.get(path("storagepools", name)), as_json)


@pool.command("create")
@click.argument("name")
@click.option("--server", required=True, type=names.SERVER, help="The storage server (its host).")
@click.option("--dataset", required=True, help="The ZFS dataset, e.g. tank/comet.")
@json_option
@pass_app
def pool_create(app: App, name, server, dataset, as_json):
    """Register a pool on a storage server."""
    app.call("POST", "/storagepools", {"name": name, "server": server, "dataset": dataset}, as_json)


@pool.command("delete")
@click.argument("name", type=names.POOL)
@pass_app
def pool_delete(app: App, name):
    """Unregister a pool that holds no volume."""
    app.call("DELETE", path("storagepools", name), {}, done=f"Deleted pool {name}.")


def _pool_action(action: str, doc: str):
    @pool.command(action, help=doc)
    @click.argument("name", type=names.POOL)
    @json_option
    @pass_app
    def command(app: App, name, as_json):
        app.call("POST", path("storagepools", name, action), {}, as_json)


_pool_action("activate", "Let a pool take new volumes and place VMs.")
_pool_action("deactivate", "Stop a pool from taking new volumes or placing VMs.")


# --- volumes -------------------------------------------------------------------

volume = command_group("volume", "Storage volumes (POOL/VOLUME) and the VMs they are attached to.")


def volume_path(ref):
    return path("storagepools", ref[0], "storagevolumes", ref[1])


@volume.command("list")
@click.argument("pool_name", metavar="POOL", type=names.POOL)
@json_option
@pass_app
def volume_list(app: App, pool_name, as_json):
    """List the volumes of a pool."""
    app.show(app.client.get(path("storagepools", pool_name, "storagevolumes")), as_json)


@volume.command("show")
@click.argument("ref", metavar="POOL/VOLUME", type=names.VOLUME)
@json_option
@pass_app
def volume_show(app: App, ref, as_json):
    """Describe a volume."""
    app.show(app.client.get(volume_path(ref)), as_json)


@volume.command("create")
@click.argument("ref", metavar="POOL/VOLUME", type=names.VOLUME)
@click.option("--capacity", type=click.IntRange(1),
              help="An empty volume of this many GB (with --url: a compressed image's size"
                   " once decompressed; a qcow2 image's volume at least this large).")
@click.option("--url", help="A volume holding the image downloaded from URL.")
@click.option("--format", "image_format", type=click.Choice(["raw", "gzip", "xz", "zstd", "qcow2"]),
              help="The image's format (default: from the URL's suffix, else raw).")
@click.option("--sha256", help="The SHA-256 the downloaded bytes must have (hex).")
@json_option
@wait_option
@pass_app
def volume_create(app: App, ref, capacity, url, image_format, sha256, as_json, no_wait):
    """
    Create a volume: empty (--capacity GB) or from an image (--url; a
    compressed one with --capacity too; a qcow2 one, converted on the
    storage server, with --capacity if the volume is to be larger) (a task).
    """
    if capacity is None and url is None:
        raise click.UsageError("give --capacity, --url, or both for a compressed image")
    app.call("POST", path("storagepools", ref[0], "storagevolumes"),
             body_of(name=ref[1], capacity=capacity, url=url, format=image_format,
                     sha256=sha256), as_json, no_wait)


@volume.command("resize")
@click.argument("ref", metavar="POOL/VOLUME", type=names.VOLUME)
@click.option("--capacity", type=click.IntRange(1), required=True,
              help="The new size in GB; a volume only grows, and not while mapped.")
@json_option
@pass_app
def volume_resize(app: App, ref, capacity, as_json):
    """Grow a volume (its VM stopped): the guest sees the new size at its next start."""
    app.call("PUT", volume_path(ref), {"capacity": capacity}, as_json)


@volume.command("delete")
@click.argument("ref", metavar="POOL/VOLUME", type=names.VOLUME)
@click.option("--force", is_flag=True, help="Delete it with its snapshots.")
@pass_app
def volume_delete(app: App, ref, force):
    """Delete a volume that no VM uses."""
    app.call("DELETE", volume_path(ref), body_of(force=force), done=f"Deleted volume {ref[0]}/{ref[1]}.")


@volume.command("attach")
@click.argument("vm_ref", metavar="CLUSTER/VM", type=names.VM)
@click.argument("ref", metavar="POOL/VOLUME", type=names.VOLUME)
@click.option("--dev", help="The device name in the guest (vdb, vdc, ...).")
@json_option
@pass_app
def volume_attach(app: App, vm_ref, ref, dev, as_json):
    """Attach a volume to a VM (hot-plugged if it runs)."""
    app.call("POST", vm_path(vm_ref, "storages"), body_of(pool=ref[0], vol=ref[1], dev=dev), as_json)


@volume.command("unmap")
@click.argument("vm_ref", metavar="CLUSTER/VM", type=names.VM)
@click.argument("name", metavar="VOLUME")
@json_option
@wait_option
@pass_app
def volume_unmap(app: App, vm_ref, name, as_json, no_wait):
    """Detach a volume from a VM; it stays in its pool (a task)."""
    app.call("POST", vm_path(vm_ref, "storages", name, "unmap"), {}, as_json, no_wait)


@volume.command("remove")
@click.argument("vm_ref", metavar="CLUSTER/VM", type=names.VM)
@click.argument("name", metavar="VOLUME")
@pass_app
def volume_remove(app: App, vm_ref, name):
    """Detach a volume from a shut-off VM and destroy it."""
    app.call("DELETE", vm_path(vm_ref, "storages", name), {},
             done=f"Removed volume {name} from {vm_ref[0]}/{vm_ref[1]}.")


# --- snapshots -----------------------------------------------------------------

snapshot = command_group("snapshot", "Snapshots of a VM's disks.")


@snapshot.command("list")
@click.argument("vm_ref", metavar="CLUSTER/VM", type=names.VM)
@json_option
@pass_app
def snapshot_list(app: App, vm_ref, as_json):
    """List a VM's snapshots, oldest first."""
    app.show(app.client.get(vm_path(vm_ref, "snapshots")), as_json, ("name", "created", "parent", "current"))


@snapshot.command("show")
@click.argument("vm_ref", metavar="CLUSTER/VM", type=names.VM)
@click.argument("name")
@json_option
@pass_app
def snapshot_show(app: App, vm_ref, name, as_json):
    """Describe a snapshot."""
    app.show(app.client.get(vm_path(vm_ref, "snapshots", name)), as_json)


@snapshot.command("create")
@click.argument("vm_ref", metavar="CLUSTER/VM", type=names.VM)
@click.argument("name", required=False)
@json_option
@pass_app
def snapshot_create(app: App, vm_ref, name, as_json):
    """Snapshot a VM's disks (also while it runs)."""
    app.call("POST", vm_path(vm_ref, "snapshots"), body_of(name=name), as_json)


@snapshot.command("delete")
@click.argument("vm_ref", metavar="CLUSTER/VM", type=names.VM)
@click.argument("name")
@pass_app
def snapshot_delete(app: App, vm_ref, name):
    """Delete a snapshot."""
    app.call("DELETE", vm_path(vm_ref, "snapshots", name), {}, done=f"Deleted snapshot {name}.")


@snapshot.command("revert")
@click.argument("vm_ref", metavar="CLUSTER/VM", type=names.VM)
@click.argument("name")
@json_option
@wait_option
@pass_app
def snapshot_revert(app: App, vm_ref, name, as_json, no_wait):
    """Bring a VM's disks back to a snapshot."""
    app.call("POST", vm_path(vm_ref, "snapshots", name, "revert"), {}, as_json, no_wait)


# --- storage servers -----------------------------------------------------------

server = command_group("server", "Storage servers (from the daemon's configuration).")


@server.command("list")
@json_option
@pass_app
def server_list(app: App, as_json):
    """List the storage servers and whether they answer."""
    app.show(app.client.get("/storageservers"), as_json)


@server.command("show")
@click.argument("host", type=names.SERVER)
@json_option
@pass_app
def server_show(app: App, host, as_json):
    """Describe a storage server."""
    app.show(app.client.get(path("storageservers", host)), as_json)


@server.command("zpools")
@click.argument("host", type=names.SERVER)
@json_option
@pass_app
def server_zpools(app: App, host, as_json):
    """List a storage server's ZFS pools, read live."""
    app.show(app.client.get(path("storageservers", host, "storagezpools")), as_json)
