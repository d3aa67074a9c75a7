"""Tests for L{comet.virt.domainxml_parse}: what Comet builds (and libvirt reports) reads back."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import attrs
import libvirt
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import TestCase

from comet.errors import InvalidInput
from comet.virt._eventloop import ensure_event_loop
from comet.virt.domainxml import CometMetadata, DiskSpec, DomainSpec, NicSpec, domain_xml
from comet.virt.domainxml_parse import parse_domain
from tests.virt._nodes import make_node_xml, node_path
from tests.virt.test_domainxml import ISCSI, UUID, spec


_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}", fullmatch=True)
_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")), max_size=20
)
_disk = st.one_of(
    st.builds(
        DiskSpec.file,
        target=st.just("vda"),
        path=_names.map(lambda n: "/images/" + n),
        format=st.sampled_from(["raw", "qcow2"]),
    ),
    st.builds(
        lambda iqn, portal, lun, port, user, cdrom: DiskSpec.iscsi(
            "vda",
            iqn,
            portal,
            lun=lun,
            port=port,
            username=user,
            secret_usage=user and user + ".chap",
            cdrom=cdrom,
        ),
        iqn=_names.map(lambda n: "iqn.2026-11.org.comet:" + n),
        portal=st.sampled_from(["10.200.0.20", "storage.example"]),
        lun=st.integers(0, 255),
        port=st.integers(1, 65535),
        user=st.one_of(st.none(), _names),
        cdrom=st.booleans(),
    ),
)


@st.composite
def _specs(draw) -> DomainSpec:
    disks = draw(st.lists(_disk, max_size=4))
    macs = draw(st.lists(st.from_regex(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", fullmatch=True),
                         max_size=3, unique=True))
    graphics = draw(st.booleans())
    return DomainSpec(
        name=draw(_names),
        uuid=str(draw(st.uuids())),
        memory_mb=draw(st.integers(1, 1 << 20)),
        cpus=draw(st.integers(1, 256)),
        domain_type=draw(st.sampled_from(["kvm", "qemu", "test"])),
        cpu=draw(st.one_of(st.none(), st.sampled_from(["host-model", "host-passthrough"]),
                           _names.filter(lambda n: n not in ("host-model", "host-passthrough")))),
        disks=tuple(attrs.evolve(d, target="vd" + "abcd"[i]) for i, d in enumerate(disks)),
        nics=tuple(NicSpec(mac, draw(st.from_regex(r"[a-z][a-z0-9]{0,14}", fullmatch=True)),
                           draw(st.one_of(st.none(), st.integers(68, 65535))))
                   for mac in macs),
        graphics=graphics,
        vnc_password=draw(
            st.one_of(st.none(), st.from_regex(r"[!-~]{1,8}", fullmatch=True))
        )
        if graphics
        else None,
        serial=draw(st.booleans()),
        metadata=draw(
            st.one_of(st.none(), st.builds(CometMetadata, cluster=_text, vm=_text, op=_text))
        ),
        kernel=draw(st.one_of(st.none(), st.just("/boot/vmlinuz"))),
    )


class RoundTripTests(TestCase):
    @settings(max_examples=200, deadline=None)
    @given(_specs())
    def test_round_trip(self, value):
        """Whatever Comet writes, it reads back as the same spec."""
        self.assertEqual(parse_domain(domain_xml(value)).spec, value)

    def test_through_libvirt(self):
        """
        A spec defined on a (test-driver) host reads back from the host's
        XML as the same spec, though libvirt rewrites units and adds devices;
        the running domain's description says it is active.
        """
        ensure_event_loop()
        value = DomainSpec(
            name="web-1",
            uuid=UUID,
            memory_mb=384,
            cpus=2,
            domain_type="test",
            disks=(ISCSI, DiskSpec.file("vdb", "/images/data.qcow2", "qcow2"),
                   DiskSpec.block("vdc", "/dev/zd32")),
            nics=(NicSpec("52:54:00:12:34:56", "cometb10000"), NicSpec("02:00:00:00:00:01", "br0")),
            vnc_password="pw",
            metadata=CometMetadata("lab", "web-1", "11"),
            kernel="/boot/vmlinuz",
            initrd="/boot/initrd.gz",
            cmdline="console=ttyS0 quiet",
        )
        conn = libvirt.open(make_node_xml(node_path(self)))
        self.addCleanup(conn.close)
        dom = conn.defineXMLFlags(domain_xml(value), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        description = parse_domain(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
        self.assertEqual(description.spec, value)
        self.assertFalse(description.active)
        dom.create()
        description = parse_domain(dom.XMLDesc(0))
        self.assertTrue(description.active)
        self.assertIsNone(description.spec.vnc_password)
        self.assertEqual(description.vnc_listen, "127.0.0.1")

    def test_live_vnc_port(self):
        """The VNC port of a running domain is read from its live XML."""
        live = domain_xml(spec()).replace("<domain ", "<domain id='3' ").replace(
            "port=\"-1\"", "port=\"5904\""
        )
        description = parse_domain(live)
        self.assertEqual((description.vnc_port, description.vnc_listen), (5904, "127.0.0.1"))
        self.assertIsNone(parse_domain(domain_xml(spec())).vnc_port)

    def test_memory_units(self):
        """Memory in any of libvirt's units reads back in MiB."""
        for memory, unit in [("1048576", "KiB"), ("1073741824", "bytes"), ("1", "GiB"), ("1024", "M")]:
            root = ET.fromstring(domain_xml(spec()))
            root.find("memory").text = memory
            root.find("memory").set("unit", unit)
            self.assertEqual(
                parse_domain(ET.tostring(root, encoding="unicode")).spec.memory_mb, 1024
            )

    def test_foreign_disks_skipped(self):
        """Disks Comet does not write (a file CD-ROM, a block device not a zvol) are left out."""
        root = ET.fromstring(domain_xml(spec(disks=(ISCSI,))))
        devices = root.find("devices")
        devices.append(ET.fromstring("<disk type='file' device='cdrom'><source file='/x.iso'/><target dev='hdc'/></disk>"))
        devices.append(ET.fromstring("<disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb'/></disk>"))
        devices.append(ET.fromstring("<disk type='block' device='disk'><source dev='/dev/zd16'/><target dev='vdc'/></disk>"))
        self.assertEqual(parse_domain(ET.tostring(root, encoding="unicode")).spec.disks,
                         (ISCSI, DiskSpec.block("vdc", "/dev/zd16")))

    def test_not_a_domain(self):
        self.assertRaises(InvalidInput, parse_domain, "<domain")
        self.assertRaises(InvalidInput, parse_domain, "<network/>")
