"""
Tests for L{comet.remote.qcow2}: the header checks made before qemu-img
opens an image, the reading of C{qemu-img info}, the command lines.  The
images are real (this machine's qemu-img), then altered where a header
field is the point.
"""

from __future__ import annotations

import json
import os
import struct

from twisted.trial.unittest import TestCase

from comet.errors import InvalidInput
from comet.remote import qcow2
from tests._qcow2 import qcow2_of, qcow2_with

MiB = 1024**2


def _set(image: bytes, offset: int, fmt: str, value: int) -> bytes:
    changed = bytearray(image)
    struct.pack_into(fmt, changed, offset, value)
    return bytes(changed)


class HeaderTests(TestCase):
    async def test_self_contained_image_taken(self):
        image = await qcow2_of(os.urandom(5000) + bytes(MiB))
        self.assertEqual(qcow2.check_header(image[:qcow2.HEADER_LENGTH]), 5120 + MiB)

    async def test_refused(self):
        """Each header Comet refuses, with its reason."""
        plain = await qcow2_of(os.urandom(5000))
        cases = [
            (await qcow2_with(MiB, backing="/etc/shadow"), "backing file"),
            (await qcow2_with(MiB, data_file=True), "external data file"),
            (_set(plain, 32, ">I", 1), "encrypted"),                   # crypt_method AES
            (_set(plain, 4, ">I", 4), "version 4"),
            (_set(plain, 8, ">Q", 0x10000), "backing file"),           # an offset alone
            (_set(plain, 20, ">I", 30), "not usable"),                 # cluster bits
            (_set(plain, 24, ">Q", 0), "not usable"),                  # virtual size
            (b"QFI", "not in qcow2 format"),
            (os.urandom(512), "not in qcow2 format"),
        ]
        for image, says in cases:
            with self.assertRaises(InvalidInput) as caught:
                qcow2.check_header(image[:qcow2.HEADER_LENGTH])
            self.assertIn(says, caught.exception.reason)


class InfoTests(TestCase):
    INFO = {"virtual-size": 3 * MiB, "filename": "/dev/zd0", "format": "qcow2",
            "format-specific": {"type": "qcow2", "data": {"compat": "1.1"}}}

    def parse(self, **changes):
        info = {**self.INFO, **changes}
        return qcow2.parse_info(json.dumps(info).encode())

    def test_virtual_size(self):
        self.assertEqual(self.parse(), 3 * MiB)

    def test_refused(self):
        for changes, says in (
            ({"backing-filename": "/etc/shadow"}, "backing file"),
            ({"full-backing-filename": "/etc/shadow"}, "backing file"),
            ({"format-specific": {"type": "qcow2", "data": {"data-file": "/x"}}},
             "external data file"),
            ({"format": "raw"}, "not qcow2"),
            ({"virtual-size": -1}, "not usable"),
            ({"virtual-size": "3"}, "not usable"),
        ):
            with self.assertRaises(InvalidInput) as caught:
                self.parse(**changes)
            self.assertIn(says, caught.exception.reason)
        for out in (b"qemu-img: oops", b"[]", b"{}"):
            with self.assertRaises(InvalidInput):
                qcow2.parse_info(out)


class ArgvTests(TestCase):
    def test_formats_given_devices_only(self):
        self.assertEqual(qcow2.info_argv("/dev/zd16"),
                         ["qemu-img", "info", "--output=json", "-f", "qcow2", "/dev/zd16"])
        self.assertEqual(qcow2.convert_argv("/dev/zd0", "/dev/zd16"),
                         ["qemu-img", "convert", "-n", "--target-is-zero", "-f", "qcow2",
                          "-O", "raw", "/dev/zd0", "/dev/zd16"])
        for device in ("/etc/shadow", "/dev/zd0p1", "json:{}", "-f"):
            with self.assertRaises(InvalidInput):
                qcow2.info_argv(device)
            with self.assertRaises(InvalidInput):
                qcow2.convert_argv("/dev/zd0", device)
