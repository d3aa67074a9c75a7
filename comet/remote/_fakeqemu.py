"""
The C{qemu-img} half of L{comet.remote.FakeStorageServer}: C{qemu-img info
--output=json -f qcow2 DEVICE} and C{qemu-img convert -n --target-is-zero
-f qcow2 -O raw SOURCE TARGET} over its zvols, as QEMU 7.2's qemu-img answers
them (C{tests/contract/remote_suite.py} runs both against the real one).

Its qcow2 reader is a model written from the format's specification
(QEMU's C{docs/interop/qcow2.txt}), apart from L{comet.remote.qcow2}'s
checks: the header, the L1 and L2 tables, standard, zero and
deflate-compressed clusters; what it does not model (extended L2 entries,
zstd compression, encryption) fails saying so.  An image naming a backing
file or an external data file is read as qemu-img would: info names it,
convert fails, as none of the paths exists on a fake server.
"""

from __future__ import annotations

import json
import struct
import zlib

from comet.remote._fake import Answer
from comet.remote._fakerecords import _Error

_L2_OFFSET = 0x00FFFFFFFFFFFE00
_COMPRESSED = 1 << 62
_DATA_FILE_EXTENSION = 0x44415441


class _Image:
    """A qcow2 image's bytes, read."""

    def __init__(self, data: bytes, where: str):
        self.data = data = data.ljust(512, b"\0")   # a device reads zeros past what was written
        if data[:4] != b"QFI\xfb":
            raise _Error(f"qemu-img: Could not open '{where}': Image is not in qcow2 format")
        (_, self.version, backing_offset, backing_size, self.cluster_bits, self.size,
         self.crypt, self.l1_size, self.l1_offset) = struct.unpack_from(">4sIQIIQIIQ", data)
        self.incompatible = struct.unpack_from(">Q", data, 72)[0] if self.version >= 3 else 0
        header_length = struct.unpack_from(">I", data, 100)[0] if self.version >= 3 else 72
        self.backing = (data[backing_offset:backing_offset + backing_size].decode()
                        if backing_offset else None)
        self.data_file = None
        at = header_length
        while at + 8 <= len(data):
            kind, length = struct.unpack_from(">II", data, at)
            if kind == 0:
                break
            if kind == _DATA_FILE_EXTENSION:
                self.data_file = data[at + 8:at + 8 + length].decode()
            at += 8 + (length + 7) // 8 * 8

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    def _u64(self, offset: int) -> int:
        chunk = self.data[offset:offset + 8]
        return struct.unpack(">Q", chunk + bytes(8 - len(chunk)))[0]

    def _cluster(self, entry: int) -> bytes:
        size = self.cluster_size
        if entry & _COMPRESSED:
            shift = 62 - (self.cluster_bits - 8)
            offset = entry & ((1 << shift) - 1)
            sectors = ((entry >> shift) & ((1 << (self.cluster_bits - 8)) - 1)) + 1
            packed = self.data[offset:offset + sectors * 512 - (offset & 511)]
            return zlib.decompressobj(-15).decompress(packed)[:size].ljust(size, b"\0")
        offset = entry & _L2_OFFSET
        if not offset or entry & 1:
            return bytes(size)
        return bytes(self.data[offset:offset + size]).ljust(size, b"\0")

    def raw(self, where: str) -> bytes:
        """The guest's bytes (its virtual size)."""
        if self.backing or self.data_file:
            name = self.backing or self.data_file
            raise _Error(f"qemu-img: Could not open '{where}': Could not open '{name}':"
                         " No such file or directory")
        if self.crypt or self.incompatible & ~0b11:
            raise _Error("fake: encrypted, zstd-compressed or extended-L2 qcow2 images"
                         " are not modelled")
        size = self.cluster_size
        per_table = size // 8
        clusters = -(-self.size // size)
        out = bytearray()
        for index in range(clusters):
            l1 = self._u64(self.l1_offset + 8 * (index // per_table)) & _L2_OFFSET
            entry = self._u64(l1 + 8 * (index % per_table)) if l1 else 0
            out += self._cluster(entry)
        return bytes(out[:self.size])

    def info(self, where: str) -> dict:
        """What C{qemu-img info --output=json} says (the keys Comet may read)."""
        data = {"compat": "1.1" if self.version >= 3 else "0.10"}
        if self.data_file:
            data["data-file"] = self.data_file
        info = {"virtual-size": self.size, "filename": where,
                "cluster-size": self.cluster_size, "format": "qcow2",
                "actual-size": 0, "format-specific": {"type": "qcow2", "data": data},
                "dirty-flag": False}
        if self.backing:
            info.update({"backing-filename": self.backing,
                         "full-backing-filename": self.backing})
        return info


class _FakeQemuImg:
    """Mixed into L{FakeStorageServer} beside L{comet.remote._fakezfs._FakeZFS}."""

    def _qemu_img(self, args: list[str]) -> Answer:
        if "qemu-img" not in self.commands:
            raise _Error("sh: qemu-img: not found", 127)
        if args[:4] == ["info", "--output=json", "-f", "qcow2"] and len(args) == 5:
            image = _Image(self._image_bytes(args[4]), args[4])
            return Answer(stdout=json.dumps(image.info(args[4]), indent=4).encode() + b"\n")
        if (args[:7] == ["convert", "-n", "--target-is-zero", "-f", "qcow2", "-O", "raw"]
                and len(args) == 9):
            source, target = args[7], args[8]
            raw = _Image(self._image_bytes(source), source).raw(source)
            volume = self._volume_at(target)
            if len(raw) > volume.volsize:
                raise _Error(f"qemu-img: error while writing at byte {volume.volsize}:"
                             " No space left on device")
            if len(raw) > len(volume.data):
                volume.data.extend(bytes(len(raw) - len(volume.data)))
            volume.data[:len(raw)] = raw
            return Answer()
        raise _Error(f"fake: qemu-img {' '.join(args[:1])} is not modelled with these"
                     " options", 127)

    def _image_bytes(self, device: str) -> bytes:
        return bytes(self._volume_at(device).data)
