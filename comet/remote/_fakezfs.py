"""
The ZFS half of L{comet.remote.FakeStorageServer}: its datasets (the model)
and the C{zfs}, C{zpool}, block-device and C{dd}/C{head} commands over them.
"""

from __future__ import annotations

import os

from comet.remote import zfs as _zfs
from comet.remote._fake import Answer
from comet.remote._fakerecords import _Dataset, _Error, _missing, _parse_options, _props, _size


class _FakeZFS:
    """
    Mixed into L{FakeStorageServer}, whose constructor makes the state
    these methods share with the tgt half (C{datasets}, C{devices},
    C{pools}, C{targets}, ...).
    """

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
            "guid": lambda: str(ds.guid),
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
            if key == "volsize" and ds.type == "volume":
                self._set_volsize(ds, _size(value))
            elif ":" not in key:
                raise _Error(f"cannot set property for '{name}': '{key}' is readonly")
            else:
                ds.props[key] = value
        return Answer()

    def _set_volsize(self, ds: _Dataset, size: int) -> None:
        """As OpenZFS: whole blocks; a non-sparse volume's reservation follows, if there is room."""
        if size % ds.volblocksize:
            raise _Error(f"cannot set property for '{ds.name}': 'volsize' must be a multiple"
                         f" of volume block size ({ds.volblocksize // 1024}K)")
        if ds.reservation:
            more = size - ds.reservation
            if more > self._available(self._pool_of(ds.name)):
                raise _Error(f"cannot set property for '{ds.name}': size is greater than"
                             " available space")
            ds.reservation = size
        ds.volsize = size
        del ds.data[size:]

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
        offset = _size(ops.get("bs", "512")) * int(ops.get("seek", "0"))
        if offset + len(stdin) > volume.volsize:
            stdin = stdin[: max(0, volume.volsize - offset)]
            self._write_at(volume, offset, stdin)
            raise _Error(f"dd: error writing '{ops['of']}': No space left on device")
        self._write_at(volume, offset, stdin)
        return Answer(stderr=f"{len(stdin)} bytes copied")

    @staticmethod
    def _write_at(volume: _Dataset, offset: int, data: bytes) -> None:
        """Write C{data} at byte C{offset} of C{volume} (its data holds up to the last byte written)."""
        end = offset + len(data)
        if len(volume.data) < end:
            volume.data += bytes(end - len(volume.data))
        volume.data[offset:end] = data

    def _decompress(self, tool: str, device: str, stdin: bytes) -> Answer:
        """C{TOOL -dc > DEVICE && sync}: gzip and xz (Python's own codecs)."""
        import gzip
        import lzma
        import zlib

        codecs = {"gzip": (gzip.decompress, (OSError, EOFError, zlib.error)),
                  "xz": (lzma.decompress, (lzma.LZMAError, EOFError))}
        if tool not in self.commands or tool not in codecs:
            raise _Error(f"sh: {tool}: not found", 127)
        self._volume_at(device)
        decompress, errors = codecs[tool]
        try:
            data = decompress(stdin)
        except errors:
            raise _Error(f"{tool}: stdin: not in {tool} format") from None
        return self._dd([f"of={device}"], data)

    def _head(self, length: int, device: str) -> Answer:
        volume = self._volume_at(device)
        wanted = min(length, volume.volsize)
        data = bytes(volume.data[:wanted])
        return Answer(stdout=data + bytes(wanted - len(data)))
