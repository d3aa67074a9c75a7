"""
Tests for L{comet.virt._operations}: the blocking libvirt calls behind each
operation, run directly on test-driver nodes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
from twisted.trial.unittest import TestCase

from comet.errors import Conflict, InvalidInput, NotFound
from comet.virt import _display as display
from comet.virt import _operations as ops
from comet.virt._eventloop import ensure_event_loop
from comet.virt._values import DomainInfo, NodeInfo
from comet.virt.domainxml import CometMetadata, DiskSpec, DomainSpec, domain_xml
from tests.virt._nodes import domain_spec, make_node_xml, node_path
from tests.virt._recording import Recorder, libvirt_error

HOST = "node-1"


class _NodeCase(TestCase):
    """A test-driver node per test, behind a recording connection."""

    def open_node(self, **kwargs):
        ensure_event_loop()
        self.recorder = Recorder()
        self.conn = self.recorder.open(make_node_xml(node_path(self), **kwargs))
        self.addCleanup(self.conn.close)
        self.recorder.reset()
        return self.conn


class NodeInfoTests(_NodeCase):
    def test_capacity_and_counts(self):
        """
        Node info gives CPUs, memory and free memory in MiB, and how many
        domains the node has and runs, in four calls.
        """
        conn = self.open_node(
            cpus=8,
            memory_mb=16384,
            domains=[
                domain_spec("a"),
                domain_spec("b"),
                (domain_spec("c"), "shutoff"),
            ],
        )
        info = ops.node_info(conn, HOST)
        self.assertEqual(
            info,
            NodeInfo(cpus=8, memory_mb=16384, memory_free_mb=0, domains=3, running=2),
        )
        self.assertEqual(self.recorder.round_trips(), 4)


class ListDomainsTests(_NodeCase):
    def test_fields(self):
        """
        Each domain is listed by name with its state, memory in MiB, vCPUs
        and UUID.
        """
        a = domain_spec("a", memory_mb=512, cpus=2)
        b = domain_spec("b")
        c = domain_spec("c", memory_mb=1024)
        conn = self.open_node(domains=[a, (b, "paused"), (c, "shutoff")])
        self.assertEqual(
            ops.list_domains(conn, HOST),
            {
                "a": DomainInfo("a", "running", 512, 2, a.uuid),
                "b": DomainInfo("b", "paused", 256, 1, b.uuid),
                "c": DomainInfo("c", "shutoff", 1024, 1, c.uuid),
            },
        )

    def test_empty(self):
        """A node without domains lists none."""
        self.assertEqual(ops.list_domains(self.open_node(), HOST), {})

    def test_bulk_with_full_stats(self):
        """
        Where the driver reports memory and vCPUs in the bulk stats (QEMU
        does, running or not), listing 200 domains is one round trip.
        """
        conn = self.open_node(
            domains=[domain_spec(f"vm-{i}", memory_mb=128 + i) for i in range(200)]
        )

        def qemu_like(target, groups, flags):
            result = []
            for dom, stats in target.getAllDomainStats(groups, flags):
                _, memory, _, cpus, _ = dom.info()
                stats = dict(stats, **{"balloon.maximum": memory, "vcpu.current": cpus})
                result.append((dom, stats))
            return result

        self.recorder.fake("getAllDomainStats", qemu_like)
        listed = ops.list_domains(conn, HOST)
        self.assertEqual(len(listed), 200)
        self.assertEqual(listed["vm-7"].memory_mb, 135)
        self.assertEqual(self.recorder.round_trips(), 1)

    def test_bulk_on_the_test_driver(self):
        """
        The test driver reports only states in bulk: listing 200 domains
        costs the bulk call and one C{virDomainGetInfo} per domain, and no
        other call (no XML, no per-field calls).
        """
        conn = self.open_node(domains=[domain_spec(f"vm-{i}") for i in range(200)])
        self.assertEqual(len(ops.list_domains(conn, HOST)), 200)
        methods = [m for m in self.recorder.methods() if m not in ("name", "UUIDString")]
        self.assertEqual(methods.count("getAllDomainStats"), 1)
        self.assertEqual(methods.count("info"), 200)
        self.assertEqual(len(methods), 201)

    def test_vanished_domain(self):
        """A domain undefined between the bulk call and its info is left out."""
        conn = self.open_node(domains=[domain_spec("a"), domain_spec("b")])
        self.recorder.fail_next(
            "info", libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_TEST)
        )
        self.assertEqual(len(ops.list_domains(conn, HOST)), 1)


class DomainStatesTests(_NodeCase):
    def test_states(self):
        """Each domain by name with its state."""
        conn = self.open_node(
            domains=[domain_spec("a"), (domain_spec("b"), "paused"), (domain_spec("c"), "shutoff")]
        )
        self.assertEqual(
            ops.domain_states(conn, HOST), {"a": "running", "b": "paused", "c": "shutoff"}
        )

    def test_one_round_trip(self):
        """200 domains: the bulk call, then only their names (no info, no XML)."""
        conn = self.open_node(domains=[domain_spec(f"vm-{i}") for i in range(200)])
        self.assertEqual(len(ops.domain_states(conn, HOST)), 200)
        methods = [m for m in self.recorder.methods() if m != "name"]
        self.assertEqual(methods, ["getAllDomainStats"])


class DomainsWithMetadataTests(_NodeCase):
    def test_only_comets(self):
        """Only domains with Comet's metadata are listed, with that metadata."""
        mine = domain_spec("lab.web-1", metadata=CometMetadata("lab", "web-1", "op-7"))
        conn = self.open_node(
            domains=[mine, domain_spec("not-mine"), (domain_spec("other"), "shutoff")]
        )
        owned = ops.domains_with_metadata(conn, HOST)
        self.assertEqual(list(owned), ["lab.web-1"])
        self.assertEqual(owned["lab.web-1"].metadata, CometMetadata("lab", "web-1", "op-7"))
        self.assertEqual(owned["lab.web-1"].state, "running")
        self.assertEqual(owned["lab.web-1"].uuid, mine.uuid)

    def test_set_metadata(self):
        """Metadata set (or removed) on a domain is what the listing reads."""
        conn = self.open_node(domains=[domain_spec("a"), (domain_spec("b"), "shutoff")])
        ops.set_metadata(conn, HOST, "a", CometMetadata("c", "a", "1"))
        ops.set_metadata(conn, HOST, "b", CometMetadata("c", "b", "2"))
        owned = ops.domains_with_metadata(conn, HOST)
        self.assertEqual(owned["a"].metadata, CometMetadata("c", "a", "1"))
        self.assertEqual(owned["b"].metadata, CometMetadata("c", "b", "2"))
        ops.set_metadata(conn, HOST, "a", None)
        self.assertEqual(list(ops.domains_with_metadata(conn, HOST)), ["b"])


class LifecycleTests(_NodeCase):
    def setUp(self):
        self.conn = self.open_node(domains=[(domain_spec("vm"), "shutoff")])

    def state(self):
        return ops.domain_state(self.conn, HOST, "vm")

    def test_transitions(self):
        """
        A domain goes shutoff → running → paused → running (reset keeps it
        running) → shutoff by ACPI shutdown, and again by poweroff.
        """
        self.assertEqual(self.state(), "shutoff")
        ops.start(self.conn, HOST, "vm")
        self.assertEqual(self.state(), "running")
        ops.suspend(self.conn, HOST, "vm")
        self.assertEqual(self.state(), "paused")
        ops.resume(self.conn, HOST, "vm")
        self.assertEqual(self.state(), "running")
        ops.reset(self.conn, HOST, "vm")
        self.assertEqual(self.state(), "running")
        ops.shutdown(self.conn, HOST, "vm")
        self.assertEqual(self.state(), "shutoff")
        ops.start(self.conn, HOST, "vm")
        ops.destroy(self.conn, HOST, "vm")
        self.assertEqual(self.state(), "shutoff")

    def test_refused_in_state(self):
        """
        Each action is refused with Conflict in a state that does not allow it,
        and the reason names the domain, the host and the state.
        """
        for action in (ops.shutdown, ops.destroy, ops.reset, ops.suspend, ops.resume):
            e = self.assertRaises(Conflict, action, self.conn, HOST, "vm")
            self.assertIn("'vm' on compute host 'node-1' is shutoff", e.reason)
        ops.start(self.conn, HOST, "vm")
        for action in (ops.start, ops.resume, ops.undefine):
            e = self.assertRaises(Conflict, action, self.conn, HOST, "vm")
            self.assertIn("is running", e.reason)
        ops.suspend(self.conn, HOST, "vm")
        for action in (ops.start, ops.suspend, ops.shutdown):
            e = self.assertRaises(Conflict, action, self.conn, HOST, "vm")
            self.assertIn("is paused", e.reason)
        ops.reset(self.conn, HOST, "vm")
        ops.destroy(self.conn, HOST, "vm")
        self.assertEqual(self.state(), "shutoff")

    def test_missing_domain(self):
        """Every operation on a domain the node does not have raises NotFound."""
        for action in (
            ops.domain_state,
            ops.start,
            ops.shutdown,
            ops.destroy,
            ops.reset,
            ops.suspend,
            ops.resume,
            ops.undefine,
            display.screenshot,
            display.graphics_address,
            ops.describe,
        ):
            e = self.assertRaises(NotFound, action, self.conn, HOST, "nope")
            self.assertEqual(e.reason, "domain 'nope' is not defined on compute host 'node-1'")


class DefineTests(_NodeCase):
    def test_define(self):
        """A spec's XML defines a shut-off domain; its UUID comes back."""
        conn = self.open_node()
        spec = domain_spec("vm", memory_mb=300, cpus=3)
        self.assertEqual(ops.define(conn, HOST, domain_xml(spec)), spec.uuid)
        self.assertEqual(
            ops.list_domains(conn, HOST)["vm"], DomainInfo("vm", "shutoff", 300, 3, spec.uuid)
        )

    def test_redefine(self):
        """The same name and UUID again replaces the definition."""
        conn = self.open_node()
        spec = domain_spec("vm")
        ops.define(conn, HOST, domain_xml(spec))
        ops.define(conn, HOST, domain_xml(domain_spec("vm", memory_mb=1024)))
        self.assertEqual(ops.list_domains(conn, HOST)["vm"].memory_mb, 1024)

    def test_name_taken(self):
        """A name another domain (another UUID) has is refused with Conflict."""
        conn = self.open_node(domains=[domain_spec("vm")])
        other = DomainSpec(
            name="vm", uuid="11111111-2222-3333-4444-555555555555", domain_type="test"
        )
        e = self.assertRaises(Conflict, ops.define, conn, HOST, domain_xml(other))
        self.assertIn("already has a domain named 'vm'", e.reason)

    def test_uuid_taken(self):
        """A UUID another domain has is refused with Conflict."""
        spec = domain_spec("vm")
        conn = self.open_node(domains=[spec])
        renamed = DomainSpec(name="other", uuid=spec.uuid, domain_type="test")
        e = self.assertRaises(Conflict, ops.define, conn, HOST, domain_xml(renamed))
        self.assertIn(f"already has UUID {spec.uuid} as domain 'vm'", e.reason)

    def test_not_xml(self):
        """Something that is no domain XML is refused with InvalidInput."""
        conn = self.open_node()
        self.assertRaises(InvalidInput, ops.define, conn, HOST, "<domain")
        self.assertRaises(InvalidInput, ops.define, conn, HOST, "<network/>")


class UndefineTests(_NodeCase):
    def test_undefine(self):
        """A shut-off domain's definition is removed."""
        conn = self.open_node(domains=[(domain_spec("vm"), "shutoff")])
        ops.undefine(conn, HOST, "vm")
        self.assertEqual(ops.list_domains(conn, HOST), {})

    def test_flags(self):
        """
        Undefining asks to remove managed save, snapshot and checkpoint
        metadata and NVRAM, and falls back to fewer flags where the driver
        refuses some (the test driver knows only the first two).
        """
        conn = self.open_node(domains=[(domain_spec("vm"), "shutoff")])
        seen = []

        def undefine(target, flags):
            seen.append(flags)
            return target.undefineFlags(flags)

        self.recorder.fake("undefineFlags", undefine)
        ops.undefine(conn, HOST, "vm")
        self.assertEqual(
            seen,
            [
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM,
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
            ],
        )


class DeviceTests(_NodeCase):
    """
    The test driver cannot hot-plug: these tests check what reaches libvirt;
    the contract suite (tests/contract/virt_suite.py, run on QEMU by
    tests/integration/test_virt.py) checks QEMU's answer.
    """

    def setUp(self):
        self.conn = self.open_node(domains=[domain_spec("on"), (domain_spec("off"), "shutoff")])
        self.seen = []
        for method in ("attachDeviceFlags", "detachDeviceFlags"):
            self.recorder.fake(
                method,
                lambda target, xml, flags, method=method: self.seen.append((method, xml, flags)),
            )

    def test_flags(self):
        """
        By default a device goes to the running domain and its definition, and
        only to the definition of a shut-off one; both can be chosen.
        """
        live, config = libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG
        ops.attach_device(self.conn, HOST, "on", "<disk/>", None, True)
        ops.attach_device(self.conn, HOST, "off", "<disk/>", None, True)
        ops.detach_device(self.conn, HOST, "on", "<disk/>", True, False)
        ops.detach_device(self.conn, HOST, "on", "<disk/>", False, True)
        self.assertEqual(
            [(m, flags) for m, _, flags in self.seen],
            [
                ("attachDeviceFlags", live | config),
                ("attachDeviceFlags", config),
                ("detachDeviceFlags", live),
                ("detachDeviceFlags", config),
            ],
        )

    def test_detach_missing_device(self):
        """
        Detaching a device the domain does not have is L{NotFound} (a repair
        undoing an attach killed before its device was attached relies on it);
        other errors pass as they are.
        """
        def missing(target, xml, flags):
            raise libvirt_error(libvirt.VIR_ERR_DEVICE_MISSING, libvirt.VIR_FROM_DOMAIN,
                                "device not found: no target device vdb")

        self.recorder.fake("detachDeviceFlags", missing)
        e = self.assertRaises(NotFound, ops.detach_device, self.conn, HOST, "on", "<disk/>",
                              None, True)
        self.assertIn("no target device vdb", e.reason)

        def other(target, xml, flags):
            raise libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU)

        self.recorder.fake("detachDeviceFlags", other)
        self.assertRaises(libvirt.libvirtError, ops.detach_device, self.conn, HOST, "on",
                          "<disk/>", None, True)

    def test_nowhere(self):
        """A change that affects neither the live domain nor its config is refused."""
        self.assertRaises(
            InvalidInput, ops.attach_device, self.conn, HOST, "on", "<disk/>", False, False
        )

    def test_unsupported(self):
        """Without a fake, the test driver's refusal is libvirt's error."""
        conn = self.open_node(domains=[domain_spec("on")])
        e = self.assertRaises(
            libvirt.libvirtError, ops.attach_device, conn, HOST, "on", "<disk/>", None, True
        )
        self.assertEqual(e.get_error_code(), libvirt.VIR_ERR_NO_SUPPORT)


class _FakeSecret:
    def __init__(self, store, uuid):
        self.store, self.uuid = store, uuid

    def setValue(self, value, flags):
        self.store[self.uuid] = value

    def undefine(self):
        del self.store[self.uuid]

    def UUIDString(self):
        return self.uuid


class SecretTests(_NodeCase):
    """The test driver has no secrets; a fake keeps them, and the XML is checked."""

    UUID = "8a2f3e4c-5d6b-4a7e-9f10-111213141516"

    def setUp(self):
        self.conn = self.open_node()
        self.store = {}
        self.xml = []

        def define(target, xml, flags):
            self.xml.append(xml)
            return _FakeSecret(self.store, ET.fromstring(xml).findtext("uuid"))

        def lookup(target, uuid):
            if uuid not in self.store:
                raise libvirt_error(libvirt.VIR_ERR_NO_SECRET, libvirt.VIR_FROM_SECRET)
            return _FakeSecret(self.store, uuid)

        self.recorder.fake("secretDefineXML", define)
        self.recorder.fake("secretLookupByUUIDString", lookup)

    def test_define_and_undefine(self):
        """
        A CHAP secret is defined private and persistent, with an iSCSI usage,
        and its value set apart; undefining removes it.
        """
        uuid = ops.define_secret(self.conn, HOST, self.UUID, "vmpool.web-1", b"chap-pw")
        self.assertEqual(uuid, self.UUID)
        self.assertEqual(self.store, {self.UUID: b"chap-pw"})
        secret = ET.fromstring(self.xml[0])
        self.assertEqual((secret.get("ephemeral"), secret.get("private")), ("no", "yes"))
        self.assertEqual(secret.find("usage").get("type"), "iscsi")
        self.assertEqual(secret.findtext("usage/target"), "vmpool.web-1")
        self.assertNotIn("chap-pw", self.xml[0])
        ops.undefine_secret(self.conn, HOST, self.UUID)
        self.assertEqual(self.store, {})

    def test_undefine_missing(self):
        """Undefining a secret the host does not have: NotFound."""
        self.assertRaises(NotFound, ops.undefine_secret, self.conn, HOST, self.UUID)

    def test_value_refused(self):
        """When the value cannot be set, the secret is removed again."""
        undefined = []

        class Refusing(_FakeSecret):
            def setValue(self, value, flags):
                raise libvirt_error(libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_FROM_SECRET)

            def undefine(self):
                undefined.append(self.uuid)

        self.recorder.fake("secretDefineXML", lambda target, xml, flags: Refusing({}, self.UUID))
        self.assertRaises(
            libvirt.libvirtError, ops.define_secret, self.conn, HOST, self.UUID, "u", b"x"
        )
        self.assertEqual(undefined, [self.UUID])


class DescribeTests(_NodeCase):
    def test_describe(self):
        """A domain's live XML is read back into the spec Comet defined."""
        spec = domain_spec(
            "vm",
            metadata=CometMetadata("lab", "vm", "9"),
            disks=(DiskSpec.file("vda", "/images/vm.raw"),),
            vnc_password="pw",
        )
        conn = self.open_node(domains=[spec])
        description = ops.describe(conn, HOST, "vm", secure=True)
        self.assertEqual(description.spec, spec)
        self.assertTrue(description.active)
        self.assertIsNone(ops.describe(conn, HOST, "vm").spec.vnc_password)
