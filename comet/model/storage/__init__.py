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

One module per idea: L{servers} (and L{exports} over them), L{pools},
L{volumes} (and L{download}), L{vmdisks} (the VM model's disks),
L{vmstorages} (a VM's volumes), L{snapshots} (and L{branches}, what
reverts leave), L{owners}, L{names}; L{model} puts them together.  This
module is their public face.
"""

from comet.model.storage.branches import Branches, branch
from comet.model.storage.exports import Exports, export_intact
from comet.model.storage.model import StorageModel
from comet.model.storage.names import (
    GiB, ROOT_DEV, SEED_DEV, base_snapshot_name, vm_disk_name, volume_lock, zfs_snapname,
)
from comet.model.storage.pools import Pool, PoolSpace, Pools, check_dataset
from comet.model.storage.servers import PROBE_TIMEOUT, Server, Servers, destroy_all, undo
from comet.model.storage.snapshots import VMSnapshotModel, revert_refusal, snapshot_actions
from comet.model.storage.vmdisks import StorageDisks
from comet.model.storage.vmstorages import (
    VMStorage, VMStorageModel, has_disk, unmap_refusal, wait_released,
)
from comet.model.storage.volumes import Volume, Volumes, new_record

__all__ = [
    "GiB", "PROBE_TIMEOUT", "ROOT_DEV", "SEED_DEV", "Branches", "Exports", "Pool", "PoolSpace", "Pools",
    "Server", "Servers", "StorageDisks", "StorageModel", "VMSnapshotModel", "VMStorage",
    "VMStorageModel", "Volume", "Volumes", "base_snapshot_name", "branch", "check_dataset",
    "destroy_all", "export_intact", "has_disk", "new_record", "revert_refusal",
    "snapshot_actions", "undo", "unmap_refusal", "vm_disk_name", "volume_lock",
    "wait_released", "zfs_snapname",
]
