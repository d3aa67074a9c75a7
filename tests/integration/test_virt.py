"""
The compute-host contract suite (C{tests/contract/virt_suite.py}) run against
the testbed's real libvirtd and QEMU (C{qemu:///system}, domain type C{qemu}:
TCG), with a guest image that boots by itself and powers off on an ACPI
power-button press.

The spare host is the same libvirtd reached through a socket proxy of this
test's (C{qemu+unix:///system?socket=…}): taking it down closes the proxy and
every connection through it, as a host that went away does; bringing it back
listens again.

Each test defines its own C{comet-test-…} domains on a copy of the image and
removes them; nothing else on the host is touched.  Skipped, saying why, when
the testbed is not up.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ET

from twisted.internet import protocol, reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from comet.errors import Conflict, InvalidInput, NotFound
from comet.virt import (
    PAUSED,
    SHUTOFF,
    CometMetadata,
    DiskSpec,
    DomainSpec,
    HypervisorError,
    domain_xml,
)
from tests.contract.virt_suite import HOST, VirtContractMixin, until
from tests.integration._testbed import computeHosts, requireTestbed, waitForLog

#: libvirtd's read-write socket on the testbed host.
LIBVIRT_SOCKET = "/run/libvirt/libvirt-sock"


class _Half(protocol.Protocol):
    """One side of a proxied connection: what it receives goes to the other side."""

    def __init__(self, proxy: SocketProxy):
        self.proxy = proxy
        self.peer: _Half | None = None
        self.pending: list[bytes] = []

    def connectionMade(self):
        self.proxy.halves.add(self)

    def dataReceived(self, data):
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.transport.write(data)

    def joined(self, peer: _Half):
        self.peer = peer
        for data in self.pending:
            peer.transport.write(data)
        self.pending = []

    def connectionLost(self, reason):
        self.proxy.halves.discard(self)
        if self.peer is not None:
            self.peer.transport.loseConnection()


class _Client(_Half):
    """A connection to the proxy: joined to a new one to the real socket."""

    def connectionMade(self):
        super().connectionMade()
        d = connectProtocol(UNIXClientEndpoint(reactor, self.proxy.target), _Half(self.proxy))

        def join(server):
            server.joined(self)
            self.joined(server)

        d.addCallbacks(join, lambda _: self.transport.abortConnection())


class SocketProxy(protocol.Factory):
    """A unix-socket proxy to C{target} at C{path}, that can go away and come back."""

    def __init__(self, target: str, path: str):
        self.target = target
        self.path = path
        self.port = None
        self.halves: set[_Half] = set()

    def buildProtocol(self, addr):
        return _Client(self)

    def start(self):
        if self.port is None:
            if os.path.exists(self.path):
                os.unlink(self.path)
            self.port = reactor.listenUNIX(self.path, self)

    def stop(self):
        """Stop listening and cut every connection through the proxy."""
        for half in list(self.halves):
            half.transport.abortConnection()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


class QEMUContractTests(VirtContractMixin, TestCase):
    """The testbed's libvirtd and QEMU meet the contract."""

    shutdown_is_immediate = False
    live_device_changes = True
    secrets = True
    vnc_ports = True
    connection_loss_seen = True
    start_resumes = True
    poweroff_shuts_down = True
    migrates = True
    emulated_cpus = True
    call_timeout = 60.0
    timeout = 300

    @inlineCallbacks
    def setUp(self):
        self.stack = requireTestbed()
        self.directory = tempfile.mkdtemp(prefix="comet-test-virt-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.image = os.path.join(self.directory, "disk.img")
        yield threads.deferToThread(shutil.copyfile, self.stack["guest"]["image"], self.image)
        self.proxy = SocketProxy(LIBVIRT_SOCKET, os.path.join(self.directory, "libvirt.sock"))
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        super().setUp()
        [status] = yield self.hv.connect()
        self.assertEqual(status.state, "connected", status.reason)

    def host_uri(self) -> str:
        return self.stack["host_uri"]

    def guest(self, name: str) -> DomainSpec:
        return DomainSpec(
            name=name,
            uuid=_uuid_for(name),
            memory_mb=256,
            cpus=1,
            domain_type=self.stack["domain_type"],
            disks=(DiskSpec.file("vda", self.image, "raw"),),
            vnc_password="comet",
            metadata=CometMetadata("comet-test", name, "contract"),
        )

    def console_log(self, name: str) -> str:
        """Where the serial console of guest C{name} is written."""
        return os.path.join(self.directory, f"{name}.console.log")

    def definition(self, spec: DomainSpec) -> str:
        """C{spec}'s XML, its serial console also written to L{console_log}."""
        domain = ET.fromstring(domain_xml(spec))
        serial = domain.find("devices/serial")
        ET.SubElement(serial, "log", file=self.console_log(spec.name), append="off")
        return ET.tostring(domain, encoding="unicode")

    def extra_disk(self) -> DiskSpec:
        extra = os.path.join(self.directory, "extra.img")
        if not os.path.exists(extra):
            with open(extra, "wb") as f:
                f.truncate(16 * 1024 * 1024)
        return DiskSpec.file("vdb", extra, "raw")

    def spare_uri(self) -> str:
        return f"qemu+unix:///system?socket={self.proxy.path}"

    def take_down(self):
        return self.proxy.stop()

    def other_host_uri(self) -> str:
        """The testbed's second compute host (its own libvirtd, reached over ssh)."""
        return next(h["uri"] for h in computeHosts(self.stack)
                    if h["uri"] != self.stack["host_uri"])

    @inlineCallbacks
    def bring_up(self, spec: DomainSpec, state: str):
        # Behind the spare's back: through the test's own direct connection.
        yield self.hv.define(HOST, spec)
        if (yield self.hv.domain_state(HOST, spec.name)) == SHUTOFF:
            yield self.hv.start(HOST, spec.name)
        if state == PAUSED:
            yield self.hv.suspend(HOST, spec.name)
        self.assertEqual((yield self.hv.domain_state(HOST, spec.name)), state)
        self.proxy.start()

    @inlineCallbacks
    def power_off_by_guest(self, acting, name: str):
        # The guest ignores the power button until its acpid runs (a few
        # seconds after boot): press until off.
        @inlineCallbacks
        def press():
            try:
                yield acting.shutdown(HOST, name)
            except Conflict:
                pass  # off already
            yield deferLater(reactor, 2, lambda: None)
            return (yield acting.domain_state(HOST, name)) == SHUTOFF

        yield until(press, 120, every=0)

    @inlineCallbacks
    def detach_until_gone(self, hv, name: str, disk: DiskSpec):
        # Unplugging needs the guest's consent (ACPI PCI hotplug): a request
        # made before its kernel runs is lost.  Ask again until it is gone.
        @inlineCallbacks
        def unplugged():
            try:
                yield hv.detach_device(HOST, name, disk)
            except (HypervisorError, InvalidInput, NotFound):
                pass  # still in progress, or gone from the config already
            yield deferLater(reactor, 3, lambda: None)
            live = yield hv.describe(HOST, name)
            return [d.target for d in live.spec.disks] == ["vda"]

        # QEMU sends the guest one unplug request; libvirt refuses another
        # while it is pending, so wait until the guest has booted.
        yield waitForLog(self.console_log(name), re.escape(self.stack["guest"]["ready_marker"]))
        yield until(unplugged, 90, every=0)


def _uuid_for(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.comet.test"))
