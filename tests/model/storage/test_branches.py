"""
What reverts and snapshots leave on a volume (L{comet.model.storage.branches}):
taken off a volume that leaves its VM, dropped once no snapshot needs them.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.storage import vm_disk_name
from tests.model.storage._setup import _Setup

class AttachedSnapshotTests(_Setup, TestCase):
    """
    A VM's snapshots cover its attached volumes too; whatever ends the tie
    (VM delete, cluster force delete, unmap, VM storage DELETE) takes them
    off those volumes, so that the volume can be deleted (issue 14).
    """

    async def setUp(self):
        await super().setUp()
        self.vm = await self.make_vm()
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "data", "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])
        answer = await self.client.post("/cluster/lab/vms/web/storages",
                                        {"pool": "pool1", "vol": "data"})
        self.assertEqual(answer.code, 201, answer.body)

    def data(self):
        return self.server.datasets["tank/comet/data"]

    def left_on_data(self) -> list[str]:
        """ZFS snapshots and branches of C{data} (its own zvol aside)."""
        return sorted(n for n in self.server.datasets
                      if n.startswith("tank/comet/data") and n != "tank/comet/data")

    async def snapshot(self, name: str) -> None:
        self.data().data[:4] = f"{name}!".encode()[:4]
        answer = await self.client.post("/cluster/lab/vms/web/snapshots", {"name": name})
        self.assertEqual(answer.code, 201, answer.body)

    async def assertDeletable(self) -> None:
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/data")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual(self.left_on_data(), [])
        self.assertNotIn("tank/comet/data", self.server.datasets)

    async def test_vm_delete_frees_attached_volume(self):
        """The VM's snapshot of an attached volume goes with the VM; the volume can go too."""
        await self.snapshot("one")
        self.assertEqual(self.left_on_data(), ["tank/comet/data@comet-one"])
        self.assertEqual((await self.client.delete("/cluster/lab/vms/web")).code, 204)
        self.assertEqual(self.left_on_data(), [])
        self.assertEqual(bytes(self.data().data[:4]), b"one!")   # the data stays
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual((volume["vm"], volume["state"]), (None, "unmapped"))
        await self.assertDeletable()

    async def test_cluster_force_delete_frees_attached_volume(self):
        await self.snapshot("one")
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/start")).code, 200)
        answer = await self.client.delete("/cluster/lab", {"force": True})
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual(self.server.targets, {})
        await self.assertDeletable()

    async def test_vm_delete_after_branching_revert(self):
        """
        Reverts to older snapshots leave branches on the attached volume
        (C{data-old-*}, and the current data a clone of one of them): the VM
        delete keeps the current data and removes every branch.
        """
        await self.snapshot("one")
        await self.snapshot("two")
        await self.snapshot("three")
        for name in ("one", "three", "two"):
            answer = await self.client.post(f"/cluster/lab/vms/web/snapshots/{name}/revert")
            self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(bytes(self.data().data[:4]), b"two!")
        self.assertIn("-old-", " ".join(self.left_on_data()))
        self.assertEqual((await self.client.delete("/cluster/lab/vms/web")).code, 204)
        self.assertEqual(self.left_on_data(), [])
        self.assertEqual(bytes(self.data().data[:4]), b"two!")
        await self.assertDeletable()

    async def test_keep_storage_strips_snapshots(self):
        """A disk kept by the VM delete keeps its data, not the snapshots of a VM that is gone."""
        await self.snapshot("one")
        await self.snapshot("two")
        answer = await self.client.post("/cluster/lab/vms/web/snapshots/one/revert")
        self.assertEqual(answer.code, 200, answer.body)
        own = vm_disk_name(self.vm["uuid"])
        answer = await self.client.delete("/cluster/lab/vms/web", {"keep_storage": True})
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual(sorted(n for n in self.server.datasets if own in n),
                         [f"tank/comet/{own}"])
        answer = await self.client.delete(f"/storagepools/pool1/storagevolumes/{own}")
        self.assertEqual(answer.code, 204, answer.body)
        await self.assertDeletable()
        self.assertEqual([n for n in self.server.datasets if "@" in n], [])

    async def test_unmap_takes_the_volume_out_of_the_snapshots(self):
        """
        Unmap: the VM's snapshots of the volume go with it (the snapshots now
        cover the VM's remaining disks); a revert after it leaves the volume
        alone; the volume can be deleted, or attached to another VM that
        takes snapshots of the same name.
        """
        await self.snapshot("one")
        self.data().data[:4] = b"now!"
        answer = await self.client.post("/cluster/lab/vms/web/storages/data/unmap")
        self.assertEqual(answer.code, 202, answer.body)
        await self.models.tasks.wait(answer.json["id"])
        task = (await self.client.get(answer.header("location"))).json
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual(self.left_on_data(), [])
        record = await self.models.storage.snapshots.get(self.vm["uuid"], "one")
        self.assertEqual(record.volumes, f'["pool1/{vm_disk_name(self.vm["uuid"])}"]')
        answer = await self.client.post("/cluster/lab/vms/web/snapshots/one/revert")
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(bytes(self.data().data[:4]), b"now!")
        await self.make_vm("other")
        answer = await self.client.post("/cluster/lab/vms/other/storages",
                                        {"pool": "pool1", "vol": "data"})
        self.assertEqual(answer.code, 201, answer.body)
        answer = await self.client.post("/cluster/lab/vms/other/snapshots", {"name": "one"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual((await self.client.delete("/cluster/lab/vms/other")).code, 204)
        await self.assertDeletable()

    async def test_vm_storage_delete_with_snapshots(self):
        """DELETE of a VM's volume that its snapshots cover: detached, stripped, destroyed."""
        await self.snapshot("one")
        answer = await self.client.delete("/cluster/lab/vms/web/storages/data")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual(self.left_on_data(), [])
        self.assertNotIn("tank/comet/data", self.server.datasets)
        # The snapshot still covers the VM's own disk.
        answer = await self.client.post("/cluster/lab/vms/web/snapshots/one/revert")
        self.assertEqual(answer.code, 200, answer.body)

    async def test_snapshot_deletes_leave_no_branch(self):
        """Deleting every snapshot after reverts leaves no branch and no snapshot."""
        await self.snapshot("one")
        await self.snapshot("two")
        await self.snapshot("three")
        for name in ("one", "three", "two"):
            answer = await self.client.post(f"/cluster/lab/vms/web/snapshots/{name}/revert")
            self.assertEqual(answer.code, 200, answer.body)
        for name in ("three", "two", "one"):
            answer = await self.client.delete(f"/cluster/lab/vms/web/snapshots/{name}")
            self.assertEqual(answer.code, 204, (name, answer.body))
        self.assertEqual(self.left_on_data(), [])
        self.assertEqual(bytes(self.data().data[:4]), b"two!")
        self.assertEqual([n for n in self.server.datasets if "@comet-" in n and "base" not in n],
                         [])
