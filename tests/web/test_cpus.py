"""
CPU models through the HTTP API, on real libvirt (test-driver nodes, which
know every x86 model libvirt does): a host's C{cpu_mode} goes into its
domains' C{<cpu>}; templates and VMs carry the C{cpu_model} their guests
need, placement and migration only pick hosts that can run it, and a model
no host can run is a 409 naming it that places nothing.
"""

import attrs
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests import _api
from tests._api import make_client, make_models
from tests.virt._migrating import Migrating
from tests.web.test_serve import assertError


class CpuModelTests(TestCase):
    async def setUp(self):
        # node1 has the most memory but is dedicated to Nehalem; node2
        # (host-model) and node3 (unset) offer any model libvirt can run.
        big, middle, small = _api.test_hosts(self, ((8, 16384), (4, 8192), (4, 4096)))
        hosts = (attrs.evolve(big, cpu_mode="Nehalem"), attrs.evolve(middle, cpu_mode="host-model"),
                 small)
        self.models = make_models(self, hosts=hosts, wrap_hypervisors=self.keep)
        self.client = make_client(self, self.models)
        answer = await self.client.post("/templates", {"name": "modern", "memory": 256,
                                                       "cpu_model": "Haswell-noTSX"})
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(answer.json["cpu_model"], "Haswell-noTSX")
        answer = await self.client.post("/templates", {"name": "plain", "memory": 256})
        self.assertIsNone(answer.json["cpu_model"])
        self.assertEqual((await self.client.post("/cluster", {"name": "lab"})).code, 201)

    def keep(self, hypervisors):
        self.hypervisors = Migrating(hypervisors)
        return self.hypervisors

    async def create(self, **body):
        return await self.client.post("/cluster/lab/vms", body)

    async def start(self, name):
        return await self.client.post(f"/cluster/lab/vms/{name}/start", {})

    async def domain_cpu(self, vm):
        description = await self.hypervisors.describe(vm["host"], f"comet-{vm['uuid']}")
        return description.spec.cpu

    async def test_vm_takes_template_model_or_its_own(self):
        """A VM needs its template's model unless the create says another, or null."""
        vm = (await self.create(template="modern", name="a")).json
        self.assertEqual(vm["cpu_model"], "Haswell-noTSX")
        vm = (await self.create(template="modern", name="b", cpu_model="Skylake-Client")).json
        self.assertEqual(vm["cpu_model"], "Skylake-Client")
        vm = (await self.create(template="modern", name="c", cpu_model=None)).json
        self.assertIsNone(vm["cpu_model"])
        self.assertEqual((await self.client.get("/cluster/lab/vms/b")).json["cpu_model"],
                         "Skylake-Client")

    async def test_put(self):
        """PUT sets or clears (null) a template's and a VM's model; without it, it stays."""
        answer = await self.client.put("/templates/plain", {"cpu_model": "Nehalem"})
        self.assertEqual(answer.json["cpu_model"], "Nehalem")
        answer = await self.client.put("/templates/plain", {"memory": 512})
        self.assertEqual(answer.json["cpu_model"], "Nehalem")
        answer = await self.client.put("/templates/plain", {"cpu_model": None})
        self.assertIsNone(answer.json["cpu_model"])
        await self.create(template="modern", name="a")
        answer = await self.client.put("/cluster/lab/vms/a", {"memory": 512})
        self.assertEqual(answer.json["cpu_model"], "Haswell-noTSX")
        answer = await self.client.put("/cluster/lab/vms/a", {"cpu_model": "Westmere"})
        self.assertEqual(answer.json["cpu_model"], "Westmere")
        answer = await self.client.put("/cluster/lab/vms/a", {"cpu_model": None})
        self.assertIsNone(answer.json["cpu_model"])
        self.assertIsNone((await self.client.get("/cluster/lab/vms/a")).json["cpu_model"])

    async def test_bad_names_are_400_and_change_nothing(self):
        """A host mode or a name with odd characters cannot be a VM's model."""
        await self.create(template="modern", name="a")
        for bad in ("host-model", "host-passthrough", "a b", "-x", "x" * 65, 3):
            assertError(self, await self.client.post(
                "/templates", {"name": "t", "cpu_model": bad}), 400, "bad_request")
            assertError(self, await self.client.put(
                "/templates/modern", {"cpu_model": bad}), 400, "bad_request")
            assertError(self, await self.create(template="plain", name="b", cpu_model=bad),
                        400, "bad_request")
            assertError(self, await self.client.put(
                "/cluster/lab/vms/a", {"cpu_model": bad}), 400, "bad_request")
        self.assertEqual([t["name"] for t in (await self.client.get("/templates")).json],
                         ["modern", "plain"])
        self.assertEqual((await self.client.get("/templates/modern")).json["cpu_model"],
                         "Haswell-noTSX")
        self.assertEqual([v["name"] for v in (await self.client.get("/cluster/lab/vms")).json],
                         ["a"])
        self.assertEqual((await self.client.get("/cluster/lab/vms/a")).json["cpu_model"],
                         "Haswell-noTSX")

    async def test_placement_and_domain_cpu(self):
        """
        A VM without a model goes where memory is freest (node1) and gets
        that host's Nehalem; one needing Haswell-noTSX skips node1 and gets
        exactly its model on node2 (host-model); one needing Nehalem may go
        to node1.
        """
        await self.create(template="plain", name="any")
        vm = (await self.start("any")).json
        self.assertEqual(vm["host"], "node1")
        self.assertEqual(await self.domain_cpu(vm), "Nehalem")
        await self.create(template="modern", name="haswell")
        vm = (await self.start("haswell")).json
        self.assertEqual((vm["host"], vm["cpu_model"]), ("node2", "Haswell-noTSX"))
        self.assertEqual(await self.domain_cpu(vm), "Haswell-noTSX")
        await self.create(template="plain", name="nehalem", cpu_model="Nehalem")
        vm = (await self.start("nehalem")).json
        self.assertEqual(vm["host"], "node1")
        self.assertEqual(await self.domain_cpu(vm), "Nehalem")

    async def test_host_model_host_gives_host_model(self):
        """A VM without a model on a host-model host gets host-model."""
        self.assertEqual((await self.client.post("/hosts/node1/maintenance",
                                                 {"enabled": True})).code, 200)
        await self.create(template="plain", name="any")
        vm = (await self.start("any")).json
        self.assertEqual(vm["host"], "node2")
        self.assertEqual(await self.domain_cpu(vm), "host-model")

    async def test_unset_host_gives_default_or_the_vm_model(self):
        """On a host without cpu_mode a VM gets no <cpu> (the default), or its own model."""
        for host in ("node1", "node2"):
            self.assertEqual((await self.client.post(f"/hosts/{host}/maintenance",
                                                     {"enabled": True})).code, 200)
        await self.create(template="plain", name="any")
        vm = (await self.start("any")).json
        self.assertEqual(vm["host"], "node3")
        self.assertIsNone(await self.domain_cpu(vm))
        await self.create(template="modern", name="haswell")
        vm = (await self.start("haswell")).json
        self.assertEqual(vm["host"], "node3")
        self.assertEqual(await self.domain_cpu(vm), "Haswell-noTSX")

    async def test_model_no_host_runs_is_409(self):
        """A model no connected host can run: 409 naming it and each host's reason; not placed."""
        await self.create(template="plain", name="odd", cpu_model="NoSuchCPU-v9")
        answer = await self.start("odd")
        assertError(self, answer, 409, "conflict", "CPU model NoSuchCPU-v9")
        for reason in ("node1: its cpu_mode is Nehalem",
                       "node2: its libvirt cannot run NoSuchCPU-v9",
                       "node3: its libvirt cannot run NoSuchCPU-v9"):
            self.assertIn(reason, answer.json["reason"])
        vm = (await self.client.get("/cluster/lab/vms/odd")).json
        self.assertEqual((vm["state"], vm["host"]), ("shutoff", None))
        for host in ("node1", "node2", "node3"):
            self.assertEqual(await self.hypervisors.domain_states(host), {})

    async def test_migration_destination_runs_the_model(self):
        """
        Migration's own choice skips the host dedicated to another model
        (node1, the freest); naming that host is a 409 that moves nothing.
        """
        await self.create(template="modern", name="haswell")
        vm = (await self.start("haswell")).json
        self.assertEqual(vm["host"], "node2")
        answer = await self.client.post("/cluster/lab/vms/haswell/migrate", {"host": "node1"})
        assertError(self, answer, 409, "conflict", "its cpu_mode is Nehalem")
        self.assertEqual(self.hypervisors.migrations, [])
        answer = await self.client.post("/cluster/lab/vms/haswell/migrate", {})
        self.assertEqual(answer.code, 202, answer.body)
        self.assertIn("to 'node3'", answer.json["message"])
        href = answer.header("location")
        while (task := (await self.client.get(href)).json)["status"] == "running":
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual((await self.client.get("/cluster/lab/vms/haswell")).json["host"],
                         "node3")
