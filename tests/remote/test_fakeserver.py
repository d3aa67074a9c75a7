"""
Tests for L{comet.remote._fakeserver}: the in-memory storage server passes
the same contract suite as the real servers, plus what only a fake can show.
"""

from __future__ import annotations

import datetime
import json
import os
import re

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from comet.errors import CommandFailed
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote import tgt as tgtmod
from comet.remote.tgt import TGT
from comet.remote import zfs
from comet.remote.zfs import ZFS
from tests.contract.remote_suite import RemoteContractMixin

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


class FakeStorageServerContractTests(RemoteContractMixin, TestCase):
    """The fake storage server meets the storage-server contract."""

    def makeRunner(self):
        # The testbed's servers have gzip, xz and qemu-img (not zstd).
        self.server = FakeStorageServer(now=lambda: 1795747582,
                                        commands=("gzip", "xz", "qemu-img"))
        return FakeRunner(self.server, host="10.200.0.99")

    def login(self, iqn, chap):
        try:
            self.server.connect(iqn, "iqn.2026-12.org.comet.test:host", self.initiator_address,
                                chap)
        except PermissionError:
            return False
        return True


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
    def test_reboot(self):
        """A reboot loses every target and account, moves minors and changes the boot id."""
        from comet.remote import machine

        volume = yield self.zfs.create_volume("tank/comet", "a", 1024)
        device = yield self.zfs.device_of(volume.name)
        yield self.tgt.export("iqn.2026-11.org.comet:p.a", device, "user-a", "secret-secret-1")
        boot = yield machine.boot_id(self.runner)
        self.server.reboot()
        self.assertEqual((yield self.tgt.targets()), [])
        self.assertEqual((yield self.tgt.accounts()), [])
        self.assertNotEqual((yield machine.boot_id(self.runner)), boot)
        self.assertNotEqual((yield self.zfs.device_of(volume.name)), device)

    @inlineCallbacks
    def test_reboot_pools_not_imported(self):
        """Until its pools are imported, a rebooted server has no dataset and no zvol device."""
        from comet.errors import NotFound

        volume = yield self.zfs.create_volume("tank/comet", "a", 1024)
        self.server.reboot(import_pools=False)
        self.assertEqual((yield self.zfs.pool_list()), [])
        yield self.assertFailure(self.zfs.get_volume(volume.name), NotFound)
        self.assertEqual((yield self.zfs.devices()), {})
        self.server.import_pools()
        self.assertEqual((yield self.zfs.get_volume(volume.name)).name, volume.name)
        self.assertIn(volume.name, (yield self.zfs.devices()))

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


class FakeMatchesCapturesTests(SynchronousTestCase):
    """
    The captured session on a real server (C{data/manifest.json}: every
    command in order, with its exit status, and real output for some),
    replayed on a fresh fake server, gets the same answers.

    Minor numbers differ between the two (other zvols may exist on the real
    server), so device paths are mapped by zvol name, and compared as
    C{/dev/zdN}.
    """

    SERVER = "10.200.0.21"
    #: Compared byte for byte (device numbers aside).
    EXACT = {"zvol-devices.out", "zvol-device.out", "zfs-get-owner-recursive.out",
             "tgt-show.out", "tgt-accounts.out", "zfs-get-odd-volsize.out"}

    def entries(self):
        with open(os.path.join(DATA, "manifest.json")) as f:
            entries = [e for e in json.load(f) if e["server"] == self.SERVER]
        if not any(e["file"] is None for e in entries):
            raise SkipTest("the manifest does not record the commands that made the state")
        return entries

    def test_replay(self):
        with open(os.path.join(DATA, "zvol-devices.out")) as f:
            real_devices = {dev: name for dev, name in (l.split("\t") for l in f.read().split("\n") if l)}
        server = FakeStorageServer()

        def local(arg: str) -> str:
            def swap(match):
                name = real_devices.get(match.group(0))
                return server.device(name) if name and server.device(name) else match.group(0)
            return re.sub(r"/dev/zd[0-9]+", swap, arg)

        compared = 0
        for entry in self.entries():
            argv = [local(a) for a in entry["argv"]]
            stdin = entry["stdin"].encode() if "stdin" in entry else None
            answer = server.handle(argv, stdin)
            where = f"{entry['file'] or 'setup'}: {argv[:4]}"
            self.assertEqual(answer.code, entry["exit"], f"{where}: {answer.stderr}")
            if entry["file"]:
                self.compare(entry["file"], answer)
                compared += 1
        self.assertGreaterEqual(compared, 30)

    @staticmethod
    def ours(name: str, output: bytes) -> bytes:
        """Only what the capture made, with target ids written as N."""
        if name == "zvol-devices.out":
            return b"".join(l for l in output.splitlines(True) if b"comet-test-capture" in l)
        blocks = re.split(rb"(?m)^(?=Target )", output)
        mine = b"".join(b for b in blocks if b":capture." in b.split(b"\n")[0])
        mine = re.sub(rb"(?m)^Target [0-9]+:", b"Target N:", mine)
        mine = re.sub(rb"SCSI ID: IET     [0-9a-f]{4}", b"SCSI ID: IET     tttt", mine)
        return re.sub(rb"SCSI SN: beaf[0-9]+([0-9])$", rb"SCSI SN: beafN\1", mine, flags=re.M)

    def compare(self, name: str, answer):
        with open(os.path.join(DATA, name), "rb") as f:
            real = f.read()
        fake = answer.stdout if name.endswith(".out") else answer.stderr.encode()
        if name in ("zvol-devices.out", "tgt-show.out"):
            # The real server may have held other people's zvols and targets.
            fake, real = self.ours(name, fake), self.ours(name, real)
        norm = lambda b: re.sub(rb"/dev/zd[0-9]+", b"/dev/zdN", b).strip()
        if name in self.EXACT or name.endswith(".err") and name != "zfs-snapshot-missing.err":
            self.assertEqual(norm(fake), norm(real), name)
        elif name == "zfs-snapshot-missing.err":
            self.assertEqual(fake.splitlines()[0], real.splitlines()[0], name)
        elif name.startswith("zfs-list-volume"):
            key = lambda v: (v.name, v.size, v.volblocksize, v.origin, v.owner)
            self.assertEqual([key(v) for v in zfs.parse_volumes(fake)],
                             [key(v) for v in zfs.parse_volumes(real)], name)
        elif name == "zfs-list-snapshots.out":
            key = lambda s: (s.name, s.owner)
            self.assertEqual([key(s) for s in zfs.parse_snapshots(fake)],
                             [key(s) for s in zfs.parse_snapshots(real)], name)
        elif name == "zfs-get-space.out":
            key = lambda values: {k: v[1] for k, v in values.items()}
            self.assertEqual(key(zfs.parse_get(fake)), key(zfs.parse_get(real)), name)
        elif name == "zpool-list.out":
            key = lambda pools: [(p.name, p.health) for p in pools]
            self.assertEqual(key(zfs.parse_pools(fake)), key(zfs.parse_pools(real)), name)
        else:
            self.fail(f"no comparison for {name}")
