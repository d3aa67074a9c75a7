"""
Tests for L{comet.virt._display}: screenshots and the VNC display, run
directly on test-driver nodes.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import libvirt
from PIL import Image

from comet.errors import Conflict, InvalidInput, NotFound
from comet.virt import _display as display
from comet.virt import _operations as ops
from comet.virt._values import GraphicsAddress
from comet.virt.domainxml import domain_xml
from tests.virt._nodes import domain_spec
from tests.virt._recording import libvirt_error
from tests.virt.test_operations import HOST, _NodeCase


class ScreenshotTests(_NodeCase):
    def test_png(self):
        """A running domain's screenshot is a PNG image Pillow can read."""
        conn = self.open_node(domains=[domain_spec("vm")])
        data = display.screenshot(conn, HOST, "vm")
        with Image.open(io.BytesIO(data)) as image:
            self.assertEqual(image.format, "PNG")
            image.load()
            self.assertGreater(image.size[0], 0)

    def test_shutoff(self):
        """A shut-off domain has no screen: Conflict."""
        conn = self.open_node(domains=[(domain_spec("vm"), "shutoff")])
        self.assertRaises(Conflict, display.screenshot, conn, HOST, "vm")

    def test_stream_aborted_on_error(self):
        """When reading fails, the stream is aborted, not left open."""
        conn = self.open_node(domains=[domain_spec("vm")])
        self.recorder.fail_next(
            "recv", libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_STREAMS)
        )
        self.assertRaises(libvirt.libvirtError, display.screenshot, conn, HOST, "vm")
        self.assertIn("abort", self.recorder.methods())


_VNC_DOMAIN = """<domain type='test'><name>vnc</name><memory unit='MiB'>64</memory>
<os><type>hvm</type></os><devices>
<graphics type='vnc' port='5901' autoport='no' listen='127.0.0.1' passwd='old'/>
</devices></domain>"""


class GraphicsTests(_NodeCase):
    def setUp(self):
        self.conn = self.open_node()
        ops.define(self.conn, HOST, _VNC_DOMAIN)

    def test_address(self):
        """A running domain's VNC address and port come from its live XML."""
        ops.start(self.conn, HOST, "vnc")
        self.assertEqual(
            display.graphics_address(self.conn, HOST, "vnc"), GraphicsAddress("127.0.0.1", 5901)
        )

    def test_address_shutoff(self):
        """A shut-off domain has no display address: Conflict."""
        self.assertRaises(Conflict, display.graphics_address, self.conn, HOST, "vnc")

    def test_no_port_yet(self):
        """An autoport display without a port assigned yet: Conflict."""
        ops.define(self.conn, HOST, domain_xml(domain_spec("auto")))
        ops.start(self.conn, HOST, "auto")
        self.assertRaises(Conflict, display.graphics_address, self.conn, HOST, "auto")

    def test_no_display(self):
        """A domain without VNC display: NotFound."""
        ops.define(self.conn, HOST, domain_xml(domain_spec("headless", graphics=False)))
        ops.start(self.conn, HOST, "headless")
        self.assertRaises(NotFound, display.graphics_address, self.conn, HOST, "headless")
        self.assertRaises(NotFound, display.set_vnc_password, self.conn, HOST, "headless", "pw")

    def test_set_password(self):
        """
        The password is changed live, on the live graphics device with only its
        C{passwd} changed.
        """
        ops.start(self.conn, HOST, "vnc")
        seen = []
        self.recorder.fake("updateDeviceFlags", lambda target, xml, flags: seen.append((xml, flags)))
        display.set_vnc_password(self.conn, HOST, "vnc", "s3cret")
        [(xml, flags)] = seen
        self.assertEqual(flags, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        element = ET.fromstring(xml)
        self.assertEqual(element.tag, "graphics")
        self.assertEqual(
            (element.get("passwd"), element.get("port"), element.get("autoport")),
            ("s3cret", "5901", "no"),
        )
        self.assertIsNone(element.get("passwdValidTo"))

    def test_set_password_valid_to(self):
        """A password with a validity carries it as passwdValidTo, in UTC."""
        ops.start(self.conn, HOST, "vnc")
        seen = []
        self.recorder.fake("updateDeviceFlags", lambda target, xml, flags: seen.append(xml))
        display.set_vnc_password(self.conn, HOST, "vnc", "s3cret", valid_to=1_800_000_000.7)
        [xml] = seen
        element = ET.fromstring(xml)
        self.assertEqual((element.get("passwd"), element.get("passwdValidTo")),
                         ("s3cret", "2027-01-15T08:00:00"))

    def test_bad_password(self):
        """A VNC password longer than 8 characters, or empty, is refused."""
        ops.start(self.conn, HOST, "vnc")
        self.assertRaises(InvalidInput, display.set_vnc_password, self.conn, HOST, "vnc", "123456789")
        self.assertRaises(InvalidInput, display.set_vnc_password, self.conn, HOST, "vnc", "")

    def test_shutoff(self):
        """A shut-off domain's VNC password cannot change live: Conflict."""
        self.assertRaises(Conflict, display.set_vnc_password, self.conn, HOST, "vnc", "pw")
