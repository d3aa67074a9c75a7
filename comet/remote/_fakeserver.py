"""
An in-memory storage server: OpenZFS 2.1 zvols, snapshots and clones, and a
tgt 1.0.85 iSCSI target, answering exactly the commands that
L{comet.remote.zfs} and L{comet.remote.tgt} issue, with the output formats,
exit statuses and error messages the real tools give (the parsers' fixtures
in C{tests/remote/data/} are real captures of them).  Use it as the backend
of a L{comet.remote.FakeRunner}.

It is a model, not an emulator: space accounting is simplified (a volume
uses its reservation or the bytes written to it, whichever is larger;
snapshots use nothing), and only the options Comet uses are understood; any
other command fails with exit status 127, so a change in what Comet issues
shows up in the tests instead of passing silently.  The contract suite in
C{tests/contract/remote_suite.py} runs against both this and the real
servers, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
import uuid
from collections.abc import Callable

import attrs

from comet.remote import tgt as _tgt
from comet.remote import zfs as _zfs
from comet.remote._fake import Answer
from comet.remote.machine import BOOT_ID_PATH


class _Error(Exception):
    """A command's failure: exit status and standard error."""

    def __init__(self, stderr: str, code: int = 1):
        super().__init__(stderr)
        self.answer = Answer(code=code, stderr=stderr)


def _missing(name: str) -> _Error:
    return _Error(f"cannot open '{name}': dataset does not exist")


@attrs.define
class _Dataset:
    name: str
    type: str  # "filesystem", "volume" or "snapshot"
    created: int
    createtxg: int
    props: dict[str, str] = attrs.Factory(dict)
    volsize: int = 0
    volblocksize: int = _zfs.DEFAULT_VOLBLOCKSIZE
    reservation: int = 0
    data: bytearray = attrs.Factory(bytearray)
    origin: str | None = None


@attrs.define
class _Target:
    tid: int
    iqn: str
    luns: dict[int, str] = attrs.Factory(dict)
    acl: list[str] = attrs.Factory(list)
    accounts: list[str] = attrs.Factory(list)
    outgoing: list[str] = attrs.Factory(list)
    connections: list[tuple[str, str]] = attrs.Factory(list)


def _parse_options(args: list[str], flags: str, valued: str) -> tuple[dict, list[str]]:
    """
    getopt for C{zfs}: single-letter C{flags}, C{valued} letters taking a
    value (repeatable ones collect into lists); returns (options, operands).
    """
    options: dict = {}
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in valued:
                value = arg[j + 1:] or (args[i + 1] if i + 1 < len(args) else None)
                if value is None:
                    raise _Error(f"missing argument for '-{letter}' option", 2)
                if not arg[j + 1:]:
                    i += 1
                options.setdefault(letter, []).append(value)
                break
            if letter not in flags:
                raise _Error(f"invalid option '{letter}'", 2)
            options[letter] = True
            j += 1
        i += 1
    return options, args[i:]


def _size(text: str) -> int:
    match = re.fullmatch(r"([0-9]+)([KMGT]?)", text)
    if not match:
        raise _Error(f"bad numeric value '{text}'", 2)
    return int(match.group(1)) * 1024 ** " KMGT".index(match.group(2) or " ")


def _props(options: dict) -> dict[str, str]:
    result = {}
    for item in options.get("o", []):
        key, sep, value = item.partition("=")
        if not sep:
            raise _Error(f"missing '=' for property=value argument", 2)
        result[key] = value
    return result


class FakeStorageServer:
    """
    One storage server's ZFS pools and tgt, in memory.

    @ivar pools: zpool name -> size (bytes).
    @ivar devices: volume name -> minor number of its C{/dev/zdN}.
    @ivar targets: tid -> target; C{accounts}: CHAP user -> password.
    @ivar now: a callable giving the time (seconds since the epoch) that
        C{creation} properties record.
    @ivar synced: how many times C{sync} ran.
    @ivar boot_id: the boot id it answers; L{reboot} makes a new one.
    """

    def __init__(self, pools: dict[str, int] | None = None,
                 datasets: tuple[str, ...] = ("tank/comet",),
                 now: Callable[[], float] = time.time):
        self.pools = dict(pools or {"tank": 2013265920})
        self.now = now
        self.datasets: dict[str, _Dataset] = {}
        self.devices: dict[str, int] = {}
        self.targets: dict[int, _Target] = {}
        self.accounts: dict[str, str] = {}
        self.synced = 0
        self.boot_id = str(uuid.uuid4())
        #: The pools a reboot left unimported (L{import_pools}), with their datasets.
        self._exported: tuple[dict, dict, list[str]] | None = None
        self._txg = 1
        self._next_minor = 0
        for pool in self.pools:
            self._add(pool, "filesystem")
        for name in datasets:
            self._add(name, "filesystem")

    # Helpers for tests

    def reimport(self) -> None:
        """Give every zvol a new minor number, as an import after a reboot may."""
        names = sorted(self.devices, reverse=True)
        self.devices = {}
        for name in names:
            self.devices[name] = self._next_minor
            self._next_minor += 16

    def reboot(self, import_pools: bool = True) -> None:
        """
        Boot again, as the real servers do: tgtd starts empty (every target
        and CHAP account is gone: tgt keeps them in memory only), the boot id
        changes, and the pools are imported, their zvols getting new minors
        (L{reimport}).  With C{import_pools=False} the pools stay unimported
        (as on a server whose import has not run yet) until L{import_pools}:
        no dataset, no zvol device, C{zpool list} empty.
        """
        self.targets = {}
        self.accounts = {}
        self.boot_id = str(uuid.uuid4())
        if import_pools:
            self.reimport()
            return
        if self._exported is None:
            self._exported = (self.pools, self.datasets, sorted(self.devices))
            self.pools, self.datasets, self.devices = {}, {}, {}

    def import_pools(self) -> None:
        """Import the pools a L{reboot} left unimported (new minors)."""
        if self._exported is not None:
            self.pools, self.datasets, zvols = self._exported
            self._exported = None
            self.devices = {name: 0 for name in zvols}
            self.reimport()

    def connect(self, iqn: str, initiator: str, address: str,
                chap: tuple[str, str] | None = None) -> None:
        """
        Log initiator C{initiator} at C{address} in to target C{iqn}, with
        CHAP credentials C{(user, password)} if given.  As tgt does, the
        login is refused (L{PermissionError}) from an address the target's
        ACL does not admit, and without a right account when the target has
        CHAP accounts.
        """
        target = next(t for t in self.targets.values() if t.iqn == iqn)
        if not any(a == "ALL" or ipaddress.ip_address(address)
                   in ipaddress.ip_network(a, strict=False) for a in target.acl):
            raise PermissionError(f"{address} is not in the ACL of {iqn} ({target.acl})")
        if target.accounts:
            if chap is None or chap[0] not in target.accounts or self.accounts.get(chap[0]) != chap[1]:
                raise PermissionError(f"CHAP authentication to {iqn} failed")
        target.connections.append((initiator, address))

    def device(self, volume: str) -> str | None:
        minor = self.devices.get(volume)
        return None if minor is None else f"/dev/zd{minor}"

    # Answering

    def handle(self, argv: list[str], stdin: bytes | None) -> Answer:
        """Answer one command like the real server would."""
        try:
            if argv[:1] == ["zfs"] and len(argv) > 1:
                handler = getattr(self, f"_zfs_{argv[1]}", None)
                if handler is not None:
                    return handler(argv[2:])
            elif argv[:1] == ["zpool"] and argv[1:2] == ["list"]:
                return self._zpool_list(argv[2:])
            elif argv[:1] == ["tgtadm"]:
                return self._tgtadm(argv[1:])
            elif argv == ["sync"]:
                self.synced += 1
                return Answer()
            elif argv == ["cat", BOOT_ID_PATH]:
                return Answer(stdout=f"{self.boot_id}\n".encode())
            elif argv[:3] == ["sh", "-c", _zfs.DEVICES_SCRIPT]:
                return self._devices()
            elif argv[:3] == ["sh", "-c", _zfs.DEVICE_SCRIPT] and len(argv) == 6:
                return self._device(argv[4])
            elif argv[:3] == ["sh", "-c", _tgt.NEW_ACCOUNT_SCRIPT] and len(argv) == 5:
                password = (stdin or b"").split(b"\n")[0].decode()
                if not password:
                    return Answer(code=1)
                return self._tgtadm(["--lld", "iscsi", "--mode", "account", "--op", "new",
                                     "--user", argv[4], "--password", password])
            elif argv[:1] == ["dd"]:
                return self._dd(argv[1:], stdin or b"")
            elif argv[:2] == ["head", "-c"] and len(argv) == 4:
                return self._head(int(argv[2]), argv[3])
        except _Error as e:
            return e.answer
        return Answer(code=127, stderr=f"sh: {argv[0]}: not found (fake storage server)")

    # The model

    def _add(self, name: str, type: str, **kw) -> _Dataset:
        ds = _Dataset(name=name, type=type, created=int(self.now()), createtxg=self._txg, **kw)
        self.datasets[name] = ds
        if type == "volume":
            self.devices[name] = self._next_minor
            self._next_minor += 16
        return ds

    def _get(self, name: str) -> _Dataset:
        ds = self.datasets.get(name)
        if ds is None:
            raise _missing(name)
        return ds

    def _parent(self, name: str) -> str | None:
        if "@" in name:
            return name.split("@")[0]
        return name.rsplit("/", 1)[0] if "/" in name else None

    def _children(self, name: str) -> list[_Dataset]:
        """Direct children: child datasets (by name), then snapshots (by txg)."""
        kids = [d for d in self.datasets.values()
                if "@" not in d.name and self._parent(d.name) == name]
        snaps = [d for d in self.datasets.values() if d.name.startswith(name + "@")]
        return sorted(kids, key=lambda d: d.name) + sorted(snaps, key=lambda d: d.createtxg)

    def _descendants(self, name: str, depth: int | None = None) -> list[_Dataset]:
        result = []
        for child in self._children(name):
            result.append(child)
            if depth is None or depth > 1:
                result += self._descendants(child.name, None if depth is None else depth - 1)
        return result

    def _clones_of(self, snapshot: str) -> list[str]:
        return sorted(d.name for d in self.datasets.values() if d.origin == snapshot)

    def _referenced(self, ds: _Dataset) -> int:
        if ds.type == "filesystem":
            return 24576
        return len(ds.data)

    def _used(self, ds: _Dataset) -> int:
        if ds.type == "snapshot":
            return 0
        if ds.type == "volume":
            return max(ds.reservation, len(ds.data))
        return 24576 + sum(self._used(c) for c in self._children(ds.name) if c.type != "snapshot")

    def _pool_of(self, name: str) -> str:
        return name.split("/")[0].split("@")[0]

    def _allocated(self, pool: str) -> int:
        return self._used(self.datasets[pool])

    def _available(self, pool: str) -> int:
        return max(0, self.pools[pool] - self._allocated(pool))

    def _value(self, ds: _Dataset, prop: str) -> tuple[str, str]:
        """C{(value, source)} of C{prop}, as C{zfs get -p} shows them."""
        builtin = {
            "name": lambda: ds.name,
            "type": lambda: ds.type,
            "creation": lambda: str(ds.created),
            "createtxg": lambda: str(ds.createtxg),
            "used": lambda: str(self._used(ds)),
            "referenced": lambda: str(self._referenced(ds)),
            "available": lambda: "-" if ds.type == "snapshot" else str(
                self._available(self._pool_of(ds.name))),
            "origin": lambda: ds.origin or "-",
        }
        if prop in ("avail", "refer"):
            prop = {"avail": "available", "refer": "referenced"}[prop]
        if prop in builtin:
            return builtin[prop](), "-"
        if prop in ("volsize", "volblocksize"):
            if ds.type == "filesystem":
                return "-", "-"
            source = "local" if prop == "volsize" else "default"
            return str(getattr(ds, prop)), ("-" if ds.type == "snapshot" else source)
        if prop in ds.props:
            return ds.props[prop], "local"
        if ":" in prop:
            parent = self._parent(ds.name)
            while parent is not None:
                above = self.datasets[parent]
                if prop in above.props:
                    return above.props[prop], f"inherited from {parent}"
                parent = self._parent(parent)
        return "-", "-"

    # zfs

    def _zfs_list(self, args: list[str]) -> Answer:
        options, names = _parse_options(args, "Hpr", "otd")
        columns = ",".join(options.get("o", ["name"])).split(",")
        types = set(",".join(options.get("t", ["filesystem,volume"])).split(","))
        depth = int(options["d"][-1]) if "d" in options else (None if "r" in options else 0)
        rows = []
        for name in names:
            ds = self._get(name)
            chosen = [ds] + (self._descendants(name, depth) if depth != 0 else [])
            rows += [d for d in chosen if d.type in types or "all" in types]
        return Answer(stdout=self._table(rows, columns))

    def _table(self, rows: list[_Dataset], columns: list[str]) -> bytes:
        return "".join(
            "\t".join(self._value(ds, c)[0] for c in columns) + "\n" for ds in rows
        ).encode()

    def _zfs_get(self, args: list[str]) -> Answer:
        options, rest = _parse_options(args, "Hpr", "od")
        columns = ",".join(options.get("o", ["name,property,value,source"])).split(",")
        props, names = rest[0].split(","), rest[1:]
        lines = []
        for name in names:
            ds = self._get(name)
            for d in [ds] + (self._descendants(name) if "r" in options else []):
                for prop in props:
                    value, source = self._value(d, prop)
                    fields = {"name": d.name, "property": prop, "value": value,
                              "source": source}
                    lines.append("\t".join(fields[c] for c in columns) + "\n")
        return Answer(stdout="".join(lines).encode())

    def _zfs_create(self, args: list[str]) -> Answer:
        options, operands = _parse_options(args, "ps", "Vo")
        name = operands[0]
        props = _props(options)
        if name in self.datasets:
            raise _Error(f"cannot create '{name}': dataset already exists")
        parent = self._parent(name)
        if parent not in self.datasets:
            raise _Error(f"cannot create '{name}': parent does not exist")
        if "V" not in options:
            self._add(name, "filesystem", props=props)
            return Answer()
        block = int(props.pop("volblocksize", _zfs.DEFAULT_VOLBLOCKSIZE))
        size = _zfs.round_size(_size(options["V"][-1]), block)
        reservation = 0 if "s" in options else size
        if reservation > self._available(self._pool_of(name)):
            raise _Error(f"cannot create '{name}': out of space")
        self._add(name, "volume", props=props, volsize=size, volblocksize=block,
                  reservation=reservation)
        self._txg += 1
        return Answer()

    def _busy(self, ds: _Dataset) -> bool:
        device = self.device(ds.name)
        return device is not None and any(
            device in t.luns.values() for t in self.targets.values()
        )

    def _zfs_destroy(self, args: list[str]) -> Answer:
        options, (name,) = _parse_options(args, "rRf", "")
        ds = self._get(name)
        if ds.type == "snapshot":
            clones = self._clones_of(name)
            if clones and "R" not in options:
                raise _Error(f"cannot destroy '{name}': snapshot has dependent clones\n"
                             f"use '-R' to destroy the following datasets:\n" + "\n".join(clones))
            for clone in clones:
                self._zfs_destroy(["-R", clone])
            del self.datasets[name]
            return Answer()
        below = self._descendants(name)
        if below and not ("r" in options or "R" in options):
            raise _Error(f"cannot destroy '{name}': {ds.type} has children\n"
                         "use '-r' to destroy the following datasets:\n"
                         + "\n".join(d.name for d in below))
        inside = {name} | {d.name for d in below}
        outside = [c for d in below if d.type == "snapshot"
                   for c in self._clones_of(d.name) if c not in inside]
        if outside and "R" not in options:
            raise _Error(f"cannot destroy '{name}': {ds.type} has dependent clones\n"
                         "use '-R' to destroy the following datasets:\n" + "\n".join(outside))
        for d in [ds] + below:
            if d.type == "volume" and self._busy(d):
                raise _Error(f"cannot destroy '{d.name}': dataset is busy")
        for clone in outside:
            if clone in self.datasets:
                self._zfs_destroy(["-R", clone])
        for d in below[::-1] + [ds]:
            self.datasets.pop(d.name, None)
            self.devices.pop(d.name, None)
        return Answer()

    def _zfs_snapshot(self, args: list[str]) -> Answer:
        options, names = _parse_options(args, "r", "o")
        props = _props(options)
        for name in names:
            if name.split("@")[0] not in self.datasets:
                raise _Error(_missing(name.split("@")[0]).answer.stderr + "\nusage:\n"
                             "\tsnapshot [-r] [-o property=value] ... "
                             "<filesystem|volume>@<snap> ...", 2)
        existing = [n for n in names if n in self.datasets]
        if existing:
            raise _Error("".join(f"cannot create snapshot '{n}': dataset already exists\n"
                                 for n in existing) + "no snapshots were created")
        for name in names:
            source = self.datasets[name.split("@")[0]]
            self._add(name, "snapshot", props=dict(props), volsize=source.volsize,
                      volblocksize=source.volblocksize, data=bytearray(source.data))
        self._txg += 1
        return Answer()

    def _zfs_clone(self, args: list[str]) -> Answer:
        options, (snapshot, target) = _parse_options(args, "p", "o")
        snap = self._get(snapshot)
        if target in self.datasets:
            raise _Error(f"cannot create '{target}': dataset already exists")
        if self._parent(target) not in self.datasets:
            raise _Error(f"cannot create '{target}': parent does not exist")
        self._add(target, "volume", props=_props(options), volsize=snap.volsize,
                  volblocksize=snap.volblocksize, data=bytearray(snap.data), origin=snapshot)
        self._txg += 1
        return Answer()

    def _zfs_promote(self, args: list[str]) -> Answer:
        (name,) = args
        clone = self._get(name)
        if not clone.origin:
            raise _Error(f"cannot promote '{name}': not a cloned filesystem")
        origin_snap = self.datasets[clone.origin]
        origin = origin_snap.name.split("@")[0]
        moving = [s for s in self._children(origin)
                  if s.type == "snapshot" and s.createtxg <= origin_snap.createtxg]
        renames = {s.name: f"{name}@{s.name.split('@')[1]}" for s in moving}
        conflicts = [new for new in renames.values() if new in self.datasets]
        if conflicts:
            raise _Error(f"cannot promote '{name}': snapshot name conflict")
        for old, new in renames.items():
            snap = self.datasets.pop(old)
            snap.name = new
            self.datasets[new] = snap
        old_origin = clone.origin
        clone.origin = self.datasets[origin].origin
        self.datasets[origin].origin = renames[old_origin]
        for d in self.datasets.values():
            if d.origin in renames and d.name != origin:
                d.origin = renames[d.origin]
        return Answer()

    def _zfs_rollback(self, args: list[str]) -> Answer:
        options, (name,) = _parse_options(args, "rRf", "")
        snap = self._get(name)
        volume = name.split("@")[0]
        newer = [s for s in self._children(volume)
                 if s.type == "snapshot" and s.createtxg > snap.createtxg]
        if newer and not ("r" in options or "R" in options):
            raise _Error(f"cannot rollback to '{name}': more recent snapshots or bookmarks exist\n"
                         "use '-r' to force deletion of the following snapshots and bookmarks:\n"
                         + "\n".join(s.name for s in newer))
        clones = [c for s in newer for c in self._clones_of(s.name)]
        if clones and "R" not in options:
            raise _Error(f"cannot rollback to '{name}': clones of previous snapshots exist\n"
                         "use '-R' to force deletion of the following clones and dependents:\n"
                         + "\n".join(clones))
        for s in newer:
            self._zfs_destroy(["-R", s.name])
        self.datasets[volume].data = bytearray(snap.data)
        return Answer()

    def _zfs_rename(self, args: list[str]) -> Answer:
        options, (old, new) = _parse_options(args, "pf", "")
        self._get(old)
        if new in self.datasets:
            raise _Error(f"cannot rename '{old}': dataset already exists")
        if "@" not in old and self._parent(new) not in self.datasets:
            raise _Error(f"cannot rename to '{new}': parent does not exist")
        moves = [old] + [d.name for d in self._descendants(old)] if "@" not in old else [old]
        renames = {}
        for name in moves:
            target = new + name[len(old):]
            renames[name] = target
        for name, target in renames.items():
            ds = self.datasets.pop(name)
            ds.name = target
            self.datasets[target] = ds
            if name in self.devices:
                self.devices[target] = self.devices.pop(name)
        for d in self.datasets.values():
            if d.origin in renames:
                d.origin = renames[d.origin]
        return Answer()

    def _zfs_set(self, args: list[str]) -> Answer:
        *assignments, name = args
        ds = self._get(name)
        for item in assignments:
            key, _, value = item.partition("=")
            if ":" not in key:
                raise _Error(f"cannot set property for '{name}': '{key}' is readonly")
            ds.props[key] = value
        return Answer()

    def _zpool_list(self, args: list[str]) -> Answer:
        options, names = _parse_options(args, "Hp", "o")
        columns = ",".join(options.get("o", ["name"])).split(",")
        lines = []
        for pool in names or sorted(self.pools):
            if pool not in self.pools:
                raise _Error(f"cannot open '{pool}': no such pool")
            allocated = self._allocated(pool)
            values = {"name": pool, "size": str(self.pools[pool]), "allocated": str(allocated),
                      "free": str(self.pools[pool] - allocated), "health": "ONLINE"}
            lines.append("\t".join(values[c] for c in columns) + "\n")
        return Answer(stdout="".join(lines).encode())

    # Devices and data

    def _devices(self) -> Answer:
        rows = sorted((minor, name) for name, minor in self.devices.items())
        return Answer(stdout="".join(f"/dev/zd{m}\t{n}\n" for m, n in rows).encode())

    def _device(self, name: str) -> Answer:
        device = self.device(name)
        if device is None:
            raise _Error(f"no block device for zvol {name}", 2)
        return Answer(stdout=f"{device}\n".encode())

    def _volume_at(self, device: str) -> _Dataset:
        for name, minor in self.devices.items():
            if device == f"/dev/zd{minor}":
                return self.datasets[name]
        raise _Error(f"{device}: No such file or directory")

    def _dd(self, args: list[str], stdin: bytes) -> Answer:
        ops = dict(a.split("=", 1) for a in args)
        if "of" not in ops:  # dd if=/dev/zdN: the whole device to standard output
            volume = self._volume_at(ops.get("if", ""))
            if volume.volsize > 64 * 1024 * 1024:
                raise _Error("fake: reading a volume over 64 MiB whole is not modelled")
            return Answer(stdout=self._head(volume.volsize, ops["if"]).stdout)
        volume = self._volume_at(ops["of"])
        if "if" in ops:  # dd if=/dev/zero|/dev/urandom bs=N count=N: made-up data
            if ops["if"] not in ("/dev/zero", "/dev/urandom") or "count" not in ops:
                raise _Error(f"dd: can't open '{ops['if']}': No such file or directory")
            length = _size(ops.get("bs", "512")) * int(ops["count"])
            stdin = os.urandom(length) if ops["if"] == "/dev/urandom" else bytes(length)
        if len(stdin) > volume.volsize:
            volume.data[:] = stdin[: volume.volsize]
            raise _Error(f"dd: error writing '{ops['of']}': No space left on device")
        if len(stdin) > len(volume.data):
            volume.data[:] = stdin
        else:
            volume.data[: len(stdin)] = stdin
        return Answer(stderr=f"{len(stdin)} bytes copied")

    def _head(self, length: int, device: str) -> Answer:
        volume = self._volume_at(device)
        wanted = min(length, volume.volsize)
        data = bytes(volume.data[:wanted])
        return Answer(stdout=data + bytes(wanted - len(data)))

    # tgt

    def _tgtadm(self, args: list[str]) -> Answer:
        opts: dict[str, str | bool] = {}
        i = 0
        while i < len(args):
            if args[i] in ("--force", "--outgoing"):
                opts[args[i][2:]] = True
                i += 1
            else:
                opts[args[i][2:]] = args[i + 1]
                i += 2
        try:
            return self._tgt(opts.get("mode"), opts.get("op"), opts)
        except _Error as e:
            return Answer(code=22, stderr=f"tgtadm: {e.answer.stderr}")

    def _target(self, opts) -> _Target:
        target = self.targets.get(int(opts.get("tid", 0)))
        if target is None:
            raise _Error("can't find the target")
        return target

    def _tgt(self, mode, op, opts) -> Answer:
        if (mode, op) == ("target", "show"):
            return Answer(stdout=self._show().encode())
        if (mode, op) == ("target", "new"):
            tid, name = int(opts["tid"]), str(opts["targetname"])
            if not re.fullmatch(r"[a-zA-Z0-9.:-]+", name) or tid < 1:
                raise _Error("invalid request")
            if tid in self.targets or any(t.iqn == name for t in self.targets.values()):
                raise _Error("this target already exists")
            self.targets[tid] = _Target(tid, name)
            return Answer()
        if (mode, op) == ("target", "delete"):
            target = self._target(opts)
            if target.connections and not opts.get("force"):
                raise _Error("this target is still active")
            del self.targets[target.tid]
            return Answer()
        if (mode, op) == ("target", "bind"):
            self._target(opts).acl.append(str(opts["initiator-address"]))
            return Answer()
        if (mode, op) == ("target", "unbind"):
            target, address = self._target(opts), str(opts["initiator-address"])
            if address not in target.acl:
                raise _Error("can't find the target")
            target.acl.remove(address)
            return Answer()
        if (mode, op) == ("logicalunit", "new"):
            target = self._target(opts)
            lun, path = int(opts["lun"]), str(opts["backing-store"])
            if lun in target.luns:
                raise _Error("this logical unit number already exists")
            if path not in {f"/dev/zd{m}" for m in self.devices.values()}:
                raise _Error("invalid request")
            target.luns[lun] = path
            return Answer()
        if (mode, op) == ("account", "show"):
            return Answer(stdout=("Account list:\n" + "".join(
                f"    {u}\n" for u in reversed(list(self.accounts)))).encode())
        if (mode, op) == ("account", "new"):
            user = str(opts["user"])
            if user in self.accounts:
                raise _Error("this account already exists")
            self.accounts[user] = str(opts["password"])
            return Answer()
        if (mode, op) == ("account", "bind"):
            target = self._target(opts)
            user = str(opts["user"])
            if user not in self.accounts:
                raise _Error("can't find the account")
            (target.outgoing if opts.get("outgoing") else target.accounts).append(user)
            return Answer()
        if (mode, op) == ("account", "delete"):
            user = str(opts["user"])
            if user not in self.accounts:
                raise _Error("can't find the account")
            del self.accounts[user]
            for target in self.targets.values():
                for where in (target.accounts, target.outgoing):
                    if user in where:
                        where.remove(user)
            return Answer()
        raise _Error("invalid request")

    def _show(self) -> str:
        out = []
        for tid in sorted(self.targets):
            t = self.targets[tid]
            out.append(f"Target {tid}: {t.iqn}\n    System information:\n"
                       "        Driver: iscsi\n        State: ready\n"
                       "    I_T nexus information:\n")
            for n, (initiator, address) in enumerate(t.connections, 1):
                out.append(f"        I_T nexus: {n}\n"
                           f"            Initiator: {initiator} alias: none\n"
                           "            Connection: 0\n"
                           f"                IP Address: {address}\n")
            out.append("    LUN information:\n")
            for lun, path in [(0, None)] + sorted(t.luns.items()):
                size = 0
                if path is not None:
                    size = self._volume_at(path).volsize // 1000000
                out.append(
                    f"        LUN: {lun}\n"
                    f"            Type: {'controller' if path is None else 'disk'}\n"
                    f"            SCSI ID: IET     {tid:04x}{lun:04x}\n"
                    f"            SCSI SN: beaf{tid}{lun}\n"
                    f"            Size: {size} MB, Block size: {1 if path is None else 512}\n"
                    "            Online: Yes\n            Removable media: No\n"
                    "            Prevent removal: No\n            Readonly: No\n"
                    "            SWP: No\n            Thin-provisioning: No\n"
                    f"            Backing store type: {'null' if path is None else 'rdwr'}\n"
                    f"            Backing store path: {path or 'None'}\n"
                    "            Backing store flags: \n")
            out.append("    Account information:\n")
            out += [f"        {a}\n" for a in t.accounts]
            out += [f"        {a} (outgoing)\n" for a in t.outgoing]
            out.append("    ACL information:\n")
            out += [f"        {a}\n" for a in t.acl]
        return "".join(out)
