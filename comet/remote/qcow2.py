"""
qcow2 images on a storage server: the checks Comet makes before C{qemu-img}
reads one, and the C{qemu-img} command lines that read and convert it.

A downloaded qcow2 image is staged in a zvol of its own (C{qemu-img convert}
reads a qcow2 from something it can seek in, not from the download's pipe),
then converted into the volume's zvol on the server.  The image is the
client's: a qcow2 header may name a backing file or an external data file,
any path on the server, which C{qemu-img} would open.  So the header is read
and checked here first (L{check_header}: no backing file, no external data
file, no encryption), and only then is C{qemu-img} run, always with the
format given (C{-f qcow2}: it never guesses one) and its answer checked
again (L{parse_info}).  The staging zvol is Comet's own and written only by
Comet before the check, so what was checked is what is converted.
"""

from __future__ import annotations

import json
import re
import struct

from comet.errors import InvalidInput

#: The bytes of an image's start that L{check_header} reads.
HEADER_LENGTH = 512
#: The qcow2 magic, C{QFI\\xfb}.
MAGIC = b"QFI\xfb"
#: Incompatible feature bit 2 (qcow2 version 3): the guest's data lives in an
#: external data file, which the header's extension names.
_EXTERNAL_DATA_FILE = 1 << 2
#: The largest virtual size Comet takes from an image (bytes): 64 TiB.
MAX_VIRTUAL_SIZE = 64 * 1024**4
#: Seconds a conversion may take (a large image onto slow disks).
CONVERT_TIMEOUT = 3600.0

_HEADER = struct.Struct(">4sIQIIQIIQ")   # magic .. l1_table_offset (48 bytes)
_FEATURES = struct.Struct(">Q")           # incompatible_features, at 72 (version 3)


def check_header(head: bytes) -> int:
    """
    The virtual size (bytes) the qcow2 header at the start of C{head} says,
    if Comet takes the image: a qcow2 of version 2 or 3 naming no backing
    file, no external data file, not encrypted.

    @raise InvalidInput: it is not a qcow2 image, or one Comet refuses (the
        reason says which).
    """
    if len(head) < 104 or head[:4] != MAGIC:
        raise InvalidInput("the image is not in qcow2 format (its first bytes are not"
                           " a qcow2 header)")
    (_, version, backing_offset, backing_size, cluster_bits, size, crypt, _,
     _) = _HEADER.unpack_from(head)
    if version not in (2, 3):
        raise InvalidInput(f"the image is qcow2 version {version}; versions 2 and 3 are taken")
    if backing_offset or backing_size:
        raise InvalidInput("the qcow2 image names a backing file; only a self-contained"
                           " image is taken (qemu-img convert -O qcow2 makes one)")
    if version == 3 and _FEATURES.unpack_from(head, 72)[0] & _EXTERNAL_DATA_FILE:
        raise InvalidInput("the qcow2 image keeps its data in an external data file;"
                           " only a self-contained image is taken")
    if crypt:
        raise InvalidInput("the qcow2 image is encrypted; only an unencrypted image is taken")
    if not 9 <= cluster_bits <= 21 or not 0 < size <= MAX_VIRTUAL_SIZE:
        raise InvalidInput(f"the qcow2 header is not usable (cluster bits {cluster_bits},"
                           f" virtual size {size})")
    return size


def parse_info(out: bytes) -> int:
    """
    The virtual size (bytes) in C{qemu-img info --output=json}'s answer
    C{out}, checked as L{check_header} checks the header (qemu-img's own
    reading of it): a qcow2 with no backing file and no data file.

    @raise InvalidInput: it names one, or the answer is not such an image's.
    """
    try:
        info = json.loads(out)
        data = (info.get("format-specific") or {}).get("data") or {}
        size = info["virtual-size"]
    except (ValueError, AttributeError, KeyError, TypeError):
        raise InvalidInput(f"qemu-img info said nothing usable: {out[:200]!r}") from None
    if info.get("format") != "qcow2":
        raise InvalidInput(f"qemu-img reads the image as {info.get('format')!r}, not qcow2")
    for key in ("backing-filename", "full-backing-filename"):
        if info.get(key):
            raise InvalidInput("the qcow2 image names a backing file; only a self-contained"
                               " image is taken")
    if data.get("data-file"):
        raise InvalidInput("the qcow2 image keeps its data in an external data file;"
                           " only a self-contained image is taken")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_VIRTUAL_SIZE:
        raise InvalidInput(f"the qcow2 image's virtual size is not usable: {size!r}")
    return size


def info_argv(device: str) -> list[str]:
    """C{qemu-img info} of the qcow2 image on C{device}, as JSON (it is never probed)."""
    return ["qemu-img", "info", "--output=json", "-f", "qcow2", _check_device(device)]


def convert_argv(source: str, target: str) -> list[str]:
    """
    Convert the qcow2 image on device C{source} onto device C{target} as
    raw: C{-n}, the target exists (a new zvol, so all zeros:
    C{--target-is-zero} skips writing the image's unallocated and zero
    clusters); formats given, never probed.
    """
    return ["qemu-img", "convert", "-n", "--target-is-zero", "-f", "qcow2", "-O", "raw",
            _check_device(source), _check_device(target)]


def _check_device(device: str) -> str:
    if not isinstance(device, str) or not re.fullmatch(r"/dev/zd[0-9]+", device):
        raise InvalidInput(f"not a zvol device: {device!r}")
    return device
