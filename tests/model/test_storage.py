"""
VM disks on storage: a VM made from a template with a base volume gets its
own ZFS clone; starting it exports that over iSCSI with CHAP; stopping
unexports it; deleting the VM destroys it.  Against fake storage servers and
libvirt's test driver.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model import storage as storage_model
from comet.model.storage import base_snapshot_name, branch, vm_disk_name
from comet.remote.zfs import OWNER_PROPERTY
from tests._api import make_client
from tests.web.test_serve import assertError
from tests.web.test_storage import storage_models


class _Secrets:
    """
    The libvirt adapter with CHAP secrets kept here: libvirt's test driver
    has no secrets (the integration tests use real ones).
    """

    def __init__(self, real):
        self._real = real
        self.secrets: dict[str, tuple[str, str, str]] = {}
        #: (host, domain, dev) -> iqn of hot-plugged disks (the test driver has no hot-plug).
        self.plugged: dict[tuple[str, str, str], str] = {}
        self.fail_attach = False
        #: A guest that holds a detached disk: for this many looks at the
        #: domain (C{True}: for ever); C{None}: it lets go at once.
        self.slow_guest: int | bool | None = None
        #: (host, domain, dev) -> looks left, of disks a slow guest still holds.
        self.held: dict[tuple[str, str, str], int | bool] = {}
        #: How often the domain was looked at while a guest held a disk.
        self.described = 0

    async def attach_device(self, host, name, spec, live=None, config=True):
        if self.fail_attach:
            from comet.virt import HypervisorError

            raise HypervisorError("attaching a device: it failed")
        self.plugged[(host, name, spec.target)] = spec.iqn

    async def detach_device(self, host, name, spec, live=None, config=True):
        self.plugged.pop((host, name, spec.target), None)
        if self.slow_guest is not None:
            self.held[(host, name, spec.target)] = self.slow_guest

    async def describe(self, host, name, secure=False):
        """The test driver's domain, with its hot-plugged disks and those a slow guest still holds."""
        import types

        import attrs

        real = await self._real.describe(host, name, secure)
        held = [types.SimpleNamespace(target=key[2]) for key in self.plugged if key[:2] == (host, name)]
        for key, looks in list(self.held.items()):
            if key[:2] == (host, name):
                self.described += 1
                if looks is not True:   # a guest that lets go after some looks
                    self.held[key] = looks - 1
                    if looks <= 1:
                        del self.held[key]
                held.append(types.SimpleNamespace(target=key[2]))
        return attrs.evolve(real, spec=attrs.evolve(real.spec, disks=(*real.spec.disks, *held)))

    def __getattr__(self, name):
        return getattr(self._real, name)

    async def define_secret(self, host, uuid, usage, value):
        self.secrets[uuid] = (host, usage, value)
        return uuid

    async def undefine_secret(self, host, uuid):
        from comet.errors import NotFound

        if self.secrets.pop(uuid, None) is None:
            raise NotFound(f"no secret {uuid}")


async def make_base_template(testcase, client, models) -> None:
    """The volume C{base} in pool1, the cluster C{lab} and the template C{deb} on C{base}."""
    answer = await client.post("/storagepools/pool1/storagevolumes", {"name": "base", "capacity": 1})
    await models.tasks.wait(answer.json["id"])
    testcase.assertEqual((await client.post("/cluster", {"name": "lab"})).code, 201)
    answer = await client.post(
        "/templates", {"name": "deb", "memory": 128, "disk": {"pool": "pool1", "volume": "base"}})
    testcase.assertEqual(answer.code, 201, answer.body)


class _Setup:
    """Fake storage servers, a base volume, a cluster and a template using it."""

    async def setUp(self):
        self.models = storage_models(self)
        self.secrets = self.models.storage.hypervisors = _Secrets(self.models.storage.hypervisors)
        self.client = make_client(self, self.models)
        self.server = self.servers["s1"]
        await make_base_template(self, self.client, self.models)

    async def make_vm(self, name="web"):
        answer = await self.client.post("/cluster/lab/vms", {"template": "deb", "name": name})
        self.assertEqual(answer.code, 201, answer.body)
        return answer.json


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
        record = await self.models.storage._store.volume("pool1", name)
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
        record = await self.models.storage._store.volume("pool1", vm_disk_name(vm["uuid"]))
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
        self.patch(storage_model, "UNPLUG_POLL", 0.01)
        await self._hot_plug()
        self.secrets.slow_guest = 3
        exported = []
        unexport = self.models.storage._unexport

        async def unexport_seen(record):
            exported.append(dict(self.secrets.held))
            return await unexport(record)

        self.patch(self.models.storage, "_unexport", unexport_seen)
        task = await self._unmap()
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual(self.secrets.described, 3)
        self.assertEqual(exported, [{}])   # the guest had let go by then
        self.assertEqual(len(self.server.targets), 1)
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual((volume["vm"], volume["state"]), (None, "unmapped"))

    async def test_unmap_locks_the_volume(self):
        """While a volume is unmapped, deleting it is a 409 naming the unmap's task."""
        self.patch(storage_model, "UNPLUG_POLL", 0.01)
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
        self.assertEqual(await self.models.locks._store.list(), [])

    async def test_unmap_guest_never_lets_go(self):
        """A guest that keeps the disk: the task fails, the volume stays attached and exported."""
        self.patch(storage_model, "UNPLUG_POLL", 0.01)
        self.patch(storage_model, "UNPLUG_TIMEOUT", 0.1)
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
        zfs = self.models.storage._server("s1").zfs
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


class LeftoverVolumeTests(_Setup, TestCase):
    """
    ZFS snapshots and clones of a volume that Comet has no record of (left by
    an earlier Comet, or made by hand): a DELETE says what blocks it and how
    to clear it; an admin's C{{"force": true}} destroys what carries Comet's
    tag, never what a record owns.
    """

    async def setUp(self):
        await super().setUp()
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "data", "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])
        self.zfs = self.models.storage._server("s1").zfs

    async def test_unrecorded_snapshots_and_clones(self):
        await self.zfs.snapshot(["tank/comet/data"], "comet-snap-1")
        await self.zfs.clone("tank/comet/data@comet-snap-1", "tank/comet", "data-old-0a1b")
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/data")
        assertError(self, answer, 409, "conflict", "tank/comet/data@comet-snap-1")
        for part in ("tank/comet/data-old-0a1b", '{"force": true}', "no record"):
            self.assertIn(part, answer.json["reason"])
        self.assertIn("tank/comet/data@comet-snap-1", self.server.datasets)
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/data",
                                          {"force": True})
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual([n for n in self.server.datasets if "data" in n], [])

    async def test_force_leaves_what_is_not_comets(self):
        """A snapshot without Comet's tag stays, and so does the volume: 409, nothing destroyed."""
        self.server.handle(["zfs", "snapshot", "tank/comet/data@by-hand"], None)
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/data",
                                          {"force": True})
        assertError(self, answer, 409, "conflict", "tank/comet/data@by-hand")
        self.assertIn("tank/comet/data", self.server.datasets)

    async def test_force_never_destroys_recorded_clones(self):
        """The base of a VM's disk stays a 409, forced or not: the VM's disk is a record."""
        vm = await self.make_vm()
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/base",
                                          {"force": True})
        assertError(self, answer, 409, "conflict", vm_disk_name(vm["uuid"]))
        self.assertIn(f"tank/comet/{vm_disk_name(vm['uuid'])}", self.server.datasets)
        self.assertIn("tank/comet/base", self.server.datasets)

    async def test_force_needs_admin(self):
        await self.zfs.snapshot(["tank/comet/data"], "comet-snap-1")
        operator = make_client(self, self.models, role="operator")
        answer = await operator.delete("/storagepools/pool1/storagevolumes/data", {"force": True})
        assertError(self, answer, 403, "forbidden")
        self.assertIn("tank/comet/data@comet-snap-1", self.server.datasets)
