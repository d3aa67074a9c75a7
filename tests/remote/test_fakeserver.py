"""
Tests for L{comet.remote._fakeserver}: the in-memory storage server passes
the same contract suite as the real servers, plus what only a fake can show.
"""

from __future__ import annotations

import datetime

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from comet.errors import CommandFailed
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote import tgt as tgtmod
from comet.remote.tgt import TGT
from comet.remote.zfs import ZFS
from tests.contract.remote_suite import RemoteContractMixin


class FakeStorageServerContractTests(RemoteContractMixin, TestCase):
    """The fake storage server meets the storage-server contract."""

    def makeRunner(self):
        self.server = FakeStorageServer(now=lambda: 1795747582)
        return FakeRunner(self.server, host="10.200.0.99")


class FakeStorageServerTests(TestCase):
    """What the fake offers beyond the contract."""

    def setUp(self):
        self.server = FakeStorageServer()
        self.runner = FakeRunner(self.server)
        self.zfs = ZFS(self.runner)
        self.tgt = TGT(self.runner)

    @inlineCallbacks
    def test_reimport_moves_minors(self):
        """After a re-import, devices are resolved anew, by name."""
        yield self.zfs.create_volume("tank/comet", "a", 1024)
        yield self.zfs.create_volume("tank/comet", "b", 1024)
        before = yield self.zfs.devices()
        self.server.reimport()
        after = yield self.zfs.devices()
        self.assertEqual(set(before), set(after))
        self.assertNotEqual(before, after)
        device = yield self.zfs.device_of("tank/comet/a")
        self.assertEqual(device, after["tank/comet/a"])

    @inlineCallbacks
    def test_connected_target(self):
        """A target with a logged-in initiator is deleted by force, as tgt allows."""
        volume = yield self.zfs.create_volume("tank/comet", "a", 1024)
        device = yield self.zfs.device_of(volume.name)
        name = tgtmod.iqn("org.comet", "p", "a", datetime.date(2026, 1, 1))
        yield self.tgt.export(name, device)
        self.server.connect(name, "iqn.2026-01.org.comet:host", "10.200.0.1")
        target = yield self.tgt.find(name)
        self.assertEqual(target.connections[0].address, "10.200.0.1")
        yield self.assertFailure(
            self.runner.run(["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "delete",
                             "--tid", str(target.tid)]), CommandFailed
        )
        removed = yield self.tgt.unexport(name)
        self.assertTrue(removed)

    @inlineCallbacks
    def test_sync_counted(self):
        """The fake counts flushes, so a test can check one came before a snapshot."""
        yield self.zfs.sync()
        self.assertEqual(self.server.synced, 1)

    @inlineCallbacks
    def test_unknown_command(self):
        """A command the fake does not model fails with 127, never silently."""
        with self.assertRaises(CommandFailed) as caught:
            yield self.runner.run(["zfs", "upgrade", "-a"])
        self.assertEqual(caught.exception.code, 127)

    @inlineCallbacks
    def test_chap_password(self):
        """The CHAP password reaches the account through standard input only."""
        volume = yield self.zfs.create_volume("tank/comet", "a", 1024)
        device = yield self.zfs.device_of(volume.name)
        name = tgtmod.iqn("org.comet", "p", "a", datetime.date(2026, 1, 1))
        yield self.tgt.export(name, device, "user-a", "password-of-a1")
        self.assertEqual(self.server.accounts, {"user-a": "password-of-a1"})
        for call in self.runner.calls:
            self.assertNotIn("password-of-a1", " ".join(call.argv))
