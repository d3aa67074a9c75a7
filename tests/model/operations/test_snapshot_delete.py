"""
Snapshot delete (L{comet.model.operations.snapshot_delete}) cut short after
any of its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).  Its crash over a branch a revert set
aside is in tests/model/test_reconcile.py (L{LeftSnapshotCrashTests}), with
the other paths that take a VM's snapshots off a volume.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import snapshot_delete
from comet.model.storage import vm_disk_name
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps


class SnapshotCrashBase(CrashBase):
    """The VM's disk, and snapshots of it each holding its own data."""

    def disk(self, models=None):
        return self.world.server.datasets[f"tank/comet/{vm_disk_name(self.uuid)}"]

    async def snapshots(self, *names) -> None:
        for name in names:
            self.disk().data[:4] = f"{name}!".encode()[:4]
            await self.models.vm_snapshots.create("lab", "web", name)
        self.disk().data[:4] = b"now!"


class SnapshotDeleteCrashTests(SnapshotCrashBase, TestCase):
    async def test_each_step(self):
        """A snapshot delete cut short is finished: ZFS snapshot and record gone."""
        for step in steps(snapshot_delete.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.snapshots("one", "two")
                crash = Crash("snapshot.delete", step, when)
                await self.crash_during(
                    crash, lambda: self.models.vm_snapshots.delete("lab", "web", "one"))
                models, repairs = await self.world.restart()
                self.assertTrue(any(f"interrupted snapshot.delete of {self.uuid}" in r
                                    for r in repairs), repairs)
                await self.assertConsistent(models)
                _, listed = await models.vm_snapshots.list("lab", "web")
                self.assertEqual([(r.name, r.parent) for r in listed], [("two", "")])
                self.assertEqual([n for n in self.world.server.datasets if "@comet-one" in n], [])
