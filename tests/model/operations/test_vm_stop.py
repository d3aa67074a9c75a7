"""
VM stop and cluster stop (L{comet.model.operations.vm_stop}) cut short
after any of its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import vm_stop
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps


class VMStopCrashTests(CrashBase, TestCase):
    async def check(self, step: str, when: str) -> None:
        await self.models.vms.act("lab", "web", "start")
        crash = Crash("vm.stop", step, when)
        task = []

        async def stop():
            task.append(await self.models.vms.stop("lab", "web", timeout=5))

        await self.crash_during(crash, stop)
        models, repairs = await self.world.restart()
        await self.assertConsistent(models)
        await self.assertTaskRepaired(models, task[0].id)
        # Before the shutdown ran, the VM still runs; after it, the stop is finished.
        expected = "running" if (step, when) == ("shut down", "before") else "stopped"
        self.assertEqual(await self.phase(models), expected)

    async def test_each_step(self):
        """Crashing before and after each step of a stop leaves a consistent system."""
        for step in steps(vm_stop.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.check(step, when)
