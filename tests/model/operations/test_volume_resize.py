"""
Volume resize (L{comet.model.operations.volume_resize}) cut short before or
after its step, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}): the record ends with the size the zvol
has, whichever it is.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import volume_resize
from comet.model.storage.names import GiB
from tests.model.operations.crash import WHEN, Crash, CrashBase


class VolumeResizeCrashTests(CrashBase, TestCase):
    async def test_each_step(self):
        """A resize cut short leaves the record agreeing with the zvol, and no intent."""
        for step in volume_resize.Step:
            for when in WHEN:
                await self.setUp()
                task = await self.models.storage.create_volume("pool1", "data", capacity_gb=1)
                await self.models.tasks.wait(task.id)
                crash = Crash("volume.resize", step.value, when)
                await self.crash_during(
                    crash, lambda: self.models.storage.resize_volume("pool1", "data", 2))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted volume.resize of pool1/data" in r
                                    for r in repairs), repairs)
                await self.assertConsistent(models)
                live = self.world.server.datasets["tank/comet/data"].volsize
                # Before the step nothing ran; after it, the zvol has grown.
                self.assertEqual(live, (2 if when == "after" else 1) * GiB, (step, when))
                record = await models.storage.records.volume("pool1", "data")
                self.assertEqual(record.capacity, live)
