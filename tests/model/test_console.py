"""Console tickets: issued for a running VM with a fresh VNC password, used once, expiring."""

import libvirt
from twisted.internet.defer import ensureDeferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet.config import HostConfig
from comet.errors import Conflict, Unavailable
from comet.model.console import (
    PASSWORD_LENGTH,
    TICKET_TTL,
    ConsoleModel,
    TicketRefused,
    is_local,
    random_password,
)
from comet.model.vms import VM
from comet.store import VMRecord
from comet.virt import GraphicsAddress, HypervisorError


def record(name="web", uuid="u-1", host="node1", **kw):
    fields = dict(
        id=1, cluster="lab", name=name, uuid=uuid, template="small", memory=256, cpus=1,
        host=host, created=0,
    )
    fields.update(kw)
    return VMRecord(**fields)


class FakeVMs:
    def __init__(self):
        self.vms = {}

    def add(self, phase, **kw):
        vm = VM(record(**kw), phase)
        self.vms[vm.name] = vm
        return vm

    async def get(self, cluster, name):
        return self.vms[name]


class FakeDisplays:
    def __init__(self):
        self.passwords = []
        self.valid_to = []

    def set_vnc_password(self, host, name, password, valid_to=None):
        self.passwords.append((host, name, password))
        self.valid_to.append(valid_to)
        return succeed(None)

    def graphics_address(self, host, name):
        return succeed(GraphicsAddress("0.0.0.0", 5907))


HOSTS = (
    HostConfig(name="node1", uri="qemu:///system"),
    HostConfig(name="far", uri="qemu+ssh://root@far/system"),
)


class ConsoleModelTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.vms = FakeVMs()
        self.hv = FakeDisplays()
        self.console = ConsoleModel(self.vms, self.hv, HOSTS, self.clock)
        self.web = self.vms.add("running")

    async def test_issue(self):
        """A ticket is bound to the VM, expires in 60 s, and its password is set live."""
        ticket = await self.console.issue("lab", "web")
        self.assertEqual((ticket.cluster, ticket.name, ticket.uuid), ("lab", "web", "u-1"))
        self.assertEqual(ticket.expires, 1000 + TICKET_TTL)
        self.assertGreaterEqual(len(ticket.token), 40)
        self.assertEqual(len(ticket.password), PASSWORD_LENGTH)
        self.assertEqual(self.hv.passwords, [("node1", self.web.record.domain_name, ticket.password)])

    async def test_password_expires_with_the_ticket(self):
        """
        The VNC password lets no one in long after its ticket expired
        (passwdValidTo: the ticket's expiry and a short grace), so a password
        read from an old URI is of no use.
        """
        from comet.model.console import PASSWORD_GRACE

        ticket = await self.console.issue("lab", "web")
        self.assertEqual(self.hv.valid_to, [ticket.expires + PASSWORD_GRACE])
        self.assertLessEqual(PASSWORD_GRACE, TICKET_TTL)

    async def test_tokens_and_passwords_random(self):
        a = await self.console.issue("lab", "web")
        b = await self.console.issue("lab", "web")
        self.assertNotEqual(a.token, b.token)
        self.assertNotEqual(a.password, b.password)

    async def test_driver_cannot_set_password(self):
        """
        A driver that lacks the call (VIR_ERR_NO_SUPPORT) gives the VM no VNC
        console: a Conflict naming the host; any other refusal stays a
        HypervisorError (502).
        """
        def refuse(code):
            def set_vnc_password(host, name, password, valid_to=None):
                return fail(HypervisorError("setting the VNC password: nope", code))
            return set_vnc_password

        self.hv.set_vnc_password = refuse(libvirt.VIR_ERR_NO_SUPPORT)
        e = await self.assertFailure(ensureDeferred(self.console.issue("lab", "web")), Conflict)
        self.assertEqual(
            e.reason, "VM 'web' has no VNC console on host 'node1': setting the VNC password: nope"
        )
        self.hv.set_vnc_password = refuse(libvirt.VIR_ERR_OPERATION_FAILED)
        await self.assertFailure(ensureDeferred(self.console.issue("lab", "web")), HypervisorError)

    async def test_paused(self):
        self.vms.add("paused", name="p", uuid="u-2")
        await self.console.issue("lab", "p")

    async def test_not_running(self):
        """
        A VM that is not running or paused has no console: Conflict (503 when
        its host does not answer), no password set.
        """
        for phase in ("stopped", "shutoff", "unknown", "other"):
            self.vms.add(phase, name="off", uuid="u-3", host=None if phase == "stopped" else "node1")
            with self.assertRaises(Unavailable if phase == "unknown" else Conflict):
                await self.console.issue("lab", "off")
        self.assertEqual(self.hv.passwords, [])

    async def test_remote_host(self):
        """A VM on a remote host: a ticket with the host's URI (the relay goes through ssh)."""
        r = self.vms.add("running", name="r", uuid="u-4", host="far")
        ticket = await self.console.issue("lab", "r")
        self.assertEqual(ticket.uri, "qemu+ssh://root@far/system")
        self.assertEqual(self.hv.passwords, [("far", r.record.domain_name, ticket.password)])

    async def test_single_use(self):
        ticket = await self.console.issue("lab", "web")
        self.assertEqual(self.console.consume(ticket.token), ticket)
        self.assertRaises(TicketRefused, self.console.consume, ticket.token)

    def test_unknown(self):
        self.assertRaises(TicketRefused, self.console.consume, "nope")

    async def test_expiry(self):
        """Good until 60 s after issue, refused from then on (and refused again after)."""
        a = await self.console.issue("lab", "web")
        b = await self.console.issue("lab", "web")
        self.clock.advance(TICKET_TTL - 0.001)
        self.console.consume(a.token)
        self.clock.advance(0.001)
        with self.assertRaises(TicketRefused) as e:
            self.console.consume(b.token)
        self.assertIn("expired", e.exception.reason)
        self.assertRaises(TicketRefused, self.console.consume, b.token)

    async def test_pruned(self):
        """Expired tickets are forgotten when the next one is issued."""
        await self.console.issue("lab", "web")
        self.clock.advance(TICKET_TTL)
        await self.console.issue("lab", "web")
        self.assertEqual(len(self.console._tickets), 1)

    async def test_other_vm(self):
        """A ticket checked against another VM is refused, and used up."""
        self.vms.add("running", name="db", uuid="u-9")
        ticket = await self.console.issue("lab", "db")
        with self.assertRaises(TicketRefused):
            self.console.consume(ticket.token, uuid="u-1")
        self.assertRaises(TicketRefused, self.console.consume, ticket.token, uuid="u-9")

    async def test_address(self):
        """A display listening on every address is reached on loopback."""
        ticket = await self.console.issue("lab", "web")
        self.assertEqual(await self.console.address(ticket), ("127.0.0.1", 5907))

    def test_random_password(self):
        pw = random_password()
        self.assertEqual(len(pw), 8)
        self.assertTrue(pw.isalnum() and pw.isascii())

    def test_is_local(self):
        self.assertTrue(is_local("qemu:///system"))
        self.assertTrue(is_local("test:///default"))
        self.assertFalse(is_local("qemu+ssh://root@h1/system"))
        self.assertFalse(is_local("qemu+tcp://h1/system"))


class SerialTicketTests(TestCase):
    """Serial tickets: no VNC password; a VM on a remote host has one too."""

    setUp = ConsoleModelTests.setUp

    async def test_serial(self):
        self.vms.add("running", name="r", uuid="u-4", host="far")
        for name, uri in (("web", "qemu:///system"), ("r", "qemu+ssh://root@far/system")):
            ticket = await self.console.issue("lab", name, "serial")
            self.assertEqual((ticket.kind, ticket.password, ticket.uri), ("serial", None, uri))
        self.assertEqual(self.hv.passwords, [])

    async def test_unknown_kind(self):
        from comet.errors import InvalidInput

        with self.assertRaises(InvalidInput):
            await self.console.issue("lab", "web", "spice")
