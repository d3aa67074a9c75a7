"""
L{comet.virt.Hypervisors} against the testbed's real libvirtd and QEMU.

Needs the testbed (C{testbed/stack up}): C{testbed/state/stack.json} names the
host URI (C{qemu:///system}), the domain type (C{qemu}: TCG, the CPU has no
VT) and a guest image that boots by itself and powers off on an ACPI
power-button press.  Without them every test here is skipped, saying why.

Each test defines its own C{comet-test-…} domain on a copy of the image and
removes it, whatever happens; nothing else on the host is touched.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import uuid

from PIL import Image
from twisted.internet import reactor, threads
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from comet.config import ComputeConfig, HostConfig
from comet.errors import CometError, Conflict, InvalidInput, NotFound
from comet.virt import (
    CachedStates,
    CometMetadata,
    DiskSpec,
    DomainSpec,
    HypervisorError,
    Hypervisors,
)

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STACK = os.environ.get(
    "COMET_STACK", os.path.join(_ROOT, "testbed", "state", "stack.json")
)
HOST = "local"
#: Seconds the testbed guest takes to boot to its init (3.7 s measured on TCG).
BOOT_SECONDS = 8


def _stack() -> dict:
    """The testbed's description, or SkipTest saying what is missing."""
    if not os.path.exists(STACK):
        raise SkipTest(f"{STACK} is absent: the testbed is not up (testbed/stack up)")
    with open(STACK, encoding="utf-8") as f:
        stack = json.load(f)
    image = stack.get("guest", {}).get("image")
    if not image or not os.path.exists(image):
        raise SkipTest(f"the testbed's guest image {image!r} is absent")
    return stack


@inlineCallbacks
def _until(check, timeout: float, every: float = 0.2):
    """Call C{check()} (maybe a Deferred) until it is true, at most C{timeout} s."""
    end = time.monotonic() + timeout
    while True:
        result = yield check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"{check} still false after {timeout} s")
        yield deferLater(reactor, every, lambda: None)


class QEMUTests(TestCase):
    timeout = 300

    @inlineCallbacks
    def setUp(self):
        stack = _stack()
        self.hv = Hypervisors(
            reactor,
            (HostConfig(HOST, stack["host_uri"], stack["domain_type"]),),
            ComputeConfig(libvirt_threads=4, libvirt_timeout=60.0),
        )
        self.hv.startService()
        self.addCleanup(self.hv.stopService)
        [status] = yield self.hv.connect()
        if status.state != "connected":
            raise SkipTest(f"{stack['host_uri']} does not answer: {status.reason}")
        self.directory = tempfile.mkdtemp(prefix="comet-test-virt-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.image = os.path.join(self.directory, "disk.img")
        yield threads.deferToThread(shutil.copyfile, stack["guest"]["image"], self.image)
        self.name = f"comet-test-{uuid.uuid4().hex[:8]}"
        self.spec = DomainSpec(
            name=self.name,
            uuid=str(uuid.uuid4()),
            memory_mb=256,
            cpus=1,
            domain_type=stack["domain_type"],
            disks=(DiskSpec.file("vda", self.image, "raw"),),
            vnc_password="comet",
            metadata=CometMetadata("comet-test", self.name, "integration"),
        )
        self.events = []
        self.addCleanup(self.hv.subscribe(lambda *e: self.events.append(e)))
        self.addCleanup(self._remove)

    @inlineCallbacks
    def _remove(self):
        for step in (self.hv.destroy, self.hv.undefine):
            try:
                yield step(HOST, self.name)
            except (NotFound, Conflict):
                pass

    def state(self):
        return self.hv.domain_state(HOST, self.name)

    @inlineCallbacks
    def wait_state(self, state: str, timeout: float = 30):
        yield _until(lambda: self.state().addCallback(lambda s: s == state), timeout)

    def wait_event(self, event: str, timeout: float = 30):
        return _until(lambda: (HOST, self.name, event) in self.events, timeout)

    @inlineCallbacks
    def test_lifecycle(self):
        """
        A TCG guest on a file disk is defined, started, shows its screen as
        PNG, is suspended and resumed, reset, shut down by ACPI, started
        again, powered off and undefined; each step shows in its state and as
        a lifecycle event.
        """
        yield self.hv.define(HOST, self.spec)
        self.assertEqual((yield self.state()), "shutoff")
        listed = yield self.hv.list_domains(HOST)
        self.assertEqual(
            (listed[self.name].state, listed[self.name].memory_mb, listed[self.name].cpus),
            ("shutoff", 256, 1),
        )
        owned = yield self.hv.domains_with_metadata(HOST)
        self.assertEqual(owned[self.name].metadata, self.spec.metadata)
        yield self.wait_event("defined")

        yield self.hv.start(HOST, self.name)
        self.assertEqual((yield self.state()), "running")
        yield self.wait_event("started")

        png = yield self.hv.screenshot(HOST, self.name)
        with Image.open(io.BytesIO(png)) as image:
            self.assertEqual(image.format, "PNG")
            image.load()
            self.assertGreater(image.size[0] * image.size[1], 0)
        address = yield self.hv.graphics_address(HOST, self.name)
        self.assertEqual(address.listen, "127.0.0.1")
        self.assertGreaterEqual(address.port, 5900)
        yield self.hv.set_vnc_password(HOST, self.name, "rotated")
        secure = yield self.hv.describe(HOST, self.name, secure=True)
        self.assertEqual(secure.spec.vnc_password, "rotated")
        self.assertEqual(secure.vnc_port, address.port)

        yield self.hv.suspend(HOST, self.name)
        self.assertEqual((yield self.state()), "paused")
        yield self.wait_event("suspended")
        yield self.hv.resume(HOST, self.name)
        self.assertEqual((yield self.state()), "running")
        yield self.wait_event("resumed")

        yield self.hv.reset(HOST, self.name)
        self.assertEqual((yield self.state()), "running")

        # The guest ignores the power button until its acpid runs (a few
        # seconds after boot, and again after the reset): press until off.
        @inlineCallbacks
        def press():
            try:
                yield self.hv.shutdown(HOST, self.name)
            except Conflict:
                pass  # off already
            yield deferLater(reactor, 2, lambda: None)
            return (yield self.state()) == "shutoff"

        yield _until(press, 120, every=0)
        yield self.wait_event("stopped")

        yield self.hv.start(HOST, self.name)
        yield self.hv.destroy(HOST, self.name)
        self.assertEqual((yield self.state()), "shutoff")
        yield self.hv.undefine(HOST, self.name)
        yield self.assertFailure(self.state(), NotFound)
        yield self.wait_event("undefined")

    @inlineCallbacks
    def test_cached_states(self):
        """
        Through L{CachedStates} (as the VM lifecycle acts): each action
        answers with the state QEMU left the domain in (tried first on the
        L{Hypervisors} directly and undone there, behind the cache's back),
        and the cache shows it at once; after a shutdown (ACPI) the guest
        powering off by itself is followed from its events.
        """
        cache = CachedStates(self.hv)
        self.addCleanup(cache.close)

        def cached():
            return cache.domain_state(HOST, self.name)

        yield cache.define(HOST, self.spec)
        self.assertEqual((yield cached()), "shutoff")
        for action, state in [("start", "running"), ("suspend", "paused"),
                              ("resume", "running")]:
            self.assertEqual((yield getattr(self.hv, action)(HOST, self.name)), state, action)
            yield getattr(self.hv, {"start": "destroy", "suspend": "resume",
                                    "resume": "suspend"}[action])(HOST, self.name)
            yield getattr(cache, action)(HOST, self.name)
            self.assertEqual((yield cached()), state, action)

        @inlineCallbacks
        def press():
            try:
                yield cache.shutdown(HOST, self.name)
            except Conflict:
                pass  # off already
            yield deferLater(reactor, 2, lambda: None)
            return (yield cached()) == "shutoff"

        yield _until(press, 120, every=0)
        self.assertEqual((yield self.state()), "shutoff")
        yield cache.start(HOST, self.name)
        self.assertEqual((yield cached()), "running")
        yield cache.destroy(HOST, self.name)
        self.assertEqual((yield cached()), "shutoff")
        yield cache.undefine(HOST, self.name)
        yield self.assertFailure(cached(), NotFound)

    @inlineCallbacks
    def test_hotplug(self):
        """
        A disk attached to the running guest shows in its live XML and in its
        definition; detached, it is gone from both.
        """
        extra = os.path.join(self.directory, "extra.img")
        with open(extra, "wb") as f:
            f.truncate(16 * 1024 * 1024)
        disk = DiskSpec.file("vdb", extra, "raw")
        yield self.hv.define(HOST, self.spec)
        yield self.hv.start(HOST, self.name)

        def targets():
            return self.hv.describe(HOST, self.name).addCallback(
                lambda d: [disk.target for disk in d.spec.disks]
            )

        yield self.hv.attach_device(HOST, self.name, disk)
        self.assertEqual((yield targets()), ["vda", "vdb"])

        # Unplugging needs the guest's consent (ACPI PCI hotplug): a request
        # made before its kernel runs is lost.  Ask again until it is gone.
        @inlineCallbacks
        def unplugged():
            try:
                yield self.hv.detach_device(HOST, self.name, disk)
            except (HypervisorError, InvalidInput):
                pass  # still in progress, or gone from the config already
            yield deferLater(reactor, 3, lambda: None)
            return (yield targets()) == ["vda"]

        yield deferLater(reactor, BOOT_SECONDS, lambda: None)
        yield _until(unplugged, 90, every=0)

    @inlineCallbacks
    def test_errors(self):
        """QEMU's refusals reach Comet as NotFound and Conflict."""
        yield self.assertFailure(self.hv.start(HOST, self.name), NotFound)
        yield self.hv.define(HOST, self.spec)
        yield self.assertFailure(self.hv.suspend(HOST, self.name), Conflict)
        yield self.assertFailure(self.hv.screenshot(HOST, self.name), Conflict)
        other = DomainSpec(
            name=self.name, uuid=str(uuid.uuid4()), domain_type=self.spec.domain_type
        )
        yield self.assertFailure(self.hv.define(HOST, other), Conflict)

    @inlineCallbacks
    def test_secret(self):
        """An iSCSI CHAP secret is defined with its value, then removed."""
        secret = str(uuid.uuid4())
        usage = f"{self.name}.chap"

        @inlineCallbacks
        def remove():
            try:
                yield self.hv.undefine_secret(HOST, secret)
            except CometError:
                pass

        self.addCleanup(remove)
        self.assertEqual((yield self.hv.define_secret(HOST, secret, usage, "chap-pw")), secret)
        yield self.hv.undefine_secret(HOST, secret)
        yield self.assertFailure(self.hv.undefine_secret(HOST, secret), NotFound)
