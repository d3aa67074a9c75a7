"""
Tests for L{comet.virt.CachedStates}: domain states from memory, kept by
lifecycle events, each read proved by a probe of the host; on test-driver
nodes, whose events reach Comet through libvirt's event loop.
"""

from __future__ import annotations

import threading

import libvirt
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread

from comet.errors import Conflict, NotFound, Unavailable
from comet.virt import CachedStates
from comet.virt._hypervisors import INITIAL_BACKOFF
from comet.virt._statecache import _HostStates
from tests.virt._events import LateEvents
from tests.virt._nodes import domain_spec
from tests.virt._recording import libvirt_error
from tests.virt.test_hypervisors import _Case, wait_for

BULK = "getAllDomainStats"
PING = "getLibVersion"


class _CacheCase(_Case):
    def cached(self, nodes=None):
        """A started L{Hypervisors} on one node C{n1} with domains C{a} (running) and C{b} (shutoff)."""
        if nodes is None:
            nodes = {"n1": self.node(domains=[domain_spec("a"), (domain_spec("b"), "shutoff")])}
        self.hv = self.hypervisors(nodes)
        self.cache = CachedStates(self.hv)
        self.addCleanup(self.cache.close)
        return self.cache

    @inlineCallbacks
    def ready(self):
        """Once C{n1} is connected and its states are filled."""
        yield self.hv.connect()
        yield self.cache.domain_states("n1")
        self.assertIsNotNone(self.cache._hosts["n1"].states)

    def next_event(self, domain: str, event: str) -> Deferred:
        """Fires once C{event} of C{domain} has reached the cache (it subscribed first)."""
        d: Deferred = Deferred()

        def seen(host, name, what):
            if (name, what) == (domain, event) and not d.called:
                unsubscribe()
                d.callback(None)

        unsubscribe = self.hv.subscribe(seen)
        return d

    def methods(self, name: str) -> int:
        return self.recorder.methods().count(name)


class ReadTests(_CacheCase):
    @inlineCallbacks
    def test_filled_once(self):
        """One bulk call fills the host; later reads cost a probe each, no listing."""
        cache = self.cached()
        yield self.hv.connect()
        yield cache.domain_states("n1")  # may share the fill begun on connect
        self.recorder.reset()
        self.assertEqual((yield cache.domain_states("n1")), {"a": "running", "b": "shutoff"})
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")
        self.assertEqual(self.methods(BULK), 0)
        self.assertEqual(self.methods(PING), 2)

    @inlineCallbacks
    def test_copies(self):
        """A caller changing the answer does not change the cache."""
        cache = self.cached()
        states = yield cache.domain_states("n1")
        states["a"] = "paused"
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")

    @inlineCallbacks
    def test_not_defined(self):
        """A domain the host does not have is NotFound, as from the host itself."""
        cache = self.cached()
        yield self.ready()
        e = yield self.assertFailure(cache.domain_state("n1", "nope"), NotFound)
        self.assertIn("'nope'", e.reason)
        yield self.assertFailure(cache.domain_state("n9", "a"), NotFound)

    @inlineCallbacks
    def test_other_calls_pass_through(self):
        """Everything else is the L{Hypervisors}' own."""
        cache = self.cached()
        self.assertEqual(sorted((yield cache.list_domains("n1"))), ["a", "b"])
        self.assertEqual(cache.status("n1").state, "connected")


class EventTests(_CacheCase):
    @inlineCallbacks
    def test_changes_behind_comets_back(self):
        """
        A change made on the host without the cache (here: on the
        L{Hypervisors} directly) is seen once its event arrives, with no
        listing.
        """
        cache = self.cached()
        yield self.ready()
        self.recorder.reset()
        for action, event, state in [
            ("suspend", "suspended", "paused"),
            ("resume", "resumed", "running"),
            ("destroy", "stopped", "shutoff"),
            ("start", "started", "running"),
        ]:
            seen = self.next_event("a", event)
            yield getattr(self.hv, action)("n1", "a")
            yield seen
            self.assertEqual((yield cache.domain_state("n1", "a")), state, action)
        self.assertEqual(self.methods(BULK), 0)

    @inlineCallbacks
    def test_defined_and_undefined(self):
        """A new domain appears shut off; an undefined one is read again and is gone."""
        cache = self.cached()
        yield self.ready()
        seen = self.next_event("c", "defined")
        yield self.hv.define("n1", domain_spec("c"))
        yield seen
        self.assertEqual((yield cache.domain_state("n1", "c")), "shutoff")
        seen = self.next_event("b", "undefined")
        yield self.hv.undefine("n1", "b")
        yield seen
        # The unclear event has "b" read again; a read waits for it.
        yield self.assertFailure(cache.domain_state("n1", "b"), NotFound)
        self.assertNotIn("b", (yield cache.domain_states("n1")))

    @inlineCallbacks
    def test_events_during_fill(self):
        """
        An event that arrives while the bulk call runs is weighed against its
        answer: the order of the two is unknown, so a domain they disagree on
        is read again.  A true event wins (the read again sees it); a stale
        one does not.
        """
        nodes = {"n1": self.node(domains=[domain_spec("a"), domain_spec("c")])}
        self.hv = self.hypervisors(nodes)
        events = LateEvents(self.hv, holding=False)
        self.addCleanup(events.close)
        listed, go = threading.Event(), threading.Event()

        def list_then_wait(conn, *args):
            answer = conn.getAllDomainStats(*args)
            listed.set()
            go.wait(30)
            return answer

        yield self.hv.connect()
        self.recorder.fake(BULK, list_then_wait)
        cache = CachedStates(events)
        self.addCleanup(cache.close)
        filled = cache.domain_states("n1")
        yield deferToThread(listed.wait, 30)
        # During the fill, after its listing: "a" is really suspended, and a
        # stale event of "c" (from before the listing) comes late.
        suspended = events.arrival("a", "suspended")
        yield self.hv.suspend("n1", "a")
        yield suspended
        events.deliver("n1", "c", "stopped")
        self.recorder.reset()
        go.set()
        self.assertEqual((yield filled), {"a": "paused", "c": "running"})
        self.assertEqual(self.methods("lookupByName"), 2)  # each read again
        self.assertEqual((yield cache.domain_state("n1", "a")), "paused")
        self.assertEqual((yield cache.domain_state("n1", "c")), "running")


class ActionTests(_CacheCase):
    @inlineCallbacks
    def test_own_actions_seen_at_once(self):
        """After Comet's own action the new state is read at once, before its event."""
        cache = self.cached()
        yield self.ready()
        yield cache.define("n1", domain_spec("c"))
        self.assertEqual((yield cache.domain_state("n1", "c")), "shutoff")
        # Events are not let in: each answer comes from the action itself.
        cache.close()
        cache._hosts["n1"] = _HostStates(states={"c": "shutoff"})
        for action, state in [("start", "running"), ("suspend", "paused"),
                              ("resume", "running"), ("destroy", "shutoff")]:
            yield getattr(cache, action)("n1", "c")
            self.assertEqual((yield cache.domain_state("n1", "c")), state, action)
        yield cache.undefine("n1", "c")
        yield self.assertFailure(cache.domain_state("n1", "c"), NotFound)

    @inlineCallbacks
    def test_failed_action_read_again(self):
        """A refused action has its domain read again: the cache was wrong."""
        cache = self.cached()
        yield self.ready()
        cache._hosts["n1"].states["b"] = "running"  # wrong, as if an event was lost
        yield self.assertFailure(cache.destroy("n1", "b"), Conflict)
        self.assertEqual((yield cache.domain_state("n1", "b")), "shutoff")


class OwnWritesTests(_CacheCase):
    """
    Comet reads its own writes: after its own action the cache holds the
    state the action left, whenever libvirt's events arrive (held here by
    L{LateEvents} and let through late, as on a busy machine); and an event
    older than that state, arriving after it, does not undo it.
    """

    @inlineCallbacks
    def late(self):
        """A filled cache on C{n1} (C{a} running, C{b} shut off) whose events are held."""
        nodes = {"n1": self.node(domains=[domain_spec("a"), (domain_spec("b"), "shutoff")])}
        self.hv = self.hypervisors(nodes)
        self.events = LateEvents(self.hv)
        self.addCleanup(self.events.close)
        self.cache = CachedStates(self.events)
        self.addCleanup(self.cache.close)
        yield self.hv.connect()
        self.assertEqual((yield self.cache.domain_states("n1")), {"a": "running", "b": "shutoff"})
        return self.cache

    @inlineCallbacks
    def test_shutdown_before_its_event(self):
        """
        A shutdown that is complete when its call returns (the test driver's)
        is seen at once, though its C{stopped} event has not arrived.
        """
        cache = yield self.late()
        stopped = self.events.arrival("a", "stopped")
        yield cache.shutdown("n1", "a")
        self.assertEqual((yield cache.domain_state("n1", "a")), "shutoff")
        yield stopped
        self.events.release()
        self.assertEqual((yield cache.domain_state("n1", "a")), "shutoff")

    @inlineCallbacks
    def test_event_of_the_action_before(self):
        """The C{suspended} of a suspend, arriving after the resume that followed it, is old."""
        cache = yield self.late()
        arrived = [self.events.arrival("a", "suspended"), self.events.arrival("a", "resumed")]
        yield cache.suspend("n1", "a")
        yield cache.resume("n1", "a")
        for d in arrived:
            yield d
        self.assertEqual(self.events.release(1), [("n1", "a", "suspended")])
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")
        self.events.release()
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")

    @inlineCallbacks
    def test_defined_after_undefine(self):
        """A domain Comet undefined stays gone when its C{defined} event comes late."""
        cache = yield self.late()
        undefined = self.events.arrival("c", "undefined")
        yield cache.define("n1", domain_spec("c"))
        self.assertEqual((yield cache.domain_state("n1", "c")), "shutoff")
        yield cache.undefine("n1", "c")
        yield undefined
        self.assertEqual(self.events.release(1), [("n1", "c", "defined")])
        yield self.assertFailure(cache.domain_state("n1", "c"), NotFound)
        self.events.release()
        yield self.assertFailure(cache.domain_state("n1", "c"), NotFound)

    @inlineCallbacks
    def test_stale_event_during_action(self):
        """
        An old event that arrives while Comet's own action is in flight
        cannot be ordered against the action's answer: the domain is read
        again, and the answer waits for that.
        """
        cache = yield self.late()
        suspended = self.events.arrival("a", "suspended")
        yield cache.suspend("n1", "a")
        yield suspended
        resumed, go = threading.Event(), threading.Event()

        def resume_then_wait(dom):
            dom.resume()
            resumed.set()
            go.wait(30)

        self.recorder.fake("resume", resume_then_wait)
        done = cache.resume("n1", "a")
        yield deferToThread(resumed.wait, 30)
        self.events.release()  # the suspend's event, during the resume
        self.recorder.reset()
        go.set()
        yield done
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")
        self.assertEqual(self.methods("lookupByName"), 1)  # the read again

    @inlineCallbacks
    def test_settled_after_the_action_in_flight(self):
        """
        An event that arrives while Comet's own action on its domain is in
        flight (QEMU's C{suspended} before libvirt's suspend returns) is
        weighed when the action answers: C{settled} fires only then, and a
        read after it gives the new state.  Another domain is settled at once.
        """
        cache = yield self.late()
        suspended = self.events.arrival("a", "suspended")
        acted, go = threading.Event(), threading.Event()

        def suspend_then_wait(dom):
            dom.suspend()
            acted.set()
            go.wait(30)

        self.recorder.fake("suspend", suspend_then_wait)
        done = cache.suspend("n1", "a")
        yield deferToThread(acted.wait, 30)
        yield suspended
        self.events.release()   # the event, while the suspend is in flight
        settled = cache.settled("n1", "a")
        self.assertFalse(settled.called)
        yield cache.settled("n1", "b")
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")   # not weighed yet
        go.set()
        yield done
        yield settled
        self.assertEqual((yield cache.domain_state("n1", "a")), "paused")

    @inlineCallbacks
    def test_changes_behind_comets_back_still_seen(self):
        """After Comet's own actions and their late events, another's change still shows."""
        cache = yield self.late()
        yield cache.destroy("n1", "a")
        yield cache.start("n1", "a")
        self.events.holding = False
        self.events.release()
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")
        stopped = self.events.arrival("a", "stopped")
        yield self.hv.destroy("n1", "a")  # not through the cache
        yield stopped
        self.assertEqual((yield cache.domain_state("n1", "a")), "shutoff")


class LivenessTests(_CacheCase):
    @inlineCallbacks
    def test_host_stops_answering(self):
        """A host whose probe fails is Unavailable, not its cached states."""
        cache = self.cached()
        yield self.ready()
        self.recorder.fail_next(
            PING,
            libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data: EOF"),
        )
        yield self.assertFailure(cache.domain_state("n1", "a"), Unavailable)
        self.assertEqual(self.hv.status("n1").state, "unreachable")
        # Dropped: nothing is served from before the loss.
        self.assertIsNone(cache._hosts["n1"].states)
        yield self.assertFailure(cache.domain_states("n1"), Unavailable)

    @inlineCallbacks
    def test_back_after_reconnect(self):
        """When the host is back its states are listed again, live."""
        cache = self.cached()
        yield self.ready()
        self.recorder.fail_next(
            PING,
            libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data: EOF"),
        )
        yield self.assertFailure(cache.domain_state("n1", "a"), Unavailable)
        self.recorder.reset()
        self.clock.advance(INITIAL_BACKOFF)
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")
        self.assertGreaterEqual(self.methods(BULK), 1)
        self.assertEqual(self.hv.status("n1").state, "connected")

    @inlineCallbacks
    def test_fill_from_before_a_reconnect(self):
        """
        A listing still stuck on a connection that was lost fills nothing,
        and does not keep the cache from following the events that come
        after the host is back.
        """
        cache = self.cached()
        yield self.ready()
        listings, stuck = [], threading.Event()
        self.addCleanup(stuck.set)

        def first_is_stuck(conn, *args):
            listings.append(args)
            if len(listings) == 1:
                stuck.wait(30)
            return conn.getAllDomainStats(*args)

        self.recorder.fake(BULK, first_is_stuck)
        changes = []
        self.hv.subscribe_hosts(lambda *change: changes.append(change))

        @inlineCallbacks
        def lose_and_reconnect():
            [(callback, opaque, conn)] = self.recorder.closers[-1:]
            callback(conn, libvirt.VIR_CONNECT_CLOSE_REASON_EOF, opaque)
            yield wait_for(lambda: changes and changes[-1][1] == "unreachable")
            self.clock.advance(INITIAL_BACKOFF)
            yield wait_for(lambda: changes[-1][1] == "connected")

        yield lose_and_reconnect()  # its listing is stuck
        yield wait_for(lambda: listings)
        yield lose_and_reconnect()  # its listing answers
        self.assertEqual((yield cache.domain_state("n1", "a")), "running")
        suspended = self.next_event("a", "suspended")
        yield self.hv.suspend("n1", "a")  # not through the cache
        yield suspended
        self.assertEqual((yield cache.domain_state("n1", "a")), "paused")

    @inlineCallbacks
    def test_probe_begins_after_the_read(self):
        """
        A read never rides on a probe that began before it: reads that arrive
        during a probe share the next one.
        """
        cache = self.cached()
        yield self.ready()
        gate = self.recorder.hold(PING)
        self.recorder.reset()
        first = cache.domain_state("n1", "a")
        later = [cache.domain_state("n1", "a"), cache.domain_states("n1")]
        self.assertFalse(first.called)
        gate.set()
        yield first
        yield later[0]
        yield later[1]
        self.assertEqual(self.methods(PING), 2)


    @inlineCallbacks
    def test_many_hosts_one_round(self):
        """
        C{domain_states_of} answers for each host what C{domain_states} does,
        each proved by a probe of one round (one timer, one probe a host);
        a host still unknown is filled, an unknown host is its L{NotFound},
        and a read during the round rides on the next probe, not on it.
        """
        nodes = {name: self.node(domains=[domain_spec("a"), (domain_spec("b"), "shutoff")])
                 for name in ("n1", "n2", "n3")}
        cache = self.cached(nodes)
        yield self.hv.connect()
        yield cache.domain_states("n1")
        yield cache.domain_states("n2")
        yield wait_for(lambda: all(cache.status(n).state == "connected" for n in nodes))
        cache.close()  # n3's states are not followed any more: it is filled again
        cache = self.cache = CachedStates(self.hv)
        self.addCleanup(cache.close)
        yield cache.domain_states("n1")
        yield cache.domain_states("n2")
        self.recorder.reset()
        gate = self.recorder.hold(PING)
        d = cache.domain_states_of(["n1", "n2", "n3", "n9"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)  # the round's, n3's fill
        during = cache.domain_state("n1", "a")
        gate.set()
        answers = yield d
        self.assertEqual({n: answers[n] for n in nodes},
                         dict.fromkeys(nodes, {"a": "running", "b": "shutoff"}))
        answers["n9"].trap(NotFound)
        self.assertEqual((yield during), "running")
        self.assertEqual(self.methods(PING), 3)  # n1 and n2's round, then n1's own
        self.assertEqual(self.methods(BULK), 1)
