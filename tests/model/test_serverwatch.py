"""
Tests for L{comet.model.serverwatch}: a storage server that answers again,
or from a new boot, gets its lost exports made again at once, and again at
each check until none is missing.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet.model.serverwatch import REACHABLE, UNREACHABLE, ServerWatch
from comet.remote import FakeRunner, FakeStorageServer


class ServerWatchTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.server = FakeStorageServer()
        self.runner = FakeRunner(self.server, host="s1")
        self.restored: list[str] = []
        #: How many exports each restore says are still missing, in turn.
        self.left: list[int] = []
        self.watch = ServerWatch({"s1": self.runner}, self.clock, self.restore)
        self.watch.start(10)
        self.addCleanup(self.watch.stop)

    async def restore(self, server):
        self.restored.append(server)
        return [], self.left.pop(0) if self.left else 0

    def test_first_check_restores_nothing(self):
        """The first check (at start) records the server; the reconciler's start pass did the rest."""
        self.assertEqual(self.watch.states, {"s1": REACHABLE})
        self.assertEqual(self.watch.boots, {"s1": self.server.boot_id})
        self.clock.advance(10)
        self.assertEqual(self.restored, [])

    def test_back_after_not_answering(self):
        """A server that answers again after it did not: its exports are restored once."""
        self.runner.unavailable = "No route to host"
        self.clock.advance(10)
        self.assertEqual(self.watch.states, {"s1": UNREACHABLE})
        self.assertEqual(self.restored, [])
        self.runner.unavailable = None
        self.clock.advance(10)
        self.assertEqual(self.restored, ["s1"])
        self.clock.advance(10)
        self.assertEqual(self.restored, ["s1"])

    def test_quick_reboot(self):
        """A reboot between two checks is seen by its new boot id."""
        self.server.reboot()
        self.clock.advance(10)
        self.assertEqual(self.restored, ["s1"])
        self.assertEqual(self.watch.boots, {"s1": self.server.boot_id})

    def test_until_none_missing(self):
        """A restore that left exports missing (no pool imported yet) is tried at each check."""
        self.left = [2, 1]
        self.server.reboot()
        for _ in range(4):
            self.clock.advance(10)
        self.assertEqual(self.restored, ["s1", "s1", "s1"])

    def test_no_checks(self):
        """An interval of 0 checks nothing."""
        self.watch.stop()
        watch = ServerWatch({"s1": self.runner}, self.clock, self.restore)
        calls = len(self.runner.calls)
        watch.start(0)
        self.clock.advance(100)
        self.assertEqual(len(self.runner.calls), calls)
