"""
One interface suite for copying a volume between two ZFS machines
(L{comet.remote.zfs_send.send}), stated once and run against two in-memory
L{comet.remote.FakeStorageServer}s (C{tests/remote/test_fakesend.py}) and
against the testbed's two real OpenZFS storage servers
(C{tests/integration/test_remote.py}).

Each test works inside a dataset of its own on each machine,
C{<pool>/comet-test-<token>}; cleanup destroys both (the received volumes
with them), and nothing else is touched.
"""

from __future__ import annotations

import hashlib
import os
import uuid

from twisted.internet.defer import CancelledError, inlineCallbacks, maybeDeferred

from comet.errors import Conflict, InvalidInput, NotFound
from comet.remote.zfs import ZFS
from comet.remote.zfs_send import newest_common, send
from comet.remote.zfs_sync import is_sync, sync

MiB = 1024 * 1024
OWNER = "comet-test"
#: What a stream may add to the bytes it carries: ZFS's record headers (312
#: bytes per 16 KiB block, 1.9 %) and its begin, object and end records.
OVERHEAD = 1.05
SLACK = 64 * 1024


class SendContractMixin:
    """
    Mixin for a L{twisted.trial.unittest.TestCase}.  A subclass defines
    L{makeRunners} (the source's and the destination's L{IRunner}, or a
    L{Deferred} of them) and may set L{pools}, the zpools in which the test
    datasets are made.
    """

    pools = ("tank", "tank")

    def makeRunners(self):
        raise NotImplementedError

    def releaseRunners(self):
        """This test is done with both runners: stop them."""
        return self.source.stop().addCallback(lambda _: self.dest.stop())

    @inlineCallbacks
    def setUp(self):
        self.source, self.dest = yield maybeDeferred(self.makeRunners)
        self.token = uuid.uuid4().hex[:8]
        self.here = f"{self.pools[0]}/comet-test-{self.token}"
        self.there = f"{self.pools[1]}/comet-test-{self.token}"
        self.zfs = ZFS(self.source, owner=OWNER)
        self.other = ZFS(self.dest, owner=OWNER)
        self.addCleanup(self._clean)
        yield self.zfs.create_dataset(self.here)
        yield self.other.create_dataset(self.there)

    @inlineCallbacks
    def _clean(self):
        for runner, top in ((self.source, self.here), (self.dest, self.there)):
            yield runner.run(["zfs", "destroy", "-r", top]).addErrback(lambda _: None)
        yield maybeDeferred(self.releaseRunners)

    # Helpers

    @inlineCallbacks
    def volume(self, data: bytes, size: int = 8 * MiB):
        """A volume on the source, C{data} written from its first byte."""
        volume = yield self.zfs.create_volume(self.here, "v1", size)
        yield self.write_at(self.source, self.zfs, volume.name, 0, data)
        return volume.name

    @inlineCallbacks
    def write_at(self, runner, zfs, volume: str, offset: int, data: bytes):
        """Write C{data} at C{offset} (whole 16 KiB blocks) through the zvol's device, as a guest would."""
        device = yield zfs.device_of(volume)
        yield runner.run(["dd", f"of={device}", "bs=16384", f"seek={offset // 16384}",
                          "iflag=fullblock", "conv=fsync"], stdin=data)

    @inlineCallbacks
    def digest(self, zfs, volume: str, length: int):
        data = yield zfs.read_head(volume, length)
        return hashlib.sha256(data).hexdigest()

    @inlineCallbacks
    def snapshots(self, zfs, volume: str):
        found = yield zfs.list_snapshots(volume)
        return [s.snapname for s in found]

    @inlineCallbacks
    def copied(self, data: bytes):
        """A volume holding C{data}, snapshot C{s1}, copied whole to the destination."""
        name = yield self.volume(data)
        yield self.zfs.snapshot([name], "s1")
        target = f"{self.there}/v1"
        yield send(self.source, f"{name}@s1", self.dest, target, owner=OWNER)
        return name, target

    # Tests

    @inlineCallbacks
    def test_whole_then_incremental(self):
        """
        A whole copy moves the written blocks, not the holes, and reads back
        the same; after a guest changed 512 KiB in four places, an
        incremental copy moves about those bytes, and the destination then
        reads back as the source does, both snapshots there and tagged.
        """
        data = os.urandom(4 * MiB)
        name = yield self.volume(data)
        yield self.zfs.snapshot([name], "s1")
        target = f"{self.there}/v1"
        seen = []
        moved = yield send(self.source, f"{name}@s1", self.dest, target, owner=OWNER,
                           progress=seen.append)
        self.assertGreaterEqual(moved, len(data))
        self.assertLessEqual(moved, len(data) * OVERHEAD + SLACK)
        self.assertEqual(seen[-1], moved)
        self.assertEqual(seen, sorted(seen))
        copy = yield self.other.get_volume(target)
        self.assertEqual(copy.size, 8 * MiB)
        self.assertEqual((yield self.other.read_head(target, len(data))), data)

        changed = 0
        for offset in (16384, 2 * MiB, 5 * MiB, 7 * MiB):
            piece = os.urandom(128 * 1024)
            yield self.write_at(self.source, self.zfs, name, offset, piece)
            changed += len(piece)
        yield self.zfs.snapshot([name], "s2")
        moved = yield send(self.source, f"{name}@s2", self.dest, target,
                           base=f"{name}@s1", owner=OWNER)
        self.assertGreaterEqual(moved, changed)
        self.assertLessEqual(moved, changed * OVERHEAD + SLACK)
        self.assertEqual((yield self.digest(self.other, target, 8 * MiB)),
                         (yield self.digest(self.zfs, name, 8 * MiB)))
        self.assertEqual((yield self.snapshots(self.other, target)), ["s1", "s2"])
        # Comet's own, so that it may destroy it all later.
        yield self.other.check_owned(target, recursive=True)
        guids = []
        for zfs, volume in ((self.zfs, name), (self.other, target)):
            values = yield zfs.get_properties(f"{volume}@s2", ["guid"])
            guids.append(values["guid"])
        self.assertEqual(guids[0], guids[1])

    @inlineCallbacks
    def test_newest_common(self):
        """
        The base of the next increment is the newest snapshot both hold (by
        guid): none before a whole copy, the last one sent after each copy,
        an older one once the newest is destroyed on the destination.
        """
        name = yield self.volume(os.urandom(MiB))
        target = f"{self.there}/v1"
        yield self.zfs.snapshot([name], "s1")
        self.assertIsNone((yield newest_common(self.source, name, self.dest, target)))
        yield send(self.source, f"{name}@s1", self.dest, target, owner=OWNER)
        yield self.zfs.snapshot([name], "s2")
        self.assertEqual((yield newest_common(self.source, name, self.dest, target)),
                         f"{name}@s1")
        yield send(self.source, f"{name}@s2", self.dest, target, base=f"{name}@s1",
                   owner=OWNER)
        self.assertEqual((yield newest_common(self.source, name, self.dest, target)),
                         f"{name}@s2")
        yield self.other.destroy(f"{target}@s2")
        self.assertEqual((yield newest_common(self.source, name, self.dest, target)),
                         f"{name}@s1")
        yield self.assertFailure(
            newest_common(self.source, f"{self.here}/none", self.dest, target), NotFound)

    @inlineCallbacks
    def test_whole_onto_existing(self):
        """A whole copy onto a volume that exists fails, and the volume stays as it was."""
        data = os.urandom(MiB)
        name, target = yield self.copied(data)
        with self.assertRaises(Conflict) as caught:
            yield send(self.source, f"{name}@s1", self.dest, target, owner=OWNER)
        self.assertIn("exists", caught.exception.reason)
        self.assertEqual((yield self.other.read_head(target, len(data))), data)
        self.assertEqual((yield self.snapshots(self.other, target)), ["s1"])

    @inlineCallbacks
    def test_destination_diverged(self):
        """
        An increment onto a destination written since its newest snapshot
        fails, and leaves the destination's own writes and snapshots alone.
        """
        name, target = yield self.copied(os.urandom(MiB))
        theirs = os.urandom(64 * 1024)
        yield self.write_at(self.dest, self.other, target, 0, theirs)
        yield self.write_at(self.source, self.zfs, name, 0, os.urandom(64 * 1024))
        yield self.zfs.snapshot([name], "s2")
        with self.assertRaises(Conflict) as caught:
            yield send(self.source, f"{name}@s2", self.dest, target, base=f"{name}@s1",
                       owner=OWNER)
        self.assertIn("modified", caught.exception.reason)
        self.assertEqual((yield self.other.read_head(target, len(theirs))), theirs)
        self.assertEqual((yield self.snapshots(self.other, target)), ["s1"])

    @inlineCallbacks
    def test_wrong_base(self):
        """
        An increment from a base the destination does not end at fails, and
        changes nothing there; one from a base the source lacks is not found.
        """
        data = os.urandom(MiB)
        name, target = yield self.copied(data)
        yield self.write_at(self.source, self.zfs, name, 0, os.urandom(64 * 1024))
        yield self.zfs.snapshot([name], "s2")
        yield self.zfs.snapshot([name], "s3")
        with self.assertRaises(Conflict) as caught:
            yield send(self.source, f"{name}@s3", self.dest, target, base=f"{name}@s2",
                       owner=OWNER)
        self.assertIn("does not match", caught.exception.reason)
        yield self.assertFailure(
            send(self.source, f"{name}@s3", self.dest, target, base=f"{name}@nope",
                 owner=OWNER), NotFound)
        self.assertEqual((yield self.other.read_head(target, len(data))), data)
        self.assertEqual((yield self.snapshots(self.other, target)), ["s1"])

    @inlineCallbacks
    def test_missing(self):
        """A snapshot that does not exist, or a destination dataset that does not: not found."""
        name = yield self.volume(os.urandom(64 * 1024))
        yield self.zfs.snapshot([name], "s1")
        yield self.assertFailure(
            send(self.source, f"{name}@nope", self.dest, f"{self.there}/v1", owner=OWNER),
            NotFound)
        yield self.assertFailure(
            send(self.source, f"{name}@s1", self.dest, f"{self.there}/nope/v1", owner=OWNER),
            NotFound)
        # An increment into a volume that is not there.
        yield self.assertFailure(
            send(self.source, f"{name}@s1", self.dest, f"{self.there}/v1", base=f"{name}@s0",
                 owner=OWNER), NotFound)
        self.assertFalse((yield self.other.exists(f"{self.there}/v1")))

    @inlineCallbacks
    def test_bad_names(self):
        """Names outside Comet's rule, or a base on another volume, are refused before anything runs."""
        name = f"{self.here}/v1"
        for args, kwargs in [
            ((f"{name}@s1;id", f"{self.there}/v1"), {}),
            ((f"{name}", f"{self.there}/v1"), {}),
            ((f"{name}@s1", f"{self.there}/$(id)"), {}),
            ((f"{name}@s2", f"{self.there}/v1"), {"base": f"{self.here}/v2@s1"}),
            ((f"{name}@s2", f"{self.there}/v1"), {"base": f"{name}@s2"}),
            ((f"{name}@s2", f"{self.there}/v1"), {"base": "-R"}),
        ]:
            source, target = args
            yield self.assertFailure(send(self.source, source, self.dest, target, owner=OWNER,
                                          **kwargs), InvalidInput)

    @inlineCallbacks
    def test_cancel(self):
        """
        A copy cancelled once its first bytes moved fails with
        L{CancelledError} only once the receiver has given up: the
        destination volume is not there.
        """
        name = yield self.volume(os.urandom(4 * MiB))
        yield self.zfs.snapshot([name], "s1")
        target = f"{self.there}/v1"
        copying = []

        def progress(moved):
            if copying and not copying[0].called:
                copying[0].cancel()

        copying.append(send(self.source, f"{name}@s1", self.dest, target, owner=OWNER,
                            progress=progress))
        yield self.assertFailure(copying[0], CancelledError)
        self.assertFalse((yield self.other.exists(target)))
        # The destination takes a copy afterwards, as if nothing had happened.
        yield send(self.source, f"{name}@s1", self.dest, target, owner=OWNER)
        self.assertEqual((yield self.snapshots(self.other, target)), ["s1"])

    # A sync (comet.remote.zfs_sync): snapshot, whole or incremental, prune

    @inlineCallbacks
    def test_sync_there_and_back(self):
        """
        A sync copies the volume whole the first time; back again after
        the copy changed, it moves about the changed bytes; each side then
        keeps one sync snapshot (the newest) and the VM's own snapshots.
        """
        data = os.urandom(MiB)
        name = yield self.volume(data)
        yield self.zfs.snapshot([name], "mine")
        target = f"{self.there}/v1"
        there = yield sync(self.source, name, self.dest, target, owner=OWNER)
        self.assertIsNone(there.base)
        self.assertTrue(is_sync(there.snapshot))
        self.assertGreaterEqual(there.moved, len(data))
        self.assertEqual((yield self.other.read_head(target, len(data))), data)

        piece = os.urandom(128 * 1024)
        yield self.write_at(self.dest, self.other, target, 2 * MiB, piece)
        back = yield sync(self.dest, target, self.source, name, owner=OWNER)
        self.assertEqual(back.base, there.snapshot)
        self.assertGreaterEqual(back.moved, len(piece))
        self.assertLessEqual(back.moved, len(piece) * OVERHEAD + SLACK)
        self.assertEqual(sorted(back.removed),
                         sorted([f"{name}@{there.snapshot}", f"{target}@{there.snapshot}"]))
        self.assertEqual((yield self.digest(self.zfs, name, 8 * MiB)),
                         (yield self.digest(self.other, target, 8 * MiB)))
        self.assertEqual((yield self.snapshots(self.zfs, name)), ["mine", back.snapshot])
        self.assertEqual((yield self.snapshots(self.other, target)), [back.snapshot])

    @inlineCallbacks
    def test_sync_refuses_diverged_copies(self):
        """
        When both copies changed since their common snapshot, a sync is
        refused (L{Conflict}) and the destination keeps its own bytes: which
        copy wins is the operator's call, never a silent overwrite.
        """
        name = yield self.volume(os.urandom(MiB))
        target = f"{self.there}/v1"
        yield sync(self.source, name, self.dest, target, owner=OWNER)
        theirs = os.urandom(16384)
        yield self.write_at(self.dest, self.other, target, 0, theirs)
        yield self.write_at(self.source, self.zfs, name, 0, os.urandom(16384))
        yield self.assertFailure(sync(self.source, name, self.dest, target, owner=OWNER),
                                 Conflict)
        self.assertEqual((yield self.other.read_head(target, len(theirs))), theirs)
