"""Tests for L{comet.virt.domainxml}."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from twisted.trial.unittest import TestCase

from comet.errors import InvalidInput
from comet.virt.domainxml import (
    METADATA_NAMESPACE,
    CometMetadata,
    DiskSpec,
    DomainSpec,
    NicSpec,
    check_vnc_password,
    device_xml,
    disk_xml,
    domain_xml,
    metadata_xml,
    nic_xml,
    secret_xml,
)
from comet.virt.domainxml_parse import parse_domain, parse_metadata

UUID = "3c7d2b0e-8f61-4a55-9b1e-5c0f2d4e6a71"

ISCSI = DiskSpec.iscsi(
    "vda",
    "iqn.2026-11.org.comet:vmpool.web-1",
    "10.200.0.20",
    username="comet",
    secret_usage="vmpool.web-1",
)


def spec(**kwargs) -> DomainSpec:
    values = dict(name="web-1", uuid=UUID, memory_mb=256, cpus=1, domain_type="qemu")
    values.update(kwargs)
    return DomainSpec(**values)


class DomainXMLTests(TestCase):
    def test_shape(self):
        """
        A QEMU domain has its name, UUID, memory in MiB, vCPUs, an x86_64
        C{pc} machine booting from disk, ACPI, and is destroyed on power-off.
        """
        root = ET.fromstring(domain_xml(spec(memory_mb=512, cpus=2)))
        self.assertEqual(root.tag, "domain")
        self.assertEqual(root.get("type"), "qemu")
        self.assertEqual(root.findtext("name"), "web-1")
        self.assertEqual(root.findtext("uuid"), UUID)
        self.assertEqual(root.findtext("memory"), "512")
        self.assertEqual(root.find("memory").get("unit"), "MiB")
        self.assertEqual(root.findtext("vcpu"), "2")
        os_type = root.find("os/type")
        self.assertEqual(
            (os_type.text, os_type.get("arch"), os_type.get("machine")), ("hvm", "x86_64", "pc")
        )
        self.assertEqual(root.find("os/boot").get("dev"), "hd")
        self.assertIsNotNone(root.find("features/acpi"))
        self.assertEqual(root.findtext("on_poweroff"), "destroy")

    def test_test_type(self):
        """A C{test} domain names no machine (the test driver knows none)."""
        root = ET.fromstring(domain_xml(spec(domain_type="test")))
        self.assertEqual(root.get("type"), "test")
        self.assertEqual(root.find("os/type").attrib, {})
        self.assertIsNone(root.find("devices/video"))

    def test_kernel_boot(self):
        """With a kernel, the domain boots it directly, with initrd and command line."""
        root = ET.fromstring(
            domain_xml(spec(kernel="/boot/vmlinuz", initrd="/boot/initrd.gz", cmdline="console=ttyS0"))
        )
        self.assertEqual(
            [(e.tag, e.text) for e in root.find("os")][1:],
            [("kernel", "/boot/vmlinuz"), ("initrd", "/boot/initrd.gz"), ("cmdline", "console=ttyS0")],
        )
        self.assertIsNone(root.find("os/boot"))

    def test_devices(self):
        """
        Graphics are VNC on 127.0.0.1 with a port chosen by libvirt and the
        password; the serial console is a pty.
        """
        root = ET.fromstring(domain_xml(spec(vnc_password="pw")))
        graphics = root.find("devices/graphics")
        self.assertEqual(
            graphics.attrib,
            {"type": "vnc", "port": "-1", "autoport": "yes", "listen": "127.0.0.1", "passwd": "pw"},
        )
        self.assertEqual(root.find("devices/serial").get("type"), "pty")
        self.assertEqual(root.find("devices/console/target").get("type"), "serial")
        self.assertEqual(root.find("devices/video/model").get("type"), "vga")
        bare = ET.fromstring(domain_xml(spec(graphics=False, serial=False)))
        self.assertEqual(list(bare.find("devices")), [])

    def test_nics(self):
        """Each NIC is a virtio interface on its bridge, with its MAC, in order."""
        root = ET.fromstring(domain_xml(spec(nics=(NicSpec("52:54:00:00:00:01", "cometb7", 1450),
                                                   NicSpec("02:00:00:00:00:02", "br0")))))
        interfaces = root.findall("devices/interface")
        self.assertEqual(
            [(i.get("type"), i.find("mac").get("address"), i.find("source").get("bridge"),
              i.find("model").get("type")) for i in interfaces],
            [("bridge", "52:54:00:00:00:01", "cometb7", "virtio"),
             ("bridge", "02:00:00:00:00:02", "br0", "virtio")])
        # An MTU only where one is given (a VXLAN network's).
        self.assertEqual([[m.get("size") for m in i.findall("mtu")] for i in interfaces],
                         [["1450"], []])

    def test_cpu(self):
        """
        No C{<cpu>} by default (the hypervisor's own); a host mode as the
        mode; a named model exactly, never a fallback to another.
        """
        self.assertIsNone(ET.fromstring(domain_xml(spec())).find("cpu"))
        for mode in ("host-model", "host-passthrough"):
            cpu = ET.fromstring(domain_xml(spec(cpu=mode))).find("cpu")
            self.assertEqual((cpu.attrib, list(cpu)), ({"mode": mode}, []))
        cpu = ET.fromstring(domain_xml(spec(cpu="Haswell-noTSX"))).find("cpu")
        self.assertEqual(cpu.attrib, {"mode": "custom", "match": "exact"})
        self.assertEqual([(m.tag, m.attrib, m.text) for m in cpu],
                         [("model", {"fallback": "forbid"}, "Haswell-noTSX")])
        for bad in ("", "a b", "Has<well", "-x", 7):
            self.assertRaises(InvalidInput, spec, cpu=bad)

    def test_cpu_read_back(self):
        """
        What a running domain shows: a host-model guest's expanded model is
        read as that model; a model Comet would not write, or none, as C{None}.
        """
        xml = domain_xml(spec(cpu="qemu64")).replace(
            "<model fallback=\"forbid\">qemu64</model>",
            "<model fallback='forbid'>Skylake-Client-IBRS</model><feature name='ss'/>")
        self.assertEqual(parse_domain(xml).spec.cpu, "Skylake-Client-IBRS")
        xml = domain_xml(spec(cpu="qemu64")).replace(">qemu64<", ">bad model<")
        self.assertIsNone(parse_domain(xml).spec.cpu)

    def test_bad_nics(self):
        for mac, bridge in [("52:54:00:00:00:0G", "br0"), ("52:54:00:00:00:01", "br0;x"),
                            ("52:54:00:00:00:01", "a-bridge-name-too-long")]:
            self.assertRaises(InvalidInput, NicSpec, mac, bridge)
        for mtu in (67, 65536, "1450", 1450.0, True):
            self.assertRaises(InvalidInput, NicSpec, "52:54:00:00:00:01", "br0", mtu)
        nic = NicSpec("52:54:00:00:00:01", "br0")
        e = self.assertRaises(InvalidInput, spec, nics=(nic, nic))
        self.assertIn("share a MAC", str(e))

    def test_metadata(self):
        """Comet's ownership is one element in its own namespace, prefix C{comet}."""
        text = domain_xml(spec(metadata=CometMetadata("lab", "web-1", "42")))
        self.assertIn(f'xmlns:comet="{METADATA_NAMESPACE}"', text)
        self.assertIn("<comet:vm ", text)
        element = ET.fromstring(text).find(f"metadata/{{{METADATA_NAMESPACE}}}vm")
        self.assertEqual(element.attrib, {"cluster": "lab", "vm": "web-1", "op": "42"})
        self.assertIsNone(ET.fromstring(domain_xml(spec())).find("metadata"))

    def test_iscsi_disk(self):
        """
        An iSCSI disk is a raw, uncached network disk with the LUN in the
        source name, the portal, and CHAP through a secret's usage name.
        """
        disk = ET.fromstring(disk_xml(ISCSI))
        self.assertEqual(disk.attrib, {"type": "network", "device": "disk"})
        self.assertEqual(disk.find("driver").attrib, {"name": "qemu", "type": "raw", "cache": "none"})
        source = disk.find("source")
        self.assertEqual(
            source.attrib,
            {"protocol": "iscsi", "name": "iqn.2026-11.org.comet:vmpool.web-1/1"},
        )
        self.assertEqual(source.find("host").attrib, {"name": "10.200.0.20", "port": "3260"})
        self.assertEqual(disk.find("auth").get("username"), "comet")
        self.assertEqual(disk.find("auth/secret").attrib, {"type": "iscsi", "usage": "vmpool.web-1"})
        self.assertEqual(disk.find("target").attrib, {"dev": "vda", "bus": "virtio"})
        seed = ET.fromstring(disk_xml(DiskSpec.block("hdc", "/dev/zd32", cdrom=True)))
        self.assertEqual((seed.get("device"), seed.find("target").attrib),
                         ("cdrom", {"dev": "hdc", "bus": "ide"}))
        self.assertIsNotNone(seed.find("readonly"))
        self.assertIsNone(ET.fromstring(disk_xml(DiskSpec.iscsi("vdb", "iqn.x:y", "h"))).find("auth"))

    def test_cdrom_disk(self):
        """A CD-ROM (a first-boot seed) is a read-only iSCSI disk on the IDE bus."""
        disk = ET.fromstring(disk_xml(DiskSpec.iscsi("hdc", "iqn.x:y", "h", cdrom=True)))
        self.assertEqual(disk.attrib, {"type": "network", "device": "cdrom"})
        self.assertEqual(disk.find("target").attrib, {"dev": "hdc", "bus": "ide"})
        self.assertIsNotNone(disk.find("readonly"))
        self.assertIsNone(ET.fromstring(disk_xml(ISCSI)).find("readonly"))
        with self.assertRaises(InvalidInput):
            DiskSpec(target="hdc", type="network", iqn="iqn.x:y", portal="h", device="floppy")

    def test_hot_plug_devices(self):
        """
        A NIC's hot-plug XML is the C{<interface>} its domain XML has;
        L{device_xml} gives a disk's or a NIC's and keeps device XML as it is.
        """
        nic = NicSpec("52:54:00:00:00:01", "cometb7")
        element = ET.fromstring(nic_xml(nic))
        in_domain = ET.fromstring(domain_xml(spec(nics=(nic,)))).find("devices/interface")
        self.assertEqual([(e.tag, e.attrib) for e in element.iter()],
                         [(e.tag, e.attrib) for e in in_domain.iter()])
        self.assertEqual((element.get("type"), element.find("mac").get("address"),
                          element.find("source").get("bridge"),
                          element.find("model").get("type")),
                         ("bridge", "52:54:00:00:00:01", "cometb7", "virtio"))
        self.assertEqual(device_xml(nic), nic_xml(nic))
        self.assertEqual(device_xml(ISCSI), disk_xml(ISCSI))
        self.assertEqual(device_xml("<interface/>"), "<interface/>")

    def test_file_disk(self):
        disk = ET.fromstring(disk_xml(DiskSpec.file("vdb", "/var/lib/comet/a.qcow2", "qcow2")))
        self.assertEqual(disk.get("type"), "file")
        self.assertEqual(disk.find("driver").attrib, {"name": "qemu", "type": "qcow2"})
        self.assertEqual(disk.find("source").get("file"), "/var/lib/comet/a.qcow2")

    def test_block_disk(self):
        """A host's block device (a local copy's zvol): raw, uncached, native I/O."""
        disk = ET.fromstring(disk_xml(DiskSpec.block("vda", "/dev/zd16")))
        self.assertEqual(disk.get("type"), "block")
        self.assertEqual(disk.find("driver").attrib,
                         {"name": "qemu", "type": "raw", "cache": "none", "io": "native"})
        self.assertEqual(disk.find("source").attrib, {"dev": "/dev/zd16"})
        self.assertEqual(disk.find("target").attrib, {"dev": "vda", "bus": "virtio"})
        seed = ET.fromstring(disk_xml(DiskSpec.block("hdc", "/dev/zd32", cdrom=True)))
        self.assertEqual((seed.get("device"), seed.find("target").attrib),
                         ("cdrom", {"dev": "hdc", "bus": "ide"}))
        self.assertIsNotNone(seed.find("readonly"))

    def test_escaping(self):
        """Markup in values stays text: it never changes the document's structure."""
        nasty = "a</cmdline><kernel>/evil</kernel>&\"'"
        root = ET.fromstring(
            domain_xml(spec(kernel="/k", cmdline=nasty, metadata=CometMetadata('"><x', "v")))
        )
        self.assertEqual(root.findtext("os/cmdline"), nasty)
        self.assertEqual(len(root.findall("os/kernel")), 1)
        self.assertEqual(parse_domain(ET.tostring(root, encoding="unicode")).spec.metadata.cluster, '"><x')

    def test_secret(self):
        """A CHAP secret is private, persistent, of iSCSI usage, and holds no value."""
        root = ET.fromstring(secret_xml(UUID.upper(), "vmpool.web-1", "CHAP for web-1"))
        self.assertEqual(root.attrib, {"ephemeral": "no", "private": "yes"})
        self.assertEqual(root.findtext("uuid"), UUID)
        self.assertEqual(root.find("usage").get("type"), "iscsi")
        self.assertEqual(root.findtext("usage/target"), "vmpool.web-1")
        self.assertEqual(root.findtext("description"), "CHAP for web-1")

    def test_metadata_xml(self):
        """The element given to C{virDomainSetMetadata} parses back."""
        metadata = CometMetadata("lab", "web-1", "7")
        self.assertEqual(parse_metadata(metadata_xml(metadata)), metadata)
        self.assertRaises(InvalidInput, parse_metadata, "<vm")


class ValidationTests(TestCase):
    def test_refused(self):
        """Specs no host could run are refused with InvalidInput."""
        for kwargs in [
            dict(name=""),
            dict(name="a/b"),
            dict(name="-a"),
            dict(uuid="nope"),
            dict(memory_mb=0),
            dict(cpus=0),
            dict(domain_type="xen"),
            dict(vnc_password="123456789"),
            dict(vnc_password=""),
            dict(vnc_password="has space"),
            dict(initrd="/i"),
            dict(graphics=False, vnc_password="pw"),
            dict(disks=(DiskSpec.file("vda", "/a"), DiskSpec.file("vda", "/b"))),
        ]:
            self.assertRaises(InvalidInput, spec, **kwargs)

    def test_disks_refused(self):
        for make in [
            lambda: DiskSpec.file("xvda", "/a"),
            lambda: DiskSpec.file("vda", "relative.img"),
            lambda: DiskSpec.file("vda", "/a", "vmdk"),
            lambda: DiskSpec.iscsi("vda", "not-an-iqn", "h"),
            lambda: DiskSpec.iscsi("vda", "iqn.x:y", ""),
            lambda: DiskSpec.iscsi("vda", "iqn.x:y", "h", port=0),
            lambda: DiskSpec.iscsi("vda", "iqn.x:y", "h", username="u"),
            lambda: DiskSpec(target="vda", type="tape"),
            lambda: DiskSpec.block("vda", "/tank/v1"),
            lambda: DiskSpec.block("vda", "/dev/../etc/passwd"),
            lambda: DiskSpec.block("vda", ""),
        ]:
            self.assertRaises(InvalidInput, make)

    def test_vnc_password(self):
        check_vnc_password("12345678")
        self.assertRaises(InvalidInput, check_vnc_password, None)
        self.assertRaises(InvalidInput, check_vnc_password, "123456789")

    def test_uuid_canonical(self):
        """UUIDs are kept in libvirt's canonical form (lower case, dashes)."""
        self.assertEqual(spec(uuid=UUID.upper().replace("-", "")).uuid, UUID)
