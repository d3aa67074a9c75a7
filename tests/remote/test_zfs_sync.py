"""
Tests for L{comet.remote.zfs_sync} beyond the send contract suite's syncs
(C{tests/contract/send_suite.py}): its names, what it refuses before
anything runs, and a sync repeated after one was cut short.
"""

from __future__ import annotations


from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from comet.errors import InvalidInput, NotFound
from comet.remote.zfs_sync import SYNC_PREFIX, is_sync, sync, sync_name
from tests.contract.send_suite import OWNER
from tests.remote._fakepair import FakePair


class NameTests(TestCase):
    def test_sync_names(self):
        """Sync snapshots have names of their own, each new; nothing else is one."""
        first, second = sync_name(), sync_name()
        self.assertNotEqual(first, second)
        self.assertTrue(first.startswith(SYNC_PREFIX))
        for name in (first, second):
            self.assertTrue(is_sync(name), name)
        for name in ("mine", "comet-sync-", "comet-sync-0123", "comet-sync-0123456789abcdeX",
                     "comet-sync-0123456789abcdef0", "x" + first):
            self.assertFalse(is_sync(name), name)


class SyncTests(FakePair, TestCase):
    @inlineCallbacks
    def test_refused_before_anything_runs(self):
        """A snapshot name that is not a sync's is refused with no command run."""
        name = yield self.written_volume()
        before = len(self.source.calls)
        yield self.assertFailure(sync(self.source, name, self.dest, "tank/comet/v1",
                                      owner=OWNER, snapname="mine"), InvalidInput)
        self.assertEqual(len(self.source.calls), before)
        self.assertEqual(self.dest.calls, [])

    @inlineCallbacks
    def test_missing_volume(self):
        """A source volume that is not there: L{NotFound}, nothing made on either side."""
        yield self.assertFailure(sync(self.source, "tank/comet/none", self.dest,
                                      "tank/comet/v1", owner=OWNER), NotFound)
        self.assertFalse((yield self.other.exists("tank/comet/v1")))

    @inlineCallbacks
    def test_repeated_after_an_interrupted_sync(self):
        """
        A sync snapshot an interrupted sync left on the source (made, never
        sent) is pruned by the next sync, which goes on from the snapshot
        both copies hold.
        """
        name = yield self.written_volume()
        first = yield sync(self.source, name, self.dest, "tank/comet/v1", owner=OWNER)
        left = sync_name()
        yield self.zfs.snapshot([name], left)
        second = yield sync(self.source, name, self.dest, "tank/comet/v1", owner=OWNER)
        self.assertEqual(second.base, first.snapshot)
        self.assertIn(f"{name}@{left}", second.removed)
        snapshots = yield self.zfs.list_snapshots(name)
        self.assertEqual([s.snapname for s in snapshots], [second.snapshot])
