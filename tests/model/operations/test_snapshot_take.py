"""
Snapshot take (L{comet.model.operations.snapshot_take}) cut short after any
of its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import snapshot_take
from comet.model.storage import vm_disk_name
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps


class SnapshotTakeCrashTests(CrashBase, TestCase):
    async def test_each_step(self):
        """A snapshot cut short is kept if recorded; otherwise its ZFS snapshots go."""
        for step in steps(snapshot_take.OPERATION):
            for when in WHEN:
                await self.setUp()
                crash = Crash("snapshot", step, when)
                await self.crash_during(
                    crash, lambda: self.models.vm_snapshots.create("lab", "web", "s1"))
                models, repairs = await self.world.restart()
                self.assertTrue(any(f"interrupted snapshot of {self.uuid}" in r
                                    for r in repairs), repairs)
                await self.assertConsistent(models)
                zfs_snapshots = [n for n in self.world.server.datasets if n.endswith("@comet-s1")]
                _, recorded = await models.vm_snapshots.list("lab", "web")
                if (step, when) == ("record", "after"):
                    self.assertEqual([r.name for r in recorded], ["s1"])
                    self.assertEqual(zfs_snapshots, [f"tank/comet/{vm_disk_name(self.uuid)}@comet-s1"])
                else:
                    self.assertEqual((recorded, zfs_snapshots), ([], []))
                    # The name is free again.
                    await models.vm_snapshots.create("lab", "web", "s1")
