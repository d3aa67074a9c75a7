"""
One interface suite for storage servers: what L{comet.remote.zfs.ZFS} and
L{comet.remote.tgt.TGT} do through an L{comet.remote.IRunner}, stated once
and run against the in-memory L{comet.remote.FakeStorageServer}
(C{tests/remote/test_fakeserver.py}) and against the testbed's real OpenZFS
and tgt servers through L{comet.remote.SSHRunner}
(C{tests/integration/test_remote.py}), so the fake cannot drift from the
real thing.

Each test works inside a dataset of its own, C{<pool>/comet-test-<token>},
and under target names holding the same token; cleanup removes both, and
nothing else on the server is touched.
"""

from __future__ import annotations

import datetime
import json
import os
import uuid

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred

from comet.errors import Conflict, InvalidInput, NotFound
from comet.remote import machine, qcow2
from comet.remote import tgt as tgtmod
from comet.remote.tgt import TGT
from comet.remote.zfs import OWNER_PROPERTY, ZFS
from tests._qcow2 import qcow2_of, qcow2_with

MiB = 1024 * 1024
OWNER = "comet-test"


class RemoteContractMixin:
    """
    Mixin for a L{twisted.trial.unittest.TestCase}.  A subclass defines
    L{makeRunner} (an L{IRunner}, or a L{Deferred} of one) and may set
    L{pool}, the zpool in which the test dataset is made.
    """

    pool = "tank"

    def makeRunner(self):
        raise NotImplementedError

    #: The address this suite's iSCSI logins (L{login}) come from.
    initiator_address = "10.200.0.1"

    def login(self, iqn: str, chap: tuple[str, str]):
        """
        Log in to LUN 1 of target C{iqn} from L{initiator_address} with CHAP
        account C{chap}: a L{Deferred} (or value) of whether the server let
        the initiator in.
        """
        raise NotImplementedError

    @inlineCallbacks
    def setUp(self):
        self.runner = yield maybeDeferred(self.makeRunner)
        self.token = uuid.uuid4().hex[:8]
        self.top = f"{self.pool}/comet-test-{self.token}"
        self.zfs = ZFS(self.runner, owner=OWNER)
        self.tgt = TGT(self.runner)
        self.addCleanup(self._clean)
        yield self.zfs.create_dataset(self.top)

    @inlineCallbacks
    def _clean(self):
        targets = yield self.tgt.targets()
        for target in targets:
            if self.token in target.iqn:
                yield self.tgt.unexport(target.iqn)
        # -R: clones inside the test dataset go with it.
        yield self.runner.run(["zfs", "destroy", "-R", self.top]).addErrback(
            lambda f: f.trap(Exception) and None
        )
        yield maybeDeferred(self.releaseRunner)

    def releaseRunner(self):
        """
        This test is done with L{runner}: stop it.  A subclass whose tests
        share one runner (and its connection) stops it once, after the last.
        """
        return self.runner.stop()

    def iqn(self, volume: str) -> str:
        return tgtmod.iqn("org.comet.test", f"t{self.token}", volume, datetime.date(2026, 11, 1))

    def volume(self, name: str, size: int = 4 * MiB, **kw):
        return self.zfs.create_volume(self.top, name, size, **kw)

    # Volumes

    @inlineCallbacks
    def test_create_volume(self):
        """A new volume has the size asked for, rounded up to whole blocks, and Comet's tag."""
        volume = yield self.volume("v1", 4 * MiB + 1)
        self.assertEqual(volume.name, f"{self.top}/v1")
        self.assertEqual(volume.size, 4 * MiB + 16384)
        self.assertEqual(volume.volblocksize, 16384)
        self.assertEqual(volume.owner, OWNER)
        self.assertIsNone(volume.origin)
        self.assertGreaterEqual(volume.used, volume.size)  # thick: reserved
        listed = yield self.zfs.list_volumes(self.top)
        self.assertEqual([v.name for v in listed], [volume.name])

    @inlineCallbacks
    def test_sparse_volume(self):
        """A sparse volume reserves nothing."""
        volume = yield self.volume("sparse", 64 * MiB, sparse=True)
        self.assertLess(volume.used, MiB)

    @inlineCallbacks
    def test_create_properties(self):
        """User properties given at creation are set on the volume."""
        volume = yield self.volume("v1", properties={"comet:vm": "web-1"})
        values = yield self.zfs.get_properties(volume.name, ["comet:vm", OWNER_PROPERTY])
        self.assertEqual(values, {"comet:vm": "web-1", OWNER_PROPERTY: OWNER})

    @inlineCallbacks
    def test_create_existing(self):
        """Creating a volume whose name is taken is a conflict."""
        yield self.volume("v1")
        with self.assertRaises(Conflict) as caught:
            yield self.volume("v1")
        self.assertIn("already exists", caught.exception.reason)

    @inlineCallbacks
    def test_create_no_dataset(self):
        """Creating a volume in a dataset that does not exist: not found."""
        yield self.assertFailure(self.zfs.create_volume(f"{self.top}/nope", "v", MiB), NotFound)

    @inlineCallbacks
    def test_create_no_space(self):
        """A thick volume larger than the pool's free space is a conflict (out of space)."""
        with self.assertRaises(Conflict) as caught:
            yield self.volume("huge", 1024 ** 4)
        self.assertIn("out of space", caught.exception.reason)

    @inlineCallbacks
    def test_create_invalid_name(self):
        """A volume name outside the name rule is refused, and nothing is made."""
        yield self.assertFailure(self.zfs.create_volume(self.top, "a;b", MiB), InvalidInput)
        yield self.assertFailure(self.zfs.create_volume(self.top, "-V", MiB), InvalidInput)
        listed = yield self.zfs.list_volumes(self.top)
        self.assertEqual(listed, [])

    @inlineCallbacks
    def test_get_missing(self):
        """Asking for a volume that does not exist: not found."""
        yield self.assertFailure(self.zfs.get_volume(f"{self.top}/nope"), NotFound)
        exists = yield self.zfs.exists(f"{self.top}/nope")
        self.assertFalse(exists)

    @inlineCallbacks
    def test_destroy(self):
        """A destroyed volume is gone."""
        volume = yield self.volume("v1")
        yield self.zfs.destroy(volume.name)
        exists = yield self.zfs.exists(volume.name)
        self.assertFalse(exists)
        yield self.assertFailure(self.zfs.destroy(volume.name), NotFound)

    @inlineCallbacks
    def test_destroy_with_snapshots(self):
        """A volume with snapshots is destroyed only recursively."""
        volume = yield self.volume("v1")
        yield self.zfs.snapshot([volume.name], "s1")
        with self.assertRaises(Conflict) as caught:
            yield self.zfs.destroy(volume.name)
        self.assertIn("has children", caught.exception.reason)
        yield self.zfs.destroy(volume.name, recursive=True)
        exists = yield self.zfs.exists(volume.name)
        self.assertFalse(exists)

    @inlineCallbacks
    def test_destroy_recursive_checks_snapshots(self):
        """
        A recursive destroy checks the tag of every snapshot too: one made
        by hand (untagged) keeps the volume and all its snapshots (issue 14's
        forced volume DELETE relies on it).
        """
        volume = yield self.volume("v1")
        yield self.zfs.snapshot([volume.name], "tagged")
        yield self.runner.run(["zfs", "snapshot", f"{volume.name}@by-hand"])
        with self.assertRaises(Conflict) as caught:
            yield self.zfs.destroy(volume.name, recursive=True)
        self.assertIn(f"{volume.name}@by-hand", caught.exception.reason)
        snapshots = yield self.zfs.list_snapshots(volume.name)
        self.assertEqual([s.snapname for s in snapshots], ["tagged", "by-hand"])

    @inlineCallbacks
    def test_destroy_recursive_dependent_clones(self):
        """
        A recursive destroy (not C{-R}) refuses a volume whose snapshot has a
        clone, and destroys nothing; once the clone is gone it goes.
        """
        volume = yield self.volume("v1")
        yield self.zfs.snapshot([volume.name], "s1")
        clone = yield self.zfs.clone(f"{volume.name}@s1", self.top, "v1-old-00ff")
        with self.assertRaises(Conflict) as caught:
            yield self.zfs.destroy(volume.name, recursive=True)
        self.assertIn("dependent clones", caught.exception.reason)
        self.assertTrue((yield self.zfs.exists(f"{volume.name}@s1")))
        yield self.zfs.destroy(clone.name, recursive=True)
        yield self.zfs.destroy(volume.name, recursive=True)
        self.assertFalse((yield self.zfs.exists(volume.name)))

    @inlineCallbacks
    def test_promote_out_of_a_chain(self):
        """
        A clone of a clone promoted twice no longer depends on either: its
        origin becomes its origin's origin, then none (what taking a VM's
        snapshots off a reverted volume does before destroying the branches).
        """
        first = yield self.volume("a")
        yield self.zfs.snapshot([first.name], "s1")
        second = yield self.zfs.clone(f"{first.name}@s1", self.top, "b")
        yield self.zfs.snapshot([second.name], "s2")
        third = yield self.zfs.clone(f"{second.name}@s2", self.top, "c")
        yield self.zfs.promote(third.name)
        self.assertEqual((yield self.zfs.get_volume(third.name)).origin, f"{first.name}@s1")
        yield self.zfs.promote(third.name)
        self.assertIsNone((yield self.zfs.get_volume(third.name)).origin)
        names = [s.snapname for s in (yield self.zfs.list_snapshots(third.name))]
        self.assertEqual(names, ["s1", "s2"])
        for name in (second.name, first.name):
            yield self.zfs.destroy(name, recursive=True)
        yield self.zfs.destroy(third.name, recursive=True)

    @inlineCallbacks
    def test_foreign_volumes_left_alone(self):
        """
        What carries another owner's tag, or only inherits Comet's, is never
        destroyed, rolled back or renamed.
        """
        other = ZFS(self.runner, owner="someone-else")
        theirs = yield other.create_volume(self.top, "theirs", MiB)
        yield self.runner.run(["zfs", "create", "-V", str(MiB), f"{self.top}/untagged"])
        inherited = yield self.zfs.get_properties(f"{self.top}/untagged", [OWNER_PROPERTY])
        self.assertEqual(inherited, {OWNER_PROPERTY: OWNER})  # inherited, not local
        for name in (theirs.name, f"{self.top}/untagged"):
            yield self.assertFailure(self.zfs.destroy(name), Conflict)
            yield self.assertFailure(self.zfs.rename(name, name + "-x"), Conflict)
            yield self.assertFailure(self.zfs.set_properties(name, {"comet:x": "1"}), Conflict)
        listed = yield self.zfs.list_volumes(self.top)
        self.assertEqual(sorted(v.short_name for v in listed), ["theirs", "untagged"])

    @inlineCallbacks
    def test_rename(self):
        """A renamed volume keeps its data and its snapshots under the new name."""
        volume = yield self.volume("old")
        yield self.zfs.snapshot([volume.name], "s1")
        yield self.zfs.rename(volume.name, f"{self.top}/new")
        renamed = yield self.zfs.get_volume(f"{self.top}/new")
        self.assertEqual(renamed.size, volume.size)
        snapshots = yield self.zfs.list_snapshots(renamed.name)
        self.assertEqual([s.name for s in snapshots], [f"{self.top}/new@s1"])
        device = yield self.zfs.device_of(renamed.name)
        self.assertTrue(device.startswith("/dev/zd"))

    @inlineCallbacks
    def test_rename_taken(self):
        """Renaming onto an existing name is a conflict."""
        a = yield self.volume("a")
        b = yield self.volume("b")
        yield self.assertFailure(self.zfs.rename(a.name, b.name), Conflict)

    # Devices and data

    @inlineCallbacks
    def test_device_of(self):
        """Each volume resolves to its own /dev/zdN, consistent with the full map."""
        a = yield self.volume("a")
        b = yield self.volume("b")
        da = yield self.zfs.device_of(a.name)
        db = yield self.zfs.device_of(b.name)
        self.assertRegex(da, r"^/dev/zd[0-9]+$")
        self.assertNotEqual(da, db)
        devices = yield self.zfs.devices()
        self.assertEqual((devices[a.name], devices[b.name]), (da, db))

    @inlineCallbacks
    def test_device_of_missing(self):
        """A volume that does not exist has no device: not found, at once."""
        yield self.assertFailure(self.zfs.device_of(f"{self.top}/nope"), NotFound)

    @inlineCallbacks
    def write(self, volume: str, data: bytes, compression: str | None = None):
        stream = yield self.zfs.open_writer(volume, compression)
        for i in range(0, len(data), 65536):
            yield stream.write(data[i:i + 65536])
        yield stream.finish()

    @inlineCallbacks
    def test_write_read(self):
        """Data streamed into a volume reads back."""
        volume = yield self.volume("v1")
        data = os.urandom(MiB + 12345)
        yield self.write(volume.name, data)
        back = yield self.zfs.read_head(volume.name, len(data))
        self.assertEqual(back, data)

    @inlineCallbacks
    def test_resize(self):
        """
        A volume grows, its data kept and (thick) its reservation following;
        growing past the pool's free space is a conflict that changes nothing.
        """
        volume = yield self.volume("v1")
        data = os.urandom(MiB)
        yield self.write(volume.name, data)
        grown = yield self.zfs.resize(volume.name, 8 * MiB)
        self.assertEqual(grown.size, 8 * MiB)
        self.assertGreaterEqual(grown.used, 8 * MiB)
        back = yield self.zfs.read_head(volume.name, len(data))
        self.assertEqual(back, data)
        with self.assertRaises(Conflict) as caught:
            yield self.zfs.resize(volume.name, 1024 ** 4)
        self.assertIn("greater than available space", caught.exception.reason)
        self.assertEqual((yield self.zfs.get_volume(volume.name)).size, 8 * MiB)

    @inlineCallbacks
    def test_read_volume(self):
        """A whole volume streams out into a consumer: its data, then zeros to its size."""
        volume = yield self.volume("v1", 2 * MiB)
        data = os.urandom(MiB + 100)
        yield self.write(volume.name, data)

        class Collector:
            def __init__(self):
                self.chunks, self.producers = [], 0

            def registerProducer(self, producer, streaming):
                self.producers += 1

            def unregisterProducer(self):
                pass

            def write(self, chunk):
                self.chunks.append(chunk)

        collector = Collector()
        yield self.zfs.read_volume(volume.name, collector)
        whole = b"".join(collector.chunks)
        self.assertEqual(len(whole), volume.size)
        self.assertEqual(whole[: len(data)], data)
        self.assertEqual(whole[len(data):], bytes(volume.size - len(data)))
        self.assertEqual(collector.producers, 1)

    @inlineCallbacks
    def test_write_compressed(self):
        """A gzip or xz stream is decompressed on the server on its way into the volume."""
        import gzip
        import lzma

        for compression, compress in (("gzip", gzip.compress), ("xz", lzma.compress)):
            volume = yield self.volume(f"c{compression}")
            data = os.urandom(300000) + bytes(MiB)
            yield self.write(volume.name, compress(data), compression)
            back = yield self.zfs.read_head(volume.name, len(data))
            self.assertEqual(back, data)

    @inlineCallbacks
    def test_write_compressed_corrupt_or_too_large(self):
        """A stream that is not gzip fails; so does one that decompresses past the end."""
        import gzip

        volume = yield self.volume("small", MiB)
        yield self.assertFailure(self.write(volume.name, b"not gzip at all" * 100, "gzip"),
                                 Exception)
        yield self.assertFailure(
            self.write(volume.name, gzip.compress(bytes(2 * MiB)), "gzip"), Exception)

    @inlineCallbacks
    def test_has_command(self):
        """The server says which commands it has (decompressors, converters)."""
        self.assertTrue((yield self.zfs.has_command("gzip")))
        self.assertTrue((yield self.zfs.has_command("qemu-img")))
        self.assertFalse((yield self.zfs.has_command("comet-no-such-command")))

    @inlineCallbacks
    def test_qcow2_convert(self):
        """
        A qcow2 image (plain or with compressed clusters) staged in a volume
        has its virtual size read and converts onto another volume as raw.
        """
        # Data, a zero run (unallocated in the image), a tail not a whole cluster.
        raw = os.urandom(300000) + bytes(MiB) + os.urandom(70000)
        for compressed in (False, True):
            image = yield Deferred.fromCoroutine(qcow2_of(raw, compressed))
            staging = yield self.volume(f"stage{int(compressed)}", len(image), sparse=True)
            yield self.write(staging.name, image)
            size = yield self.zfs.image_size(staging.name)
            self.assertEqual(size, -(-len(raw) // 512) * 512)
            target = yield self.volume(f"conv{int(compressed)}", 2 * MiB, sparse=True)
            yield self.zfs.convert_image(staging.name, target.name)
            back = yield self.zfs.read_head(target.name, target.size)
            self.assertEqual(back, raw + bytes(target.size - len(raw)))

    @inlineCallbacks
    def test_qcow2_refused(self):
        """
        A qcow2 image naming a backing file or an external data file, and
        bytes that are no qcow2, are refused before qemu-img opens them;
        the target is left as it was.
        """
        target = yield self.volume("target", MiB, sparse=True)
        cases = [
            ((yield Deferred.fromCoroutine(qcow2_with(MiB, backing="/etc/hostname"))),
             "backing file"),
            ((yield Deferred.fromCoroutine(qcow2_with(MiB, data_file=True))),
             "external data file"),
            (os.urandom(4096), "not in qcow2 format"),
        ]
        for index, (image, says) in enumerate(cases):
            staging = yield self.volume(f"bad{index}", len(image), sparse=True)
            yield self.write(staging.name, image)
            for call in (lambda: self.zfs.image_size(staging.name),
                         lambda: self.zfs.convert_image(staging.name, target.name)):
                failure = yield self.assertFailure(call(), InvalidInput)
                self.assertIn(says, failure.reason)
        self.assertEqual((yield self.zfs.read_head(target.name, MiB)), bytes(MiB))

    @inlineCallbacks
    def test_qemu_img_info_names_a_backing_file(self):
        """
        What qemu-img itself says of a qcow2 naming a backing file (without
        opening it): the backing file, which L{qcow2.parse_info} refuses too.
        """
        image = yield Deferred.fromCoroutine(
            qcow2_with(3 * MiB, backing="/nonexistent/comet-backing.img"))
        staging = yield self.volume("backed", len(image), sparse=True)
        yield self.write(staging.name, image)
        device = yield self.zfs.device_of(staging.name)
        out = yield self.runner.run(qcow2.info_argv(device))
        info = json.loads(out)
        self.assertEqual((info["format"], info["virtual-size"]), ("qcow2", 3 * MiB))
        self.assertEqual(info["backing-filename"], "/nonexistent/comet-backing.img")
        with self.assertRaises(InvalidInput) as caught:
            qcow2.parse_info(out)
        self.assertIn("backing file", caught.exception.reason)

    @inlineCallbacks
    def test_write_too_much(self):
        """Streaming more than a volume holds fails."""
        volume = yield self.volume("small", MiB)
        yield self.assertFailure(self.write(volume.name, b"z" * (MiB + 65536)), Exception)

    @inlineCallbacks
    def test_snapshot_rollback(self):
        """Rolling back to a snapshot restores the data it saw."""
        volume = yield self.volume("v1")
        before = os.urandom(65536)
        yield self.write(volume.name, before)
        yield self.zfs.sync()
        yield self.zfs.snapshot([volume.name], "s1")
        yield self.write(volume.name, os.urandom(65536))
        yield self.zfs.rollback(f"{volume.name}@s1")
        back = yield self.zfs.read_head(volume.name, 65536)
        self.assertEqual(back, before)

    @inlineCallbacks
    def test_rollback_newer(self):
        """Rolling back past a later snapshot needs destroy_newer, which destroys it."""
        volume = yield self.volume("v1")
        yield self.zfs.snapshot([volume.name], "s1")
        yield self.zfs.snapshot([volume.name], "s2")
        with self.assertRaises(Conflict) as caught:
            yield self.zfs.rollback(f"{volume.name}@s1")
        self.assertIn("more recent snapshots", caught.exception.reason)
        yield self.zfs.rollback(f"{volume.name}@s1", destroy_newer=True)
        snapshots = yield self.zfs.list_snapshots(volume.name)
        self.assertEqual([s.snapname for s in snapshots], ["s1"])

    @inlineCallbacks
    def test_snapshots_atomic(self):
        """Several volumes are snapshotted in one step; a taken name creates none."""
        a = yield self.volume("a")
        b = yield self.volume("b")
        names = yield self.zfs.snapshot([a.name, b.name], "s1")
        self.assertEqual(names, [f"{a.name}@s1", f"{b.name}@s1"])
        sa = yield self.zfs.list_snapshots(a.name)
        sb = yield self.zfs.list_snapshots(b.name)
        self.assertEqual(sa[0].createtxg, sb[0].createtxg)
        self.assertEqual(sa[0].owner, OWNER)
        yield self.zfs.snapshot([a.name], "s2")
        yield self.assertFailure(self.zfs.snapshot([a.name, b.name], "s2"), Conflict)
        sb = yield self.zfs.list_snapshots(b.name)
        self.assertEqual([s.snapname for s in sb], ["s1"])

    @inlineCallbacks
    def test_snapshot_missing(self):
        """Snapshotting a volume that does not exist: not found."""
        yield self.assertFailure(self.zfs.snapshot([f"{self.top}/nope"], "s1"), NotFound)

    @inlineCallbacks
    def test_snapshot_order(self):
        """Snapshots are listed oldest first, even within one second."""
        volume = yield self.volume("v1")
        for name in ("z", "a", "m"):
            yield self.zfs.snapshot([volume.name], name)
        snapshots = yield self.zfs.list_snapshots(volume.name)
        self.assertEqual([s.snapname for s in snapshots], ["z", "a", "m"])

    @inlineCallbacks
    def test_clone_promote(self):
        """
        A clone starts with its snapshot's data and depends on it until
        promoted; then the original depends on the clone.
        """
        volume = yield self.volume("base")
        data = os.urandom(65536)
        yield self.write(volume.name, data)
        yield self.zfs.snapshot([volume.name], "s1")
        clone = yield self.zfs.clone(f"{volume.name}@s1", self.top, "copy")
        self.assertEqual(clone.origin, f"{volume.name}@s1")
        self.assertEqual(clone.owner, OWNER)
        back = yield self.zfs.read_head(clone.name, 65536)
        self.assertEqual(back, data)
        with self.assertRaises(Conflict) as caught:
            yield self.zfs.destroy(f"{volume.name}@s1")
        self.assertIn("dependent clones", caught.exception.reason)
        yield self.zfs.promote(clone.name)
        promoted = yield self.zfs.get_volume(clone.name)
        original = yield self.zfs.get_volume(volume.name)
        self.assertIsNone(promoted.origin)
        self.assertEqual(original.origin, f"{clone.name}@s1")
        yield self.zfs.destroy(volume.name)
        yield self.zfs.destroy(f"{clone.name}@s1")

    @inlineCallbacks
    def test_promote_not_clone(self):
        """Promoting a volume that is no clone is a conflict."""
        volume = yield self.volume("v1")
        yield self.assertFailure(self.zfs.promote(volume.name), Conflict)

    # Space

    @inlineCallbacks
    def test_pools(self):
        """The pool is listed, healthy, with consistent sizes."""
        pools = yield self.zfs.pool_list()
        pool = next(p for p in pools if p.name == self.pool)
        self.assertEqual(pool.health, "ONLINE")
        self.assertGreater(pool.size, 0)
        self.assertEqual(pool.allocated + pool.free, pool.size)

    @inlineCallbacks
    def test_dataset_space(self):
        """
        A thick volume counts its whole size in its dataset's use.  (Available
        space is the pool's, which other work changes meanwhile: it is only
        checked for sense.)
        """
        before = yield self.zfs.dataset_space(self.top)
        yield self.volume("v1", 32 * MiB)
        after = yield self.zfs.dataset_space(self.top)
        self.assertGreaterEqual(after.used - before.used, 32 * MiB)
        self.assertGreater(after.available, 0)
        self.assertEqual(after.capacity, after.used + after.available)

    # iSCSI

    @inlineCallbacks
    def test_export(self):
        """An exported volume is LUN 1 of a target with its CHAP account and ACL."""
        volume = yield self.volume("v1")
        device = yield self.zfs.device_of(volume.name)
        name = self.iqn("v1")
        tid = yield self.tgt.export(name, device, f"u-{self.token}", "secret-secret-1")
        target = yield self.tgt.find(name)
        self.assertEqual((target.tid, target.device, target.acl), (tid, device, ("ALL",)))
        self.assertEqual(target.accounts, (f"u-{self.token}",))
        self.assertEqual(target.lun(1).size_mb, volume.size // 1000000)
        again = yield self.tgt.export(name, device, f"u-{self.token}", "secret-secret-1")
        self.assertEqual(again, tid)

    @inlineCallbacks
    def test_export_initiator(self):
        """A target can admit one initiator address only, without CHAP."""
        volume = yield self.volume("v1")
        device = yield self.zfs.device_of(volume.name)
        yield self.tgt.export(self.iqn("v1"), device, initiator="10.200.0.1")
        target = yield self.tgt.find(self.iqn("v1"))
        self.assertEqual((target.acl, target.accounts), (("10.200.0.1",), ()))

    @inlineCallbacks
    def test_export_admits_only_its_initiator(self):
        """
        An export bound to one initiator address and a CHAP account lets in
        a login from that address with that account, and no other: not from
        another address with the right account, not from the right address
        without the right secret.
        """
        volume = yield self.volume("v1")
        device = yield self.zfs.device_of(volume.name)
        user, secret = f"u-{self.token}", "secret-secret-1"
        mine, theirs = self.iqn("v1"), self.iqn("v2")
        yield self.tgt.export(mine, device, user, secret, initiator=self.initiator_address)
        target = yield self.tgt.find(mine)
        self.assertEqual(target.acl, (self.initiator_address,))
        self.assertTrue((yield maybeDeferred(self.login, mine, (user, secret))))
        self.assertFalse((yield maybeDeferred(self.login, mine, (user, "secret-wrong-22"))))
        yield self.tgt.unexport(mine)
        # The same volume exported to another address: our login is refused.
        yield self.tgt.export(theirs, device, user, secret, initiator="10.200.0.254")
        self.assertFalse((yield maybeDeferred(self.login, theirs, (user, secret))))

    @inlineCallbacks
    def test_export_again_narrows_the_acl(self):
        """
        A target left open to any address (by an older Comet) and exported
        again to one host admits that host only from then on.
        """
        volume = yield self.volume("v1")
        device = yield self.zfs.device_of(volume.name)
        user, secret = f"u-{self.token}", "secret-secret-1"
        name = self.iqn("v1")
        tid = yield self.tgt.export(name, device, user, secret)
        self.assertEqual((yield self.tgt.find(name)).acl, ("ALL",))
        again = yield self.tgt.export(name, device, user, secret, initiator="10.200.0.254")
        self.assertEqual(again, tid)
        self.assertEqual((yield self.tgt.find(name)).acl, ("10.200.0.254",))
        self.assertFalse((yield maybeDeferred(self.login, name, (user, secret))))

    @inlineCallbacks
    def test_admit_and_refuse(self):
        """
        A target admits a second initiator address beside its own (a VM
        migrating: both hosts log in for a moment) and refuses it again;
        admitting twice, or refusing one not admitted, changes nothing; a
        target that does not exist is NotFound.
        """
        volume = yield self.volume("v1")
        device = yield self.zfs.device_of(volume.name)
        user, secret = f"u-{self.token}", "secret-secret-1"
        name = self.iqn("v1")
        yield self.tgt.export(name, device, user, secret, initiator="10.200.0.254")
        self.assertFalse((yield maybeDeferred(self.login, name, (user, secret))))
        self.assertTrue((yield self.tgt.admit(name, self.initiator_address)))
        self.assertFalse((yield self.tgt.admit(name, self.initiator_address)))
        self.assertEqual(sorted((yield self.tgt.find(name)).acl),
                         sorted(["10.200.0.254", self.initiator_address]))
        self.assertTrue((yield maybeDeferred(self.login, name, (user, secret))))
        self.assertTrue((yield self.tgt.refuse(name, "10.200.0.254")))
        self.assertFalse((yield self.tgt.refuse(name, "10.200.0.254")))
        self.assertEqual((yield self.tgt.find(name)).acl, (self.initiator_address,))
        self.assertTrue((yield self.tgt.refuse(name, self.initiator_address)))
        self.assertFalse((yield maybeDeferred(self.login, name, (user, secret))))
        missing = self.iqn("v9")
        yield self.assertFailure(self.tgt.admit(missing, "10.200.0.254"), NotFound)
        yield self.assertFailure(self.tgt.refuse(missing, "10.200.0.254"), NotFound)

    @inlineCallbacks
    def _export_alone(self, name: str, device: str, *args, **kwargs):
        """
        Export C{device} as C{name}; the targets other than ours before it and
        the target id it took.  Which id is free depends on everyone's targets:
        on the real servers the other integration stream exports and withdraws
        its own meanwhile.  An export during which the others' targets changed
        (read before and after) proves nothing about the choice, so it is
        withdrawn and tried again.
        """
        for _ in range(10):
            before = yield self.tgt.targets()
            tid = yield self.tgt.export(name, device, *args, **kwargs)
            after = yield self.tgt.targets()
            others = {(t.tid, t.iqn) for t in after if t.iqn != name}
            if others == {(t.tid, t.iqn) for t in before}:
                return before, tid
            yield self.tgt.unexport(name)
        self.fail(f"the targets kept changing around the export of {name}")

    @inlineCallbacks
    def test_export_smallest_tid(self):
        """Each new target takes the smallest free target id."""
        a = yield self.volume("a")
        b = yield self.volume("b")
        da = yield self.zfs.device_of(a.name)
        db = yield self.zfs.device_of(b.name)
        before, tid_a = yield self._export_alone(self.iqn("a"), da)
        self.assertEqual(tid_a, tgtmod.free_tid(before))
        before, tid_b = yield self._export_alone(self.iqn("b"), db)
        self.assertEqual(tid_b, tgtmod.free_tid(before))
        self.assertNotEqual(tid_a, tid_b)
        yield self.tgt.unexport(self.iqn("a"))
        # Its id is free again, and the smallest free one is taken again.
        before, tid_c = yield self._export_alone(self.iqn("a"), da)
        self.assertEqual(tid_c, tgtmod.free_tid(before))

    @inlineCallbacks
    def test_export_chosen_tid(self):
        """A target id asked for is taken if free; one in use gives the smallest free one."""
        a = yield self.volume("a")
        b = yield self.volume("b")
        da = yield self.zfs.device_of(a.name)
        db = yield self.zfs.device_of(b.name)
        before = yield self.tgt.targets()
        wanted = max([t.tid for t in before] + [0]) + 7
        tid_a = yield self.tgt.export(self.iqn("a"), da, f"u-{self.token}", "secret-secret-1",
                                      tid=wanted)
        self.assertEqual(tid_a, wanted)
        target = yield self.tgt.find(self.iqn("a"))
        self.assertEqual((target.tid, target.device, target.accounts),
                         (wanted, da, (f"u-{self.token}",)))
        before, tid_b = yield self._export_alone(self.iqn("b"), db, tid=wanted)
        self.assertEqual(tid_b, tgtmod.free_tid(before))
        self.assertNotEqual(tid_b, wanted)

    @inlineCallbacks
    def test_boot_id(self):
        """The server tells its boot id, the same each time while it runs."""
        first = yield machine.boot_id(self.runner)
        again = yield machine.boot_id(self.runner, timeout=5)
        self.assertEqual(first, again)
        self.assertRegex(first, r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

    @inlineCallbacks
    def test_export_conflict(self):
        """A target name already exporting another device is a conflict."""
        a = yield self.volume("a")
        b = yield self.volume("b")
        da = yield self.zfs.device_of(a.name)
        db = yield self.zfs.device_of(b.name)
        yield self.tgt.export(self.iqn("x"), da)
        yield self.assertFailure(self.tgt.export(self.iqn("x"), db), Conflict)

    @inlineCallbacks
    def test_export_missing_device(self):
        """Exporting a device that does not exist fails and leaves no target behind."""
        yield self.assertFailure(self.tgt.export(self.iqn("ghost"), "/dev/zd99984"), NotFound)
        target = yield self.tgt.find(self.iqn("ghost"))
        self.assertIsNone(target)

    @inlineCallbacks
    def test_unexport(self):
        """Unexporting removes the target and its account; a second time finds nothing."""
        volume = yield self.volume("v1")
        device = yield self.zfs.device_of(volume.name)
        name = self.iqn("v1")
        yield self.tgt.export(name, device, f"u-{self.token}", "secret-secret-1")
        removed = yield self.tgt.unexport(name)
        self.assertTrue(removed)
        target = yield self.tgt.find(name)
        self.assertIsNone(target)
        accounts = yield self.tgt.accounts()
        self.assertNotIn(f"u-{self.token}", accounts)
        removed = yield self.tgt.unexport(name)
        self.assertFalse(removed)

    @inlineCallbacks
    def test_exported_volume_busy(self):
        """An exported volume cannot be destroyed; once unexported it can."""
        volume = yield self.volume("v1")
        device = yield self.zfs.device_of(volume.name)
        yield self.tgt.export(self.iqn("v1"), device)
        with self.assertRaises(Conflict) as caught:
            yield self.zfs.destroy(volume.name)
        self.assertIn("busy", caught.exception.reason)
        yield self.tgt.unexport(self.iqn("v1"))
        yield self.zfs.destroy(volume.name)

    @inlineCallbacks
    def test_sync(self):
        """Flushing the server's caches succeeds."""
        result = yield self.zfs.sync()
        self.assertIsNone(result)
