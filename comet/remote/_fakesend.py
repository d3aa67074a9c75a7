"""
C{zfs send} and C{zfs receive} of L{comet.remote.FakeStorageServer}: what
L{comet.remote.zfs_send} runs on both sides of a copy.

The stream is a format of the fake's own, not ZFS's, but it behaves as ZFS's
does where Comet can tell: a whole stream carries the snapshot's written
blocks (not the holes), an incremental one the blocks that differ from its
base, each with a small header; both carry the snapshot's guid (an
incremental one its base's too, which the receiver's newest snapshot must
have); a stream cut short or altered fails its checksum and is discarded.
"""

from __future__ import annotations

import hashlib
import json
import struct

from comet.remote._fake import Answer
from comet.remote._fakerecords import _Dataset, _Error, _missing, _parse_options, _props

_MAGIC = b"COMET-FAKE-ZFS-STREAM 1\n"
_RECORD = struct.Struct(">QI")  # offset, length
_END = 2 ** 64 - 1


class _FakeSend:
    """Mixed into L{FakeStorageServer} beside L{comet.remote._fakezfs._FakeZFS}."""

    def _zfs_send(self, args: list[str]) -> Answer:
        options, operands = _parse_options(args, "", "i")
        if len(operands) != 1:
            raise _Error("usage:\n\tsend [-i snapshot] <snapshot>", 2)
        (name,) = operands
        snap = self._get(name)
        if snap.type != "snapshot":
            raise _Error(f"cannot send '{name}': operation only applies to snapshots", 1)
        base = None
        if "i" in options:
            base_name = options["i"][-1]
            if base_name.startswith("@"):
                base_name = name.split("@")[0] + base_name
            base = self._get(base_name)
            if (base_name.split("@")[0] != name.split("@")[0]
                    or base.createtxg >= snap.createtxg):
                raise _Error(f"cannot send '{name}': not an earlier snapshot from the same fs")
        return Answer(stdout=self._stream(snap, base))

    def _stream(self, snap: _Dataset, base: _Dataset | None) -> bytes:
        header = {"snapshot": snap.name.split("@")[1], "guid": snap.guid,
                  "from": base.guid if base is not None else None,
                  "volsize": snap.volsize, "volblocksize": snap.volblocksize}
        out = bytearray(_MAGIC + json.dumps(header).encode() + b"\n")
        size = snap.volblocksize
        new, old = bytes(snap.data), bytes(base.data) if base is not None else b""
        for offset in range(0, max(len(new), len(old)), size):
            block = new[offset:offset + size].ljust(size, b"\0")
            before = old[offset:offset + size].ljust(size, b"\0")
            if block != before:
                out += _RECORD.pack(offset, size) + block
        out += _RECORD.pack(_END, 0)
        return bytes(out + hashlib.sha256(out).digest())

    def _zfs_receive_stream(self, args: list[str], stdin: bytes) -> Answer:
        options, operands = _parse_options(args, "AFsuv", "ox")
        if len(operands) != 1:
            raise _Error("usage:\n\treceive [-o property=value] <filesystem|volume>", 2)
        (name,) = operands
        if "A" in options:
            self._get(name)
            raise _Error(f"'{name}' does not have any resumable receive state to abort")
        if not stdin.startswith(_MAGIC) or b"\n" not in stdin[len(_MAGIC):]:
            raise _Error("cannot receive: invalid stream (bad magic number)")
        line, _, body = stdin[len(_MAGIC):].partition(b"\n")
        header = json.loads(line)
        kind = "new filesystem" if header["from"] is None else "incremental"
        volume = self._receiving_into(name, header, kind)
        blocks = self._blocks(stdin, len(stdin) - len(body), kind)
        props = _props(options)
        if volume is None:
            volume = self._add(name, "volume", props=props, volsize=header["volsize"],
                               volblocksize=header["volblocksize"])
        else:
            volume.props.update(props)
            volume.volsize = header["volsize"]
        for offset, block in blocks:
            self._write_at(volume, offset, block)
        del volume.data[volume.volsize:]
        self._add(f"{name}@{header['snapshot']}", "snapshot", volsize=volume.volsize,
                  volblocksize=volume.volblocksize, data=bytearray(volume.data),
                  guid=header["guid"])
        self._txg += 1
        return Answer()

    def _receiving_into(self, name: str, header: dict, kind: str) -> _Dataset | None:
        """The volume an incremental stream goes into (L{None}: a whole one makes it), checked."""
        if header["from"] is None:
            if name in self.datasets:
                raise _Error(f"cannot receive {kind} stream: destination '{name}' exists\n"
                             "must specify -F to overwrite it")
            parent = self._parent(name)
            if parent not in self.datasets:
                raise _Error(f"cannot receive {kind} stream: {_missing(parent).answer.stderr}")
            return None
        volume = self.datasets.get(name)
        if volume is None:
            raise _Error(f"cannot receive {kind} stream: destination '{name}' does not exist")
        snaps = [d for d in self._children(name) if d.type == "snapshot"]
        if not snaps or snaps[-1].guid != header["from"]:
            raise _Error(f"cannot receive {kind} stream: most recent snapshot of {name} does"
                         " not\nmatch incremental source")
        if bytes(volume.data).rstrip(b"\0") != bytes(snaps[-1].data).rstrip(b"\0"):
            raise _Error(f"cannot receive {kind} stream: destination {name} has been"
                         " modified\nsince most recent snapshot")
        return volume

    @staticmethod
    def _blocks(stream: bytes, at: int, kind: str) -> list[tuple[int, bytes]]:
        """The stream's records from byte C{at}, once its end and checksum are found right."""
        blocks = []
        while at + _RECORD.size <= len(stream):
            offset, length = _RECORD.unpack_from(stream, at)
            at += _RECORD.size
            if offset == _END:
                body, digest = stream[:at], stream[at:]
                if digest == hashlib.sha256(body).digest():
                    return blocks
                break
            blocks.append((offset, stream[at:at + length]))
            at += length
        raise _Error(f"cannot receive {kind} stream: checksum mismatch or incomplete stream")
