"""Tests for L{comet.virt._screenshot}."""

from __future__ import annotations

import io

from PIL import Image
from twisted.trial.unittest import TestCase

from comet.virt._errors import HypervisorError
from comet.virt._screenshot import PNG_SIGNATURE, to_png


def _image(format: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 10, 30)).save(out, format=format)
    return out.getvalue()


class ToPNGTests(TestCase):
    def test_png_unchanged(self):
        """PNG (what libvirt 9 sends) is returned as it is."""
        data = _image("PNG")
        self.assertIs(to_png("image/png", data), data)

    def test_ppm_converted(self):
        """PPM (what older QEMU sends) becomes a PNG of the same picture."""
        png = to_png("image/x-portable-pixmap", _image("PPM"))
        self.assertTrue(png.startswith(PNG_SIGNATURE))
        with Image.open(io.BytesIO(png)) as image:
            self.assertEqual((image.format, image.size), ("PNG", (4, 3)))
            self.assertEqual(image.convert("RGB").getpixel((1, 1)), (200, 10, 30))

    def test_not_an_image(self):
        """Bytes that are no image are a HypervisorError naming type and size."""
        e = self.assertRaises(HypervisorError, to_png, "image/x-mystery", b"garbage")
        self.assertIn("image/x-mystery, 7 bytes", e.reason)
