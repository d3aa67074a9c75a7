"""
NICs through the HTTP API, on real libvirt (test-driver nodes): templates and
VMs carry them, MACs are derived and stable or given and checked, every bad
NIC is a 400 that changes nothing, a taken MAC a 409, placement only picks
hosts that offer a VM's networks, and the domain gets virtio interfaces on
the right bridges.
"""

import attrs
from twisted.trial.unittest import TestCase

from comet.config import NetworkConfig
from comet.model.nics import derived_mac
from comet.remote.fakenet import FakeHostNetwork
from tests import _api
from tests._api import make_client, make_models
from tests.web.test_serve import assertError


class NicTests(TestCase):
    async def setUp(self):
        # node1 is the smaller host, but the only one with a public bridge
        # and a tunnel address (so private networks); node2 offers nothing.
        small, big = _api.test_hosts(self, ((4, 4096), (8, 16384)))
        small = attrs.evolve(small, bridges=(("public", "br-pub"),),
                             tunnel_address="192.0.2.1", ssh="root@192.0.2.1")
        self.models = make_models(self, hosts=(small, big),
                                  network=NetworkConfig(vni_range="500-501"),
                                  wrap_hypervisors=self.keep,
                                  host_runners={"192.0.2.1": FakeHostNetwork("192.0.2.1")})
        self.client = make_client(self, self.models)
        answer = await self.client.post("/templates", {
            "name": "front", "memory": 256,
            "nics": [{"network": "private"}, {"network": "public"}]})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(answer.json["nics"], [{"network": "private"}, {"network": "public"}])
        self.assertEqual((await self.client.post("/templates", {"name": "bare", "memory": 256})
                          ).json["nics"], [])
        for cluster in ("lab", "other", "third"):
            self.assertEqual((await self.client.post("/cluster", {"name": cluster})).code, 201)

    def keep(self, hypervisors):
        self.hypervisors = hypervisors
        return hypervisors

    async def create(self, cluster="lab", **body):
        return await self.client.post(f"/cluster/{cluster}/vms", body)

    async def test_template_nics_derived_macs(self):
        vm = (await self.create(template="front", name="a")).json
        self.assertEqual(vm["nics"], [
            {"network": "private", "mac": derived_mac(vm["uuid"], 0), "bridge": "cometb500",
             "device": "eth0"},
            # Placed nowhere yet: which host's public bridge is not known.
            {"network": "public", "mac": derived_mac(vm["uuid"], 1), "bridge": None,
             "device": "eth1"},
        ])
        self.assertTrue(vm["nics"][0]["mac"].startswith("52:54:00:"))
        again = (await self.client.get("/cluster/lab/vms/a")).json
        self.assertEqual(again["nics"], vm["nics"])

    async def test_vni_per_cluster(self):
        a = (await self.create(template="front", name="a")).json
        b = (await self.create(template="front", name="b")).json
        c = (await self.create(cluster="other", template="front", name="c")).json
        self.assertEqual([v["nics"][0]["bridge"] for v in (a, b, c)],
                         ["cometb500", "cometb500", "cometb501"])
        # The range (two VNIs) is used up: a third cluster cannot get one.
        answer = await self.create(cluster="third", template="front", name="d")
        assertError(self, answer, 409, "conflict", "VNI")
        self.assertEqual((await self.client.get("/cluster/third/vms")).json, [])
        # A cluster without a private NIC needs none.
        self.assertEqual((await self.create(cluster="third", template="bare")).code, 201)

    async def test_given_nics_override_template(self):
        answer = await self.create(template="front", name="a",
                                   nics=[{"network": "public", "mac": "02:AA:bb:00:00:01"}])
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(answer.json["nics"], [
            {"network": "public", "mac": "02:aa:bb:00:00:01", "bridge": None, "device": "eth0"}])
        # No NICs at all is a choice too.
        self.assertEqual((await self.create(template="front", name="b", nics=[])).json["nics"], [])

    async def test_taken_mac_is_409(self):
        await self.create(template="bare", name="a", nics=[{"network": "public",
                                                             "mac": "02:00:00:00:00:01"}])
        answer = await self.create(cluster="other", template="bare", name="b",
                                   nics=[{"network": "private"},
                                         {"network": "public", "mac": "02:00:00:00:00:01"}])
        assertError(self, answer, 409, "conflict", "02:00:00:00:00:01")
        # Nothing of it stays: no VM, and the other cluster got no VNI.
        self.assertEqual((await self.client.get("/cluster/other/vms")).json, [])
        c = (await self.create(cluster="third", template="front")).json
        self.assertEqual(c["nics"][0]["bridge"], "cometb500")

    async def test_bad_nics_are_400(self):
        for nics, code, word, why in [
            ([{"network": "nowhere"}], 404, "not_found", "nowhere"),
            ([{"network": "public", "mac": "01:00:00:00:00:01"}], 400, "bad_request", "mac"),
            ([{"network": "public", "mac": "00:00:00:00:00:00"}], 409, "conflict",
             "00:00:00:00:00:00"),
            ([{"network": "public", "mac": "52:54:00:zz:00:01"}], 400, "bad_request", "mac"),
            ([{"network": "public", "mac": "02:00:00:00:00:01"},
              {"network": "private", "mac": "02:00:00:00:00:01"}], 409, "conflict", "same MAC"),
            ([{"network": "public", "bridge": "br0"}], 400, "bad_request", "bridge"),
            ([{"network": "public"}] * 9, 400, "bad_request", "nics"),
        ]:
            answer = await self.create(template="bare", name="x", nics=nics)
            assertError(self, answer, code, word, why)
        self.assertEqual((await self.client.get("/cluster/lab/vms")).json, [])
        answer = await self.client.post("/templates", {
            "name": "t", "nics": [{"network": "public", "mac": "02:00:00:00:00:01"}]})
        assertError(self, answer, 400, "bad_request", "mac")
        answer = await self.client.put("/templates/bare", {"nics": [{"network": "nowhere"}]})
        assertError(self, answer, 404, "not_found", "nowhere")
        self.assertEqual((await self.client.get("/templates/bare")).json["nics"], [])
        self.assertEqual((await self.client.get("/templates/t")).code, 404)

    async def test_template_update_nics(self):
        answer = await self.client.put("/templates/bare", {"nics": [{"network": "public"}]})
        self.assertEqual(answer.json["nics"], [{"network": "public"}])
        vm = (await self.create(template="bare")).json
        self.assertEqual([n["network"] for n in vm["nics"]], ["public"])

    async def test_start_places_on_host_offering_networks(self):
        # node2 has far more free memory, but no public bridge.
        vm = (await self.create(template="front", name="a")).json
        answer = await self.client.post("/cluster/lab/vms/a/start", {})
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(answer.json["host"], "node1")
        self.assertEqual([n["bridge"] for n in answer.json["nics"]], ["cometb500", "br-pub"])
        description = await self.hypervisors.describe("node1", f"comet-{vm['uuid']}")
        # The private NIC with the tunnel's MTU ([network] mtu), the host's bridge as it is.
        self.assertEqual([(n.mac, n.bridge, n.mtu) for n in description.spec.nics],
                         [(vm["nics"][0]["mac"], "cometb500", 1450),
                          (vm["nics"][1]["mac"], "br-pub", None)])
        # A VM without NICs still goes where memory is freest.
        await self.create(template="bare", name="b")
        answer = await self.client.post("/cluster/lab/vms/b/start", {})
        self.assertEqual(answer.json["host"], "node2")

    async def test_migrate_to_host_without_network_is_409(self):
        await self.create(template="front", name="a")
        await self.client.post("/cluster/lab/vms/a/start", {})
        answer = await self.client.post("/cluster/lab/vms/a/migrate", {"host": "node2"})
        assertError(self, answer, 409, "conflict", "public")
        # And the placement rule finds no other host for it.
        answer = await self.client.post("/cluster/lab/vms/a/migrate", {})
        assertError(self, answer, 409, "conflict", "networks")
