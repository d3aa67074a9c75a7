"""
Tests for L{comet.virt.Hypervisors}: the thread pool, per-host connections,
errors, timeouts, reconnection and lifecycle events, on test-driver nodes.
What every implementation promises (each operation's answers and errors) is
in the contract suite, C{tests/contract/virt_suite.py}, run on the test driver
by C{tests/virt/test_contract.py}.

The reactor is the real one (libvirt threads answer through
C{callFromThread}); time for timeouts, back-offs and retries is a
L{Clock} the tests move by hand.
"""

from __future__ import annotations

import threading
import time

import libvirt
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.python import threadable
from twisted.trial.unittest import TestCase

from comet.config import ComputeConfig, HostConfig
from comet.errors import Conflict, NotFound, Unavailable
from comet.virt import (
    CometMetadata,
    DomainInfo,
    HostStatus,
    Hypervisors,
    NodeInfo,
)
from comet.virt._batches import STALL
from comet.virt._hypervisors import INITIAL_BACKOFF
from tests.virt._nodes import break_node, domain_spec, make_node_xml, node_path
from tests.virt._recording import Recorder, libvirt_error

TIMEOUT = 5.0


@inlineCallbacks
def wait_for(predicate, timeout: float = 10.0):
    """Poll C{predicate} on the real reactor until it is true."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{predicate} still false after {timeout} s")
        yield deferLater(reactor, 0.01, lambda: None)


class _Case(TestCase):
    def node(self, **kwargs) -> str:
        """A test-driver node file; its URI."""
        return make_node_xml(node_path(self), **kwargs)

    def hypervisors(self, nodes: dict[str, str], **kwargs) -> Hypervisors:
        """
        A started L{Hypervisors} on C{nodes} (name → URI) with a recording
        opener and a L{Clock}; stopped after the test.
        """
        self.clock = Clock()
        self.recorder = Recorder()
        hv = Hypervisors(
            reactor,
            tuple(HostConfig(name=n, uri=u, domain_type="test") for n, u in nodes.items()),
            ComputeConfig(libvirt_threads=4, libvirt_timeout=TIMEOUT),
            clock=self.clock,
            open_connection=self.recorder.open,
            **kwargs,
        )
        hv.startService()
        self.addCleanup(hv.stopService)
        return hv


class OperationsTests(_Case):
    """Each operation reaches its host and answers in the reactor thread."""

    @inlineCallbacks
    def test_reading(self):
        """Node info, the domain list, Comet's domains and a description."""
        mine = domain_spec("lab.a", metadata=CometMetadata("lab", "a", "3"))
        hv = self.hypervisors(
            {"n1": self.node(cpus=16, memory_mb=32768, domains=[mine, domain_spec("b")])}
        )
        self.assertEqual(
            (yield hv.node_info("n1")),
            NodeInfo(cpus=16, memory_mb=32768, memory_free_mb=0, domains=2, running=2),
        )
        listed = yield hv.list_domains("n1")
        self.assertEqual(listed["lab.a"], DomainInfo("lab.a", "running", 256, 1, mine.uuid))
        self.assertEqual(list((yield hv.domains_with_metadata("n1"))), ["lab.a"])
        yield hv.set_metadata("n1", "b", CometMetadata("lab", "b"))
        self.assertEqual(sorted((yield hv.domains_with_metadata("n1"))), ["b", "lab.a"])
        description = yield hv.describe("n1", "lab.a")
        self.assertEqual(description.spec, mine)

    @inlineCallbacks
    def test_hosts_are_separate(self):
        """Each configured host is its own node, with its own domains."""
        hv = self.hypervisors(
            {
                "n1": self.node(domains=[domain_spec("a")]),
                "n2": self.node(domains=[domain_spec("b"), domain_spec("c")]),
            }
        )
        self.assertEqual(hv.hosts, ("n1", "n2"))
        self.assertEqual(list((yield hv.list_domains("n1"))), ["a"])
        self.assertEqual(sorted((yield hv.list_domains("n2"))), ["b", "c"])
        yield hv.destroy("n2", "b")
        self.assertEqual((yield hv.domain_state("n2", "b")), "shutoff")
        self.assertEqual((yield hv.domain_state("n1", "a")), "running")

    @inlineCallbacks
    def test_never_in_the_reactor_thread(self):
        """
        Every libvirt call, opening the connection included, runs in the
        service's pool threads, never in the reactor thread.
        """
        hv = self.hypervisors({"n1": self.node(domains=[domain_spec("a")])})
        yield hv.connect()
        yield hv.node_info("n1")
        yield hv.list_domains("n1")
        yield hv.define("n1", domain_spec("b"))
        for action in ("start", "suspend", "resume", "reset", "screenshot", "destroy", "undefine"):
            yield getattr(hv, action)("n1", "b")
        yield hv.domains_with_metadata("n1")
        threads = self.recorder.threads()
        self.assertNotIn(threading.current_thread(), threads)
        self.assertTrue(threadable.isInIOThread())
        self.assertEqual(
            {t.name.startswith("PoolThread-comet-libvirt-") for t in threads}, {True}
        )
        self.assertIn("open", self.recorder.methods())


class ErrorTests(_Case):
    @inlineCallbacks
    def test_libvirt_error_translated(self):
        """A libvirt error a call raises reaches the caller translated."""
        hv = self.hypervisors({"n1": self.node(domains=[domain_spec("vm")])})
        yield hv.connect()
        self.recorder.fail_next(
            "suspend", libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, "busy")
        )
        e = yield self.assertFailure(hv.suspend("n1", "vm"), Conflict)
        self.assertEqual(e.reason, "suspending domain 'vm' on 'n1': busy")


class EventTests(_Case):
    @inlineCallbacks
    def test_lifecycle_events(self):
        """
        Lifecycle events of every host reach subscribers in the reactor
        thread, named, with the host and the domain.
        """
        hv = self.hypervisors({"n1": self.node(), "n2": self.node(domains=[domain_spec("b")])})
        yield hv.connect()
        events, threads = [], set()

        def record(host, domain, event):
            events.append((host, domain, event))
            threads.add(threading.current_thread())

        hv.subscribe(record)
        yield hv.define("n1", domain_spec("a"))
        for action in ("start", "suspend", "resume", "destroy", "undefine"):
            yield getattr(hv, action)("n1", "a")
        yield hv.destroy("n2", "b")
        expected = [
            ("n1", "a", "defined"),
            ("n1", "a", "started"),
            ("n1", "a", "suspended"),
            ("n1", "a", "resumed"),
            ("n1", "a", "stopped"),
            ("n1", "a", "undefined"),
            ("n2", "b", "stopped"),
        ]
        yield wait_for(lambda: len(events) >= len(expected))
        self.assertEqual(sorted(events), sorted(expected))
        self.assertEqual([e for e in events if e[0] == "n1"], expected[:-1])
        self.assertEqual(threads, {threading.current_thread()})

    @inlineCallbacks
    def test_unsubscribe(self):
        """A subscriber that unsubscribed hears nothing more; a failing one is logged."""
        hv = self.hypervisors({"n1": self.node(domains=[domain_spec("a")])})
        yield hv.connect()
        events = []
        unsubscribe = hv.subscribe(lambda *event: events.append(event))

        def broken(*event):
            raise RuntimeError("subscriber bug")

        hv.subscribe(broken)
        yield hv.suspend("n1", "a")
        yield wait_for(lambda: events)
        unsubscribe()
        yield hv.resume("n1", "a")
        yield hv.suspend("n1", "a")
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(events, [("n1", "a", "suspended")])
        self.assertTrue(self.flushLoggedErrors(RuntimeError))


class ReconnectTests(_Case):
    @inlineCallbacks
    def test_unreachable_then_back(self):
        """
        A host that cannot be opened is unreachable: its calls fail at once
        with Unavailable naming it, without trying again during the back-off;
        after the back-off the next call connects.
        """
        path = node_path(self)
        uri = break_node(path)
        hv = self.hypervisors({"n1": uri})
        changes = []
        hv.subscribe_hosts(lambda *change: changes.append(change))
        statuses = yield hv.connect()
        self.assertEqual(statuses[0].state, "unreachable")
        e = yield self.assertFailure(hv.node_info("n1"), Unavailable)
        self.assertTrue(
            e.reason.startswith(f"compute host 'n1' ({uri}) does not answer: "), e.reason
        )
        self.assertIn("Start tag expected", e.reason)
        self.assertEqual(self.recorder.methods().count("open"), 1)

        make_node_xml(path, cpus=2)
        yield self.assertFailure(hv.node_info("n1"), Unavailable)
        self.assertEqual(self.recorder.methods().count("open"), 1)

        self.clock.advance(INITIAL_BACKOFF)
        info = yield hv.node_info("n1")
        self.assertEqual(info.cpus, 2)
        self.assertEqual(hv.status("n1"), HostStatus("n1", uri, "connected", ""))
        self.assertEqual(changes, [("n1", "connected", "")])

    @inlineCallbacks
    def test_backoff_doubles(self):
        """
        An unreachable host is tried again by itself after 1, 2, 4, 8 … s;
        calls in between fail at once, without trying.
        """
        uri = break_node(node_path(self))
        hv = self.hypervisors({"n1": uri})
        yield hv.connect()
        for backoff in (1, 2, 4, 8):
            opened = self.recorder.methods().count("open")
            self.clock.advance(backoff - 0.01)
            yield self.assertFailure(hv.node_info("n1"), Unavailable)
            self.assertEqual(self.recorder.methods().count("open"), opened)
            self.clock.advance(0.01)
            # The retry is under way: this call waits for it, and fails with it.
            yield self.assertFailure(hv.node_info("n1"), Unavailable)
            self.assertEqual(self.recorder.methods().count("open"), opened + 1)

    @inlineCallbacks
    def test_broken_connection(self):
        """
        A call that finds the connection broken answers Unavailable and marks
        the host unreachable; after the back-off a new connection is opened.
        """
        hv = self.hypervisors({"n1": self.node(domains=[domain_spec("a")])})
        yield hv.connect()
        changes = []
        hv.subscribe_hosts(lambda *change: changes.append(change))
        self.recorder.fail_next(
            "getInfo",
            libvirt_error(
                libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data: EOF"
            ),
        )
        e = yield self.assertFailure(hv.node_info("n1"), Unavailable)
        self.assertIn("does not answer: Cannot recv data: EOF", e.reason)
        self.assertEqual(hv.status("n1").state, "unreachable")
        self.assertEqual(changes, [("n1", "unreachable", "Cannot recv data: EOF")])
        yield wait_for(lambda: "close" in self.recorder.methods())

        yield self.assertFailure(hv.list_domains("n1"), Unavailable)
        self.clock.advance(INITIAL_BACKOFF)
        self.assertEqual(list((yield hv.list_domains("n1"))), ["a"])
        self.assertEqual(self.recorder.opened, 2)
        self.assertEqual(changes[-1], ("n1", "connected", ""))

    @inlineCallbacks
    def test_dead_connection_detected(self):
        """
        An error from a connection libvirt no longer thinks alive is
        Unavailable, whatever its code.
        """
        hv = self.hypervisors({"n1": self.node(domains=[domain_spec("a")])})
        yield hv.connect()
        self.recorder.fail_next(
            "getInfo", libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_TEST)
        )
        self.recorder.fail_next("isAlive", libvirt_error(libvirt.VIR_ERR_INVALID_CONN))
        yield self.assertFailure(hv.node_info("n1"), Unavailable)
        self.assertEqual(hv.status("n1").state, "unreachable")

    @inlineCallbacks
    def test_closed_by_libvirt(self):
        """
        When libvirt reports the connection closed (keepalive, EOF), the
        host is unreachable at once.
        """
        hv = self.hypervisors({"n1": self.node()})
        yield hv.connect()
        [(callback, opaque, conn)] = self.recorder.closers
        changes = []
        hv.subscribe_hosts(lambda *change: changes.append(change))
        thread = threading.Thread(
            target=callback, args=(conn, libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE, opaque)
        )
        thread.start()
        thread.join()
        yield wait_for(lambda: changes)
        self.assertEqual(changes, [("n1", "unreachable", "keepalive timed out")])
        e = yield self.assertFailure(hv.node_info("n1"), Unavailable)
        self.assertIn("keepalive timed out", e.reason)

    @inlineCallbacks
    def test_retried_without_calls(self):
        """
        An unreachable host is tried again when its back-off is over, so it
        comes back (and its events flow) without waiting for a call.
        """
        path = node_path(self)
        hv = self.hypervisors({"n1": break_node(path)})
        yield hv.connect()
        changes = []
        hv.subscribe_hosts(lambda *change: changes.append(change))
        make_node_xml(path)
        self.clock.advance(INITIAL_BACKOFF)
        yield wait_for(lambda: changes)
        self.assertEqual(changes, [("n1", "connected", "")])

    @inlineCallbacks
    def test_no_timer_when_connected(self):
        """
        While every host is connected no timer is pending, and stopping
        cancels the retries of unreachable hosts.
        """
        hv = self.hypervisors({"n1": self.node()})
        yield hv.connect()
        yield hv.node_info("n1")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        hv2 = self.hypervisors({"n2": break_node(node_path(self))})
        yield hv2.connect()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        yield hv2.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TimeoutTests(_Case):
    @inlineCallbacks
    def stuck_node_info(self, **node):
        """
        A host whose C{getInfo} is held past the timeout: the L{Hypervisors},
        the gate that lets the held call return, and the call's Deferred.
        """
        hv = self.hypervisors({"n1": self.node(**node)})
        yield hv.connect()
        gate = self.recorder.hold("getInfo")
        self.addCleanup(gate.set)
        d = hv.node_info("n1")
        yield wait_for(lambda: "getInfo" in self.recorder.methods())
        self.clock.advance(TIMEOUT)
        return hv, gate, d

    @inlineCallbacks
    def test_stuck_call(self):
        """
        A call that takes longer than the timeout answers Unavailable then,
        and its host is unreachable; the stuck thread's late result is
        dropped, and after the back-off the host is used again.
        """
        hv, gate, d = yield self.stuck_node_info(cpus=3)
        e = yield self.assertFailure(d, Unavailable)
        self.assertIn("reading compute host 'n1' took longer than 5 s", e.reason)
        self.assertEqual(hv.status("n1").state, "unreachable")
        with self.recorder._lock:
            self.recorder._gates.clear()
        gate.set()
        self.clock.advance(INITIAL_BACKOFF)
        info = yield hv.node_info("n1")
        self.assertEqual(info.cpus, 3)

    @inlineCallbacks
    def test_closed_once_idle(self):
        """
        A connection given up on while a call still runs on it is closed only
        once that call returned: closing a C{virConnect} under another
        thread's call is not safe.
        """
        hv, gate, d = yield self.stuck_node_info()
        yield self.assertFailure(d, Unavailable)
        yield deferLater(reactor, 0.05, lambda: None)
        self.assertNotIn("close", self.recorder.methods())
        gate.set()
        yield wait_for(lambda: "close" in self.recorder.methods())

    @inlineCallbacks
    def test_stuck_connect(self):
        """
        Opening a connection that takes longer than the timeout fails the
        waiting calls with Unavailable; the late connection is closed.
        """
        hv = self.hypervisors({"n1": self.node()})
        gate = self.recorder.hold("open")
        self.addCleanup(gate.set)
        d = hv.node_info("n1")
        yield wait_for(lambda: "open" in self.recorder.methods())
        self.clock.advance(TIMEOUT)
        e = yield self.assertFailure(d, Unavailable)
        self.assertIn("connecting took longer than 5 s", e.reason)
        gate.set()
        yield wait_for(lambda: "close" in self.recorder.methods())
        self.assertEqual(hv.status("n1").state, "unreachable")

    @inlineCallbacks
    def test_calls_per_host(self):
        """
        At most C{calls_per_host} calls of one host are in the pool at once;
        the others wait their turn, and other hosts are not held up.
        """
        hv = self.hypervisors({"n1": self.node(), "n2": self.node()}, calls_per_host=2)
        yield hv.connect()
        gate = self.recorder.hold("getInfo")
        self.addCleanup(gate.set)
        calls = [hv.node_info("n1") for _ in range(4)]
        yield wait_for(lambda: self.recorder.methods().count("getInfo") == 2)
        yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.recorder.methods().count("getInfo"), 2)
        self.assertEqual(list((yield hv.list_domains("n2"))), [])
        gate.set()
        results = yield gatherResults(calls)
        self.assertEqual(len(results), 4)

    @inlineCallbacks
    def test_ping_not_behind_other_calls(self):
        """
        C{ping} needs no slot and no thread of the main pool: it answers while
        every slot of its host is taken by a call that hangs.
        """
        hv = self.hypervisors({"n1": self.node()}, calls_per_host=2)
        yield hv.connect()
        gate = self.recorder.hold("getInfo")
        self.addCleanup(gate.set)
        calls = [hv.node_info("n1") for _ in range(2)]
        yield wait_for(lambda: self.recorder.methods().count("getInfo") == 2)
        self.assertIsNone((yield hv.ping("n1")))
        self.assertIn("getLibVersion", self.recorder.methods())
        gate.set()
        yield gatherResults(calls)

    @inlineCallbacks
    def test_ping_failure_marks_unreachable(self):
        """A ping that finds the connection broken is Unavailable, and the host unreachable."""
        hv = self.hypervisors({"n1": self.node()})
        yield hv.connect()
        self.recorder.fail_next(
            "getLibVersion",
            libvirt_error(
                libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data: EOF"
            ),
        )
        yield self.assertFailure(hv.ping("n1"), Unavailable)
        self.assertEqual(hv.status("n1").state, "unreachable")

    @inlineCallbacks
    def test_pings_of_one_turn_share_a_thread(self):
        """
        The pings of many hosts asked at once (C{GET /cluster} probes every
        host) run one after the other in one pool thread: one hand-off.
        """
        nodes = {f"n{i}": self.node() for i in range(5)}
        hv = self.hypervisors(nodes)
        yield hv.connect()
        self.recorder.reset()
        yield gatherResults([hv.ping(name) for name in nodes])
        pings = [c for c in self.recorder.calls if c.method == "getLibVersion"]
        self.assertEqual(len(pings), 5)
        self.assertEqual(len({c.thread for c in pings}), 1)

    @inlineCallbacks
    def test_hung_host_does_not_hold_back_pings(self):
        """
        A host whose ping hangs holds the other hosts' pings (asked with it)
        back by a moment only (L{STALL}): they answer; its own ping answers
        Unavailable at the timeout, and only its host is unreachable.
        """
        nodes = {f"n{i}": self.node() for i in range(3)}
        hv = self.hypervisors(nodes)
        yield hv.connect()
        gate = threading.Event()
        self.addCleanup(gate.set)

        def hangs_on_n0(conn):
            if conn.getURI() == nodes["n0"]:
                gate.wait(30)
            return conn.getLibVersion()

        self.recorder.fake("getLibVersion", hangs_on_n0)
        stuck = hv.ping("n0")
        others = [hv.ping("n1"), hv.ping("n2")]
        began = time.monotonic()
        yield gatherResults(others)
        self.assertLess(time.monotonic() - began, STALL + 5)
        self.assertFalse(stuck.called)
        self.clock.advance(TIMEOUT)
        e = yield self.assertFailure(stuck, Unavailable)
        self.assertIn("checking compute host 'n0' took longer than 5 s", e.reason)
        self.assertEqual([hv.status(name).state for name in nodes],
                         ["unreachable", "connected", "connected"])


    @inlineCallbacks
    def test_pings_share_one_timer(self):
        """
        The pings in flight share one timer, not one each (a C{GET /cluster}
        over 100 hosts makes 100), gone once they have answered; an unknown
        host is L{NotFound} at once.
        """
        nodes = {f"n{i}": self.node() for i in range(4)}
        hv = self.hypervisors(nodes)
        yield hv.connect()
        pings = [hv.ping(name) for name in nodes]
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        yield self.assertFailure(hv.ping("nope"), NotFound)
        self.assertEqual((yield gatherResults(pings)), [None] * 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @inlineCallbacks
    def test_each_ping_keeps_its_deadline(self):
        """
        Under the shared timer each ping still times out C{libvirt_timeout}
        after it was asked, not before and not later, and only its host is
        unreachable.
        """
        nodes = {f"n{i}": self.node() for i in range(3)}
        hv = self.hypervisors(nodes)
        yield hv.connect()
        gate = threading.Event()
        self.addCleanup(gate.set)
        hung = {nodes["n0"], nodes["n1"]}

        def hangs(conn):
            if conn.getURI() in hung:
                gate.wait(30)
            return conn.getLibVersion()

        self.recorder.fake("getLibVersion", hangs)
        first = hv.ping("n0")
        self.clock.advance(TIMEOUT / 2)
        second = hv.ping("n1")
        self.assertIsNone((yield hv.ping("n2")))
        self.clock.advance(TIMEOUT / 2)
        e = yield self.assertFailure(first, Unavailable)
        self.assertIn("checking compute host 'n0' took longer than 5 s", e.reason)
        self.assertFalse(second.called)
        self.clock.advance(TIMEOUT / 2)
        yield self.assertFailure(second, Unavailable)
        self.assertEqual([hv.status(name).state for name in nodes],
                         ["unreachable", "unreachable", "connected"])

class ServiceTests(_Case):
    @inlineCallbacks
    def test_stop(self):
        """
        Stopping closes every connection (events unregistered first); calls
        after that answer Unavailable.
        """
        hv = self.hypervisors({"n1": self.node()})
        yield hv.connect()
        yield hv.stopService()
        methods = self.recorder.methods()
        self.assertLess(methods.index("domainEventDeregisterAny"), methods.index("close"))
        e = yield self.assertFailure(hv.node_info("n1"), Unavailable)
        self.assertIn("Comet is stopping", e.reason)
        hv.startService()
        self.assertEqual((yield hv.node_info("n1")).cpus, 4)

    @inlineCallbacks
    def test_connect_reports(self):
        """C{connect} fires with every host's status, reachable or not."""
        bad = break_node(node_path(self))
        good = self.node()
        hv = self.hypervisors({"good": good, "bad": bad})
        statuses = yield hv.connect()
        self.assertEqual([s.state for s in statuses], ["connected", "unreachable"])
        self.assertEqual(hv.statuses(), statuses)
        self.assertRaises(NotFound, hv.status, "nope")

    def test_pending_at_stop(self):
        """A call waiting for a connection when the service stops answers Unavailable."""
        hv = self.hypervisors({"n1": self.node()})
        gate = self.recorder.hold("open")
        d = hv.node_info("n1")
        stopped = Deferred()

        def stop():
            gate.set()
            hv.stopService().chainDeferred(stopped)

        reactor.callLater(0.05, stop)
        return gatherResults([self.assertFailure(d, Unavailable), stopped])
