"""
A VM's snapshots (L{comet.model.storage.snapshots}): take, the tree,
revert (rollback or branch), delete.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.storage import branch, vm_disk_name
from comet.remote.zfs import OWNER_PROPERTY
from tests.model.storage._setup import _Setup
from tests.web.test_serve import assertError

class VMSnapshotTests(_Setup, TestCase):
    """/cluster/:c/vms/:v/snapshots: create (sync first, atomic), tree, revert, delete."""

    def disk(self, vm):
        return self.server.datasets[f"tank/comet/{vm_disk_name(vm['uuid'])}"]

    async def test_tree(self):
        vm = await self.make_vm()
        self.assertEqual(vm["snapshots"], "/cluster/lab/vms/web/snapshots")
        self.assertEqual((await self.client.get("/cluster/lab/vms/web/snapshots")).json, [])
        synced = self.server.synced
        answer = await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "one"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(answer.header("location"), "/cluster/lab/vms/web/snapshots/one")
        self.assertEqual((answer.json["parent"], answer.json["current"]), ("", True))
        self.assertEqual(answer.json["actions"],
                         {"revert": "/cluster/lab/vms/web/snapshots/one/revert"})
        self.assertEqual(self.server.synced, synced + 1)
        name = f"tank/comet/{vm_disk_name(vm['uuid'])}@comet-one"
        self.assertIn(name, self.server.datasets)
        self.assertEqual(self.server.datasets[name].props.get(OWNER_PROPERTY), "comet")
        second = (await self.client.post("/cluster/lab/vms/web/snapshots")).json
        self.assertEqual((second["name"], second["parent"], second["current"]),
                         ("snap-1", "one", True))
        listed = (await self.client.get("/cluster/lab/vms/web/snapshots")).json
        self.assertEqual([(s["name"], s["current"]) for s in listed],
                         [("one", False), ("snap-1", True)])
        assertError(self, await self.client.post("/cluster/lab/vms/web/snapshots",
                                                 {"name": "one"}), 409, "conflict")
        assertError(self, await self.client.post("/cluster/lab/vms/web/snapshots",
                                                 {"name": "a;b"}), 400, "bad_request")

    async def test_revert(self):
        """Revert to the newest (rollback) and to older ones (clone/promote), keeping the tree."""
        vm = await self.make_vm()
        self.disk(vm).data[:4] = b"one!"
        await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "one"})
        self.disk(vm).data[:4] = b"two!"
        await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "two"})
        self.disk(vm).data[:4] = b"now!"
        answer = await self.client.post("/cluster/lab/vms/web/snapshots/one/revert")
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(answer.json["current"], True)
        self.assertEqual(bytes(self.disk(vm).data[:4]), b"one!")
        # The newer snapshot survives (on the branch set aside), and can be reverted to.
        answer = await self.client.post("/cluster/lab/vms/web/snapshots/two/revert")
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(bytes(self.disk(vm).data[:4]), b"two!")
        self.disk(vm).data[:4] = b"xxx!"
        answer = await self.client.post("/cluster/lab/vms/web/snapshots/two/revert")
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(bytes(self.disk(vm).data[:4]), b"two!")
        three = (await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "three"})).json
        self.assertEqual(three["parent"], "two")
        listed = {s["name"]: s["current"] for s in
                  (await self.client.get("/cluster/lab/vms/web/snapshots")).json}
        self.assertEqual(listed, {"one": False, "two": False, "three": True})
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/start")).code, 200)
        assertError(self, await self.client.post("/cluster/lab/vms/web/snapshots/one/revert"),
                    409, "conflict", "running")
        # Off but still placed: the target is re-exported with the reverted zvol.
        await self.client.post("/cluster/lab/vms/web/poweroff")
        answer = await self.client.post("/cluster/lab/vms/web/snapshots/one/revert")
        self.assertEqual(answer.code, 200, answer.body)
        [target] = self.server.targets.values()
        self.assertEqual(target.luns[1],
                         self.server.device(f"tank/comet/{vm_disk_name(vm['uuid'])}"))
        self.assertEqual(bytes(self.disk(vm).data[:4]), b"one!")
        # Deleting the VM takes every branch and snapshot with it.
        self.assertEqual((await self.client.delete("/cluster/lab/vms/web", {"force": True})).code,
                         204)
        self.assertEqual(sorted(self.server.datasets),
                         ["tank", "tank/comet", "tank/comet/base"])

    async def test_delete_origin_refused(self):
        """A snapshot a revert branched from is a 409, and nothing is destroyed."""
        vm = await self.make_vm()
        await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "one"})
        await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "two"})
        self.assertEqual(
            (await self.client.post("/cluster/lab/vms/web/snapshots/one/revert")).code, 200)
        before = sorted(self.server.datasets)
        assertError(self, await self.client.delete("/cluster/lab/vms/web/snapshots/one"),
                    409, "conflict", "origin")
        self.assertEqual(sorted(self.server.datasets), before)
        self.assertEqual((await self.client.get("/cluster/lab/vms/web/snapshots/one")).code, 200)
        # The newer one (on the branch set aside) goes.
        self.assertEqual((await self.client.delete("/cluster/lab/vms/web/snapshots/two")).code,
                         204)
        self.assertIn(f"tank/comet/{vm_disk_name(vm['uuid'])}", self.server.datasets)

    async def test_branch_resumes(self):
        """
        L{branch} without C{undo} carries on from wherever a crash left it:
        after the clone, the promote, or the first rename.
        """
        zfs = self.models.storage.server("s1").zfs
        for done in range(5):
            vm = await self.make_vm(f"b{done}")
            zvol = f"tank/comet/{vm_disk_name(vm['uuid'])}"
            self.server.datasets[zvol].data[:4] = b"one!"
            await self.client.post(f"/cluster/lab/vms/b{done}/snapshots", {"name": "one"})
            self.server.datasets[zvol].data[:4] = b"now!"
            name, token = zvol.rsplit("/", 1)[1], f"{done:08x}"
            fresh, old = f"{zvol}-rv-{token}", f"{zvol}-old-{token}"
            steps = [lambda: zfs.clone(f"{zvol}@comet-one", "tank/comet", f"{name}-rv-{token}"),
                     lambda: zfs.promote(fresh), lambda: zfs.rename(zvol, old),
                     lambda: zfs.rename(fresh, zvol)]
            for step in steps[:done]:
                await step()
            said = await branch(zfs, "tank/comet", name, f"{zvol}@comet-one", token)
            self.assertIn(zvol, said)
            self.assertEqual(bytes(self.server.datasets[zvol].data[:4]), b"one!", done)
            self.assertIn(old, self.server.datasets)
            self.assertNotIn(fresh, self.server.datasets)
            self.assertEqual(bytes(self.server.datasets[old].data[:4]), b"now!")

    async def test_delete_snapshot(self):
        vm = await self.make_vm()
        await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "one"})
        await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "two"})
        self.assertEqual((await self.client.delete("/cluster/lab/vms/web/snapshots/one")).code,
                         204)
        two = (await self.client.get("/cluster/lab/vms/web/snapshots/two")).json
        self.assertEqual((two["parent"], two["current"]), ("", True))
        self.assertNotIn(f"tank/comet/{vm_disk_name(vm['uuid'])}@comet-one", self.server.datasets)
        assertError(self, await self.client.get("/cluster/lab/vms/web/snapshots/one"),
                    404, "not_found")

    async def test_delete_vm_removes_snapshots(self):
        vm = await self.make_vm()
        await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "one"})
        self.assertEqual((await self.client.delete("/cluster/lab/vms/web")).code, 204)
        self.assertEqual([n for n in self.server.datasets if "@" in n], [])
        self.assertEqual(await self.models.storage.snapshots.list(vm["uuid"]), [])
