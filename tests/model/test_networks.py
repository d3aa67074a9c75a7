"""
Clusters' private networks (L{comet.model.networks}) through the VM
lifecycle on real libvirt test-driver hosts, with each host's devices on a
L{comet.remote.fakenet.FakeHostNetwork} (held to the real C{ip} by
tests/remote/test_netdev.py): made on the host when the cluster's first VM
starts there, gone when its last leaves, moved ahead of a migration; the
reconciler's sweep leaves each host exactly what it needs, and a crash at
any step of a set-up or tear-down is repaired to that.
"""

from __future__ import annotations

import re

import attrs
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import TestCase

from comet.config import Config, NetworkConfig
from comet.model import make_models
from comet.model.operations import net_down, net_up
from comet.remote.fakenet import FakeHostNetwork
from comet.store import Intents as IntentTable
from comet.virt import Hypervisors
from tests._api import make_client, temp_database
from tests._api import test_hosts as _test_hosts
from tests.model.operations.crash import DEAD, WHEN, Crash, steps
from tests.virt._migrating import Migrating

TUNNELS = {"node1": "192.0.2.1", "node2": "192.0.2.2"}


class World:
    """What outlives a daemon: the database, the libvirt hosts, the hosts' devices."""

    def __init__(self, testcase: TestCase):
        self.db = temp_database(testcase)
        hosts = tuple(attrs.evolve(h, tunnel_address=TUNNELS[h.name],
                                   ssh=f"root@{TUNNELS[h.name]}")
                      for h in _test_hosts(testcase, ((4, 8192), (4, 8192))))
        self.config = Config(hosts=hosts, network=NetworkConfig(vni_range="700-799"))
        real = Hypervisors(reactor, hosts, self.config.compute)
        real.startService()
        testcase.addCleanup(real.stopService)
        self.hv = Migrating(real)
        self.nets = {name: FakeHostNetwork(address) for name, address in TUNNELS.items()}

    def boot(self):
        return make_models(self.db, self.hv, self.config, reactor,
                           host_runners={a: self.nets[n] for n, a in TUNNELS.items()})

    async def restart(self):
        models = self.boot()
        await models.tasks.recover()
        return models, await models.reconciler.run()


class NetworkTestsBase:
    async def setUp(self):
        self.world = World(self)
        self.models = self.world.boot()
        self.client = make_client(self, self.models)
        for body in ({"name": "priv", "memory": 256, "nics": [{"network": "private"}]},
                     {"name": "bare", "memory": 256}):
            self.assertEqual((await self.client.post("/templates", body)).code, 201)
        for cluster in ("lab", "other"):
            self.assertEqual((await self.client.post("/cluster", {"name": cluster})).code, 201)

    async def vm(self, name, cluster="lab", template="priv"):
        answer = await self.client.post(f"/cluster/{cluster}/vms",
                                        {"template": template, "name": name})
        self.assertEqual(answer.code, 201, answer.body)
        return answer.json

    async def start(self, name, cluster="lab", host=None):
        answer = await self.client.post(f"/cluster/{cluster}/vms/{name}/start", {})
        self.assertEqual(answer.code, 200, answer.body)
        if host is not None and answer.json["host"] != host:
            await self.migrate(name, host, cluster)

    async def wait(self, answer):
        self.assertEqual(answer.code, 202, answer.body)
        task_id = int(answer.header("location").rsplit("/", 1)[1])
        await self.models.tasks.wait(task_id)
        return await self.models.tasks.get(task_id)

    async def migrate(self, name, host, cluster="lab"):
        task = await self.wait(await self.client.post(
            f"/cluster/{cluster}/vms/{name}/migrate", {"host": host}))
        self.assertEqual(task.status, "finished", task.message)

    async def stop(self, name, cluster="lab"):
        task = await self.wait(await self.client.post(
            f"/cluster/{cluster}/vms/{name}/stop", {"timeout": 0, "force": True}))
        self.assertEqual(task.status, "finished", task.message)

    def held(self) -> dict[str, set[str]]:
        """Each host's Comet devices."""
        return {host: set(net.links) for host, net in self.world.nets.items()}

    async def assertExactlyNeeded(self, models=None) -> None:
        """Every host holds, complete, exactly the networks its placed VMs need."""
        models = models or self.models
        needed = await models.context.vms.private_placements()
        for host, net in self.world.nets.items():
            vnis = {vni for h, vni in needed if h == host}
            comets = {n for n in net.links if re.fullmatch(r"comet[bv]7[0-9][0-9]", n)}
            self.assertEqual(comets, {f"comet{k}{v}" for v in vnis for k in "bv"}, host)
            for vni in vnis:
                vxlan = net.links[f"cometv{vni}"]
                self.assertEqual((vxlan["master"], vxlan["up"], vxlan["fdb"]),
                                 (f"cometb{vni}", True,
                                  [a for h, a in TUNNELS.items() if h != host]))
        self.assertEqual(await IntentTable(self.world.db).list(), [])


class LifecycleTests(NetworkTestsBase, TestCase):
    async def test_first_in_last_out(self):
        a = await self.vm("a")
        vni = int(a["nics"][0]["bridge"].removeprefix("cometb"))
        await self.vm("b")
        await self.start("a", host="node1")
        self.assertEqual(self.held(), {"node1": {f"cometb{vni}", f"cometv{vni}"}, "node2": set()})
        await self.start("b", host="node1")
        await self.assertExactlyNeeded()
        await self.stop("a")
        self.assertEqual(self.held()["node1"], {f"cometb{vni}", f"cometv{vni}"})
        await self.stop("b")
        self.assertEqual(self.held(), {"node1": set(), "node2": set()})
        await self.assertExactlyNeeded()

    async def test_clusters_apart_and_bare_vms_need_none(self):
        await self.vm("a")
        await self.vm("c", cluster="other")
        await self.vm("bare", template="bare")
        await self.start("a", host="node1")
        await self.start("c", cluster="other", host="node1")
        await self.start("bare")
        self.assertEqual(len(self.held()["node1"]), 4)
        await self.assertExactlyNeeded()

    async def test_migration_moves_the_network(self):
        await self.vm("a")
        await self.vm("b")
        await self.start("a", host="node1")
        await self.start("b", host="node1")
        await self.migrate("a", "node2")
        # node1 keeps it for b; node2 has it for a.
        self.assertEqual([len(self.held()[h]) for h in ("node1", "node2")], [2, 2])
        await self.migrate("b", "node2")
        self.assertEqual([len(self.held()[h]) for h in ("node1", "node2")], [0, 2])
        await self.assertExactlyNeeded()

    async def test_failed_migration_leaves_the_destination_clean(self):
        await self.vm("a")
        await self.start("a", host="node1")
        self.world.hv.fail = "no way"
        task = await self.wait(await self.client.post("/cluster/lab/vms/a/migrate",
                                                      {"host": "node2"}))
        self.assertEqual(task.status, "failed")
        self.assertEqual([len(self.held()[h]) for h in ("node1", "node2")], [2, 0])
        await self.assertExactlyNeeded()

    async def test_delete_running_removes_it(self):
        await self.vm("a")
        await self.start("a")
        answer = await self.client.delete("/cluster/lab/vms/a", {"force": True})
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual(self.held(), {"node1": set(), "node2": set()})

    async def test_unreachable_host_fails_the_start_cleanly(self):
        await self.vm("a")
        for net in self.world.nets.values():
            net.unavailable = "Connection refused"
        answer = await self.client.post("/cluster/lab/vms/a/start", {})
        self.assertEqual(answer.code, 503, answer.body)
        vm = (await self.client.get("/cluster/lab/vms/a")).json
        self.assertEqual((vm["state"], vm["host"]), ("shutoff", None))
        for net in self.world.nets.values():
            net.unavailable = None
        await self.models.reconciler.run()
        await self.assertExactlyNeeded()

    async def test_sweep(self):
        """The reconciler removes what no VM needs and remakes what a running VM lost."""
        await self.vm("a")
        await self.start("a", host="node1")
        node1, node2 = self.world.nets["node1"], self.world.nets["node2"]
        vxlan = next(n for n in node1.links if n.startswith("cometv"))
        await node1.run(["ip", "link", "del", vxlan])
        await node2.run(["ip", "link", "add", "cometb799", "type", "bridge"])
        await node2.run(["ip", "link", "add", "cometb800", "type", "bridge"])  # not its range
        await node2.run(["ip", "link", "add", "cometbr0", "type", "bridge"])  # not Comet's
        repairs = await self.models.reconciler.run()
        self.assertEqual(len([r for r in repairs if "private network" in r]), 2, repairs)
        await self.assertExactlyNeeded()
        self.assertEqual(self.held()["node2"], {"cometbr0", "cometb800"})


class NetworkCrashTests(NetworkTestsBase, TestCase):
    async def crash(self, crash: Crash, action) -> None:
        self.models.intents.halt = crash
        DEAD.append((self.models.intents.frozen, ensureDeferred(action())))
        await crash.reached

    async def test_each_step_of_set_up(self):
        for step in steps(net_up.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.vm("a")
                await self.crash(Crash("net.up", step, when),
                                 lambda: self.models.vms.act("lab", "a", "start"))
                models, repairs = await self.world.restart()
                await self.assertExactlyNeeded(models)
                vm = await models.vms.get("lab", "a")
                self.assertEqual(vm.phase, "stopped", (step, when))
                self.assertEqual(self.held(), {"node1": set(), "node2": set()}, (step, when))

    async def test_each_step_of_tear_down(self):
        for step in steps(net_down.OPERATION):
            for when in WHEN:
                await self.setUp()
                await self.vm("a")
                await self.start("a")
                await self.crash(Crash("net.down", step, when),
                                 lambda: self.models.vms.delete("lab", "a", force=True))
                models, repairs = await self.world.restart()
                await self.assertExactlyNeeded(models)
                self.assertEqual(self.held(), {"node1": set(), "node2": set()}, (step, when))
