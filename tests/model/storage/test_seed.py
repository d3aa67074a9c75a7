"""
A provisioned VM's first-boot seed on storage (L{comet.model.provision},
L{comet.model.storage.vmdisks}): a volume of the VM holding the NoCloud
ISO, attached as a CD-ROM where the VM starts, destroyed with the VM.
Against fake storage servers and libvirt's test driver.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from comet.model.storage import SEED_DEV, vm_disk_name
from tests.model.storage._setup import _Setup
from tests.model.test_provision import ED25519, read_iso
from tests.web.test_serve import assertError


class SeedTests(_Setup, TestCase):
    async def provisioned(self, name="web", **fields):
        answer = await self.client.post("/cluster/lab/vms",
                                        {"template": "deb", "name": name, **fields})
        self.assertEqual(answer.code, 201, answer.body)
        return answer.json

    def seed_zvol(self, vm) -> str:
        return f"tank/comet/{vm_disk_name(vm['uuid'], SEED_DEV)}"

    async def test_create_writes_the_seed(self):
        """The seed volume holds the NoCloud ISO; the VM shows what it says, not user_data."""
        vm = await self.provisioned(name="db_1", user_data="#cloud-config\nsecret: s3cr3t\n",
                                    ssh_keys=[ED25519])
        self.assertEqual(vm["provision"]["hostname"], "db-1")    # from the VM's name
        self.assertEqual(vm["provision"]["ssh_keys"], [ED25519])
        self.assertNotIn("s3cr3t", json.dumps(vm))
        self.assertEqual((await self.client.get(vm["href"])).json["provision"], vm["provision"])
        label, files = read_iso(bytes(self.server.datasets[self.seed_zvol(vm)].data))
        self.assertEqual(label, "cidata")
        self.assertEqual(files["user-data"], b"#cloud-config\nsecret: s3cr3t\n")
        self.assertEqual(json.loads(files["meta-data"]), {
            "instance-id": vm["uuid"], "local-hostname": "db-1", "public-keys": [ED25519]})

    async def test_unprovisioned_vm_has_no_seed(self):
        vm = await self.make_vm()
        self.assertIsNone(vm["provision"])
        self.assertNotIn(self.seed_zvol(vm), self.server.datasets)

    async def test_hostname_alone(self):
        vm = await self.provisioned(hostname="db.example.org")
        _, files = read_iso(bytes(self.server.datasets[self.seed_zvol(vm)].data))
        self.assertEqual(json.loads(files["meta-data"])["local-hostname"], "db.example.org")
        self.assertIsNone(vm["provision"]["user_data_bytes"])

    async def test_start_attaches_a_cdrom(self):
        """Started, the VM's domain has the seed as a read-only IDE CD-ROM over iSCSI."""
        vm = await self.provisioned(user_data="#cloud-config\n")
        answer = await self.client.post(f"{vm['href']}/start")
        self.assertEqual(answer.code, 200, answer.body)
        description = await self.secrets.describe(answer.json["host"], f"comet-{vm['uuid']}")
        disks = {d.target: d for d in description.spec.disks}
        self.assertEqual(sorted(disks), ["hdc", "vda"])
        self.assertEqual((disks["hdc"].device, disks["hdc"].bus), ("cdrom", "ide"))
        self.assertEqual((disks["vda"].device, disks["vda"].bus), ("disk", "virtio"))
        self.assertIn(f"vm-{vm['uuid']}-hdc", disks["hdc"].iqn)
        self.assertEqual(len(self.server.targets), 2)

    async def test_delete_removes_the_seed(self):
        """The seed goes with the VM, even when its disks are kept."""
        vm = await self.provisioned(user_data="x")
        self.assertEqual((await self.client.delete(vm["href"])).code, 204)
        self.assertNotIn(self.seed_zvol(vm), self.server.datasets)
        vm = await self.provisioned(name="db", user_data="x")
        answer = await self.client.delete(vm["href"], {"keep_storage": True})
        self.assertEqual(answer.code, 204)
        self.assertNotIn(self.seed_zvol(vm), self.server.datasets)
        self.assertIn(f"tank/comet/{vm_disk_name(vm['uuid'])}", self.server.datasets)

    async def test_bad_input_changes_nothing(self):
        before = set(self.server.datasets)
        for fields, says in (
            ({"ssh_keys": ["ssh-ed25519 AAAA"]}, "ssh_keys"),
            ({"ssh_keys": "ssh-ed25519 x"}, "ssh_keys"),
            ({"hostname": "a_b"}, "hostname"),
            ({"user_data": "x" * (64 * 1024 + 1)}, "user_data"),
            ({"user_data": 5}, "user_data"),
        ):
            answer = await self.client.post("/cluster/lab/vms",
                                            {"template": "deb", "name": "web", **fields})
            assertError(self, answer, 400, "bad_request", says)
        self.assertEqual((await self.client.get("/cluster/lab/vms")).json, [])
        self.assertEqual(set(self.server.datasets), before)

    async def test_template_without_disk_refused(self):
        answer = await self.client.post("/templates", {"name": "nodisk", "memory": 128})
        self.assertEqual(answer.code, 201, answer.body)
        answer = await self.client.post("/cluster/lab/vms",
                                        {"template": "nodisk", "user_data": "x"})
        assertError(self, answer, 409, "conflict", "first-boot seed")
        self.assertEqual((await self.client.get("/cluster/lab/vms")).json, [])

    async def test_seed_write_fails_undone(self):
        """A seed that cannot be written leaves no VM, no disk, no seed volume."""
        before = set(self.server.datasets)
        real = self.server._dd

        def broken(args, stdin):
            from comet.remote._fakeserver import _Error

            raise _Error("dd: error writing: No space left on device")

        self.server._dd = broken
        answer = await self.client.post("/cluster/lab/vms",
                                        {"template": "deb", "name": "web", "user_data": "x"})
        self.server._dd = real
        self.assertGreaterEqual(answer.code, 400, answer.body)
        self.assertEqual((await self.client.get("/cluster/lab/vms")).json, [])
        self.assertEqual(set(self.server.datasets), before)
