"""
Unmap (L{comet.model.operations.unmap}) cut short after any of its steps,
then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).  Its crash over a volume the VM's
snapshots cover is in tests/model/test_reconcile.py
(L{LeftSnapshotCrashTests}), with the other paths that take a VM's
snapshots off a volume.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import domains, unmap
from comet.store import Intents as IntentTable
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps


class UnmapCrashTests(CrashBase, TestCase):
    async def test_each_step(self):
        """An unmap cut short is finished, and its task failed with what was repaired."""
        for step in steps(unmap.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.models.vms.act("lab", "web", "start")
                await self.data_volume()
                await self.models.vm_storages.attach("lab", "web", "pool1", "data")
                crash = Crash("unmap", step, when)
                task = []

                async def run_unmap():
                    task.append(await self.models.vm_storages.unmap(
                        "lab", "web", "data"))

                await self.crash_during(crash, run_unmap)
                models, repairs = await self.world.restart()
                await self.assertConsistent(models)
                await self.assertTaskRepaired(models, task[0].id)
                record = await models.storage.records.volume("pool1", "data")
                self.assertEqual((record.vm_uuid, record.target), (None, None))
                self.assertEqual(self.plugged(), [])

    async def test_repair_waits_for_the_guest(self):
        """
        Finishing an unmap, the reconciler keeps the target while the guest
        still holds the disk (as a live unmap does): the operation waits for a
        later pass, and is finished once the guest lets go.
        """
        self.patch(domains, "UNPLUG_POLL", 0.01)
        self.patch(domains, "UNPLUG_TIMEOUT", 0.05)
        await self.models.vms.act("lab", "web", "start")
        await self.data_volume()
        await self.models.vm_storages.attach("lab", "web", "pool1", "data")
        self.world.hv.slow_guest = True
        await self.crash_during(Crash("unmap", unmap.Step.DETACH_DEVICE.value, "before"), lambda: (
            self.models.vm_storages.unmap("lab", "web", "data")))
        models, repairs = await self.world.restart()
        self.assertEqual([r for r in repairs if "unmap" in r], [])
        record = await models.storage.records.volume("pool1", "data")
        self.assertIsNotNone(record.target)              # still exported: the guest holds it
        self.assertEqual(len(self.world.server.targets), 2)
        self.assertEqual([(r.kind, r.step) for r in await IntentTable(self.world.db).list()],
                         [("unmap", unmap.Step.DETACH_DEVICE.value)])
        self.world.hv.slow_guest = None                   # the guest lets go
        self.world.hv.held.clear()
        repairs = await models.reconciler.run()
        self.assertTrue(any("the unmap of volume 'data' was finished" in r for r in repairs),
                        repairs)
        await self.assertConsistent(models)
