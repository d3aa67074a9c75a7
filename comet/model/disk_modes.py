"""
Where a VM runs its disks (its C{disk_mode}, and its template's): on the
storage server, which exports them over iSCSI to its host (C{iscsi}, the
default), or on a copy on its compute host's own ZFS, synced back when it
stops (C{local}, L{comet.model.storage.localcopies}).
"""

ISCSI = "iscsi"
LOCAL = "local"
DISK_MODES = (ISCSI, LOCAL)


def check_disk_mode(value: object) -> str:
    """C{value} if it is a disk mode; else L{comet.errors.InvalidInput}."""
    from comet.errors import InvalidInput

    if value not in DISK_MODES:
        raise InvalidInput(f"disk_mode must be one of {', '.join(DISK_MODES)}, not {value!r}")
    return value
