"""
Tests for L{comet.model.storage.localcopies}: a VM's disks copied to a
compute host's own ZFS and synced back, against fake storage servers (the
host's ZFS is one more; the real copy between two OpenZFS machines is the
send contract suite's, C{tests/integration/test_remote.py}).
"""

from __future__ import annotations

import os

import attrs
from twisted.trial.unittest import TestCase

from comet.errors import Conflict, Unavailable
from comet.hostconfig import HostConfig
from comet.model.storage import vm_disk_name
from comet.model.storage.localcopies import LocalCopies
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote.zfs import ZFS
from comet.remote.zfs_sync import is_sync
from tests.model.storage._setup import _Setup

GiB = 1024 ** 3
LOCAL = "tank/comet-local"


class LocalCopiesTests(_Setup, TestCase):
    """Copy in, copy back, caches and interrupted runs, one VM's disk at a time."""

    async def setUp(self):
        await super().setUp()
        self.host_server = FakeStorageServer(pools={"tank": 100 * GiB})
        self.host_runner = FakeRunner(self.host_server, host="10.0.0.5")
        self.host_zfs = ZFS(self.host_runner)
        await self.host_zfs.create_dataset(LOCAL)
        self.hosts = {
            "h1": HostConfig(name="h1", uri="test:///default", ssh="root@10.0.0.5",
                             local_dataset=LOCAL),
            "h2": HostConfig(name="h2", uri="test:///default", ssh="root@10.0.0.6",
                             local_dataset=LOCAL),
            "plain": HostConfig(name="plain", uri="test:///default"),
        }
        self.copies = self.local_copies()
        vm = await self.make_vm()
        self.vm = await self.models.context.vms.get("lab", "web")
        self.disk = vm_disk_name(vm["uuid"])
        self.zvol = f"tank/comet/{self.disk}"
        self.server_zfs = ZFS(self.runners["s1"])
        self.data = os.urandom(256 * 1024)
        await self.write(self.runners["s1"], self.server, self.zvol, 0, self.data)

    def local_copies(self, keep=False) -> LocalCopies:
        """The local copies; with C{keep}, hosts h1 and h2 keep theirs as caches (C{local_keep})."""
        hosts = {name: attrs.evolve(config, local_keep=keep) if config.local_dataset else config
                 for name, config in self.hosts.items()}
        return LocalCopies(self.models.storage.records, self.models.storage.pool_set,
                           hosts, {"10.0.0.5": self.host_runner})

    async def write(self, runner, server, volume, offset, data):
        await runner.run(["dd", f"of={server.device(volume)}", "bs=16384",
                          f"seek={offset // 16384}"], stdin=data)

    async def copy_host(self):
        record = await self.models.storage.records.volume("pool1", self.disk)
        return record.copy_host

    @property
    def local(self):
        return f"{LOCAL}/pool1/{self.disk}"

    async def test_where(self):
        """A copy's name on a host with a local dataset; a host without one (or none) has none."""
        record = await self.models.storage.records.volume("pool1", self.disk)
        self.assertEqual(self.copies.local_volume("h1", record), self.local)
        self.assertEqual(self.copies.local_volume("h2", record), self.local)
        for host in ("plain", "nowhere"):
            with self.assertRaises(Conflict):
                self.copies.local_volume(host, record)

    async def test_copy_in_and_back(self):
        """
        A copy in makes the host's copy (a block disk of the domain) and
        records that its data may be newest there; what the guest writes
        goes back at the copy back, about the changed bytes, and then only
        the storage server holds the volume, with no sync snapshot left.
        """
        seen = []
        disks = await self.copies.copy_in(self.vm, "h1",
                                          progress=lambda moved, total: seen.append(moved))
        self.assertEqual([(d.type, d.target) for d in disks], [("block", "vda")])
        self.assertTrue(disks[0].path.startswith("/dev/zd"))
        self.assertEqual(await self.copy_host(), "h1")
        self.assertEqual(await self.host_zfs.read_head(self.local, len(self.data)), self.data)
        self.assertTrue(seen and seen == sorted(seen))

        piece = os.urandom(64 * 1024)
        await self.write(self.host_runner, self.host_server, self.local, 512 * 1024, piece)
        moved = await self.copies.copy_back(self.vm, "h1")
        self.assertGreaterEqual(moved, len(piece))
        self.assertLess(moved, 2 * len(piece))
        self.assertEqual(await self.server_zfs.read_head(self.zvol, 576 * 1024),
                         self.data + bytes(256 * 1024) + piece)
        self.assertFalse(await self.host_zfs.exists(self.local))
        self.assertIsNone(await self.copy_host())
        self.assertEqual([s for s in await self.server_zfs.list_snapshots(self.zvol)
                          if is_sync(s.snapname)], [])

    async def test_cache(self):
        """
        Kept as a cache, the host's copy makes the next copy in there move
        only what changed on the storage server since.
        """
        copies = self.local_copies(keep=True)
        await copies.copy_in(self.vm, "h1")
        await copies.copy_back(self.vm)
        self.assertTrue(await self.host_zfs.exists(self.local))
        self.assertIsNone(await self.copy_host())
        piece = os.urandom(16 * 1024)
        await self.write(self.runners["s1"], self.server, self.zvol, 0, piece)
        seen = []
        await copies.copy_in(self.vm, "h1", progress=lambda moved, total: seen.append(moved))
        self.assertLess(seen[-1], len(self.data))
        self.assertEqual(await self.host_zfs.read_head(self.local, len(piece)), piece)

    async def test_stale_cache_dropped(self):
        """A cache that shares no snapshot with the storage server's copy goes; the copy is whole."""
        copies = self.local_copies(keep=True)
        await copies.copy_in(self.vm, "h1")
        await copies.copy_back(self.vm)
        for snapshot in await self.server_zfs.list_snapshots(self.zvol):
            if is_sync(snapshot.snapname):
                await self.server_zfs.destroy(snapshot.name)   # as a revert would
        await copies.copy_in(self.vm, "h1")
        self.assertEqual(await self.host_zfs.read_head(self.local, len(self.data)), self.data)

    async def test_copy_back_of_a_copy_that_never_arrived(self):
        """
        A copy in interrupted before its volume arrived (C{copy_host} set, no
        copy there): the copy back only clears C{copy_host}; the storage
        server's copy is the volume, as it was.
        """
        await self.models.storage.records.update_volume("pool1", self.disk, copy_host="h1")
        self.assertEqual(await self.copies.copy_back(self.vm), 0)
        self.assertIsNone(await self.copy_host())
        self.assertEqual(await self.server_zfs.read_head(self.zvol, len(self.data)), self.data)

    async def test_copy_back_repeated(self):
        """
        A copy back interrupted after its sync (the host's copy still there,
        C{copy_host} still set) done again moves nothing new and finishes.
        """
        await self.copies.copy_in(self.vm, "h1")
        piece = os.urandom(16 * 1024)
        await self.write(self.host_runner, self.host_server, self.local, 0, piece)
        keep = self.local_copies(keep=True)
        await keep.copy_back(self.vm)      # the sync happened; the rest did not
        await self.models.storage.records.update_volume("pool1", self.disk, copy_host="h1")
        await self.copies.copy_back(self.vm)
        self.assertIsNone(await self.copy_host())
        self.assertFalse(await self.host_zfs.exists(self.local))
        self.assertEqual(await self.server_zfs.read_head(self.zvol, len(piece)), piece)

    async def test_newest_data_elsewhere(self):
        """A copy in to another host than the one holding the newest data is refused."""
        await self.copies.copy_in(self.vm, "h1")
        with self.assertRaises(Conflict) as caught:
            await self.copies.copy_in(self.vm, "h2")
        self.assertIn("newest data on host 'h1'", caught.exception.reason)
        with self.assertRaises(Conflict):
            await self.copies.copy_in(self.vm, "plain")

    async def test_never_older_over_newer(self):
        """
        A storage server's copy changed while the host held the newest data
        (which Comet's checks forbid) is not written over: the copy back is
        refused and both copies stay as they are.
        """
        await self.copies.copy_in(self.vm, "h1")
        theirs = os.urandom(16 * 1024)
        await self.write(self.runners["s1"], self.server, self.zvol, 0, theirs)
        await self.write(self.host_runner, self.host_server, self.local, 0, os.urandom(16384))
        with self.assertRaises(Conflict) as caught:
            await self.copies.copy_back(self.vm)
        self.assertIn(f"its newest data stays in the copy {self.local} on host 'h1'",
                      caught.exception.reason)
        self.assertEqual(await self.copy_host(), "h1")
        self.assertEqual(await self.server_zfs.read_head(self.zvol, len(theirs)), theirs)
        self.assertTrue(await self.host_zfs.exists(self.local))

    async def test_host_unreachable(self):
        """
        A copy back from a host that does not answer fails saying where the
        newest data is; C{copy_host} stays set, and a later one finishes.
        """
        await self.copies.copy_in(self.vm, "h1")
        piece = os.urandom(16 * 1024)
        await self.write(self.host_runner, self.host_server, self.local, 0, piece)
        self.host_runner.unavailable = "ssh: connect to host 10.0.0.5 port 22: No route to host"
        record = await self.models.storage.records.volume("pool1", self.disk)
        with self.assertRaises(Unavailable) as caught:
            await self.copies.copy_back_volume(record)
        self.assertIn("syncing volume", caught.exception.reason)
        self.assertIn(f"its newest data stays in the copy {self.local} on host 'h1'",
                      caught.exception.reason)
        self.assertEqual(await self.copy_host(), "h1")
        self.host_runner.unavailable = None
        await self.copies.copy_back_volume(record)
        self.assertIsNone(await self.copy_host())
        self.assertEqual(await self.server_zfs.read_head(self.zvol, len(piece)), piece)

    async def test_keep_per_host_and_overridden(self):
        """
        A host's C{local_keep} keeps its copy at a copy back; C{keep=False}
        (an unmap's) removes it there all the same, with the sync snapshot.
        """
        copies = self.local_copies(keep=True)
        await copies.copy_in(self.vm, "h1")
        record = await self.models.storage.records.volume("pool1", self.disk)
        await copies.copy_back_volume(record, keep=False)
        self.assertFalse(await self.host_zfs.exists(self.local))
        self.assertIsNone(await self.copy_host())
        self.assertEqual([s for s in await self.server_zfs.list_snapshots(self.zvol)
                          if is_sync(s.snapname)], [])

    async def test_sync_snapshot_left_by_a_crash(self):
        """
        A copy back cut short after the host's copy went, before the storage
        server's sync snapshot did: done again, it removes that snapshot.
        """
        await self.copies.copy_in(self.vm, "h1")
        await self.host_zfs.destroy(self.local, recursive=True)
        self.assertTrue([s for s in await self.server_zfs.list_snapshots(self.zvol)
                         if is_sync(s.snapname)])
        await self.copies.copy_back(self.vm)
        self.assertIsNone(await self.copy_host())
        self.assertEqual([s for s in await self.server_zfs.list_snapshots(self.zvol)
                          if is_sync(s.snapname)], [])

    async def test_nothing_without_caches(self):
        """Where no host keeps caches, no command runs anywhere (an iSCSI site pays nothing)."""
        record = await self.models.storage.records.volume("pool1", self.disk)
        server_before, host_before = len(self.runners["s1"].calls), len(self.host_runner.calls)
        await self.copies.drop_caches(record)
        self.assertEqual((len(self.runners["s1"].calls), len(self.host_runner.calls)),
                         (server_before, host_before))

    async def test_cache_and_its_base(self):
        """A kept copy goes from its host, its sync snapshot from the storage server."""
        copies = self.local_copies(keep=True)
        await copies.copy_in(self.vm, "h1")
        await copies.copy_back(self.vm)
        self.assertTrue(await self.host_zfs.exists(self.local))
        self.assertTrue(await self.server_zfs.list_snapshots(self.zvol))
        record = await self.models.storage.records.volume("pool1", self.disk)
        await copies.drop_caches(record)
        self.assertFalse(await self.host_zfs.exists(self.local))
        self.assertEqual(await self.server_zfs.list_snapshots(self.zvol), [])
