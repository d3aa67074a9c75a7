"""
Attach (L{comet.model.operations.attach}) cut short after any of its steps,
then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import attach
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps


class AttachCrashTests(CrashBase, TestCase):
    async def test_each_step(self):
        """
        An attach to a running VM cut short is undone (not attached, not
        exported), unless the domain already has the disk: then it is kept.
        """
        for step in steps(attach.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.models.vms.act("lab", "web", "start")
                await self.data_volume()
                crash = Crash("attach", step, when)
                await self.crash_during(crash, lambda: self.models.vm_storages.attach(
                    "lab", "web", "pool1", "data"))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted attach of pool1/data" in r for r in repairs),
                                repairs)
                await self.assertConsistent(models)
                record = await models.storage.records.volume("pool1", "data")
                if (step, when) == ("attach device", "after"):
                    # The domain has the disk: the attach completed, kept.
                    self.assertTrue(any("the domain has the disk): kept" in r for r in repairs),
                                    repairs)
                    self.assertEqual((record.vm_uuid, len(self.plugged())), (self.uuid, 1))
                    self.assertIsNotNone(record.target)
                    continue
                self.assertEqual((record.vm_uuid, record.target), (None, None))
                self.assertEqual(self.plugged(), [])
                # It attaches normally afterwards.
                await models.vm_storages.attach("lab", "web", "pool1", "data")
                self.assertEqual(len(self.plugged()), 1)
                await self.assertConsistent(models)
