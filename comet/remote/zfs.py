"""
ZFS on a storage server: command lines, parsers of their output, and L{ZFS},
the asynchronous API the model uses.

Every command is an argument list (the runner quotes it); every listing asks
for C{-H -p} output, which is tab-separated, one dataset a line, numbers in
bytes or seconds, and C{-} for a value that is not set.  Sizes are bytes
throughout, times seconds since the epoch.

Comet tags everything it creates with the user property C{comet:owner}
(set locally, never inherited) and refuses to destroy, roll back, promote,
rename or change anything that does not carry its tag, so a storage server
may be shared with datasets Comet must never touch.

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

import attrs
from twisted.internet.defer import Deferred, inlineCallbacks

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound
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
#: -V}); exits 2 when there is none.
DEVICE_SCRIPT = r"""
name=$1; tries=$(($2 * 10)); i=0
z=$(command -v zvol_id) || z=/lib/udev/zvol_id
[ -x "$z" ] || z=/usr/lib/udev/zvol_id
[ -x "$z" ] || { echo "zvol_id not found (OpenZFS zfsutils: /lib/udev/zvol_id)" >&2; exit 127; }
while :; do
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


class ParseError(ValueError):
    """Output of a ZFS command that does not have the expected shape."""


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


def write_argv(device: str) -> list[str]:
    """Copy standard input onto C{device}, in whole MiB writes, flushed at the end."""
    return ["dd", f"of={_check_device(device)}", "bs=1M", "iflag=fullblock", "conv=fsync"]


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


# Parsers


def parse_rows(output: bytes | str, columns: Sequence[str]) -> list[dict[str, str | None]]:
    """
    Read C{-H} output into one dict per line, C{None} where the value is
    C{-} (not set).

    @raise ParseError: a line does not have one field per column.
    """
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    rows = []
    for line in text.splitlines():
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise ParseError(f"expected {len(columns)} tab-separated fields, got: {line!r}")
        rows.append({c: (None if v == "-" else v) for c, v in zip(columns, fields)})
    return rows


def _int(row: Mapping[str, str | None], column: str) -> int:
    value = row[column]
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParseError(f"{column} is not a number: {value!r}") from None


def _optional_int(row: Mapping[str, str | None], column: str) -> int | None:
    return None if row[column] is None else _int(row, column)


@attrs.frozen
class Volume:
    """
    A zvol.

    @ivar name: its full name, C{pool/dataset/volume}.
    @ivar size: its volsize (bytes).
    @ivar volblocksize: bytes.
    @ivar used: bytes it and its snapshots take from the pool (with any
        reservation).
    @ivar referenced: bytes of data it refers to.
    @ivar origin: the snapshot it is a clone of, or L{None}.
    @ivar created: seconds since the epoch.
    @ivar owner: its C{comet:owner} tag, or L{None}.
    """

    name: str
    size: int
    volblocksize: int
    used: int
    referenced: int
    origin: str | None
    created: int
    owner: str | None

    @property
    def short_name(self) -> str:
        """The last component of L{name}."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def dataset(self) -> str:
        """The dataset it lives in."""
        return self.name.rsplit("/", 1)[0]


@attrs.frozen
class Snapshot:
    """
    A snapshot of a zvol.

    @ivar name: C{volume@snap}.
    @ivar createtxg: the transaction group it was taken in (orders snapshots).
    @ivar created: seconds since the epoch.
    @ivar used: bytes only it holds.
    @ivar referenced: bytes of data it refers to.
    """

    name: str
    createtxg: int
    created: int
    used: int
    referenced: int
    owner: str | None

    @property
    def volume(self) -> str:
        return self.name.split("@", 1)[0]

    @property
    def snapname(self) -> str:
        return self.name.split("@", 1)[1]


@attrs.frozen
class Pool:
    """A zpool; sizes in bytes; health as C{zpool} says it (C{ONLINE}, C{DEGRADED}, ...)."""

    name: str
    size: int
    allocated: int
    free: int
    health: str


@attrs.frozen
class Space:
    """Space of a dataset, in bytes."""

    used: int
    available: int
    referenced: int

    @property
    def capacity(self) -> int:
        """What the dataset could hold: what it uses plus what is still available to it."""
        return self.used + self.available


def parse_volumes(output: bytes | str) -> list[Volume]:
    """Read the output of L{list_volumes_argv} or L{get_volume_argv}."""
    return [
        Volume(
            name=row["name"] or "",
            size=_int(row, "volsize"),
            volblocksize=_int(row, "volblocksize"),
            used=_int(row, "used"),
            referenced=_int(row, "referenced"),
            origin=row["origin"],
            created=_int(row, "creation"),
            owner=row[OWNER_PROPERTY],
        )
        for row in parse_rows(output, VOLUME_COLUMNS)
    ]


def parse_snapshots(output: bytes | str) -> list[Snapshot]:
    """Read the output of L{list_snapshots_argv}, oldest first."""
    snapshots = [
        Snapshot(
            name=row["name"] or "",
            createtxg=_int(row, "createtxg"),
            created=_int(row, "creation"),
            used=_int(row, "used"),
            referenced=_int(row, "referenced"),
            owner=row[OWNER_PROPERTY],
        )
        for row in parse_rows(output, SNAPSHOT_COLUMNS)
    ]
    return sorted(snapshots, key=lambda s: (s.createtxg, s.name))


def parse_pools(output: bytes | str) -> list[Pool]:
    """Read the output of L{pool_list_argv}."""
    return [
        Pool(
            name=row["name"] or "",
            size=_int(row, "size"),
            allocated=_int(row, "allocated"),
            free=_int(row, "free"),
            health=row["health"] or "",
        )
        for row in parse_rows(output, POOL_COLUMNS)
    ]


def parse_get(output: bytes | str) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """
    Read the output of L{get_argv}: C{(name, property) -> (value, source)},
    C{None} for C{-}.
    """
    return {
        (row["name"] or "", row["property"] or ""): (row["value"], row["source"])
        for row in parse_rows(output, GET_COLUMNS)
    }


def parse_devices(output: bytes | str) -> dict[str, str]:
    """Read the output of L{devices_argv}: C{zvol name -> /dev/zdN}."""
    return {row["zvol"] or "": row["device"] or "" for row in parse_rows(output, ("device", "zvol"))}


# Errors

#: (pattern in ZFS's standard error, domain error it means)
_ERRORS: list[tuple[re.Pattern, type]] = [
    (re.compile(r"does not exist|no such pool"), NotFound),
    (re.compile(
        r"already exists|has children|dependent clones|more recent snapshots|"
        r"clones of previous snapshots|is busy|out of space|not a cloned filesystem|"
        r"exceeds quota|size is greater than available space"
    ), Conflict),
]


def translate(failure):
    """
    Turn a L{CommandFailed} of a ZFS command whose message says what is wrong
    (no such dataset, one exists already, in use, no room) into L{NotFound}
    or L{Conflict} with ZFS's own first line as the reason; anything else is
    returned unchanged.
    """
    error = failure.value
    if isinstance(error, CommandFailed):
        first = error.stderr.splitlines()[0] if error.stderr else ""
        for pattern, kind in _ERRORS:
            if pattern.search(error.stderr):
                where = f" (on {error.server})" if error.server else ""
                raise kind(first + where)
    return failure


# The API


class ZFS:
    """
    ZFS on one storage server, through an L{comet.remote.IRunner}.

    @ivar owner: the value of C{comet:owner} that this Comet puts on what it
        creates and requires on what it changes or destroys.
    """

    def __init__(self, runner, owner: str = "comet",
                 volblocksize: int = DEFAULT_VOLBLOCKSIZE):
        check_properties({OWNER_PROPERTY: owner})
        self.runner = runner
        self.owner = owner
        self.volblocksize = volblocksize

    @property
    def host(self) -> str:
        return self.runner.host

    def _run(self, argv: list[str], **kw) -> Deferred:
        return self.runner.run(argv, **kw).addErrback(translate)

    def _tag(self, properties: Mapping[str, str] | None) -> dict[str, str]:
        props = check_properties(properties)
        props[OWNER_PROPERTY] = self.owner
        return props

    # Reading

    def list_volumes(self, dataset: str) -> Deferred:
        """@return: L{Deferred} of the L{Volume}s directly under C{dataset} (anyone's)."""
        return self._run(list_volumes_argv(dataset)).addCallback(parse_volumes)

    def get_volume(self, volume: str) -> Deferred:
        """@return: L{Deferred} of the L{Volume}; L{NotFound} if there is none."""
        def one(out):
            found = parse_volumes(out)
            if len(found) != 1:
                raise NotFound(f"no volume {volume} on {self.host}")
            return found[0]
        return self._run(get_volume_argv(volume)).addCallback(one)

    def list_snapshots(self, volume: str) -> Deferred:
        """@return: L{Deferred} of C{volume}'s L{Snapshot}s, oldest first."""
        return self._run(list_snapshots_argv(volume)).addCallback(parse_snapshots)

    def get_properties(self, name: str, properties: Sequence[str]) -> Deferred:
        """@return: L{Deferred} of C{{property: value or None}}."""
        def pick(out):
            values = parse_get(out)
            return {p: values.get((name, p), (None, None))[0] for p in properties}
        return self._run(get_argv([name], properties)).addCallback(pick)

    def pool_list(self) -> Deferred:
        """@return: L{Deferred} of every L{Pool} on the server."""
        return self._run(pool_list_argv()).addCallback(parse_pools)

    def dataset_space(self, dataset: str) -> Deferred:
        """@return: L{Deferred} of the L{Space} of C{dataset}."""
        def space(out):
            values = parse_get(out)
            try:
                return Space(*(int(values[(dataset, p)][0] or 0)
                               for p in ("used", "available", "referenced")))
            except (KeyError, ValueError):
                raise ParseError(f"zfs get said nothing usable about {dataset}") from None
        return self._run(get_argv([dataset], ["used", "available", "referenced"])
                         ).addCallback(space)

    def exists(self, name: str) -> Deferred:
        """@return: L{Deferred} of whether dataset, volume or snapshot C{name} exists."""
        def absent(failure):
            failure.trap(NotFound)
            return False
        return self._run(get_argv([name], ["type"])).addCallbacks(lambda _: True, absent)

    def devices(self) -> Deferred:
        """@return: L{Deferred} of C{{zvol name: /dev/zdN}} for every zvol with a device."""
        return self._run(devices_argv()).addCallback(parse_devices)

    @inlineCallbacks
    def device_of(self, volume: str, wait: int = 10):
        """
        The block device of C{volume}, resolved by name now (never cache it:
        minors change when a pool is imported again).

        @param wait: seconds to wait for the device of a new volume to appear.
        @return: L{Deferred} of C{"/dev/zdN"}; L{NotFound} if there is no
            such volume or it has no device.
        """
        yield self.get_volume(volume)
        try:
            out = yield self.runner.run(device_argv(volume, wait), timeout=wait + 30)
        except CommandFailed as e:
            if e.code == 2:
                raise NotFound(f"volume {volume} has no block device on {self.host}") from None
            raise
        return out.decode().strip()

    # Changing

    @inlineCallbacks
    def create_volume(self, dataset: str, name: str, size: int,
                      properties: Mapping[str, str] | None = None, sparse: bool = False):
        """
        Create volume C{name} in C{dataset}, C{size} bytes rounded up to whole
        blocks, tagged as Comet's.

        @return: L{Deferred} of the new L{Volume}; L{Conflict} if the name is
            taken or the pool has no room.
        """
        if not check_name(name):
            raise InvalidInput(f"not a volume name: {name!r}")
        volume = f"{check_dataset(dataset)}/{name}"
        yield self._run(create_volume_argv(volume, size, self._tag(properties),
                                           self.volblocksize, sparse))
        result = yield self.get_volume(volume)
        return result

    def create_dataset(self, name: str, properties: Mapping[str, str] | None = None
                       ) -> Deferred:
        """Create an unmounted filesystem dataset C{name}, tagged as Comet's."""
        return self._run(create_dataset_argv(name, self._tag(properties))).addCallback(
            lambda _: None
        )

    @inlineCallbacks
    def check_owned(self, name: str, recursive: bool = False):
        """
        Make sure C{name} (and, if C{recursive}, all it contains) carries this
        Comet's tag, set on itself.

        @return: L{Deferred} that fails with L{Conflict} if not, L{NotFound}
            if C{name} does not exist.
        """
        out = yield self._run(get_argv([name], [OWNER_PROPERTY], recursive=recursive))
        for (dataset, _), (value, source) in parse_get(out).items():
            if value != self.owner or source != "local":
                raise Conflict(
                    f"{dataset} on {self.host} was not created by this Comet"
                    f" ({OWNER_PROPERTY}={value or '-'}); it is left alone"
                )

    @inlineCallbacks
    def destroy(self, name: str, recursive: bool = False):
        """
        Destroy a volume, dataset or snapshot Comet created (with its
        snapshots and children if C{recursive}).

        @return: L{Deferred} firing with L{None}; L{NotFound}; L{Conflict} if
            it is not Comet's, has snapshots (without C{recursive}) or clones.
        """
        yield self.check_owned(name, recursive=recursive)
        yield self._run(destroy_argv(name, recursive))

    def snapshot(self, volumes: Sequence[str], snapname: str) -> Deferred:
        """
        Snapshot all of C{volumes} in one atomic step as C{@snapname}.  Call
        L{sync} first if any of them is exported.

        @return: L{Deferred} of the snapshot names.
        """
        argv = snapshot_argv(volumes, snapname, self._tag(None))
        return self._run(argv).addCallback(lambda _: [f"{v}@{snapname}" for v in volumes])

    @inlineCallbacks
    def clone(self, snapshot: str, dataset: str, name: str,
              properties: Mapping[str, str] | None = None):
        """
        Make volume C{dataset/name} a clone of C{snapshot}, tagged as Comet's.

        @return: L{Deferred} of the new L{Volume}.
        """
        if not check_name(name):
            raise InvalidInput(f"not a volume name: {name!r}")
        target = f"{check_dataset(dataset)}/{name}"
        yield self._run(clone_argv(snapshot, target, self._tag(properties)))
        result = yield self.get_volume(target)
        return result

    @inlineCallbacks
    def promote(self, clone: str):
        """Make C{clone} no longer depend on its origin (which then depends on it)."""
        yield self.check_owned(clone)
        yield self._run(promote_argv(clone))

    @inlineCallbacks
    def rollback(self, snapshot: str, destroy_newer: bool = False):
        """
        Roll a volume back to C{snapshot}.  Without C{destroy_newer}, a later
        snapshot makes this a L{Conflict}.
        """
        yield self.check_owned(check_snapshot(snapshot).split("@")[0])
        yield self._run(rollback_argv(snapshot, destroy_newer))

    @inlineCallbacks
    def rename(self, old: str, new: str):
        """Rename a volume or a snapshot Comet created."""
        argv = rename_argv(old, new)
        yield self.check_owned(old)
        yield self._run(argv)

    @inlineCallbacks
    def set_properties(self, name: str, properties: Mapping[str, str]):
        """Set properties of something Comet created (never its C{comet:owner})."""
        if OWNER_PROPERTY in properties:
            raise InvalidInput(f"{OWNER_PROPERTY} is Comet's own; it cannot be set")
        argv = set_argv(name, properties)
        yield self.check_owned(name)
        yield self._run(argv)

    def sync(self) -> Deferred:
        """Flush the server's caches (see L{sync_argv})."""
        return self._run(sync_argv()).addCallback(lambda _: None)

    # Data

    @inlineCallbacks
    def open_writer(self, volume: str):
        """
        Start writing C{volume} from its first byte: an image streams through
        the returned command's standard input (see
        L{comet.remote.IStreamingCommand}); C{finish()} flushes it to disk.

        @return: L{Deferred} of an L{comet.remote.IStreamingCommand}.
        """
        yield self.check_owned(volume)
        device = yield self.device_of(volume)
        return self.runner.run_stream(write_argv(device))

    @inlineCallbacks
    def read_volume(self, volume: str, output):
        """
        Stream all of C{volume} (its whole size, in bytes) into C{output}, an
        L{twisted.internet.interfaces.IConsumer} that may pause the transfer
        through the producer registered on it.

        @return: L{Deferred} that fires with L{None} once it has all been written.
        """
        device = yield self.device_of(volume)
        stream = self.runner.run_stream(dump_argv(device), output=output)
        yield stream.finish().addErrback(translate)

    @inlineCallbacks
    def read_head(self, volume: str, length: int):
        """@return: L{Deferred} of the first C{length} bytes of C{volume}."""
        device = yield self.device_of(volume)
        out = yield self._run(read_argv(device, length))
        return out

