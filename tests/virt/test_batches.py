"""
Tests for L{comet.virt._batches.Batches}: the calls of one reactor turn share
a hand-off to the pool; a call that blocks holds the others back by
L{STALL} at most; a cancelled call still ends in its thread.  With a real
thread pool and the real reactor.
"""

from __future__ import annotations

import threading
import time

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from comet.virt._batches import CHUNK_SECONDS, STALL, Batches, PoolStopped


def wait_until(predicate, timeout: float = 10.0) -> Deferred:
    """Fires once C{predicate()} is true, polled on the reactor."""
    end = time.monotonic() + timeout

    @inlineCallbacks
    def poll():
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"{predicate} still false after {timeout} s")
            yield deferLater(reactor, 0.005, lambda: None)

    return poll()


class BatchesTests(TestCase):
    def setUp(self):
        self.pool = ThreadPool(minthreads=0, maxthreads=8, name="test-batches")
        self.pool.start()
        self.addCleanup(lambda: self.pool.joined or self.pool.stop())
        self.batches = Batches(reactor, lambda: self.pool)
        self.threads: dict[str, threading.Thread] = {}

    def call(self, name, answer=None, wait: threading.Event | None = None, seconds: float = 0):
        """A call that notes its thread, waits for C{wait} if given, and answers."""

        def work():
            self.threads[name] = threading.current_thread()
            if wait is not None:
                wait.wait(30)
            if seconds:
                time.sleep(seconds)
            if isinstance(answer, Exception):
                raise answer
            return answer if answer is not None else name

        return work

    @inlineCallbacks
    def test_one_turn_one_handoff(self):
        """The calls of one reactor turn run in one thread, each answered on its own."""
        ds = [self.batches.run(f"h{i}", self.call(f"h{i}")) for i in range(20)]
        failing = self.batches.run("bad", self.call("bad", ValueError("refused")))
        self.assertEqual((yield gatherResults(ds)), [f"h{i}" for i in range(20)])
        yield self.assertFailure(failing, ValueError)
        self.assertEqual(self.batches.handoffs, 1)
        self.assertEqual(len(set(self.threads.values())), 1)
        self.assertIsNot(self.threads["h0"], threading.current_thread())

    @inlineCallbacks
    def test_later_turn_later_handoff(self):
        """
        A call made once a batch is handed off never joins it: it begins
        after it was asked for (a probe's promise).
        """
        gate = threading.Event()
        self.addCleanup(gate.set)
        first = self.batches.run("h", self.call("first", wait=gate))
        yield wait_until(lambda: "first" in self.threads)
        second = self.batches.run("h", self.call("second"))
        yield wait_until(lambda: "second" in self.threads)
        self.assertFalse(first.called)
        self.assertEqual((yield second), "second")
        gate.set()
        self.assertEqual((yield first), "first")
        self.assertEqual(self.batches.handoffs, 2)

    @inlineCallbacks
    def test_blocked_call_holds_back_others_by_stall_only(self):
        """
        A call that blocks (a host that stopped answering) does not keep the
        calls behind it waiting: after L{STALL} they run in another thread.
        """
        gate = threading.Event()
        self.addCleanup(gate.set)
        ended = []
        stuck = self.batches.run("dead", self.call("dead", wait=gate),
                                 ended=lambda: ended.append("dead"))
        others = [self.batches.run(f"h{i}", self.call(f"h{i}"), ended=lambda i=i: ended.append(i))
                  for i in range(3)]
        began = time.monotonic()
        self.assertEqual((yield gatherResults(others)), ["h0", "h1", "h2"])
        self.assertGreaterEqual(time.monotonic() - began, STALL * 0.9)
        self.assertLess(time.monotonic() - began, 5)
        self.assertFalse(stuck.called)
        self.assertEqual(sorted(ended), [0, 1, 2])
        self.assertIsNot(self.threads["h0"], self.threads["dead"])
        gate.set()
        self.assertEqual((yield stuck), "dead")
        self.assertIn("dead", ended)

    @inlineCallbacks
    def test_cancelled_call_ends_in_its_thread(self):
        """
        A caller that gives up (a timeout) gets C{CancelledError} at once;
        C{ended} is called only when the thread is done with the call.
        """
        gate = threading.Event()
        self.addCleanup(gate.set)
        ended = []
        d = self.batches.run("h", self.call("h", wait=gate), ended=lambda: ended.append(1))
        yield wait_until(lambda: "h" in self.threads)
        d.cancel()
        yield self.assertFailure(d, CancelledError)
        self.assertEqual(ended, [])
        gate.set()
        yield wait_until(lambda: ended == [1])

    @inlineCallbacks
    def test_slow_keys_get_chunks_of_their_own(self):
        """
        A key whose last call took longer than L{CHUNK_SECONDS} runs in a
        chunk of its own the next time; quick ones still share one.
        """
        yield gatherResults([
            self.batches.run("slow", self.call("slow", seconds=2 * CHUNK_SECONDS)),
            self.batches.run("quick", self.call("quick")),
        ])
        before = self.batches.handoffs
        yield gatherResults(
            [self.batches.run("slow", self.call("slow2"))]
            + [self.batches.run(f"quick{i}", self.call(f"quick{i}")) for i in range(5)]
        )
        self.assertEqual(self.batches.handoffs - before, 2)
        self.assertIsNot(self.threads["slow2"], self.threads["quick0"])
        self.assertEqual(len({self.threads[f"quick{i}"] for i in range(5)}), 1)

    @inlineCallbacks
    def test_pool_stopped(self):
        """
        A stopped pool drops work without a word; the calls fail instead of
        waiting for ever (each is still ended).
        """
        self.pool.stop()
        ended = []
        ds = [self.batches.run(f"h{i}", self.call(f"h{i}"), ended=lambda: ended.append(1))
              for i in range(3)]
        for d in ds:
            yield self.assertFailure(d, PoolStopped)
        self.assertEqual(self.threads, {})
        self.assertEqual(ended, [1, 1, 1])
