"""
NIC attach (L{comet.model.operations.nic_attach}) cut short before and
after each of its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.nic_crash}).  These are its crash tests: they are
not repeated as SIGKILL cases on the testbed (tests/model/operations/
test_registry.py lists why).
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.errors import Unavailable
from comet.model.operations import nic_attach
from comet.store import Intents as IntentTable
from tests.model.operations.crash import WHEN, Crash, steps
from tests.model.operations.nic_crash import NicCrashBase


class NicAttachCrashTests(NicCrashBase, TestCase):
    async def test_each_step_running(self):
        """
        A hot-plug into a running VM cut short is undone (NIC forgotten, the
        private network it made torn down), unless the domain has the NIC:
        then it is kept, with its network.
        """
        for step in steps(nic_attach.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.vm("a", template="bare")
                await self.start("a")
                await self.crash(Crash("nic.attach", step, when),
                                 lambda: self.models.vm_nics.add("lab", "a", "private"))
                models, repairs = await self.world.restart()
                self.assertTrue(any("interrupted nic.attach of" in r for r in repairs),
                                (step, when, repairs))
                await self.assertNicsAgree(models)
                nics = (await models.vms.get("lab", "a")).record.nics
                if (step, when) == (nic_attach.Step.ATTACH_DEVICE.value, "after"):
                    self.assertEqual([n.network for n in nics], ["private"])
                    self.assertEqual(len(self.held()["node1"] | self.held()["node2"]), 2)
                    continue
                self.assertEqual(nics, (), (step, when))
                self.assertEqual(self.held(), {"node1": set(), "node2": set()}, (step, when))
                # It attaches normally afterwards.
                vm, nic = await models.vm_nics.add("lab", "a", "private")
                self.assertEqual(nic.index, 0)
                await self.assertNicsAgree(models)

    async def test_stopped_vm(self):
        """A stopped VM's NIC recorded before the crash is forgotten: the client never heard."""
        await self.vm("a", template="bare")
        await self.crash(Crash("nic.attach", nic_attach.Step.RECORD_NIC.value, "after"),
                         lambda: self.models.vm_nics.add("lab", "a", "private"))
        models, repairs = await self.world.restart()
        self.assertEqual((await models.vms.get("lab", "a")).record.nics, ())
        await self.assertNicsAgree(models)

    async def test_host_unreachable_at_the_hot_plug(self):
        """
        The hot-plug's answer lost (the host stopped answering): left for
        the reconciler, which keeps the NIC if the domain has it once the
        host answers.
        """
        await self.vm("a", template="bare")
        await self.start("a")
        hv = self.world.hv
        real_attach = hv.attach_device

        async def lost(host, name, device, live=None, config=True):
            await real_attach(host, name, device, live, config)
            raise Unavailable(f"compute host {host!r} does not answer")

        hv.attach_device = lost
        with self.assertRaises(Unavailable):
            await self.models.vm_nics.add("lab", "a", "private")
        del hv.attach_device
        # Nothing else may start on the VM until it is repaired.
        self.assertEqual([r.kind for r in await IntentTable(self.world.db).list()],
                         ["nic.attach", "nic.attach"])
        repairs = await self.models.reconciler.run()
        self.assertTrue(any("had completed (the domain has it): kept" in r for r in repairs),
                        repairs)
        self.assertEqual(len((await self.models.vms.get("lab", "a")).record.nics), 1)
        await self.assertNicsAgree(self.models)
