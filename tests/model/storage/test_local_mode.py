"""
Local-copy mode through the API (issue 21): a VM whose template says
C{"disk_mode": "local"} starts only on a host with a local dataset, runs on a
copy of its disk there (a block disk of its domain), and its stop syncs the
guest's writes back to the storage server and removes the copy (or keeps it
as a cache: C{[[hosts]] local_keep}); an unmap while it runs does the same
for one volume.  Against
libvirt's test driver, fake storage servers and a fake ZFS for the host
(L{comet.remote.FakeStorageServer}, which passes the storage contract suite
beside the real OpenZFS servers).
"""

from __future__ import annotations

import os

import attrs
from twisted.trial.unittest import TestCase

from comet.errors import Unavailable
from comet.model.storage import vm_disk_name
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote.zfs import ZFS
from comet.remote.zfs_sync import is_sync
from tests import _api
from tests._api import make_client
from tests.model.storage._setup import _Secrets
from tests.web.test_serve import assertError
from tests.web.test_storage import storage_models

GiB = 1024 ** 3
LOCAL = "tank/comet-local"
ADDRESS = "192.0.2.101"


class _LocalSetup:
    #: node1's C{local_keep}.
    KEEP = False

    async def setUp(self):
        node1, node2 = _api.test_hosts(self)
        # node2 is the bigger host (placement's first choice) but offers no local dataset.
        hosts = (attrs.evolve(node1, ssh=f"root@{ADDRESS}", local_dataset=LOCAL,
                              local_keep=self.KEEP), node2)
        self.host_server = FakeStorageServer(pools={"tank": 100 * GiB})
        self.host_runner = FakeRunner(self.host_server, host=ADDRESS)
        self.host_zfs = ZFS(self.host_runner)
        await self.host_zfs.create_dataset(LOCAL)
        self.models = storage_models(self, wrap_hypervisors=_Secrets, hosts=hosts,
                                     host_runners={ADDRESS: self.host_runner})
        self.client = make_client(self, self.models)
        self.server = self.servers["s1"]
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "base", "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])
        self.assertEqual((await self.client.post("/cluster", {"name": "lab"})).code, 201)
        answer = await self.client.post("/templates", {
            "name": "loc", "memory": 128, "disk": {"pool": "pool1", "volume": "base"},
            "disk_mode": "local"})
        self.assertEqual((answer.code, answer.json["disk_mode"]), (201, "local"), answer.body)
        answer = await self.client.post("/cluster/lab/vms", {"template": "loc", "name": "web"})
        self.assertEqual((answer.code, answer.json["disk_mode"]), (201, "local"), answer.body)
        self.uuid = answer.json["uuid"]
        self.disk = vm_disk_name(self.uuid)
        self.zvol = f"tank/comet/{self.disk}"
        self.local = f"{LOCAL}/pool1/{self.disk}"

    async def task(self, answer) -> dict:
        """The task C{answer} started, once it has ended."""
        await self.models.tasks.wait(answer.json["id"])
        return (await self.client.get(answer.header("location"))).json

    async def start(self):
        answer = await self.client.post("/cluster/lab/vms/web/start")
        self.assertEqual(answer.code, 202, answer.body)
        task = await self.task(answer)
        self.assertEqual(task["status"], "finished", task["message"])

    async def stop(self):
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/poweroff")).code, 200)
        answer = await self.client.post("/cluster/lab/vms/web/stop")
        self.assertEqual(answer.code, 202)
        return await self.models.tasks.wait(answer.json["id"])

    async def sync_snapshots(self, zvol: str) -> list[str]:
        """The sync snapshots of C{zvol} on the storage server."""
        return [s.name for s in await ZFS(self.runners["s1"]).list_snapshots(zvol)
                if is_sync(s.snapname)]


class LocalModeTests(_LocalSetup, TestCase):
    async def test_start_and_stop(self):
        """
        The start copies the disk to the host and runs the domain on it: no
        export on the storage server, the volume mapped to the host; the stop
        brings the guest's writes back and removes the copy.
        """
        answer = await self.client.post("/cluster/lab/vms/web/start")
        self.assertEqual(answer.code, 202, answer.body)
        task = await self.task(answer)
        self.assertEqual(task["status"], "finished", task["message"])
        self.assertIn("runs on host 'node1'", task["message"])
        vm = (await self.client.get("/cluster/lab/vms/web")).json
        self.assertEqual((vm["state"], vm["host"]), ("running", "node1"))
        self.assertNotIn("migrate", vm["actions"])
        description = await self.models.context.hypervisors.describe("node1", f"comet-{self.uuid}")
        [disk] = description.spec.disks
        self.assertEqual((disk.type, disk.path), ("block", self.host_server.device(self.local)))
        self.assertEqual(self.server.targets, {})
        volume = (await self.client.get(f"/storagepools/pool1/storagevolumes/{self.disk}")).json
        self.assertEqual((volume["state"], volume["local_copy"]), ("mapped", "node1"))
        assertError(self, await self.client.put(
            f"/storagepools/pool1/storagevolumes/{self.disk}", {"capacity": 4}),
            409, "conflict", "local copy on host node1")

        written = os.urandom(64 * 1024)
        await self.host_runner.run(["dd", f"of={self.host_server.device(self.local)}"],
                                   stdin=written)
        await self.stop()
        self.assertEqual(await ZFS(self.runners["s1"]).read_head(self.zvol, len(written)),
                         written)
        self.assertFalse(await self.host_zfs.exists(self.local))
        record = await self.models.storage.records.volume("pool1", self.disk)
        self.assertIsNone(record.copy_host)
        volume = (await self.client.get(f"/storagepools/pool1/storagevolumes/{self.disk}")).json
        self.assertEqual((volume["state"], volume["local_copy"]), ("unmapped", None))
        vm = (await self.client.get("/cluster/lab/vms/web")).json
        self.assertEqual((vm["state"], vm["host"]), ("shutoff", None))

    async def test_refused_while_local(self):
        """Snapshots, attach and migrate are 409s while the disks run locally; nothing changes."""
        await self.start()
        answer = await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "s1"})
        assertError(self, answer, 409, "conflict", "disk_mode local")
        answer = await self.client.post("/cluster/lab/vms/web/migrate", {})
        assertError(self, answer, 409, "conflict", "disk_mode local")
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "data", "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])
        answer = await self.client.post("/cluster/lab/vms/web/storages",
                                        {"pool": "pool1", "vol": "data"})
        assertError(self, answer, 409, "conflict", "disk_mode local")
        self.assertEqual((await self.client.get("/cluster/lab/vms/web/snapshots")).json, [])
        await self.stop()
        answer = await self.client.post("/cluster/lab/vms/web/snapshots", {"name": "s1"})
        self.assertIn(answer.code, (200, 201, 202), answer.body)

    async def test_no_host_offers_it(self):
        """Without a host with a local dataset up, the start is a 409 saying why, and nothing moves."""
        await self.models.hosts.set_maintenance("node1", True)
        answer = await self.client.post("/cluster/lab/vms/web/start")
        self.assertEqual(answer.code, 202)
        task = await self.task(answer)
        self.assertEqual(task["status"], "failed")
        self.assertIn("local_dataset", task["message"])
        self.assertFalse(await self.host_zfs.exists(self.local))
        record = await self.models.storage.records.volume("pool1", self.disk)
        self.assertIsNone(record.copy_host)

    async def test_vm_overrides_template(self):
        """A VM may choose its disk mode over its template's; a bad mode is a 400."""
        answer = await self.client.post("/cluster/lab/vms", {
            "template": "loc", "name": "other", "disk_mode": "iscsi"})
        self.assertEqual((answer.code, answer.json["disk_mode"]), (201, "iscsi"))
        answer = await self.client.post("/cluster/lab/vms", {
            "template": "loc", "name": "bad", "disk_mode": "nfs"})
        self.assertEqual(answer.code, 400)


class LocalUnmapTests(_LocalSetup, TestCase):
    """
    A volume unmapped from a running local-copy mode VM: its block disk
    unplugged, its copy synced back (the guest's writes), removed from the
    host, the attachment forgotten (L{comet.model.operations.unmap_local}).
    """

    async def setUp(self):
        await super().setUp()
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "data", "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])
        self.data_local = f"{LOCAL}/pool1/data"
        answer = await self.client.post("/cluster/lab/vms/web/storages",
                                        {"pool": "pool1", "vol": "data"})
        self.assertEqual(answer.code, 201, answer.body)
        await self.start()
        self.written = os.urandom(64 * 1024)
        # The guest writes to its data disk: the host's copy.
        await self.host_runner.run(["dd", f"of={self.host_server.device(self.data_local)}"],
                                   stdin=self.written)

    async def disks(self) -> list[str]:
        description = await self.models.context.hypervisors.describe("node1",
                                                                    f"comet-{self.uuid}")
        return [d.target for d in description.spec.disks]

    async def unmap(self) -> dict:
        storage = (await self.client.get("/cluster/lab/vms/web/storages/data")).json
        self.assertIn("unmap", storage["actions"])
        answer = await self.client.post("/cluster/lab/vms/web/storages/data/unmap")
        self.assertEqual(answer.code, 202, answer.body)
        return await self.task(answer)

    async def test_unmap_while_running(self):
        """
        The guest's write reaches the storage server's copy; no copy is left
        on the host, no sync snapshot on the server; the VM runs on, and its
        stop syncs its other disk alone.
        """
        self.assertEqual(sorted(await self.disks()), ["vda", "vdb"])
        task = await self.unmap()
        self.assertEqual(task["status"], "finished", task["message"])
        self.assertIn("its local copy synced back", task["message"])
        self.assertEqual(await ZFS(self.runners["s1"]).read_head("tank/comet/data",
                                                                 len(self.written)),
                         self.written)
        self.assertFalse(await self.host_zfs.exists(self.data_local))
        self.assertEqual(await self.sync_snapshots("tank/comet/data"), [])
        record = await self.models.storage.records.volume("pool1", "data")
        self.assertEqual((record.copy_host, record.vm_uuid, record.dev), (None, None, None))
        self.assertEqual(await self.disks(), ["vda"])
        self.assertEqual((await self.client.get("/cluster/lab/vms/web")).json["state"],
                         "running")
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual(volume["state"], "unmapped")
        await self.stop()
        self.assertFalse(await self.host_zfs.exists(self.local))
        self.assertIsNone((await self.models.storage.records.volume("pool1",
                                                                    self.disk)).copy_host)

    async def test_host_unreachable(self):
        """
        The sync back from a host that does not answer fails the task saying
        where the newest data is; the volume stays attached with
        C{copy_host} set (never detached and lost), and a second unmap, with
        the host back, finishes.
        """
        self.host_runner.unavailable = "ssh: connect to host 192.0.2.101: No route to host"
        task = await self.unmap()
        self.assertEqual(task["status"], "failed")
        self.assertIn(f"its newest data stays in the copy {self.data_local} on host 'node1'",
                      task["message"])
        record = await self.models.storage.records.volume("pool1", "data")
        self.assertEqual((record.copy_host, record.vm_uuid), ("node1", self.uuid))
        volume = (await self.client.get("/storagepools/pool1/storagevolumes/data")).json
        self.assertEqual(volume["state"], "mapped")
        assertError(self, await self.client.delete("/storagepools/pool1/storagevolumes/data"),
                    409, "conflict", "local copy on host node1")
        self.host_runner.unavailable = None
        self.assertTrue(await self.host_zfs.exists(self.data_local))
        task = await self.unmap()
        self.assertEqual(task["status"], "finished", task["message"])
        self.assertEqual(await ZFS(self.runners["s1"]).read_head("tank/comet/data",
                                                                 len(self.written)),
                         self.written)
        self.assertFalse(await self.host_zfs.exists(self.data_local))

    async def test_failed_unmap_synced_at_stop(self):
        """A volume whose unmap failed is synced back by its VM's stop, with the others."""
        self.host_runner.unavailable = "ssh: connect to host 192.0.2.101: No route to host"
        self.assertEqual((await self.unmap())["status"], "failed")
        self.host_runner.unavailable = None
        await self.stop()
        self.assertEqual(await ZFS(self.runners["s1"]).read_head("tank/comet/data",
                                                                 len(self.written)),
                         self.written)
        self.assertFalse(await self.host_zfs.exists(self.data_local))
        self.assertIsNone((await self.models.storage.records.volume("pool1", "data")).copy_host)

    async def test_delete_while_placed(self):
        """
        DELETE of a volume of a placed, powered-off local VM syncs it back
        (as an unmap) before it goes: no copy is left on the host.
        """
        self.assertEqual((await self.client.post("/cluster/lab/vms/web/poweroff")).code, 200)
        answer = await self.client.delete("/cluster/lab/vms/web/storages/data")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertFalse(await self.host_zfs.exists(self.data_local))
        self.assertIsNone(await self.models.storage.records.volume("pool1", "data"))

    async def test_attach_refused_while_running(self):
        """Attaching to a running local-copy mode VM stays a 409 saying when it works."""
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "more", "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])
        answer = await self.client.post("/cluster/lab/vms/web/storages",
                                        {"pool": "pool1", "vol": "more"})
        assertError(self, answer, 409, "conflict", "attached to it while it is stopped")


class LocalKeepTests(_LocalSetup, TestCase):
    """C{[[hosts]] local_keep = true}: the copy stays on the host as a cache."""

    KEEP = True

    async def test_kept_and_incremental(self):
        """
        The stop leaves the host's copy (C{copy_host} cleared: the storage
        server has the data); the next start sends only an increment, and
        the guest sees what changed on the storage server meanwhile.
        """
        await self.start()
        written = os.urandom(64 * 1024)
        await self.host_runner.run(["dd", f"of={self.host_server.device(self.local)}"],
                                   stdin=written)
        await self.stop()
        self.assertTrue(await self.host_zfs.exists(self.local))
        self.assertIsNone((await self.models.storage.records.volume("pool1",
                                                                    self.disk)).copy_host)
        self.assertEqual(await ZFS(self.runners["s1"]).read_head(self.zvol, len(written)),
                         written)
        theirs = os.urandom(16 * 1024)
        await self.runners["s1"].run(["dd", f"of={self.server.device(self.zvol)}"],
                                     stdin=theirs)
        sent = len(self.runners["s1"].streams)
        await self.start()
        sends = [s.argv for s in self.runners["s1"].streams[sent:] if s.argv[:2] == ["zfs", "send"]]
        self.assertEqual([argv[2] for argv in sends], ["-i"], sends)
        self.assertEqual(await self.host_zfs.read_head(self.local, len(theirs)), theirs)


    async def test_cache_goes_with_the_vm(self):
        """A VM's delete destroys its disk and the copy its host kept of it."""
        await self.start()
        await self.stop()
        self.assertTrue(await self.host_zfs.exists(self.local))
        answer = await self.client.delete("/cluster/lab/vms/web")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertFalse(await ZFS(self.runners["s1"]).exists(self.zvol))
        self.assertFalse(await self.host_zfs.exists(self.local))

    async def test_cache_goes_with_the_volume(self):
        """A disk kept after its VM keeps its cache; the volume's delete removes both."""
        await self.start()
        await self.stop()
        answer = await self.client.delete("/cluster/lab/vms/web", {"keep_storage": True})
        self.assertEqual(answer.code, 204, answer.body)
        self.assertTrue(await self.host_zfs.exists(self.local))
        answer = await self.client.delete(f"/storagepools/pool1/storagevolumes/{self.disk}")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertFalse(await self.host_zfs.exists(self.local))

    async def test_cache_of_a_silent_host_stays(self):
        """A host that does not answer keeps its cached copy; the delete still succeeds."""
        await self.start()
        await self.stop()
        self.host_runner.unavailable = "ssh: connect to host 192.0.2.101: No route to host"
        answer = await self.client.delete("/cluster/lab/vms/web")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertFalse(await ZFS(self.runners["s1"]).exists(self.zvol))
        self.host_runner.unavailable = None
        self.assertTrue(await self.host_zfs.exists(self.local))
        self.flushLoggedErrors()


class DeadHostTests(_LocalSetup, TestCase):
    async def test_fenced_evacuation_leaves_it(self):
        """
        A host that dies with a local-mode VM on it: a fenced evacuation does
        not start the VM elsewhere from the storage server's older copy (the
        task names it and why), and its volume still says the host holds it.
        """
        await self.start()
        hv = self.models.context.hypervisors
        node_info = hv.node_info

        async def gone(host):
            if host == "node1":
                raise Unavailable("compute host 'node1' does not answer")
            return await node_info(host)

        self.patch(hv, "node_info", gone)
        await self.client.post("/hosts/node1/maintenance", {"enabled": True})
        answer = await self.client.post("/hosts/node1/evacuate", {"fenced": True})
        self.assertEqual(answer.code, 202, answer.body)
        task = await self.task(answer)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("0 of 1 VM(s) moved", task["message"])
        self.assertIn("newest data is there", task["message"])
        vm = (await self.client.get("/cluster/lab/vms/web")).json
        self.assertEqual(vm["host"], "node1", vm)
        volume = (await self.client.get(f"/storagepools/pool1/storagevolumes/{self.disk}")).json
        self.assertEqual(volume["local_copy"], "node1")
        self.assertTrue(await self.host_zfs.exists(self.local))
