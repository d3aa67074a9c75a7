"""
VM start and cluster start (L{comet.model.operations.vm_start}) cut short
after any of its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import vm_start
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps


class VMStartCrashTests(CrashBase, TestCase):
    """A VM start cut short after any step is finished (it ran) or undone."""

    async def check(self, step: str, when: str) -> None:
        crash = Crash("vm.start", step, when)
        await self.crash_during(crash, lambda: self.models.vms.act("lab", "web", "start"))
        models, repairs = await self.world.restart()
        self.assertEqual(len([r for r in repairs if "interrupted vm.start" in r]), 1, repairs)
        await self.assertConsistent(models)
        expected = "running" if (step, when) == ("start domain", "after") else "stopped"
        self.assertEqual(await self.phase(models), expected)
        # The repaired VM starts and stops normally in the new process.
        if expected == "stopped":
            vm = await models.vms.act("lab", "web", "start")
            self.assertEqual(vm.phase, "running")
            await self.assertConsistent(models)

    async def test_each_step(self):
        """Crashing before and after each step of a start leaves a consistent system."""
        for step in steps(vm_start.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.check(step, when)


class ClusterStartCrashTests(CrashBase, TestCase):
    async def test_each_step(self):
        """A cluster start cut short fails its task with what was repaired."""
        for step in steps(vm_start.OPERATION):
            for when in WHEN:
                await self.setUp()
                crash = Crash("cluster.start", step, when)
                task = []

                async def start():
                    task.append(await self.models.vms.cluster_action("lab", "start"))

                await self.crash_during(crash, start)
                models, repairs = await self.world.restart()
                await self.assertConsistent(models)
                await self.assertTaskRepaired(models, task[0].id)
                message = (await models.tasks.get(task[0].id)).message
                self.assertIn(f"cluster.start of {self.uuid}", message)
