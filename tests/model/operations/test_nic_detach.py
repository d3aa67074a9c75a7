"""
NIC detach (L{comet.model.operations.nic_detach}) cut short before and
after each of its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.nic_crash}).  These are its crash tests: they are
not repeated as SIGKILL cases on the testbed (tests/model/operations/
test_registry.py lists why).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import domains, nic_detach
from comet.store import Intents as IntentTable
from tests.model.operations.crash import WHEN, Crash, steps
from tests.model.operations.nic_crash import NicCrashBase


class NicDetachCrashTests(NicCrashBase, TestCase):
    async def test_each_step_running(self):
        """
        An unplug of a running VM's only private NIC cut short is finished:
        unplugged, forgotten, the cluster's network gone from the host, the
        task failed with what was repaired.
        """
        for step in steps(nic_detach.OPERATION):
            for when in WHEN:
                await self.setUp()
                a = await self.vm("a")
                await self.start("a")
                mac = a["nics"][0]["mac"]
                task = []

                async def remove():
                    task.append(await self.models.vm_nics.remove("lab", "a", mac))

                await self.crash(Crash("nic.detach", step, when), remove)
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted nic.detach of" in r for r in repairs),
                                (step, when, repairs))
                await self.assertNicsAgree(models)
                self.assertEqual((await models.vms.get("lab", "a")).record.nics, (), (step, when))
                self.assertEqual(self.held(), {"node1": set(), "node2": set()}, (step, when))
                record = await models.tasks.get(task[0].id)
                self.assertEqual(record.status, "failed")
                self.assertIn("repaired", record.message)

    async def test_stopped_vm(self):
        a = await self.vm("a")
        mac = a["nics"][0]["mac"]
        await self.crash(Crash("nic.detach", nic_detach.Step.FORGET_NIC.value, "before"),
                         lambda: self.models.vm_nics.remove("lab", "a", mac))
        models, repairs = await self.world.restart()
        self.assertTrue(any(f"the detach of NIC {mac} was finished" in r for r in repairs),
                        repairs)
        self.assertEqual((await models.vms.get("lab", "a")).record.nics, ())

    async def test_repair_waits_for_the_guest(self):
        """
        Finishing a detach, the reconciler keeps the NIC (and its network)
        while the guest holds it: the operation waits for a later pass, and
        is finished once the guest lets go.
        """
        self.patch(domains, "UNPLUG_POLL", 0.01)
        self.patch(domains, "UNPLUG_TIMEOUT", 0.05)
        a = await self.vm("a")
        await self.start("a")
        mac = a["nics"][0]["mac"]
        self.world.hv.guest_holds = True
        await self.crash(Crash("nic.detach", nic_detach.Step.DETACH_DEVICE.value, "before"),
                         lambda: self.models.vm_nics.remove("lab", "a", mac))
        models, repairs = await self.world.restart()
        self.assertEqual([r for r in repairs if "nic.detach" in r], [])
        self.assertEqual([n.mac for n in (await models.vms.get("lab", "a")).record.nics], [mac])
        self.assertEqual([(r.kind, r.step) for r in await IntentTable(self.world.db).list()],
                         [("nic.detach", nic_detach.Step.DETACH_DEVICE.value)])
        self.assertEqual(len(self.held()["node1"] | self.held()["node2"]), 2)
        self.world.hv.guest_holds = False
        repairs = await models.reconciler.run()
        self.assertTrue(any(f"the detach of NIC {mac} was finished" in r for r in repairs),
                        repairs)
        await self.assertNicsAgree(models)
        self.assertEqual(self.held(), {"node1": set(), "node2": set()})
