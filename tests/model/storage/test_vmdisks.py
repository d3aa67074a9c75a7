"""
VM disks on storage (L{comet.model.storage.vmdisks}): a VM made from a
template with a base volume gets its own ZFS clone; starting it exports that
over iSCSI with CHAP; stopping unexports it; deleting the VM destroys it.
Against fake storage servers and libvirt's test driver.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.storage import base_snapshot_name, vm_disk_name
from comet.remote.zfs import OWNER_PROPERTY
from tests.model.storage._setup import _Setup
from tests.web.test_serve import assertError

class VMDiskTests(_Setup, TestCase):
    async def test_template_needs_base(self):
        """A template's base volume must exist."""
        answer = await self.client.post(
            "/templates", {"name": "t", "disk": {"pool": "pool1", "volume": "nope"}})
        assertError(self, answer, 404, "not_found", "nope")
        answer = await self.client.post(
            "/templates", {"name": "t", "disk": {"pool": "nopool", "volume": "base"}})
        assertError(self, answer, 404, "not_found", "nopool")

    async def test_create_clones(self):
        """A new VM's disk is a tagged clone of a snapshot of the base volume."""
        vm = await self.make_vm()
        uuid = vm["uuid"]
        disk = self.server.datasets[f"tank/comet/{vm_disk_name(uuid)}"]
        self.assertEqual(disk.origin, f"tank/comet/base@{base_snapshot_name(uuid)}")
        self.assertEqual(disk.props.get(OWNER_PROPERTY), "comet")
        volume = (await self.client.get(
            f"/storagepools/pool1/storagevolumes/{vm_disk_name(uuid)}")).json
        self.assertEqual(volume["vm"], "/cluster/lab/vms/web")
        assertError(self, await self.client.delete(
            f"/storagepools/pool1/storagevolumes/{vm_disk_name(uuid)}"), 409, "conflict")
        # The base volume has a clone: it cannot be destroyed.
        assertError(self, await self.client.delete("/storagepools/pool1/storagevolumes/base"),
                    409, "conflict")

    async def test_create_fails_undone(self):
        """A clone that fails leaves no snapshot and no VM."""
        real = self.server._zfs_clone

        def broken(args):
            from comet.remote._fakeserver import _Error

            raise _Error("cannot create: out of space")

        self.server._zfs_clone = broken
        answer = await self.client.post("/cluster/lab/vms", {"template": "deb", "name": "web"})
        assertError(self, answer, 409, "conflict", "out of space")
        self.server._zfs_clone = real
        self.assertEqual([n for n in self.server.datasets if "@" in n], [])
        self.assertEqual((await self.client.get("/cluster/lab/vms")).json, [])

    async def test_inactive_pool_places_no_vm(self):
        await self.client.post("/storagepools/pool1/deactivate")
        answer = await self.client.post("/cluster/lab/vms", {"template": "deb", "name": "web"})
        assertError(self, answer, 409, "conflict", "inactive")

    async def test_start_exports_stop_unexports(self):
        """start exports the disk with CHAP; poweroff+stop unexports it."""
        vm = await self.make_vm()
        uuid = vm["uuid"]
        name = vm_disk_name(uuid)
        answer = await self.client.post("/cluster/lab/vms/web/start")
        self.assertEqual(answer.code, 200, answer.body)
        host = answer.json["host"]
        [target] = self.server.targets.values()
        self.assertRegex(target.iqn, r"^iqn\.\d{4}-\d{2}\.org\.comet:pool1\.vm-")
        self.assertEqual(target.iqn, target.iqn.lower())
        self.assertEqual(target.luns[1], self.server.device(f"tank/comet/{name}"))
        self.assertEqual(len(target.accounts), 1)
        record = await self.models.storage.records.volume("pool1", name)
        self.assertEqual(self.server.accounts[target.accounts[0]], record.chap_secret)
        self.assertGreaterEqual(len(record.chap_secret), 24)
        volume = (await self.client.get(f"/storagepools/pool1/storagevolumes/{name}")).json
        self.assertEqual((volume["state"], volume["target"], volume["exported_to"]),
                         ("mapped", target.iqn, host))
        [(secret_host, usage, value)] = self.secrets.secrets.values()
        self.assertEqual((secret_host, value), (host, record.chap_secret))
        assertError(self, await self.client.delete(f"/storagepools/pool1/storagevolumes/{name}"),
                    409, "conflict", "mapped")
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/poweroff")).code, 200)
        answer = await self.client.post("/cluster/lab/vms/web/stop")
        self.assertEqual(answer.code, 202)
        await self.models.tasks.wait(answer.json["id"])
        self.assertEqual(self.server.targets, {})
        self.assertEqual(self.server.accounts, {})
        self.assertEqual(self.secrets.secrets, {})
        volume = (await self.client.get(f"/storagepools/pool1/storagevolumes/{name}")).json
        self.assertEqual((volume["state"], volume["target"]), ("unmapped", None))

    async def test_disk_grows_only_while_its_vm_is_stopped(self):
        """
        A running VM's disk is mapped, so growing it is a 409 that changes
        nothing; once the VM is stopped it grows, and its next start exports
        it at the new size.
        """
        vm = await self.make_vm()
        name = vm_disk_name(vm["uuid"])
        href = f"/storagepools/pool1/storagevolumes/{name}"
        before = (await self.client.get(href)).json["capacity"]
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/start")).code, 200)
        assertError(self, await self.client.put(href, {"capacity": 8}), 409, "conflict",
                    "mapped")
        self.assertEqual(self.server.datasets[f"tank/comet/{name}"].volsize, before)
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/poweroff")).code, 200)
        answer = await self.client.post("/cluster/lab/vms/web/stop")
        await self.models.tasks.wait(answer.json["id"])
        answer = await self.client.put(href, {"capacity": 8})
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(answer.json["capacity"], 8 * 1024 ** 3)
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/start")).code, 200)
        self.assertEqual((await self.client.get(href)).json["state"], "mapped")
        self.assertEqual(self.server.datasets[f"tank/comet/{name}"].volsize, 8 * 1024 ** 3)

    async def test_start_exports_to_the_host_only(self):
        """
        The target a start makes admits the host the VM runs on (its
        storage_address) and nothing else: a login from another address is
        refused even with the right CHAP account; the host's own gets in.
        """
        vm = await self.make_vm()
        answer = await self.client.post("/cluster/lab/vms/web/start")
        self.assertEqual(answer.code, 200, answer.body)
        address = {"node1": "192.0.2.1", "node2": "192.0.2.2"}[answer.json["host"]]
        [target] = self.server.targets.values()
        self.assertEqual(target.acl, [address])
        record = await self.models.storage.records.volume("pool1", vm_disk_name(vm["uuid"]))
        chap = (record.chap_user, record.chap_secret)
        self.assertRaises(PermissionError, self.server.connect, target.iqn,
                          "iqn.2026-12.org.evil:x", "10.9.9.9", chap)
        self.server.connect(target.iqn, "iqn.2026-12.org.comet:host", address, chap)

    async def test_delete_destroys(self):
        """Deleting the VM destroys its disk and the base snapshot; keep_storage keeps it."""
        vm = await self.make_vm()
        self.assertEqual((await self.client.delete("/cluster/lab/vms/web")).code, 204)
        self.assertNotIn(f"tank/comet/{vm_disk_name(vm['uuid'])}", self.server.datasets)
        self.assertEqual([n for n in self.server.datasets if "@" in n], [])
        vm = await self.make_vm("db")
        answer = await self.client.delete("/cluster/lab/vms/db", {"keep_storage": True})
        self.assertEqual(answer.code, 204)
        kept = vm_disk_name(vm["uuid"])
        self.assertIn(f"tank/comet/{kept}", self.server.datasets)
        # No longer any VM's: it can be deleted as a volume.
        answer = await self.client.delete(f"/storagepools/pool1/storagevolumes/{kept}")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual([n for n in self.server.datasets if "@" in n], [])

    async def test_delete_running_forced(self):
        """A forced delete of a running VM unexports and destroys its disk."""
        vm = await self.make_vm()
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/start")).code, 200)
        answer = await self.client.delete("/cluster/lab/vms/web", {"force": True})
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual(self.server.targets, {})
        self.assertNotIn(f"tank/comet/{vm_disk_name(vm['uuid'])}", self.server.datasets)

    async def test_start_fails_when_server_down(self):
        """A storage server that does not answer: start is a 503 and leaves nothing placed."""
        await self.make_vm()
        self.runners["s1"].unavailable = "down"
        answer = await self.client.post("/cluster/lab/vms/web/start")
        assertError(self, answer, 503, "unavailable")
        self.runners["s1"].unavailable = None
        vm = (await self.client.get("/cluster/lab/vms/web")).json
        self.assertEqual((vm["state"], vm["host"]), ("shutoff", None))
        self.assertEqual(self.server.targets, {})
