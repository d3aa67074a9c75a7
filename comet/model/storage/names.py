"""
The names Comet gives what it makes on a storage server, and the sizes it
counts in: shared by every module of L{comet.model.storage} and by the
reconciler, which finds leftovers by these names.
"""

from __future__ import annotations

GiB = 1024**3

#: Device name of a VM's own disk (made from its template).
ROOT_DEV = "vda"
#: Device name of a VM's first-boot seed (L{comet.model.provision}): a
#: CD-ROM on the IDE bus, the one every guest kernel of a C{pc} machine
#: drives (C{ata_piix}) and where installers and cloud-init look.
SEED_DEV = "hdc"


def vm_disk_name(vm_uuid: str, dev: str = ROOT_DEV) -> str:
    """The name (in its pool) of a VM's own disk: C{vm-<uuid>-<dev>}."""
    return f"vm-{vm_uuid}-{dev}"


def base_snapshot_name(vm_uuid: str) -> str:
    """The snapshot of a template's base volume a VM's disk is cloned from."""
    return f"comet-base-{vm_uuid}"


def zfs_snapname(name: str) -> str:
    """The ZFS snapshot name of VM snapshot C{name} on each of its volumes."""
    return f"comet-{name}"


def volume_lock(locks, pool: str, name: str, doing: str):
    """The lock of volume C{pool}/C{name} (L{comet.model.locks}), for an operation C{doing}."""
    return locks.lock(f"{pool}/{name}", f"volume {name!r} in storage pool {pool!r}", doing)
