"""
Real qcow2 images for tests, made by this machine's C{qemu-img} (QEMU's
qemu-utils, which the testbed installs) in a child process, never in the
reactor's thread: from raw bytes, compressed or not, or naming a backing
file or an external data file (what Comet refuses).
"""

from __future__ import annotations

import os
import tempfile

from twisted.internet.utils import getProcessOutputAndValue

QEMU_IMG = "/usr/bin/qemu-img"


async def _qemu_img(*args: str) -> None:
    out, err, code = await getProcessOutputAndValue(QEMU_IMG, list(args),
                                                    env={"PATH": "/usr/bin:/bin"})
    if code != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)} failed ({code}): {err.decode()}")


async def qcow2_of(raw: bytes, compressed: bool = False) -> bytes:
    """A self-contained qcow2 image whose guest bytes are C{raw} (virtual size: its length)."""
    with tempfile.TemporaryDirectory(prefix="comet-qcow2-") as directory:
        source, image = os.path.join(directory, "raw"), os.path.join(directory, "image.qcow2")
        with open(source, "wb") as f:
            f.write(raw)
        await _qemu_img("convert", "-f", "raw", "-O", "qcow2", *(["-c"] if compressed else []),
                        source, image)
        with open(image, "rb") as f:
            return f.read()


async def qcow2_with(size: int, backing: str | None = None, data_file: bool = False) -> bytes:
    """
    An empty qcow2 image of virtual size C{size} naming backing file
    C{backing} (a path that need not exist) or, with C{data_file}, an
    external data file (a path of a temporary directory here).
    """
    with tempfile.TemporaryDirectory(prefix="comet-qcow2-") as directory:
        image = os.path.join(directory, "image.qcow2")
        options = []
        if backing is not None:
            options = ["-u", "-b", backing, "-F", "raw"]
        if data_file:
            options = ["-o", f"data_file={os.path.join(directory, 'data.raw')},data_file_raw=on"]
        await _qemu_img("create", "-f", "qcow2", *options, image, str(size))
        with open(image, "rb") as f:
            return f.read()
