"""
Host maintenance and evacuation through the HTTP API, on real libvirt
(test-driver nodes; live migration as L{tests.virt._migrating} makes it):
C{POST /hosts/:h/maintenance} and C{POST /hosts/:h/evacuate}.
"""

from twisted.trial.unittest import TestCase

from comet.errors import Unavailable
from tests._api import APIClient, bearer, make_client, make_models, make_token
from tests.virt._migrating import Migrating
from tests.web.test_serve import assertError
from tests.web.test_vms import VMTestMixin

#: node2 is the largest: the placement rule picks it while it may.
THREE = ((4, 8192), (8, 16384), (4, 8192))


class MaintenanceTests(VMTestMixin, TestCase):
    async def setUp(self):
        await self.setUpVMs(THREE, wrap_hypervisors=Migrating)

    def maintenance(self, host, enabled, **kw):
        return self.client.post(f"/hosts/{host}/maintenance", {"enabled": enabled}, **kw)

    async def started(self, name):
        self.assertEqual((await self.create(name=name)).code, 201)
        self.assertEqual((await self.action(name, "start")).code, 200)
        return (await self.vm(name))["host"]

    async def test_on_and_off(self):
        """
        A host in maintenance shows it, offers C{evacuate}, and gets no new
        VM; taken out, it gets them again.
        """
        host = (await self.client.get("/hosts/node2")).json
        self.assertEqual((host["maintenance"], host["actions"]),
                         (False, {"maintenance": "/hosts/node2/maintenance"}))
        answer = await self.maintenance("node2", True)
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual((answer.json["maintenance"], answer.json["actions"]),
                         (True, {"maintenance": "/hosts/node2/maintenance",
                                 "evacuate": "/hosts/node2/evacuate"}))
        listed = {h["name"]: h["maintenance"] for h in (await self.client.get("/hosts")).json}
        self.assertEqual(listed, {"node1": False, "node2": True, "node3": False})
        self.assertNotEqual(await self.started("a"), "node2")
        self.assertEqual((await self.maintenance("node2", False)).json["maintenance"], False)
        self.assertEqual(await self.started("b"), "node2")

    async def test_migrate_offered_while_another_host_is_open(self):
        """
        A running VM offers C{migrate} while some other host is connected
        and out of maintenance, and not once every other host is in
        maintenance.
        """
        host = await self.started("a")

        async def offers():
            return "migrate" in (await self.vm("a"))["actions"]

        others = [h for h in ("node1", "node2", "node3") if h != host]
        self.assertTrue(await offers())
        await self.maintenance(others[0], True)
        self.assertTrue(await offers())
        await self.maintenance(others[1], True)
        self.assertFalse(await offers())
        await self.maintenance(others[0], False)
        self.assertTrue(await offers())

    async def test_shut_off_vm_starts_elsewhere(self):
        """
        A VM shut off on a host put in maintenance starts on another host
        (alone and in a cluster start), and its domain is gone from the
        host in maintenance: maintenance means nothing starts there.
        """
        hv = self.models.context.hypervisors
        for name in ("a", "b"):
            self.assertEqual(await self.started(name), "node2")
            self.assertEqual((await self.action(name, "poweroff")).code, 200)
            self.assertEqual(((await self.vm(name))["state"], (await self.vm(name))["host"]),
                             ("shutoff", "node2"))
        await self.maintenance("node2", True)
        answer = await self.action("a", "start")
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(answer.json["state"], "running")
        self.assertNotEqual(answer.json["host"], "node2")
        task = await self.wait_task(await self.client.post("/cluster/lab/start", {}))
        self.assertEqual(task["status"], "finished", task)
        vms = {vm["name"]: vm for vm in (await self.client.get("/cluster/lab/vms")).json}
        self.assertEqual({(vm["state"], vm["host"] == "node2") for vm in vms.values()},
                         {("running", False)})
        self.assertEqual(await hv.domain_states("node2"), {})

    async def test_persisted(self):
        """A new daemon over the same database knows which hosts are in maintenance."""
        await self.maintenance("node2", True)
        hosts = self.models.hosts
        models = make_models(self, hosts=[hosts.config(n) for n in hosts.names()],
                             db=self.models.users.db)
        client = make_client(self, models)
        self.assertTrue((await client.get("/hosts/node2")).json["maintenance"])
        self.assertFalse((await client.get("/hosts/node1")).json["maintenance"])

    async def test_cluster_start_and_migration_skip_it(self):
        """A cluster start places nothing on it; a migration neither picks it nor is let go there."""
        await self.maintenance("node2", True)
        for name in ("a", "b"):
            self.assertEqual((await self.create(name=name)).code, 201)
        task = await self.wait_task(await self.client.post("/cluster/lab/start", {}))
        self.assertEqual(task["status"], "finished", task)
        vms = (await self.client.get("/cluster/lab/vms")).json
        self.assertNotIn("node2", [vm["host"] for vm in vms])
        source = vms[0]["host"]
        other = "node3" if source == "node1" else "node1"
        assertError(self, await self.action(vms[0]["name"], "migrate", {"host": "node2"}), 409,
                    "conflict", "maintenance")
        task = await self.wait_task(await self.action(vms[0]["name"], "migrate"))
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual((await self.vm(vms[0]["name"]))["host"], other)

    async def test_bad_requests(self):
        """Bad bodies are 400, an unknown host 404, a non-admin 403; nothing changes."""
        for body in ({}, {"enabled": "yes"}, {"enabled": True, "x": 1}):
            assertError(self, await self.client.post("/hosts/node2/maintenance", body), 400,
                        "bad_request")
        assertError(self, await self.maintenance("node9", True), 404, "not_found", "node9")
        auth = {"Authorization": bearer(make_token(self.models.users.db.path, "operator"))}
        assertError(self, await self.maintenance("node2", True, headers=auth), 403, "forbidden")
        assertError(self, await self.client.post("/hosts/node2/evacuate", {}, headers=auth), 403,
                    "forbidden")
        self.assertFalse((await self.client.get("/hosts/node2")).json["maintenance"])


class EvacuateTests(VMTestMixin, TestCase):
    async def setUp(self):
        await self.setUpVMs(THREE, wrap_hypervisors=Migrating)
        self.hv = self.models.context.hypervisors

    async def on_node2(self, name, state):
        """VM C{name} on node2 (the largest), left C{state}."""
        self.assertEqual((await self.create(name=name)).code, 201)
        self.assertEqual((await self.action(name, "start")).code, 200)
        if state == "paused":
            self.assertEqual((await self.action(name, "suspend")).code, 200)
        elif state == "shutoff":
            self.assertEqual((await self.action(name, "poweroff")).code, 200)
        vm = await self.vm(name)
        self.assertEqual((vm["host"], vm["state"]), ("node2", state))

    async def evacuate(self, host="node2", **body):
        return await self.client.post(f"/hosts/{host}/evacuate", body)

    async def test_evacuate(self):
        """
        Running and paused VMs migrate live (keeping their state) to hosts
        the placement rule picks; a shut-off one has its placement released;
        one task names each VM's outcome, and nothing is left on the host.
        """
        for name, state in (("a", "running"), ("b", "paused"), ("c", "shutoff")):
            await self.on_node2(name, state)
        await self.client.post("/hosts/node2/maintenance", {"enabled": True})
        answer = await self.evacuate()
        self.assertEqual(answer.json["target_uri"], "/hosts/node2")
        task = await self.wait_task(answer)
        self.assertEqual(task["status"], "finished", task)
        self.assertIn("evacuation of host 'node2': 3 of 3 VM(s) moved", task["message"])
        for name in ("a", "b"):
            self.assertIn(f"lab/{name}: VM {name!r} migrated from 'node2' to", task["message"])
        self.assertIn("lab/c: VM 'c' was already shut off and was removed from host 'node2'",
                      task["message"])
        states = {vm["name"]: (vm["state"], vm["host"])
                  for vm in (await self.client.get("/cluster/lab/vms")).json}
        self.assertEqual({n: s[0] for n, s in states.items()},
                         {"a": "running", "b": "paused", "c": "shutoff"})
        self.assertIn(states["a"][1], ("node1", "node3"))
        self.assertIn(states["b"][1], ("node1", "node3"))
        self.assertIsNone(states["c"][1])
        self.assertEqual(await self.hv.domain_states("node2"), {})

    async def test_one_cannot_move(self):
        """
        A VM no other host fits is named with the reason, the others move,
        and the task fails.
        """
        await self.on_node2("small", "running")
        self.assertEqual((await self.create(name="big", memory=12000)).code, 201)
        self.assertEqual((await self.action("big", "start")).code, 200)
        await self.client.post("/hosts/node2/maintenance", {"enabled": True})
        task = await self.wait_task(await self.evacuate())
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("evacuation of host 'node2': 1 of 2 VM(s) moved", task["message"])
        self.assertIn("lab/big: FAILED: ", task["message"])
        self.assertIn("no compute host fits a VM of 12000 MB", task["message"])
        self.assertNotEqual((await self.vm("small"))["host"], "node2")
        big = await self.vm("big")
        self.assertEqual((big["host"], big["state"]), ("node2", "running"))

    async def test_refused(self):
        """
        Not in maintenance: 409; an unknown host: 404; a bad body: 400;
        fenced while the host answers: 409 (its guests may still write).
        """
        await self.on_node2("a", "running")
        assertError(self, await self.evacuate(), 409, "conflict", "not in maintenance")
        assertError(self, await self.evacuate("node9"), 404, "not_found", "node9")
        assertError(self, await self.evacuate(fenced="yes"), 400, "bad_request")
        await self.client.post("/hosts/node2/maintenance", {"enabled": True})
        assertError(self, await self.evacuate(fenced=True), 409, "conflict", "answers")
        self.assertEqual((await self.vm("a"))["host"], "node2")

    def kill_node2(self):
        """node2 stops answering (as a frozen or dead libvirtd)."""
        import attrs

        real = self.hv.real
        status = real.status

        def down(host):
            answer = status(host)
            if host == "node2":
                return attrs.evolve(answer, state="unreachable", reason="it is gone")
            return answer

        def silent(name):
            original = getattr(self.hv, name)

            async def call(host, *args, **kw):
                if host == "node2":
                    raise Unavailable("compute host 'node2' does not answer")
                return await original(host, *args, **kw)

            self.patch(self.hv, name, call)

        self.patch(real, "status", down)
        for name in ("ping", "node_info", "domain_state", "domain_states", "destroy",
                     "undefine", "define", "start"):
            silent(name)

    async def test_fenced(self):
        """
        A host that does not answer: a plain evacuation is 503; a fenced one
        starts its VMs (shut off there or not) on the other hosts.
        """
        await self.on_node2("a", "running")
        await self.on_node2("c", "shutoff")
        await self.client.post("/hosts/node2/maintenance", {"enabled": True})
        self.kill_node2()
        self.assertEqual((await self.vm("a"))["state"], "unknown")
        assertError(self, await self.evacuate(), 503, "unavailable", "fenced")
        task = await self.wait_task(await self.evacuate(fenced=True))
        self.assertEqual(task["status"], "finished", task)
        self.assertIn("fenced evacuation of host 'node2': 2 of 2 VM(s) moved", task["message"])
        self.assertIn("lab/a: VM 'a' was taken off 'node2' and started on", task["message"])
        for name in ("a", "c"):
            vm = await self.vm(name)
            self.assertEqual(vm["state"], "running", vm)
            self.assertIn(vm["host"], ("node1", "node3"))
