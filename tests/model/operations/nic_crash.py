"""
The world of the NIC crash tests (tests/model/operations/test_nic_attach.py
and test_nic_detach.py): the private networks' world of
tests/model/test_networks.py (two test-driver hosts, each host's devices on
a L{comet.remote.fakenet.FakeHostNetwork}) with NIC hot-plug kept by
L{tests.virt._hotplug.NicHotplug}, and what must hold after a repair: each
host holds exactly the networks its VMs need, every placed VM's domain has
exactly the NICs its record lists, no intent is left.
"""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred

from tests.model.operations.crash import DEAD, Crash
from tests.model.test_networks import NetworkTestsBase, World
from tests.virt._hotplug import NicHotplug


class NicWorld(World):
    def __init__(self, testcase):
        super().__init__(testcase)
        self.hv = NicHotplug(self.hv)


class NicCrashBase(NetworkTestsBase):
    async def setUp(self):
        self.world = NicWorld(self)
        self.models = self.world.boot()
        from tests._api import make_client

        self.client = make_client(self, self.models)
        for body in ({"name": "priv", "memory": 256, "nics": [{"network": "private"}]},
                     {"name": "bare", "memory": 256}):
            self.assertEqual((await self.client.post("/templates", body)).code, 201)
        self.assertEqual((await self.client.post("/cluster", {"name": "lab"})).code, 201)

    async def crash(self, crash: Crash, action) -> None:
        """Run C{action()} until it freezes at C{crash}, as a process killed there."""
        self.models.intents.halt = crash
        DEAD.append((self.models.intents.frozen, ensureDeferred(action())))
        await crash.reached

    async def assertNicsAgree(self, models) -> None:
        """Every placed VM's domain has exactly its record's NICs; the networks as needed."""
        for record in await models.context.vms.list(None):
            if record.host is None:
                continue
            description = await self.world.hv.describe(record.host, record.domain_name)
            self.assertEqual(sorted(n.mac for n in description.spec.nics),
                             sorted(n.mac for n in record.nics), record.name)
        await self.assertExactlyNeeded(models)
