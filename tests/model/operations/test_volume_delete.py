"""
Volume delete (L{comet.model.operations.volume_delete}) cut short after any
of its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).  The forced delete's steps are crashed in
tests/model/test_reconcile.py (L{LeftSnapshotCrashTests}), over its VM
snapshots.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import volume_delete
from comet.model.storage import base_snapshot_name, vm_disk_name
from tests.model.operations.crash import WHEN, Crash, CrashBase

Step = volume_delete.Step
#: The steps of a plain delete of a volume made through the API.
PLAIN = [Step.DESTROY_ZVOL, Step.FORGET_RECORD]
#: The steps of a delete of a VM's disk kept after its VM (it has an origin).
KEPT_DISK = [Step.DESTROY_ZVOL, Step.FORGET_RECORD, Step.DESTROY_ORIGIN]
#: The steps of a forced delete with leftovers (tests/model/test_reconcile.py).
FORCED = [Step.DESTROY_LEFTOVERS, Step.DESTROY_ZVOL, Step.FORGET_RECORD]


class VolumeDeleteCrashTests(CrashBase, TestCase):
    def test_every_step_crashed(self):
        """The cases below (and the forced one) crash every step of the operation."""
        self.assertEqual(set(PLAIN) | set(KEPT_DISK) | set(FORCED), set(Step))

    async def test_each_step(self):
        """A volume delete cut short is finished: no zvol, no record."""
        for step in PLAIN:
            for when in WHEN:
                await self.setUp()
                task = await self.models.storage.create_volume(
                    "pool1", "data", capacity_gb=1)
                await self.models.tasks.wait(task.id)
                crash = Crash("volume.delete", step.value, when)
                await self.crash_during(
                    crash, lambda: self.models.storage.delete_volume("pool1", "data"))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted volume.delete of pool1/data" in r
                                    for r in repairs), repairs)
                await self.assertConsistent(models)
                self.assertIsNone(await models.storage.records.volume("pool1", "data"))
                self.assertNotIn("tank/comet/data", self.world.server.datasets)

    async def test_kept_disk_each_step(self):
        """
        The delete of a VM's disk kept after the VM, cut short, is finished:
        no zvol, no record, and no base snapshot it was cloned from.
        """
        for step in KEPT_DISK:
            for when in WHEN:
                await self.setUp()
                await self.models.vms.delete("lab", "web", keep_storage=True)
                name = vm_disk_name(self.uuid)
                origin = f"tank/comet/base@{base_snapshot_name(self.uuid)}"
                self.assertIn(origin, self.world.server.datasets)
                crash = Crash("volume.delete", step.value, when)
                await self.crash_during(
                    crash, lambda: self.models.storage.delete_volume("pool1", name))
                models, repairs = await self.world.restart()
                self.assertTrue(any(f"interrupted volume.delete of pool1/{name}" in r
                                    for r in repairs), repairs)
                await self.assertConsistent(models)
                self.assertIsNone(await models.storage.records.volume("pool1", name))
                self.assertNotIn(f"tank/comet/{name}", self.world.server.datasets)
                self.assertNotIn(origin, self.world.server.datasets)
