"""
The volumes of a VM (L{comet.model.storage.vmstorages}): attach, hot-plug,
unmap (once the guest released the disk), delete.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.operations import domains
from comet.model.storage import vm_disk_name
from tests.model.storage._setup import _Setup
from tests.web.test_serve import assertError

class VMStorageTests(_Setup, TestCase):
    """/cluster/:c/vms/:v/storages: attach, hot-plug, unmap, delete."""

    async def make_data(self, name="data", pool="pool1"):
        answer = await self.client.post(
            f"/storagepools/{pool}/storagevolumes", {"name": name, "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])

    async def test_list_own_disk(self):
        vm = await self.make_vm()
        self.assertEqual(vm["storages"], "/cluster/lab/vms/web/storages")
        listed = (await self.client.get("/cluster/lab/vms/web/storages")).json
        self.assertEqual([(s["dev"], s["pool"], s["vol"], s["state"]) for s in listed],
                         [("vda", "pool1", vm_disk_name(vm["uuid"]), "unmapped")])

    async def test_attach_stopped_then_start(self):
        """A volume attached to a stopped VM is exported at its start."""
        await self.make_vm()
        await self.make_data()
        answer = await self.client.post("/cluster/lab/vms/web/storages",
                                        {"pool": "pool1", "vol": "data"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(answer.header("location"), "/cluster/lab/vms/web/storages/data")
        self.assertEqual((answer.json["dev"], answer.json["state"]), ("vdb", "unmapped"))
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual(volume["vm"], "/cluster/lab/vms/web")
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/start")).code, 200)
        self.assertEqual(len(self.server.targets), 2)
        got = (await self.client.get("/cluster/lab/vms/web/storages/data")).json
        self.assertEqual(got["state"], "mapped")
        self.assertEqual(got["actions"], {"unmap": "/cluster/lab/vms/web/storages/data/unmap"})
        assertError(self, await self.client.delete("/cluster/lab/vms/web/storages/data"),
                    409, "conflict", "running")

    async def test_attached_elsewhere(self):
        await self.make_vm("a")
        await self.make_vm("b")
        await self.make_data()
        answer = await self.client.post("/cluster/lab/vms/a/storages",
                                        {"pool": "pool1", "vol": "data", "dev": "vdc"})
        self.assertEqual(answer.json["dev"], "vdc")
        answer = await self.client.post("/cluster/lab/vms/b/storages",
                                        {"pool": "pool1", "vol": "data"})
        assertError(self, answer, 409, "conflict", "another VM")
        answer = await self.client.post("/cluster/lab/vms/a/storages",
                                        {"pool": "pool1", "vol": "data"})
        assertError(self, answer, 409, "conflict", "already attached")

    async def test_hot_plug_and_unmap(self):
        """Attaching to a running VM exports and plugs it; unmap undoes both, keeps the volume."""
        answer = await self._hot_plug()
        self.assertEqual(answer.json["state"], "mapped")
        self.assertEqual(list(self.secrets.plugged.values()), [answer.json["target"]])
        answer = await self.client.post("/cluster/lab/vms/web/storages/data/unmap")
        self.assertEqual(answer.code, 202, answer.body)
        await self.models.tasks.wait(answer.json["id"])
        task = (await self.client.get(answer.header("location"))).json
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual(len(self.server.targets), 1)
        self.assertEqual(self.secrets.plugged, {})
        assertError(self, await self.client.get("/cluster/lab/vms/web/storages/data"),
                    404, "not_found")
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual((volume["vm"], volume["state"]), (None, "unmapped"))

    async def _hot_plug(self):
        await self.make_vm()
        await self.make_data()
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/start")).code, 200)
        answer = await self.client.post("/cluster/lab/vms/web/storages",
                                        {"pool": "pool1", "vol": "data"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(len(self.server.targets), 2)
        return answer

    async def _unmap(self):
        answer = await self.client.post("/cluster/lab/vms/web/storages/data/unmap")
        self.assertEqual(answer.code, 202, answer.body)
        await self.models.tasks.wait(answer.json["id"])
        return (await self.client.get(f"/tasks/{answer.json['id']}")).json

    async def test_unmap_waits_for_the_guest(self):
        """
        Libvirt answers a live detach after 5 s even if the guest still holds
        the disk: unmap unexports only once the domain has no such disk.
        """
        self.patch(domains, "UNPLUG_POLL", 0.01)
        await self._hot_plug()
        self.secrets.slow_guest = 3
        exported = []
        unexport = self.models.storage.exporter.unexport

        async def unexport_seen(record):
            exported.append(dict(self.secrets.held))
            return await unexport(record)

        self.patch(self.models.storage.exporter, "unexport", unexport_seen)
        task = await self._unmap()
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual(self.secrets.described, 3)
        self.assertEqual(exported, [{}])   # the guest had let go by then
        self.assertEqual(len(self.server.targets), 1)
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual((volume["vm"], volume["state"]), (None, "unmapped"))

    async def test_unmap_locks_the_volume(self):
        """While a volume is unmapped, deleting it is a 409 naming the unmap's task."""
        self.patch(domains, "UNPLUG_POLL", 0.01)
        await self._hot_plug()
        self.secrets.slow_guest = True
        answer = await self.client.post("/cluster/lab/vms/web/storages/data/unmap")
        self.assertEqual(answer.code, 202, answer.body)
        assertError(self, await self.client.delete("/storagepools/pool1/storagevolumes/data"),
                    409, "conflict", "volume 'data' in storage pool 'pool1' is busy: it is being"
                    f" unmapped from VM 'web' (task /tasks/{answer.json['id']})")
        assertError(self, await self.client.post("/cluster/lab/vms/web/suspend"),
                    409, "conflict", "VM 'web' is busy: it is unmapping data")
        self.secrets.held.clear()
        self.secrets.slow_guest = None
        await self.models.tasks.wait(answer.json["id"])
        self.assertEqual(await self.models.locks.rows(), [])

    async def test_unmap_guest_never_lets_go(self):
        """A guest that keeps the disk: the task fails, the volume stays attached and exported."""
        self.patch(domains, "UNPLUG_POLL", 0.01)
        self.patch(domains, "UNPLUG_TIMEOUT", 0.1)
        await self._hot_plug()
        self.secrets.slow_guest = True
        task = await self._unmap()
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("did not release disk vdb", task["message"])
        self.assertGreater(self.secrets.described, 1)
        self.assertEqual(len(self.server.targets), 2)
        got = (await self.client.get("/cluster/lab/vms/web/storages/data")).json
        self.assertEqual(got["state"], "mapped")
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual((volume["vm"], volume["state"]), ("/cluster/lab/vms/web", "mapped"))
        # Once the guest lets go, unmap works.
        self.secrets.held.clear()
        self.secrets.slow_guest = None
        self.assertEqual((await self._unmap())["status"], "finished")
        self.assertEqual(len(self.server.targets), 1)

    async def test_delete_destroys(self):
        """DELETE on a shut-off VM's volume detaches and destroys it."""
        await self.make_vm()
        await self.make_data()
        await self.client.post("/cluster/lab/vms/web/storages", {"pool": "pool1", "vol": "data"})
        answer = await self.client.delete("/cluster/lab/vms/web/storages/data")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertNotIn("tank/comet/data", self.server.datasets)

    async def test_bad_attach(self):
        await self.make_vm()
        for body in [{"pool": "pool1"}, {"pool": "pool1", "vol": "a;b"},
                     {"pool": "pool1", "vol": "base", "dev": "sda; rm"},
                     {"pool": "$(x)", "vol": "base"}]:
            assertError(self, await self.client.post("/cluster/lab/vms/web/storages", body),
                        400, "bad_request")
        assertError(self, await self.client.post(
            "/cluster/lab/vms/web/storages", {"pool": "pool1", "vol": "nope"}), 404, "not_found")

    async def test_hot_plug_fails_undone(self):
        """A hot-plug that fails unexports the volume and leaves it free."""
        await self.make_vm()
        await self.make_data()
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/start")).code, 200)
        self.secrets.fail_attach = True
        answer = await self.client.post("/cluster/lab/vms/web/storages",
                                        {"pool": "pool1", "vol": "data"})
        self.assertEqual(answer.code, 502, answer.body)
        self.assertEqual(len(self.server.targets), 1)
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual((volume["vm"], volume["state"]), (None, "unmapped"))
