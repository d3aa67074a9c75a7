"""
ZFS command lines: the names Comet accepts, and the argument lists of every
C{zfs}, C{zpool} and block-device command L{comet.remote.zfs.ZFS} runs.

Every command is an argument list (the runner quotes it); every listing asks
for C{-H -p} output, which is tab-separated, one dataset a line, numbers in
bytes or seconds, and C{-} for a value that is not set (read by
L{comet.remote.zfs_output}).  Sizes are bytes throughout.

A zvol's block device (C{/dev/zdN}) is resolved by name every time it is
needed: the storage servers have no udev (so no C{/dev/zvol/...} links may be
relied on) and minor numbers can change after a pool is imported again.  A
small, constant shell script runs C{zvol_id} (OpenZFS's own helper, which
asks the kernel for a device's dataset name with the C{BLKZNAME} ioctl) on
each C{/dev/zd*} whole-disk node and compares names; the volume name reaches
it as a positional parameter, never inside the script text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from comet.errors import InvalidInput
from comet.names import check_name

#: The volblocksize Comet gives every zvol it creates (bytes): OpenZFS 2.1's
#: default, made explicit so that sizes can be rounded without asking.
DEFAULT_VOLBLOCKSIZE = 16 * 1024

#: The user property that marks what Comet created, and for which instance.
OWNER_PROPERTY = "comet:owner"

#: Columns of a volume listing, in order.
VOLUME_COLUMNS = (
    "name", "volsize", "volblocksize", "used", "referenced", "origin", "creation",
    OWNER_PROPERTY,
)
#: Columns of a snapshot listing, in order.  C{createtxg} orders snapshots
#: taken within one second.
SNAPSHOT_COLUMNS = ("name", "createtxg", "creation", "used", "referenced", OWNER_PROPERTY)
#: Columns of a pool listing, in order.
POOL_COLUMNS = ("name", "size", "allocated", "free", "health")
#: Columns of C{zfs get} output, in order.
GET_COLUMNS = ("name", "property", "value", "source")

_PROPERTY = re.compile(r"^[a-z][a-z0-9_.:-]{0,255}$")

#: Prints C{DEVICE<TAB>ZVOL} for every zvol block device (whole disks only).
DEVICES_SCRIPT = r"""
z=$(command -v zvol_id) || z=/lib/udev/zvol_id
[ -x "$z" ] || z=/usr/lib/udev/zvol_id
[ -x "$z" ] || { echo "zvol_id not found (OpenZFS zfsutils: /lib/udev/zvol_id)" >&2; exit 127; }
for d in /dev/zd*; do
    case "$d" in '/dev/zd*'|*p[0-9]*) continue ;; esac
    n=$("$z" "$d" 2>/dev/null) && printf '%s\t%s\n' "$d" "$n"
done
exit 0
"""

#: Prints the block device of zvol C{$1}, waiting up to C{$2} seconds for it
#: to appear (zvol minors are created asynchronously after C{zfs create
#: -V}); exits 2 when there is none.  The device udev's (or mdev's) link
#: C{/dev/zvol/$1} names is taken once C{zvol_id} confirms it; only without
#: a right link (no udev, a rename not yet seen) is every zvol device asked,
#: each opened a moment: other commands' volumes, some perhaps being
#: received or destroyed, are best left alone.
DEVICE_SCRIPT = r"""
name=$1; tries=$(($2 * 10)); i=0
z=$(command -v zvol_id) || z=/lib/udev/zvol_id
[ -x "$z" ] || z=/usr/lib/udev/zvol_id
[ -x "$z" ] || { echo "zvol_id not found (OpenZFS zfsutils: /lib/udev/zvol_id)" >&2; exit 127; }
while :; do
    if [ -L "/dev/zvol/$name" ]; then
        d=$(readlink -f "/dev/zvol/$name")
        if [ "$("$z" "$d" 2>/dev/null)" = "$name" ]; then echo "$d"; exit 0; fi
    fi
    for d in /dev/zd*; do
        case "$d" in '/dev/zd*'|*p[0-9]*) continue ;; esac
        if [ "$("$z" "$d" 2>/dev/null)" = "$name" ]; then echo "$d"; exit 0; fi
    done
    [ "$i" -ge "$tries" ] && break
    sleep 0.1; i=$((i + 1))
done
echo "no block device for zvol $name" >&2
exit 2
"""


# Names


def check_dataset(name: object) -> str:
    """
    Check a dataset or volume path (C{pool/a/b}): components follow Comet's
    name rule, so nothing in them is special to a shell, to ZFS (C{@}, C{#},
    C{%}) or to a path.

    @raise InvalidInput: it does not.
    """
    if not isinstance(name, str) or not name or len(name) > 255:
        raise InvalidInput(f"not a dataset name: {name!r}")
    for part in name.split("/"):
        if not check_name(part):
            raise InvalidInput(f"not a dataset name: {name!r}")
    return name


def check_snapshot(name: object) -> str:
    """Check a snapshot name, C{dataset@snap}. @raise InvalidInput: it is not one."""
    if not isinstance(name, str) or name.count("@") != 1:
        raise InvalidInput(f"not a snapshot name: {name!r}")
    dataset, snap = name.split("@")
    check_dataset(dataset)
    if not check_name(snap):
        raise InvalidInput(f"not a snapshot name: {name!r}")
    return name


def _check_any(name: object) -> str:
    if isinstance(name, str) and "@" in name:
        return check_snapshot(name)
    return check_dataset(name)


def check_properties(properties: Mapping[str, str] | None) -> dict[str, str]:
    """
    Check property names and values for C{-o name=value}.

    Values may not hold a tab, newline or NUL, which would break C{-H}
    output (and NUL cannot be passed at all).

    @raise InvalidInput: one is not acceptable.
    """
    result = {}
    for key, value in (properties or {}).items():
        if not isinstance(key, str) or not _PROPERTY.match(key):
            raise InvalidInput(f"not a ZFS property name: {key!r}")
        if not isinstance(value, str) or re.search(r"[\t\n\r\0]", value) or len(value) > 8191:
            raise InvalidInput(f"not an acceptable value for ZFS property {key}: {value!r}")
        result[key] = value
    return result


def round_size(size: int, volblocksize: int = DEFAULT_VOLBLOCKSIZE) -> int:
    """
    C{size} (bytes) rounded up to a whole number of C{volblocksize} blocks,
    which ZFS requires of a volume's size.

    @raise InvalidInput: C{size} is not a positive integer.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise InvalidInput(f"a volume size is a positive number of bytes, not {size!r}")
    return -(-size // volblocksize) * volblocksize


# Command lines


def _options(properties: Mapping[str, str]) -> list[str]:
    argv = []
    for key, value in properties.items():
        argv += ["-o", f"{key}={value}"]
    return argv


def list_volumes_argv(dataset: str) -> list[str]:
    """The volumes directly under C{dataset}."""
    return ["zfs", "list", "-H", "-p", "-t", "volume", "-d", "1",
            "-o", ",".join(VOLUME_COLUMNS), check_dataset(dataset)]


def get_volume_argv(volume: str) -> list[str]:
    """One volume, in the columns of L{list_volumes_argv}."""
    return ["zfs", "list", "-H", "-p", "-t", "volume",
            "-o", ",".join(VOLUME_COLUMNS), check_dataset(volume)]


def list_snapshots_argv(volume: str) -> list[str]:
    """The snapshots of C{volume}."""
    return ["zfs", "list", "-H", "-p", "-t", "snapshot", "-d", "1",
            "-o", ",".join(SNAPSHOT_COLUMNS), check_dataset(volume)]


def get_argv(names: Sequence[str], properties: Sequence[str], recursive: bool = False
             ) -> list[str]:
    """C{zfs get} of C{properties} of C{names} (and their descendants if C{recursive})."""
    for prop in properties:
        check_properties({prop: ""})
    return (["zfs", "get", "-H", "-p"] + (["-r"] if recursive else [])
            + ["-o", ",".join(GET_COLUMNS), ",".join(properties)]
            + [_check_any(n) for n in names])


def pool_list_argv(pool: str | None = None) -> list[str]:
    """C{zpool list} of every pool, or of C{pool}."""
    return ["zpool", "list", "-H", "-p", "-o", ",".join(POOL_COLUMNS)] + (
        [check_dataset(pool)] if pool is not None else []
    )


def create_volume_argv(volume: str, size: int, properties: Mapping[str, str] | None = None,
                       volblocksize: int = DEFAULT_VOLBLOCKSIZE, sparse: bool = False
                       ) -> list[str]:
    """
    Create zvol C{volume} of at least C{size} bytes (rounded up to a whole
    number of C{volblocksize} blocks).  A C{sparse} volume reserves no space.
    """
    props = {"volblocksize": str(volblocksize)}
    props.update(check_properties(properties))
    return (["zfs", "create"] + (["-s"] if sparse else [])
            + ["-V", str(round_size(size, volblocksize))] + _options(props)
            + [check_dataset(volume)])


def create_dataset_argv(name: str, properties: Mapping[str, str] | None = None) -> list[str]:
    """Create a filesystem dataset C{name} that is never mounted."""
    props = {"canmount": "off", "mountpoint": "none"}
    props.update(check_properties(properties))
    return ["zfs", "create"] + _options(props) + [check_dataset(name)]


def destroy_argv(name: str, recursive: bool = False) -> list[str]:
    """Destroy a dataset, volume or snapshot (with its snapshots and children if C{recursive})."""
    return ["zfs", "destroy"] + (["-r"] if recursive else []) + [_check_any(name)]


def snapshot_argv(volumes: Sequence[str], snapname: str,
                  properties: Mapping[str, str] | None = None) -> list[str]:
    """Snapshot all of C{volumes} at once (atomically) as C{@snapname}."""
    if isinstance(volumes, str) or not volumes:
        raise InvalidInput("snapshot needs a list of one or more volumes")
    return (["zfs", "snapshot"] + _options(check_properties(properties))
            + [check_snapshot(f"{check_dataset(v)}@{snapname}") for v in volumes])


def clone_argv(snapshot: str, target: str, properties: Mapping[str, str] | None = None
               ) -> list[str]:
    """Make C{target}, a clone of C{snapshot}."""
    return (["zfs", "clone"] + _options(check_properties(properties))
            + [check_snapshot(snapshot), check_dataset(target)])


def promote_argv(clone: str) -> list[str]:
    """Make C{clone} independent of its origin (the origin becomes its clone)."""
    return ["zfs", "promote", check_dataset(clone)]


def rollback_argv(snapshot: str, destroy_newer: bool = False) -> list[str]:
    """Roll a volume back to C{snapshot}, destroying later snapshots if C{destroy_newer}."""
    return ["zfs", "rollback"] + (["-r"] if destroy_newer else []) + [check_snapshot(snapshot)]


def rename_argv(old: str, new: str) -> list[str]:
    """Rename a dataset or a snapshot (a snapshot keeps its dataset)."""
    if "@" in str(old):
        check_snapshot(new)
        if old.split("@")[0] != new.split("@")[0]:
            raise InvalidInput("a snapshot can only be renamed within its dataset")
    return ["zfs", "rename", _check_any(old), _check_any(new)]


def set_argv(name: str, properties: Mapping[str, str]) -> list[str]:
    """Set C{properties} of C{name}."""
    props = check_properties(properties)
    if not props:
        raise InvalidInput("no properties to set")
    return ["zfs", "set"] + [f"{k}={v}" for k, v in props.items()] + [_check_any(name)]


def resize_argv(volume: str, size: int) -> list[str]:
    """Set volume C{volume}'s size to C{size} bytes (a whole number of its blocks)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidInput(f"not a volume size: {size!r}")
    return ["zfs", "set", f"volsize={size}", check_dataset(volume)]


def sync_argv() -> list[str]:
    """
    Flush the storage server's caches.  Needed before a snapshot of a volume
    that tgt exports: a write through tgt may still sit in the block device's
    page cache, where the snapshot does not see it.
    """
    return ["sync"]


def devices_argv() -> list[str]:
    """List every zvol's block device; see L{parse_devices}."""
    return ["sh", "-c", DEVICES_SCRIPT, "comet-zvols"]


def device_argv(volume: str, wait: int = 10) -> list[str]:
    """Print the block device of C{volume}, waiting up to C{wait} seconds for it."""
    if isinstance(wait, bool) or not isinstance(wait, int) or wait < 0:
        raise InvalidInput(f"wait is a whole number of seconds, not {wait!r}")
    return ["sh", "-c", DEVICE_SCRIPT, "comet-zvol", check_dataset(volume), str(wait)]


#: The compressed image formats a storage server may decompress on the way
#: into a volume, and the command (and Debian package) that does it.
DECOMPRESSORS = {"gzip": "gzip", "xz": "xz", "zstd": "zstd"}

#: Decompress standard input with C{$1} onto device C{$2}, then flush it.  No
#: pipe, so the decompressor's own failure (a corrupt stream, no room left
#: on the device) is the script's, in any POSIX shell.
DECOMPRESS_SCRIPT = '"$1" -dc > "$2" && sync'

#: Exit 0 if command C{$1} is on the server's PATH, else 1 (busybox's
#: C{command -v} exits 127 for a missing one, dash's 1: made one answer).
HAS_COMMAND_SCRIPT = 'command -v "$1" > /dev/null || exit 1'


def write_argv(device: str, compression: str | None = None) -> list[str]:
    """
    Copy standard input onto C{device}, in whole MiB writes, flushed at the
    end; with C{compression} (a key of L{DECOMPRESSORS}), decompressed first.
    """
    if compression is None:
        return ["dd", f"of={_check_device(device)}", "bs=1M", "iflag=fullblock", "conv=fsync"]
    if compression not in DECOMPRESSORS:
        raise InvalidInput(f"compression {compression!r} is not one of {sorted(DECOMPRESSORS)}")
    return ["sh", "-c", DECOMPRESS_SCRIPT, "comet-write", DECOMPRESSORS[compression],
            _check_device(device)]


def has_command_argv(command: str) -> list[str]:
    """Whether C{command} (a plain command name) is on the server's PATH: exit 0 or 1."""
    if not isinstance(command, str) or not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", command):
        raise InvalidInput(f"not a command name: {command!r}")
    return ["sh", "-c", HAS_COMMAND_SCRIPT, "comet-has", command]


def dump_argv(device: str) -> list[str]:
    """Copy all of C{device} to standard output, in MiB reads."""
    return ["dd", f"if={_check_device(device)}", "bs=1M"]


def read_argv(device: str, length: int) -> list[str]:
    """The first C{length} bytes of C{device}."""
    return ["head", "-c", str(int(length)), _check_device(device)]


def _check_device(device: str) -> str:
    if not isinstance(device, str) or not re.fullmatch(r"/dev/zd[0-9]+", device):
        raise InvalidInput(f"not a zvol device: {device!r}")
    return device


# Copying a volume to another machine (comet.remote.zfs_send)


def send_argv(snapshot: str, base: str | None = None) -> list[str]:
    """
    C{zfs send} of C{snapshot} to standard output: all its blocks, or with
    C{base} (an earlier snapshot of the same volume, which the destination
    holds) only those written since.  No C{-p}: properties stay where they
    are (the receiver tags what it makes as its own Comet's).
    """
    check_snapshot(snapshot)
    if base is None:
        return ["zfs", "send", snapshot]
    check_snapshot(base)
    if base.split("@")[0] != snapshot.split("@")[0]:
        raise InvalidInput(f"the base {base} is not a snapshot of the volume of {snapshot}")
    if base == snapshot:
        raise InvalidInput(f"a snapshot is no increment over itself: {snapshot}")
    return ["zfs", "send", "-i", base, snapshot]


def receive_argv(volume: str, properties: Mapping[str, str] | None = None) -> list[str]:
    """
    C{zfs receive} of a stream on standard input into C{volume}, setting
    C{properties} on it.  Never C{-F}: a destination that changed since the
    stream's base, or exists when the stream is whole, makes it fail
    (leaving the destination as it was) rather than be overwritten.  Never
    C{-s}: an interrupted receive leaves nothing behind to resume.
    """
    return (["zfs", "receive"] + _options(check_properties(properties))
            + [check_dataset(volume)])


def receive_abort_argv(volume: str) -> list[str]:
    """Discard the partial state an interrupted resumable receive left in C{volume}."""
    return ["zfs", "receive", "-A", check_dataset(volume)]
