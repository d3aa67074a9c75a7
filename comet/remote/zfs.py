"""
ZFS on a storage server: L{ZFS}, the asynchronous API the model uses, and
L{translate}, which reads ZFS's errors.  The command lines are built in
L{comet.remote.zfs_commands}, their output read in L{comet.remote.zfs_output};
both are re-exported here, so C{comet.remote.zfs} stays the one name to
import.

Every command is an argument list (the runner quotes it); every listing asks
for C{-H -p} output, which is tab-separated, one dataset a line, numbers in
bytes or seconds, and C{-} for a value that is not set.  Sizes are bytes
throughout, times seconds since the epoch.

Comet tags everything it creates with the user property C{comet:owner}
(set locally, never inherited) and refuses to destroy, roll back, promote,
rename or change anything that does not carry its tag, so a storage server
may be shared with datasets Comet must never touch.

A zvol's block device (C{/dev/zdN}) is resolved by name every time it is
needed (L{ZFS.device_of}; see L{comet.remote.zfs_commands} for how).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound
from comet.names import check_name
from comet.remote import qcow2
from comet.remote.zfs_commands import (
    DECOMPRESS_SCRIPT,
    DECOMPRESSORS,
    DEFAULT_VOLBLOCKSIZE,
    DEVICE_SCRIPT,
    HAS_COMMAND_SCRIPT,
    DEVICES_SCRIPT,
    GET_COLUMNS,
    OWNER_PROPERTY,
    POOL_COLUMNS,
    SNAPSHOT_COLUMNS,
    VOLUME_COLUMNS,
    check_dataset,
    check_properties,
    check_snapshot,
    clone_argv,
    create_dataset_argv,
    create_volume_argv,
    destroy_argv,
    device_argv,
    devices_argv,
    dump_argv,
    get_argv,
    get_volume_argv,
    has_command_argv,
    list_snapshots_argv,
    list_volumes_argv,
    pool_list_argv,
    promote_argv,
    read_argv,
    receive_abort_argv,
    receive_argv,
    rename_argv,
    resize_argv,
    rollback_argv,
    round_size,
    send_argv,
    set_argv,
    snapshot_argv,
    sync_argv,
    write_argv,
)
from comet.remote.zfs_output import (
    ParseError,
    Pool,
    Snapshot,
    Space,
    Volume,
    parse_devices,
    parse_get,
    parse_pools,
    parse_rows,
    parse_snapshots,
    parse_volumes,
)

__all__ = [
    "DECOMPRESS_SCRIPT", "DECOMPRESSORS", "DEFAULT_VOLBLOCKSIZE", "DEVICE_SCRIPT",
    "HAS_COMMAND_SCRIPT", "DEVICES_SCRIPT", "GET_COLUMNS", "OWNER_PROPERTY", "POOL_COLUMNS",
    "SNAPSHOT_COLUMNS", "VOLUME_COLUMNS", "ZFS", "ParseError", "Pool", "Snapshot", "Space",
    "Volume", "check_dataset", "check_properties", "check_snapshot", "clone_argv",
    "create_dataset_argv", "create_volume_argv", "destroy_argv", "device_argv", "devices_argv",
    "dump_argv", "get_argv", "get_volume_argv", "has_command_argv", "list_snapshots_argv",
    "list_volumes_argv", "parse_devices", "parse_get", "parse_pools", "parse_rows",
    "parse_snapshots", "parse_volumes", "pool_list_argv", "promote_argv", "read_argv",
    "receive_abort_argv", "receive_argv", "rename_argv", "rollback_argv", "round_size",
    "resize_argv", "send_argv", "set_argv", "snapshot_argv", "sync_argv", "translate",
    "write_argv",
]


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


#: Seconds L{ZFS.destroy} waits before each new try while a zvol "is busy":
#: its device opened a moment (another command's C{zvol_id}, mdev or udev:
#: a delete once answered 409 so in CI).  Then the last try's error stands.
BUSY_WAITS = (0.2, 0.5, 1.0, 1.5)


def _reactor():
    from twisted.internet import reactor
    return reactor


# The API


class ZFS:
    """
    ZFS on one storage server, through an L{comet.remote.IRunner}.

    @ivar owner: the value of C{comet:owner} that this Comet puts on what it
        creates and requires on what it changes or destroys.
    """

    def __init__(self, runner, owner: str = "comet",
                 volblocksize: int = DEFAULT_VOLBLOCKSIZE, clock=None):
        check_properties({OWNER_PROPERTY: owner})
        self.runner = runner
        self.owner = owner
        self.volblocksize = volblocksize
        #: What L{destroy} waits on between tries (an C{IReactorTime}).
        self.clock = clock if clock is not None else _reactor()

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
        for wait in BUSY_WAITS:
            try:
                yield self._run(destroy_argv(name, recursive))
                return
            except Conflict as e:
                if "is busy" not in e.reason:
                    raise
            yield deferLater(self.clock, wait, lambda: None)
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

    @inlineCallbacks
    def resize(self, volume: str, size: int):
        """
        Set Comet's volume C{volume} to C{size} bytes (a whole number of its
        blocks); the L{Volume} after.  L{Conflict} when the pool has no room
        for a non-sparse volume's larger reservation.
        """
        argv = resize_argv(volume, size)
        yield self.check_owned(volume)
        yield self._run(argv)
        result = yield self.get_volume(volume)
        return result

    def sync(self) -> Deferred:
        """Flush the server's caches (see L{sync_argv})."""
        return self._run(sync_argv()).addCallback(lambda _: None)

    # Data

    def has_command(self, command: str) -> Deferred:
        """@return: L{Deferred} of whether C{command} is on the server's PATH."""
        def absent(failure):
            failure.trap(CommandFailed)
            if failure.value.code == 1:
                return False
            return failure
        return self.runner.run(has_command_argv(command)).addCallbacks(lambda _: True, absent)

    @inlineCallbacks
    def open_writer(self, volume: str, compression: str | None = None):
        """
        Start writing C{volume} from its first byte: an image streams through
        the returned command's standard input (see
        L{comet.remote.IStreamingCommand}); C{finish()} flushes it to disk.
        With C{compression} (a key of L{DECOMPRESSORS}), the server
        decompresses the stream on its way in.

        @return: L{Deferred} of an L{comet.remote.IStreamingCommand}.
        """
        yield self.check_owned(volume)
        device = yield self.device_of(volume)
        return self.runner.run_stream(write_argv(device, compression))

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

    # qcow2 images (L{comet.remote.qcow2})

    @inlineCallbacks
    def _checked_image(self, volume: str):
        """The device of C{volume}, whose qcow2 header L{qcow2.check_header} takes; its size."""
        device = yield self.device_of(volume)
        head = yield self._run(read_argv(device, qcow2.HEADER_LENGTH))
        return device, qcow2.check_header(head)

    @inlineCallbacks
    def image_size(self, volume: str):
        """
        The virtual size (bytes) of the qcow2 image C{volume} holds, as its
        header and then C{qemu-img info} say; L{InvalidInput} for an image
        Comet refuses (a backing file, an external data file: checked in
        the header before C{qemu-img} opens it).
        """
        device, _ = yield self._checked_image(volume)
        out = yield self._run(qcow2.info_argv(device))
        return qcow2.parse_info(out)

    @inlineCallbacks
    def convert_image(self, source: str, target: str):
        """
        Write the qcow2 image volume C{source} holds onto Comet's volume
        C{target} (new, so all zeros, and at least the image's virtual
        size), as raw, with C{qemu-img convert} on the server; the header
        is checked first, as by L{image_size}.
        """
        yield self.check_owned(target)
        device, _ = yield self._checked_image(source)
        into = yield self.device_of(target)
        yield self._run(qcow2.convert_argv(device, into), timeout=qcow2.CONVERT_TIMEOUT)
