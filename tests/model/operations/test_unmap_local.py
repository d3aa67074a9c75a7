"""
Local unmap (L{comet.model.operations.unmap_local}) cut short after any of
its steps, then repaired by a fresh daemon's reconciler
(L{tests.model.operations.crash}): the guest's write is on the storage
server, no copy is left on the host, no sync snapshot on the server, and the
volume is free.  The world is a local-copy mode one: node1 offers a local
dataset on a fake ZFS of its own (L{comet.remote.FakeStorageServer}), which
outlives the "processes" as the storage server does.
"""

from __future__ import annotations

import os

import attrs
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from comet.model import make_models
from comet.model.operations import unmap_local
from comet.model.storage import GiB
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote.zfs import ZFS
from comet.remote.zfs_sync import is_sync
from comet.store import Intents as IntentTable
from tests._api import make_client
from tests.model.operations.crash import WHEN, Crash, CrashBase, Daemon, steps

LOCAL = "tank/comet-local"
ADDRESS = "192.0.2.101"
DATA_LOCAL = f"{LOCAL}/pool1/data"


class LocalDaemon(Daemon):
    """L{Daemon} whose node1 runs local-copy mode VMs on a fake ZFS of its own."""

    def __init__(self, testcase: TestCase):
        super().__init__(testcase)
        node1, *others = self.config.hosts
        self.config = attrs.evolve(self.config, hosts=(
            attrs.evolve(node1, ssh=f"root@{ADDRESS}", local_dataset=LOCAL), *others))
        self.host_server = FakeStorageServer(pools={"tank": 100 * GiB})
        self.host_runner = FakeRunner(self.host_server, host=ADDRESS)

    def boot(self):
        return make_models(self.db, self.hv, self.config, reactor,
                           runners={"s1": FakeRunner(self.server, host="s1")},
                           host_runners={ADDRESS: self.host_runner})


class LocalUnmapCrashTests(CrashBase, TestCase):
    async def setUp(self):
        self.world = LocalDaemon(self)
        await ZFS(self.world.host_runner).create_dataset(LOCAL)
        self.models = self.world.boot()
        self.client = make_client(self, self.models)
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "base", "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])
        self.assertEqual((await self.client.post("/cluster", {"name": "lab"})).code, 201)
        answer = await self.client.post("/templates", {
            "name": "loc", "memory": 128, "disk": {"pool": "pool1", "volume": "base"},
            "disk_mode": "local"})
        self.assertEqual(answer.code, 201, answer.body)
        answer = await self.client.post("/cluster/lab/vms", {"template": "loc", "name": "web"})
        self.assertEqual(answer.code, 201, answer.body)
        self.uuid = answer.json["uuid"]
        await self.data_volume()
        await self.models.vm_storages.attach("lab", "web", "pool1", "data")
        answer = await self.client.post("/cluster/lab/vms/web/start")
        self.assertEqual(answer.code, 202, answer.body)
        await self.models.tasks.wait(answer.json["id"])
        task = await self.models.tasks.get(answer.json["id"])
        self.assertEqual(task.status, "finished", task.message)
        self.written = os.urandom(64 * 1024)
        await self.world.host_runner.run(
            ["dd", f"of={self.world.host_server.device(DATA_LOCAL)}"], stdin=self.written)

    async def assertSyncedBack(self, models) -> None:
        """The guest's write on the storage server, nothing left on the host, the volume free."""
        server = ZFS(FakeRunner(self.world.server, host="s1"))
        self.assertEqual(await server.read_head("tank/comet/data", len(self.written)),
                         self.written)
        self.assertEqual([s.name for s in await server.list_snapshots("tank/comet/data")
                          if is_sync(s.snapname)], [])
        self.assertFalse(await ZFS(self.world.host_runner).exists(DATA_LOCAL))
        record = await models.storage.records.volume("pool1", "data")
        self.assertEqual((record.vm_uuid, record.dev, record.copy_host), (None, None, None))
        vm = await models.vms.get("lab", "web")
        self.assertEqual(vm.phase, "running")
        description = await self.world.hv.describe("node1", vm.record.domain_name)
        self.assertEqual([d.target for d in description.spec.disks], ["vda"])

    async def test_each_step(self):
        """An unmap cut short is finished (synced back), and its task failed with the repair."""
        for step in steps(unmap_local.OPERATION):
            for when in WHEN:
                await self.setUp()
                crash = Crash("unmap.local", step, when)
                task = []

                async def run_unmap():
                    task.append(await self.models.vm_storages.unmap("lab", "web", "data"))

                await self.crash_during(crash, run_unmap)
                models, repairs = await self.world.restart()
                await self.assertConsistent(models)
                await self.assertTaskRepaired(models, task[0].id)
                done = ((step, when) == (unmap_local.Step.FORGET_ATTACHMENT.value, "after"))
                expected = "the unmap had completed" if done else (
                    "the unmap of volume 'data' was finished")
                self.assertTrue(any("unmap.local of pool1/data" in r and expected in r
                                    for r in repairs), repairs)
                await self.assertSyncedBack(models)

    async def test_repair_waits_for_the_host(self):
        """
        A repair whose host does not answer keeps the operation (the host's
        copy, C{copy_host} and the attachment as they were) for a later
        pass, which finishes it once the host is back.
        """
        crash = Crash("unmap.local", unmap_local.Step.SYNC_BACK.value, "before")
        await self.crash_during(crash, lambda: self.models.vm_storages.unmap("lab", "web", "data"))
        self.world.host_runner.unavailable = "ssh: connect to host 192.0.2.101: No route to host"
        models, repairs = await self.world.restart()
        self.assertEqual([r for r in repairs if "unmap" in r], [])
        self.assertEqual([(r.kind, r.step) for r in await IntentTable(self.world.db).list()],
                         [("unmap.local", unmap_local.Step.DETACH_DEVICE.value),
                          ("unmap.local", unmap_local.Step.SYNC_BACK.value)])
        record = await models.storage.records.volume("pool1", "data")
        self.assertEqual((record.copy_host, record.vm_uuid), ("node1", self.uuid))
        self.world.host_runner.unavailable = None
        self.assertTrue(await ZFS(self.world.host_runner).exists(DATA_LOCAL))
        repairs = await models.reconciler.run()
        self.assertTrue(any("synced back from host 'node1'" in r for r in repairs), repairs)
        await self.assertConsistent(models)
        await self.assertSyncedBack(models)
