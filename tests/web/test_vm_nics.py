"""
A VM's NICs as a sub-collection (C{/cluster/:c/vms/:v/nics}) through the
HTTP API, on real libvirt test-driver hosts (their missing hot-plug kept by
L{tests.virt._hotplug.NicHotplug}) with each host's devices on a
L{comet.remote.fakenet.FakeHostNetwork}: a NIC added to a stopped VM joins
its record only; one added to a running VM is hot-plugged after its network
is made on the VM's host; one removed is unplugged and its private network
torn down once nothing there needs it; every bad request is a 4xx that
changes nothing.
"""

from __future__ import annotations

from urllib.parse import unquote

import attrs
from twisted.trial.unittest import TestCase

from comet.config import NetworkConfig
from comet.model.nics import derived_mac
from comet.model.operations import domains
from comet.remote.fakenet import FakeHostNetwork
from comet.store import Intents as IntentTable
from comet.web.paths import PATHS
from comet.web.routes import api_routes
from tests import _api
from tests._api import make_client, make_models
from tests.virt._hotplug import NicHotplug
from tests.virt._migrating import Migrating
from tests.web.test_serve import assertError


class VMNicTests(TestCase):
    async def setUp(self):
        # node1 offers the public bridge and private networks; node2 (more
        # memory, so a VM placed freely goes there) offers neither.
        small, big = _api.test_hosts(self, ((4, 4096), (8, 16384)))
        small = attrs.evolve(small, bridges=(("public", "br-pub"),),
                             tunnel_address="192.0.2.1", ssh="root@192.0.2.1")
        self.net = FakeHostNetwork("192.0.2.1")
        self.models = make_models(self, hosts=(small, big),
                                  network=NetworkConfig(vni_range="500-501"),
                                  wrap_hypervisors=self.wrap,
                                  host_runners={"192.0.2.1": self.net})
        self.client = make_client(self, self.models)
        for body in ({"name": "pub", "memory": 256, "nics": [{"network": "public"}]},
                     {"name": "bare", "memory": 256}):
            self.assertEqual((await self.client.post("/templates", body)).code, 201)
        for cluster in ("lab", "other"):
            self.assertEqual((await self.client.post("/cluster", {"name": cluster})).code, 201)
        self.events = []
        self.models.events.subscribe(self.events.append)

    def wrap(self, hypervisors):
        self.hv = NicHotplug(Migrating(hypervisors))
        return self.hv

    async def vm(self, name, template="pub", cluster="lab", start=False):
        answer = await self.client.post(f"/cluster/{cluster}/vms",
                                        {"template": template, "name": name})
        self.assertEqual(answer.code, 201, answer.body)
        if start:
            answer = await self.client.post(f"/cluster/{cluster}/vms/{name}/start", {})
            self.assertEqual(answer.code, 200, answer.body)
        return answer.json

    async def add(self, name, body, cluster="lab"):
        return await self.client.post(f"/cluster/{cluster}/vms/{name}/nics", body)

    async def remove(self, name, mac, cluster="lab"):
        answer = await self.client.delete(f"/cluster/{cluster}/vms/{name}/nics/{mac}", {})
        self.assertEqual(answer.code, 202, answer.body)
        task_id = answer.json["id"]
        await self.models.tasks.wait(task_id)
        return await self.models.tasks.get(task_id)

    async def domain_nics(self, vm) -> list[tuple[str, str]]:
        description = await self.hv.describe(vm["host"], f"comet-{vm['uuid']}")
        # A private NIC hot-plugged has the network's MTU, as one defined at a start.
        self.assertEqual([n.mtu for n in description.spec.nics],
                         [1450 if n.bridge.startswith("cometb") else None
                          for n in description.spec.nics])
        return [(n.mac, n.bridge) for n in description.spec.nics]

    def links(self) -> set[str]:
        return set(self.net.links)

    def changed(self) -> list[dict]:
        return [dict(e.ids) for e in self.events if e.type == "vm.changed"]

    async def test_stopped_vm_gets_it_at_its_next_start(self):
        vm = await self.vm("a")
        answer = await self.add("a", {"network": "private"})
        self.assertEqual(answer.code, 201, answer.body)
        mac = derived_mac(vm["uuid"], 1)
        self.assertEqual(answer.json, {"network": "private", "mac": mac, "bridge": "cometb500",
                                       "device": "eth1"})
        self.assertEqual(answer.header("location"),
                         PATHS.href("vm.nic", cluster="lab", name="a", mac=mac))
        self.assertEqual(unquote(answer.header("location")), f"/cluster/lab/vms/a/nics/{mac}")
        shown = (await self.client.get("/cluster/lab/vms/a")).json["nics"]
        self.assertEqual((await self.client.get("/cluster/lab/vms/a/nics")).json, shown)
        self.assertEqual(shown[1], answer.json)
        self.assertEqual((await self.client.get(f"/cluster/lab/vms/a/nics/{mac.upper()}")).json,
                         answer.json)
        self.assertEqual(self.links(), set())          # placed nowhere: no network made
        self.assertEqual(self.changed(), [{"cluster": "lab", "name": "a"}])
        started = (await self.client.post("/cluster/lab/vms/a/start", {})).json
        self.assertEqual(await self.domain_nics(started),
                         [(vm["nics"][0]["mac"], "br-pub"), (mac, "cometb500")])
        self.assertEqual(self.links(), {"cometb500", "cometv500"})
        # Audited like every change.
        log = (await self.client.get("/auditlog")).json
        self.assertIn(("POST", "/cluster/lab/vms/a/nics", 201),
                      [(e["method"], e["uri"], e["status"]) for e in log])

    async def test_hot_plug_and_unplug_a_private_nic(self):
        vm = await self.vm("a", start=True)
        self.assertEqual((vm["host"], self.links()), ("node1", set()))
        answer = await self.add("a", {"network": "private", "mac": "02:00:00:00:00:0A"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(answer.json, {"network": "private", "mac": "02:00:00:00:00:0a",
                                       "bridge": "cometb500", "device": "eth1"})
        # The cluster's network on the VM's host first, then the NIC in the running domain.
        self.assertEqual(self.links(), {"cometb500", "cometv500"})
        self.assertEqual(await self.domain_nics(vm),
                         [(vm["nics"][0]["mac"], "br-pub"), ("02:00:00:00:00:0a", "cometb500")])
        task = await self.remove("a", "02:00:00:00:00:0a")
        self.assertEqual(task.status, "finished", task.message)
        self.assertEqual(await self.domain_nics(vm), [(vm["nics"][0]["mac"], "br-pub")])
        self.assertEqual(self.links(), set())          # nothing on node1 needs it any more
        self.assertEqual([n["mac"] for n in (await self.client.get("/cluster/lab/vms/a")).json[
            "nics"]], [vm["nics"][0]["mac"]])
        self.assertEqual(self.changed(), [{"cluster": "lab", "name": "a"}] * 2)
        self.assertEqual(await IntentTable(self.models.users.db).list(), [])

    async def test_network_stays_while_something_needs_it(self):
        """Another private NIC of the VM, or another VM of the cluster on the host, keeps it."""
        a = await self.vm("a", start=True)
        b = await self.vm("b", start=True)
        self.assertEqual(b["host"], "node1")
        macs = []
        for name in ("a", "a", "b"):
            answer = await self.add(name, {"network": "private"})
            self.assertEqual(answer.code, 201, answer.body)
            macs.append(answer.json["mac"])
        self.assertEqual(self.links(), {"cometb500", "cometv500"})
        self.assertEqual((await self.remove("a", macs[0])).status, "finished")
        # a's other private NIC moved up one: eth1 now.
        nics = (await self.client.get("/cluster/lab/vms/a/nics")).json
        self.assertEqual([(n["mac"], n["device"]) for n in nics],
                         [(a["nics"][0]["mac"], "eth0"), (macs[1], "eth1")])
        self.assertEqual((await self.remove("a", macs[1])).status, "finished")
        self.assertEqual(self.links(), {"cometb500", "cometv500"})     # b needs it
        self.assertEqual((await self.remove("b", macs[2])).status, "finished")
        self.assertEqual(self.links(), set())

    async def test_named_network_on_a_running_vm(self):
        vm = await self.vm("a", template="bare", start=True)
        self.assertEqual(vm["host"], "node2")
        # node2 offers no public bridge and no private networks: 409, nothing changed.
        for network in ("public", "private"):
            assertError(self, await self.add("a", {"network": network}), 409, "conflict",
                        "node2")
        self.assertEqual((await self.client.get("/cluster/lab/vms/a/nics")).json, [])
        b = await self.vm("b", template="bare")
        await self.client.post("/cluster/lab/vms/b/start", {})
        migrating = await self.client.post("/cluster/lab/vms/b/migrate", {"host": "node1"})
        await self.models.tasks.wait(migrating.json["id"])
        b = (await self.client.get("/cluster/lab/vms/b")).json
        self.assertEqual(b["host"], "node1")
        answer = await self.add("b", {"network": "public"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(await self.domain_nics(b), [(answer.json["mac"], "br-pub")])
        self.assertEqual(self.links(), set())          # a host's own bridge: nothing made

    async def test_bad_requests_change_nothing(self):
        vm = await self.vm("a", start=True)
        other = await self.vm("o", cluster="other")
        taken = other["nics"][0]["mac"]
        before = (await self.client.get("/cluster/lab/vms/a")).json
        for body, code, word, why in [
            ({"network": "private", "mac": "52:54:00:zz:00:01"}, 400, "bad_request", "mac"),
            ({"network": "private", "mac": "01:00:00:00:00:01"}, 400, "bad_request", "mac"),
            ({"network": "private", "mac": "00:00:00:00:00:00"}, 409, "conflict", "reserved"),
            ({"network": "nowhere"}, 404, "not_found", "nowhere"),
            ({"network": "private", "bridge": "br0"}, 400, "bad_request", "bridge"),
            ({}, 400, "bad_request", "network"),
            ({"network": "private", "mac": taken}, 409, "conflict", taken),
            ({"network": "public", "mac": before["nics"][0]["mac"]}, 409, "conflict",
             before["nics"][0]["mac"]),
        ]:
            assertError(self, await self.add("a", body), code, word, why)
        assertError(self, await self.add("nope", {"network": "private"}), 404, "not_found",
                    "nope")
        assertError(self, await self.client.get("/cluster/lab/vms/a/nics/not-a-mac"), 404,
                    "not_found", "not a MAC")
        assertError(self, await self.client.delete("/cluster/lab/vms/a/nics/0", {}), 404,
                    "not_found", "not a MAC")
        assertError(self, await self.client.get("/cluster/lab/vms/a/nics/02:00:00:00:00:99"),
                    404, "not_found", "02:00:00:00:00:99")
        assertError(self, await self.client.delete("/cluster/lab/vms/a/nics/02:00:00:00:00:99",
                                                   {}), 404, "not_found", "02:00:00:00:00:99")
        self.assertEqual((await self.client.get("/cluster/lab/vms/a")).json, before)
        self.assertEqual(await self.domain_nics(vm), [(before["nics"][0]["mac"], "br-pub")])
        self.assertEqual((self.links(), self.changed()), (set(), []))
        # The lab cluster got no VNI from the refusals: "other"'s first private NIC takes 500.
        answer = await self.add("o", {"network": "private"}, cluster="other")
        self.assertEqual(answer.json["bridge"], "cometb500")

    async def test_at_most_eight(self):
        await self.vm("a", template="bare")
        for _ in range(8):
            self.assertEqual((await self.add("a", {"network": "public"})).code, 201)
        assertError(self, await self.add("a", {"network": "public"}), 409, "conflict", "8 NICs")

    async def test_a_guest_that_keeps_the_nic(self):
        """A guest that never lets the NIC go: the task fails, the NIC and its network stay."""
        self.patch(domains, "UNPLUG_POLL", 0.01)
        self.patch(domains, "UNPLUG_TIMEOUT", 0.05)
        vm = await self.vm("a", start=True)
        mac = (await self.add("a", {"network": "private"})).json["mac"]
        self.hv.guest_holds = True
        task = await self.remove("a", mac)
        self.assertEqual(task.status, "failed")
        self.assertIn(f"did not release NIC {mac}", task.message)
        self.assertIn(mac, [n["mac"] for n in (await self.client.get(
            "/cluster/lab/vms/a/nics")).json])
        self.assertEqual(self.links(), {"cometb500", "cometv500"})
        # Once it lets go, a second DELETE takes it off.
        self.hv.guest_holds = False
        self.assertEqual((await self.remove("a", mac)).status, "finished")
        self.assertEqual(await self.domain_nics(vm), [(vm["nics"][0]["mac"], "br-pub")])
        self.assertEqual(self.links(), set())

    async def test_failed_hot_plug_is_undone(self):
        from comet.virt import HypervisorError

        await self.vm("a", start=True)
        self.hv.fail = HypervisorError("attaching a device: no free PCI slot")
        answer = await self.add("a", {"network": "private"})
        assertError(self, answer, 502, "bad_gateway", "PCI")
        self.assertEqual(len((await self.client.get("/cluster/lab/vms/a/nics")).json), 1)
        self.assertEqual(self.links(), set())

    async def test_roles(self):
        """As for the VM's volumes: anyone reads, only an admin adds or removes."""
        roles = {(e.method, e.path): e.role for e in api_routes().endpoints}
        self.assertEqual([roles[(m, p)] for m, p in (
            ("GET", "vm.nics"), ("GET", "vm.nic"), ("POST", "vm.nics"), ("DELETE", "vm.nic"))],
            ["viewer", "viewer", "admin", "admin"])
        self.assertEqual(roles[("POST", "vm.nics")], roles[("POST", "vm.storages")])
        vm = await self.vm("a")
        operator = make_client(self, self.models, role="operator")
        assertError(self, await operator.post("/cluster/lab/vms/a/nics", {"network": "private"}),
                    403, "forbidden")
        mac = vm["nics"][0]["mac"]
        assertError(self, await operator.delete(f"/cluster/lab/vms/a/nics/{mac}", {}), 403,
                    "forbidden")
        viewer = make_client(self, self.models, role="viewer")
        self.assertEqual((await viewer.get("/cluster/lab/vms/a/nics")).json, vm["nics"])
