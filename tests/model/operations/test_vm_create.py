"""
VM create (L{comet.model.operations.vm_create}) cut short after any of its
steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import vm_create
from tests.model.operations.crash import WHEN, Crash, CrashBase, steps


class VMCreateCrashTests(CrashBase, TestCase):
    async def test_create_each_step(self):
        """A VM create cut short is undone: no record, no disk, no base snapshot."""
        for step in steps(vm_create.OPERATION):
            if step == vm_create.Step.MAKE_SEED.value:
                continue   # (a provisioned create's: test_provisioned_create_each_step)
            for when in WHEN:
                await self.setUp()
                crash = Crash("vm.create", step, when)
                await self.crash_during(crash, lambda: self.models.vms.create(
                    "lab", "deb", name="db"))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted vm.create" in r for r in repairs), repairs)
                await self.assertConsistent(models)
                self.assertEqual([v.name for v in await models.vms.list("lab")], ["web"])
                base_snapshots = [n for n in self.world.server.datasets
                                  if n.startswith("tank/comet/base@")]
                self.assertEqual(len(base_snapshots), 1, base_snapshots)   # web's only
                await models.vms.create("lab", "deb", name="db")

    async def test_provisioned_create_each_step(self):
        """
        A provisioned VM create cut short is undone, its seed volume too
        (its last step run but not marked done is a create cut short).
        """
        for step in steps(vm_create.OPERATION):
            for when in WHEN:
                await self.setUp()
                crash = Crash("vm.create", step, when)
                await self.crash_during(crash, lambda: self.models.vms.create(
                    "lab", "deb", name="db", user_data="#cloud-config\n"))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted vm.create" in r for r in repairs), repairs)
                await self.assertConsistent(models)
                names = [v.name for v in await models.vms.list("lab")]
                seeds = [n for n in self.world.server.datasets if n.endswith("-hdc")]
                self.assertEqual(names, ["web"], (step, when))
                self.assertEqual(seeds, [], (step, when))
                await models.vms.create("lab", "deb", name="db", user_data="#cloud-config\n")
