"""
Screenshots as PNG, whatever the hypervisor sends.

Libvirt 9 with QEMU, and its test driver, send PNG (MIME type C{image/png});
older QEMU sends PPM.  The API promises C{image/png}, so anything else is
converted with Pillow.  Runs in a libvirt thread: decoding a large frame takes
milliseconds, which the reactor must not spend.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from comet.virt._errors import HypervisorError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def to_png(mime: str | None, data: bytes) -> bytes:
    """
    C{data}, an image of type C{mime}, as PNG bytes.

    @raise HypervisorError: when C{data} is not an image Pillow can read.
    """
    if data.startswith(PNG_SIGNATURE):
        return data
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            out = io.BytesIO()
            image.save(out, format="PNG")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise HypervisorError(
            f"the screenshot ({mime or 'no type'}, {len(data)} bytes)"
            f" is not an image: {e}"
        ) from None
    return out.getvalue()
