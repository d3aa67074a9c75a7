"""
The storage API against the testbed's real storage servers (OpenZFS and tgt
in storage VMs, over ssh with the real L{comet.remote.SSHRunner}): servers,
pools, volumes made empty and from a URL, and a pool registered on a new
dataset.  Skipped, with the reason, when the testbed is not up.

Every name holds a random token, and everything made is removed again.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from comet.config import StorageConfig, load
from comet.metrics import Metrics
from comet.remote import SSHRunner
from tests._api import make_client, make_models
from tests.integration._testbed import requireTestbed
from tests.web.test_storage import _Image

GiB = 1024**3


class _TestbedCase(TestCase):
    """Models over the testbed's storage servers (real ssh), on a fresh database."""

    timeout = 600

    async def setUp(self):
        stack = requireTestbed()
        config = load(stack["comet_config"])
        control = tempfile.mkdtemp(prefix="comet-ssh-", dir="/tmp")
        self.addCleanup(shutil.rmtree, control, True)
        # download_allow: the images are served on loopback.
        storage = StorageConfig(connect_timeout=10, command_timeout=120.0, control_dir=control,
                                download_allow=("127.0.0.0/8",))
        self.metrics = Metrics()
        self.runners = {s.host: SSHRunner(reactor, s, storage, metrics=self.metrics)
                        for s in config.storageservers}
        self.config = config
        self.models = make_models(
            self, runners=self.runners, storageservers=config.storageservers,
            storagepools=config.storagepools, storage=storage, metrics=self.metrics,
        )
        self.addCleanup(self.models.storage.stop)
        self.client = make_client(self, self.models)
        self.token = secrets.token_hex(4)

    async def zfs_names(self, host: str, dataset: str) -> list[str]:
        out = await self.runners[host].run(["zfs", "list", "-H", "-o", "name", "-r", dataset])
        return out.decode().split()

    async def wait(self, answer):
        self.assertEqual(answer.code, 202, answer.body)
        await self.models.tasks.wait(answer.json["id"])
        return (await self.client.get(f"/tasks/{answer.json['id']}")).json

    async def _destroy(self, host, name):
        """Cleanup: remove what a failed test left (only ours: the token is in the name)."""
        assert self.token in name
        try:
            await self.runners[host].run(["zfs", "destroy", "-r", name])
        except Exception:
            pass


class StorageAPIIntegrationTests(_TestbedCase):
    async def test_servers(self):
        """Both servers are reachable and show their zpool."""
        listed = (await self.client.get("/storageservers")).json
        self.assertEqual([s["host"] for s in listed], ["10.200.0.21", "10.200.0.22"])
        for server in listed:
            self.assertEqual((await self.client.get(server["href"])).json["state"], "reachable")
            zpools = (await self.client.get(server["href"] + "/storagezpools")).json
            self.assertIn("tank", [z["zpool"] for z in zpools])
            tank = next(z for z in zpools if z["zpool"] == "tank")
            self.assertEqual(tank["health"], "ONLINE")
            self.assertGreater(tank["size"], 0)

    async def test_metrics_and_health(self):
        """
        The real servers in the metrics: each pool's space as read through
        the API, each ssh command's latency, each server's reachability; and
        a health check that is ok.
        """
        from tests.web.test_health import samples

        await self.models.locks.take_lease()
        await self.models.context.hypervisors.connect()
        for pool in self.config.storagepools:
            self.assertEqual((await self.client.get(f"/storagepools/{pool.name}")).code, 200)
        # After the reads above opened each server's ssh connection: a probe
        # that must open one may take longer than its 5 s on a loaded testbed.
        await self.models.serverwatch.check()
        text = (await self.client.get("/metrics")).body.decode()
        found = samples(text)
        for server in self.config.storageservers:
            self.assertEqual(found["comet_storage_server_up", (("server", server.host),)], 1)
            self.assertGreaterEqual(found["comet_ssh_command_duration_seconds_count", (
                ("command", "zfs"), ("outcome", "ok"), ("server", server.host))], 1)
        for pool in self.config.storagepools:
            self.assertGreater(found["comet_pool_available_bytes", (
                ("pool", pool.name), ("server", pool.server))], 0)
        health = await self.client.get("/health")
        self.assertEqual((health.code, health.json["status"]), (200, "ok"))
        if os.environ.get("COMET_SCRAPE_OUT"):
            with open(os.environ["COMET_SCRAPE_OUT"], "w") as f:
                f.write(text)

    async def test_volume_on_each_server(self):
        """A 1 GB volume on each pool: in zfs list, tagged, then deleted."""
        for pool in self.config.storagepools:
            name = f"it-{self.token}-{pool.name}"
            zvol = f"{pool.dataset}/{name}"
            self.addCleanup(self._destroy, pool.server, zvol)
            info = (await self.client.get(f"/storagepools/{pool.name}")).json
            self.assertEqual((info["state"], info["path"], info["server"]),
                             ("active", pool.dataset, pool.server))
            # Others share the testbed's small pools: only the arithmetic is ours.
            self.assertGreater(info["available"], 0)
            self.assertEqual(info["capacity"], info["allocated"] + info["available"])
            task = await self.wait(await self.client.post(
                f"/storagepools/{pool.name}/storagevolumes", {"name": name, "capacity": 1}))
            self.assertEqual(task["status"], "finished", task)
            self.assertIn(zvol, await self.zfs_names(pool.server, pool.dataset))
            out = await self.runners[pool.server].run(
                ["zfs", "get", "-H", "-o", "value,source", "comet:owner", zvol])
            self.assertEqual(out.decode().split(), ["comet", "local"])
            volume = (await self.client.get(
                f"/storagepools/{pool.name}/storagevolumes/{name}")).json
            self.assertEqual((volume["capacity"], volume["state"], volume["host"]),
                             (GiB, "unmapped", pool.server))
            answer = await self.client.delete(f"/storagepools/{pool.name}/storagevolumes/{name}")
            self.assertEqual(answer.code, 204, answer.body)
            self.assertNotIn(zvol, await self.zfs_names(pool.server, pool.dataset))

    async def test_volume_from_url(self):
        """An image served over HTTP lands in the zvol, byte for byte."""
        data = os.urandom(5 * 1024 * 1024 + 3)
        port = reactor.listenTCP(0, Site(_Image(data)), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = self.config.storagepools[0]
        name = f"it-{self.token}-img"
        zvol = f"{pool.dataset}/{name}"
        self.addCleanup(self._destroy, pool.server, zvol)
        task = await self.wait(await self.client.post(
            f"/storagepools/{pool.name}/storagevolumes",
            {"name": name, "url": f"http://127.0.0.1:{port.getHost().port}/image"}))
        self.assertEqual(task["status"], "finished", task)
        head = await self.models.storage.server(pool.server).zfs.read_head(zvol, len(data))
        self.assertEqual(head, data)
        answer = await self.client.delete(f"/storagepools/{pool.name}/storagevolumes/{name}")
        self.assertEqual(answer.code, 204)

    async def test_register_pool(self):
        """A pool on a new dataset creates it; deleting the pool destroys it."""
        server = self.config.storageservers[1].host
        dataset = f"tank/comet-it-{self.token}"
        self.addCleanup(self._destroy, server, dataset)
        answer = await self.client.post(
            "/storagepools", {"name": f"it-{self.token}", "server": server, "dataset": dataset})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertIn(dataset, await self.zfs_names(server, "tank"))
        self.assertEqual(answer.json["path"], dataset)
        answer = await self.client.delete(f"/storagepools/it-{self.token}")
        self.assertEqual(answer.code, 204, answer.body)
        self.assertNotIn(dataset, await self.zfs_names(server, "tank"))



class VMDiskIntegrationTests(_TestbedCase):
    """
    A VM's disk and snapshots on a real storage server (the VM is never
    started: its compute host is libvirt's test driver): clone of a base
    volume, snapshots after sync, revert by rollback and by clone/promote on
    real OpenZFS, and the VM's delete leaving nothing behind.
    """

    async def write(self, zfs, zvol, data):
        stream = await zfs.open_writer(zvol)
        await stream.write(data)
        await stream.finish()

    async def test_vm_disk_snapshots(self):
        pool = self.config.storagepools[0]
        zfs = self.models.storage.server(pool.server).zfs
        base = f"it-{self.token}-base"
        self.addCleanup(self._destroy_all, pool.server, f"{pool.dataset}/{base}")
        task = await self.wait(await self.client.post(
            f"/storagepools/{pool.name}/storagevolumes", {"name": base, "capacity": 1}))
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual((await self.client.post("/cluster", {"name": f"it-{self.token}"})).code,
                         201)
        answer = await self.client.post("/templates", {
            "name": f"it-{self.token}", "memory": 128,
            "disk": {"pool": pool.name, "volume": base}})
        self.assertEqual(answer.code, 201, answer.body)
        vms = f"/cluster/it-{self.token}/vms"
        answer = await self.client.post(vms, {"template": f"it-{self.token}", "name": "vm"})
        self.assertEqual(answer.code, 201, answer.body)
        disk = f"{pool.dataset}/vm-{answer.json['uuid']}-vda"
        self.assertIn(disk, await self.zfs_names(pool.server, pool.dataset))
        await self.write(zfs, disk, b"one!")
        self.assertEqual((await self.client.post(f"{vms}/vm/snapshots", {"name": "one"})).code,
                         201)
        await self.write(zfs, disk, b"two!")
        self.assertEqual((await self.client.post(f"{vms}/vm/snapshots", {"name": "two"})).code,
                         201)
        await self.write(zfs, disk, b"now!")
        answer = await self.client.post(f"{vms}/vm/snapshots/one/revert")
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(await zfs.read_head(disk, 4), b"one!")
        answer = await self.client.post(f"{vms}/vm/snapshots/two/revert")
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(await zfs.read_head(disk, 4), b"two!")
        answer = await self.client.delete(f"{vms}/vm")
        self.assertEqual(answer.code, 204, answer.body)
        left = [n for n in await self.zfs_names(pool.server, pool.dataset)
                if self.token in n or n.startswith(disk)]
        self.assertEqual(left, [f"{pool.dataset}/{base}"])
        out = await self.runners[pool.server].run(
            ["zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", f"{pool.dataset}/{base}"])
        self.assertEqual(out.strip(), b"")
        await self.client.delete(f"/templates/it-{self.token}")
        answer = await self.client.delete(f"/storagepools/{pool.name}/storagevolumes/{base}")
        self.assertEqual(answer.code, 204, answer.body)

    async def _destroy_all(self, host, base):
        """Cleanup: the base volume with every clone of it (the VM's disk and its branches)."""
        assert self.token in base
        try:
            await self.runners[host].run(["zfs", "destroy", "-R", base])
        except Exception:
            pass
