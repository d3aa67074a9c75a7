"""
Snapshot revert (L{comet.model.operations.snapshot_revert}) cut short after
any of its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}): finished, to a rollback, a branch, and
with a re-export.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import snapshot_revert
from comet.model.storage import vm_disk_name
from tests.model.operations.crash import WHEN, Crash
from tests.model.operations.test_snapshot_delete import SnapshotCrashBase

Step = snapshot_revert.Step
#: The steps of a revert to the newest snapshot (zfs rollback), not exported.
ROLLBACK = [Step.PLAN, Step.ROLLBACK, Step.SET_CURRENT]
#: The steps of a revert to an older snapshot (a branch), not exported.
BRANCH = [Step.PLAN, Step.BRANCH, Step.SET_CURRENT]
#: The steps of a rollback of a VM shut off on its host (exported).
EXPORTED = [Step.PLAN, Step.UNEXPORT, Step.ROLLBACK, Step.EXPORT, Step.SET_CURRENT]


class SnapshotRevertCrashTests(SnapshotCrashBase, TestCase):
    """Revert (rollback, branch, with a re-export) cut short: finished."""

    def test_every_step_crashed(self):
        """The cases below crash every step of the operation."""
        self.assertEqual(set(ROLLBACK) | set(BRANCH) | set(EXPORTED), set(Step))

    async def revert(self, snapshot: str, step: str, when: str):
        crash = Crash("snapshot.revert", step, when)
        await self.crash_during(
            crash, lambda: self.models.vm_snapshots.revert("lab", "web", snapshot))
        models, repairs = await self.world.restart()
        self.assertTrue(any(f"interrupted snapshot.revert of {self.uuid}" in r
                            and "was finished" in r for r in repairs), repairs)
        await self.assertConsistent(models)
        _, current = await models.vm_snapshots.get("lab", "web", snapshot)
        self.assertTrue(current.current)
        self.assertEqual([n for n in self.world.server.datasets if "-rv-" in n], [])
        return models

    async def test_rollback_each_step(self):
        """A revert to the newest snapshot (zfs rollback) cut short is finished."""
        for step in ROLLBACK:
            for when in WHEN:
                await self.setUp()
                await self.snapshots("one")
                await self.revert("one", step.value, when)
                self.assertEqual(bytes(self.disk().data[:4]), b"one!")

    async def test_branch_each_step(self):
        """A revert to an older snapshot (clone, promote, renames) cut short is finished."""
        for step in BRANCH:
            for when in WHEN:
                await self.setUp()
                await self.snapshots("one", "two")
                models = await self.revert("one", step.value, when)
                self.assertEqual(bytes(self.disk().data[:4]), b"one!")
                # The newer snapshot survives on the branch set aside, and can be reverted to.
                await models.vm_snapshots.revert("lab", "web", "two")
                self.assertEqual(bytes(self.disk().data[:4]), b"two!")

    async def test_exported_each_step(self):
        """A revert of a VM shut off on its host is exported again after it."""
        for step in EXPORTED:
            for when in WHEN:
                await self.setUp()
                await self.snapshots("one")
                await self.models.vms.act("lab", "web", "start")
                await self.models.vms.act("lab", "web", "poweroff")
                models = await self.revert("one", step.value, when)
                self.assertEqual(bytes(self.disk().data[:4]), b"one!")
                [target] = self.world.server.targets.values()
                self.assertEqual(target.luns[1], self.world.server.device(self.disk().name))
                record = await models.storage.records.volume("pool1", vm_disk_name(self.uuid))
                self.assertEqual(record.exported_to, (await models.vms.get("lab", "web")).record.host)
