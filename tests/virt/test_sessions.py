"""
How L{comet.virt.Hypervisors} shares its libvirt connections between calls
and threads (issue 17: the daemon died of a general-protection fault in
libglib when a frozen compute host came back with calls queued on its
connection; see L{comet.virt._sessions}): a C{virConnect} of libvirt's RPC
client serves one call at a time, a connection Comet gave up on gets no new
call, one thread at most opens a connection to a host, and a connection a
call still uses is not closed under it.  On libvirt's test driver, through
a recording opener (L{tests.virt._recording}); the fault itself is shown
against a real libvirtd by C{tests/integration/test_host_thaw.py}.
"""

from __future__ import annotations

import threading

import libvirt
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.task import Clock, deferLater

from comet.config import ComputeConfig, HostConfig
from comet.errors import Unavailable
from comet.virt import Hypervisors
from comet.virt._hypervisors import INITIAL_BACKOFF
from tests.virt._nodes import domain_spec
from tests.virt._recording import Recorder
from tests.virt.test_hypervisors import TIMEOUT, _Case, wait_for


class SessionTests(_Case):
    def hypervisors(self, nodes: dict[str, str], **kwargs) -> Hypervisors:
        self.clock = Clock()
        self.recorder = Recorder()
        hv = Hypervisors(
            reactor,
            tuple(HostConfig(name=n, uri=u, domain_type="test") for n, u in nodes.items()),
            ComputeConfig(libvirt_threads=8, libvirt_timeout=TIMEOUT),
            clock=self.clock,
            open_connection=self.recorder.open,
            **kwargs,
        )
        hv.startService()
        self.addCleanup(hv.stopService)
        return hv

    def close_by_libvirt(self, index: int = 0) -> None:
        """Pretend libvirt closed the C{index}th connection opened (keepalive)."""
        callback, opaque, conn = self.recorder.closers[index]
        thread = threading.Thread(
            target=callback, args=(conn, libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE, opaque))
        thread.start()
        thread.join()

    @inlineCallbacks
    def test_one_call_per_connection(self):
        """
        Calls of one host run side by side, each on a C{virConnect} of its
        own: a second thread inside libvirt's RPC client on one connection
        is what left the stale watch that crashed the daemon.  The spare
        connections are kept for the next calls, and closed with the host's.
        """
        hv = self.hypervisors({"n1": "test:///default"}, exclusive=lambda uri: True)
        yield hv.connect()
        gate = self.recorder.hold("getInfo")
        self.addCleanup(gate.set)
        calls = [hv.node_info("n1") for _ in range(3)]
        yield wait_for(lambda: self.recorder.methods().count("getInfo") == 3)
        self.assertEqual(self.recorder.shared, [])
        self.assertEqual(len({id(c) for c in self.recorder.connections("getInfo")}), 3)
        gate.set()
        yield gatherResults(calls)
        yield gatherResults([hv.node_info("n1") for _ in range(3)])
        self.assertEqual(self.recorder.opened, 3)
        self.assertEqual(self.recorder.shared, [])

        self.close_by_libvirt()
        yield wait_for(lambda: self.recorder.methods().count("close") == 3)
        self.assertEqual(len({id(c) for c in self.recorder.connections("close")}), 3)

    @inlineCallbacks
    def test_no_call_begins_on_a_dropped_connection(self):
        """
        A call that got the host's connection, then waited for a slot while
        the connection was given up on, does not begin on it: it answers
        Unavailable, and the connection sees no call after it was dropped.
        """
        hv = self.hypervisors({"n1": self.node()}, calls_per_host=1)
        yield hv.connect()
        gate = self.recorder.hold("getInfo")
        self.addCleanup(gate.set)
        first = hv.node_info("n1")
        yield wait_for(lambda: "getInfo" in self.recorder.methods())
        second = hv.node_info("n1")   # waits for the slot, on the same connection
        self.close_by_libvirt()
        yield wait_for(lambda: hv.status("n1").state == "unreachable")
        gate.set()
        yield first
        e = yield self.assertFailure(second, Unavailable)
        self.assertIn("keepalive timed out", e.reason)
        yield wait_for(lambda: "close" in self.recorder.methods())
        self.assertEqual(self.recorder.methods().count("getInfo"), 1)

    @inlineCallbacks
    def test_one_opening_at_a_time(self):
        """
        An opening the host does not answer in time keeps its thread; the
        retries after it wait for it instead of stacking more threads on the
        host, and the first that is still waiting when it opens takes it.
        """
        hv = self.hypervisors({"n1": self.node(cpus=3)})
        gate = self.recorder.hold("open")
        self.addCleanup(gate.set)
        first = hv.node_info("n1")
        yield wait_for(lambda: "open" in self.recorder.methods())
        self.clock.advance(TIMEOUT)
        yield self.assertFailure(first, Unavailable)
        self.clock.advance(INITIAL_BACKOFF)       # the retry: it waits for the opening
        later = hv.node_info("n1")
        self.clock.advance(TIMEOUT - 0.5)
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.recorder.methods().count("open"), 1)
        gate.set()
        self.assertEqual((yield later).cpus, 3)
        self.assertEqual(hv.status("n1").state, "connected")
        self.assertEqual(self.recorder.opened, 1)
        self.assertNotIn("close", self.recorder.methods())

    @inlineCallbacks
    def test_migration_destination_kept_while_the_call_runs(self):
        """
        A migration that timed out on Comet's side still runs in its thread
        with the destination's connection: when the destination is then given
        up on, its connection is closed only once the migration's thread has
        returned.
        """
        a = self.node(domains=[domain_spec("a")])
        b = self.node()
        hv = self.hypervisors({"n1": a, "n2": b})
        yield hv.connect()
        gate = self.recorder.hold("migrate3")
        self.addCleanup(gate.set)
        self.recorder.fake("migrateSetMaxDowntime", lambda dom, ms, flags: None)
        self.recorder.fake("migrate3", lambda dom, dconn, params, flags: dom)
        d = hv.migrate("n1", "n2", "a", 300, 2 * TIMEOUT)
        yield wait_for(lambda: "migrate3" in self.recorder.methods())
        self.clock.advance(2 * TIMEOUT)
        yield self.assertFailure(d, Unavailable)
        [(index, dest)] = [(i, conn) for i, (_, opaque, conn) in enumerate(self.recorder.closers)
                           if opaque[0] == "n2"]
        self.close_by_libvirt(index)
        yield wait_for(lambda: hv.status("n2").state == "unreachable")
        yield deferLater(reactor, 0.2, lambda: None)

        def dest_closed():
            return any(c is dest for c in self.recorder.connections("close"))

        self.assertFalse(dest_closed())
        gate.set()
        yield wait_for(dest_closed)
