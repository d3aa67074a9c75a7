"""
VM delete (L{comet.model.operations.vm_delete}) cut short after any of its
steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).  (A delete that takes the VM's snapshots
off an attached volume: tests/model/test_reconcile.py's
C{LeftSnapshotCrashTests}.)
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import vm_delete
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps

#: The steps of a stopped VM's delete: all but those of a VM placed on a host.
STOPPED_DELETE = [step.value for step in vm_delete.Step
                  if step not in (vm_delete.Step.POWER_OFF, vm_delete.Step.UNPLACE)]


class VMDeleteCrashTests(CrashBase, TestCase):
    async def test_delete_each_step(self):
        """A forced delete of a running VM cut short is finished."""
        for step in steps(vm_delete.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.models.vms.act("lab", "web", "start")
                crash = Crash("vm.delete", step, when)
                await self.crash_during(
                    crash, lambda: self.models.vms.delete("lab", "web", force=True))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted vm.delete" in r for r in repairs), repairs)
                await self.assertConsistent(models)
                self.assertEqual(await models.vms.list("lab"), [])
                self.assertEqual([n for n in self.world.server.datasets if self.uuid in n], [])
