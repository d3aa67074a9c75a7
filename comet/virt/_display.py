"""
The libvirt calls behind L{comet.virt.Hypervisors}' display operations: a
screenshot of the first screen, the VNC server's address, its password.
Like those in L{comet.virt._operations}, they block and run in a libvirt
thread.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import libvirt

from comet.errors import Conflict, InvalidInput, NotFound
from comet.virt import domainxml
from comet.virt._operations import _ACTIVE, _lookup, _require
from comet.virt._screenshot import to_png
from comet.virt._values import GraphicsAddress

#: The largest screenshot read, in bytes (a 4K frame as PNG is far smaller).
SCREENSHOT_MAX = 64 * 1024 * 1024
_CHUNK = 256 * 1024


def screenshot(conn, host: str, name: str) -> bytes:
    """The domain's first screen, as PNG bytes."""
    dom = _lookup(conn, host, name)
    _require(dom, host, "a screenshot", _ACTIVE)
    stream = conn.newStream(0)
    try:
        mime = dom.screenshot(stream, 0, 0)
        chunks = []
        size = 0
        while True:
            chunk = stream.recv(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > SCREENSHOT_MAX:
                raise InvalidInput(
                    f"the screenshot of {name!r} is larger than {SCREENSHOT_MAX} bytes"
                )
            chunks.append(chunk)
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise
    return to_png(mime, b"".join(chunks))


def _vnc(xml: str) -> ET.Element | None:
    devices = ET.fromstring(xml).find("devices")
    if devices is None:
        return None
    for graphics in devices.findall("graphics"):
        if graphics.get("type") == "vnc":
            return graphics
    return None


def graphics_address(conn, host: str, name: str) -> GraphicsAddress:
    """
    Where the running domain's VNC display listens, from its live XML.

    @raise NotFound: when the domain has no VNC display.
    @raise Conflict: when it is not running (no port yet).
    """
    dom = _lookup(conn, host, name)
    _require(dom, host, "a console", _ACTIVE)
    vnc = _vnc(dom.XMLDesc(0))
    if vnc is None:
        raise NotFound(f"domain {name!r} on compute host {host!r} has no VNC display")
    port = int(vnc.get("port", "-1"))
    if port <= 0:
        raise Conflict(f"domain {name!r} on compute host {host!r} has no VNC port yet")
    listen = vnc.get("listen")
    if not listen:
        element = vnc.find("listen")
        listen = element.get("address") if element is not None else None
    return GraphicsAddress(listen=listen or "127.0.0.1", port=port)


def set_vnc_password(conn, host: str, name: str, password: str,
                     valid_to: float | None = None) -> None:
    """
    Change the running domain's VNC password, live (the stored definition
    keeps its own).  The device is the live one with only C{passwd} (and
    C{passwdValidTo}) changed, as QEMU refuses to change anything else of a
    display in place.

    @param valid_to: epoch seconds after which the password lets no new VNC
        client in (libvirt's C{passwdValidTo}, UTC); C{None}: no limit.
    """
    domainxml.check_vnc_password(password)
    dom = _lookup(conn, host, name)
    _require(dom, host, "a VNC password change", _ACTIVE)
    vnc = _vnc(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
    if vnc is None:
        raise NotFound(f"domain {name!r} on compute host {host!r} has no VNC display")
    vnc.set("passwd", password)
    if valid_to is not None:
        vnc.set("passwdValidTo", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(valid_to)))
    else:
        vnc.attrib.pop("passwdValidTo", None)
    vnc.tail = None
    dom.updateDeviceFlags(
        ET.tostring(vnc, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_LIVE
    )
