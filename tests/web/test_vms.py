"""
VMs through the HTTP API, on real libvirt (test-driver nodes): create, name
generation, PUT, DELETE, every action from every state, screenshot, and the
cluster start/stop tasks.
"""

from twisted.internet import reactor
import attrs
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from comet.config import ComputeConfig
from comet.errors import Unavailable
from comet.model.vm_phases import VM_ACTIONS
from comet.web._serve import ENCODER
from comet.web.vms import summary
from tests._api import make_client, make_models
from tests.virt._migrating import Migrating
from tests.web.test_serve import assertError

PNG = b"\x89PNG\r\n\x1a\n"


class VMTestMixin:
    async def setUpVMs(self, sizes=((4, 8192), (8, 16384)), wrap_hypervisors=None, **config):
        from tests._api import test_hosts

        self.models = make_models(
            self, hosts=test_hosts(self, sizes), wrap_hypervisors=wrap_hypervisors, **config
        )
        self.client = make_client(self, self.models)
        answer = await self.client.post("/templates", {"name": "small", "memory": 256, "cpus": 1})
        self.assertEqual(answer.code, 201)
        self.assertEqual((await self.client.post("/cluster", {"name": "lab"})).code, 201)

    async def vm(self, name="small-1"):
        return (await self.client.get(f"/cluster/lab/vms/{name}")).json

    async def create(self, **body):
        body.setdefault("template", "small")
        return await self.client.post("/cluster/lab/vms", body)

    async def action(self, name, action, body=None):
        return await self.client.post(f"/cluster/lab/vms/{name}/{action}", body or {})

    async def wait_task(self, answer, timeout=20.0):
        """Wait for the task a 202 answered with to end; return it."""
        self.assertEqual(answer.code, 202, answer.body)
        href = answer.header("location")
        for _ in range(int(timeout / 0.05)):
            task = (await self.client.get(href)).json
            if task["status"] != "running":
                return task
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"task {href} still running")


class CreateTests(VMTestMixin, TestCase):
    async def setUp(self):
        await self.setUpVMs()

    async def test_create_named(self):
        answer = await self.create(name="web", memory=512, cpus=2)
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.header("location"), "/cluster/lab/vms/web")
        vm = answer.json
        self.assertEqual(
            (vm["name"], vm["state"], vm["memory"], vm["cpus"], vm["host"], vm["template"]),
            ("web", "shutoff", 512, 2, None, "small"),
        )
        self.assertIsNone(vm["screenshot"])
        self.assertEqual(vm["actions"], {"start": "/cluster/lab/vms/web/start"})
        self.assertEqual(len(vm["uuid"]), 36)

    async def test_defaults_from_template(self):
        vm = (await self.create()).json
        self.assertEqual((vm["name"], vm["memory"], vm["cpus"]), ("small-1", 256, 1))

    async def test_smallest_free_number(self):
        """Without a name: the template's name and the smallest free number."""
        for _ in range(3):
            await self.create()
        await self.client.delete("/cluster/lab/vms/small-2")
        self.assertEqual((await self.create()).json["name"], "small-2")
        self.assertEqual((await self.create()).json["name"], "small-4")

    async def test_concurrent_creates(self):
        """Concurrent creates without a name each get a different name."""
        answers = await gatherResults(
            [
                ensureDeferred(self.client.post("/cluster/lab/vms", {"template": "small"}))
                for _ in range(8)
            ]
        )
        self.assertEqual([a.code for a in answers], [201] * 8)
        names = sorted(a.json["name"] for a in answers)
        self.assertEqual(names, sorted(f"small-{i}" for i in range(1, 9)))

    async def test_busy_while_being_created(self):
        """
        While a VM's disks are being made, deleting or starting it is a 409
        and touches nothing; once made, it is an ordinary VM.
        """
        from twisted.internet.defer import Deferred

        disks = self.models.vms.disks
        made = Deferred()
        creating = Deferred()

        async def slow_create(record, template):
            creating.callback(record)
            await made

        self.patch(disks, "create", slow_create)
        answer = ensureDeferred(self.create(name="web"))
        await creating
        for busy in (self.client.delete("/cluster/lab/vms/web"), self.action("web", "start")):
            assertError(self, await busy, 409, "conflict", "VM 'web' is busy: it is being created")
        made.callback(None)
        self.assertEqual((await answer).code, 201)
        self.assertEqual((await self.client.delete("/cluster/lab/vms/web")).code, 204)

    async def test_name_taken(self):
        await self.create(name="web")
        assertError(self, await self.create(name="web"), 409, "conflict", "already exists")

    async def test_unknown_template_or_cluster(self):
        assertError(self, await self.create(template="nope"), 404, "not_found", "template 'nope'")
        answer = await self.client.post("/cluster/none/vms", {"template": "small"})
        assertError(self, answer, 404, "not_found", "cluster 'none'")
        assertError(self, await self.client.get("/cluster/lab/vms/none"), 404, "not_found")

    async def test_bad_input_creates_nothing(self):
        for body in [
            {},
            {"template": "small", "memory": 32},
            {"template": "small", "cpus": 0},
            {"template": "small", "cpus": 9},
            {"template": "small", "name": "a;b"},
            {"template": "small", "name": "$(x)"},
            {"template": "small", "state": "running"},
        ]:
            answer = await self.client.post("/cluster/lab/vms", body)
            assertError(self, answer, 400, "bad_request")
        self.assertEqual((await self.client.get("/cluster/lab/vms")).json, [])

    async def test_list(self):
        await self.create(name="a")
        await self.create(name="b")
        listed = (await self.client.get("/cluster/lab/vms")).json
        self.assertEqual(
            listed,
            [
                {"name": "a", "state": "shutoff", "host": None, "href": "/cluster/lab/vms/a"},
                {"name": "b", "state": "shutoff", "host": None, "href": "/cluster/lab/vms/b"},
            ],
        )
        cluster = (await self.client.get("/cluster/lab")).json
        self.assertEqual((cluster["state"], cluster["vms"]), ("stopped", 2))


class ActionTests(VMTestMixin, TestCase):
    async def setUp(self):
        await self.setUpVMs(wrap_hypervisors=Migrating)
        await self.create()

    def guest_ignores_shutdown(self):
        """The guest acts as if it never saw the ACPI shutdown (until the test ends)."""

        async def ignore(host, name):
            return None

        self.patch(self.models.context.hypervisors, "shutdown", ignore)

    async def reach(self, phase):
        """Bring small-1 to C{phase}."""
        steps = {
            "stopped": [],
            "running": ["start"],
            "paused": ["start", "suspend"],
            "shutoff": ["start", "poweroff"],
        }[phase]
        for step in steps:
            self.assertEqual((await self.action("small-1", step)).code, 200)

    async def test_start_places_on_most_free_memory(self):
        vm = (await self.action("small-1", "start")).json
        self.assertEqual((vm["state"], vm["host"]), ("running", "node2"))
        self.assertEqual(vm["screenshot"], "/cluster/lab/vms/small-1/screenshot")
        hosts = {h["name"]: h for h in (await self.client.get("/hosts")).json}
        self.assertEqual(hosts["node2"]["vms"], 1)
        self.assertEqual(hosts["node2"]["memory_free"], 16384 - 256)

    async def test_every_action_from_every_state(self):
        """An action valid in a state gives the next state; any other is a 409 naming the state."""
        expected = {
            ("stopped", "start"): "running",
            ("shutoff", "start"): "running",
            ("running", "poweroff"): "shutoff",
            ("paused", "poweroff"): "shutoff",
            ("running", "shutdown"): "shutoff",
            ("running", "reset"): "running",
            ("running", "suspend"): "paused",
            ("paused", "resume"): "running",
        }
        for phase in ["stopped", "running", "paused", "shutoff"]:
            for action in VM_ACTIONS:
                await self.client.delete("/cluster/lab/vms/small-1", {"force": True})
                await self.create()
                await self.reach(phase)
                before = await self.vm()
                if action == "stop":
                    answer = await self.action("small-1", "stop", {"timeout": 1, "force": True})
                    if phase == "stopped":
                        assertError(self, answer, 409, "conflict", "shutoff")
                    else:
                        task = await self.wait_task(answer)
                        self.assertEqual(task["status"], "finished", task)
                        vm = await self.vm()
                        self.assertEqual((vm["state"], vm["host"]), ("shutoff", None))
                    continue
                if action == "migrate":
                    answer = await self.action("small-1", "migrate")
                    if phase in ("running", "paused"):
                        task = await self.wait_task(answer)
                        self.assertEqual(task["status"], "finished", task)
                        vm = await self.vm()
                        self.assertEqual(vm["state"], phase)
                        self.assertNotEqual(vm["host"], before["host"])
                    else:
                        assertError(self, answer, 409, "conflict", f"is {before['state']}")
                    continue
                answer = await self.action("small-1", action)
                if (phase, action) in expected:
                    self.assertEqual(answer.code, 200, (phase, action, answer.body))
                    self.assertEqual(answer.json["state"], expected[(phase, action)], (phase, action))
                else:
                    assertError(self, answer, 409, "conflict", f"is {before['state']}")
                    self.assertEqual((await self.vm())["state"], before["state"])

    async def test_actions_field_matches(self):
        """C{actions} lists exactly the actions valid now."""
        for phase, valid in [
            ("stopped", {"start"}),
            ("running", {"poweroff", "shutdown", "reset", "suspend", "stop", "migrate"}),
        ]:
            await self.reach(phase)
            self.assertEqual(set((await self.vm())["actions"]), valid)

    async def test_screenshot(self):
        assertError(self, await self.client.get("/cluster/lab/vms/small-1/screenshot"), 409, "conflict")
        await self.reach("running")
        answer = await self.client.get("/cluster/lab/vms/small-1/screenshot")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("content-type"), "image/png")
        self.assertTrue(answer.body.startswith(PNG))
        again = await self.client.get("/cluster/lab/vms/small-1/screenshot")
        self.assertEqual(again.body, answer.body)

    async def test_screenshot_refuses_json_only_accept(self):
        await self.reach("running")
        answer = await self.client.get(
            "/cluster/lab/vms/small-1/screenshot", headers={"Accept": "application/json"}
        )
        assertError(self, answer, 406, "not_acceptable")

    async def test_put_keeps_live_state(self):
        """PUT changes the stored definition; the running domain keeps its memory until the next start."""
        await self.reach("running")
        answer = await self.client.put("/cluster/lab/vms/small-1", {"memory": 512, "cpus": 2})
        self.assertEqual((answer.json["memory"], answer.json["state"]), (512, "running"))
        hv = self.models.context.hypervisors
        domains = await hv.list_domains("node2")
        live = next(d for d in domains.values() if d.uuid == answer.json["uuid"])
        self.assertEqual((live.memory_mb, live.cpus), (256, 1))
        await self.action("small-1", "poweroff")
        await self.action("small-1", "start")
        domains = await hv.list_domains("node2")
        live = next(d for d in domains.values() if d.uuid == answer.json["uuid"])
        self.assertEqual((live.memory_mb, live.cpus), (512, 2))

    async def test_rename_only_shut_off(self):
        await self.reach("running")
        answer = await self.client.put("/cluster/lab/vms/small-1", {"name": "web"})
        assertError(self, answer, 409, "conflict", "only while shut off")
        await self.action("small-1", "poweroff")
        answer = await self.client.put("/cluster/lab/vms/small-1", {"name": "web"})
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("location"), "/cluster/lab/vms/web")
        self.assertEqual((await self.action("web", "start")).json["state"], "running")

    async def test_put_unknown_field(self):
        answer = await self.client.put("/cluster/lab/vms/small-1", {"host": "node1"})
        assertError(self, answer, 400, "bad_request", "unknown field 'host'")

    async def test_delete_rule(self):
        """DELETE is a 409 while running, unless forced; then no domain is left."""
        vm = (await self.action("small-1", "start")).json
        assertError(self, await self.client.delete("/cluster/lab/vms/small-1"), 409, "conflict")
        answer = await self.client.delete("/cluster/lab/vms/small-1", {"force": True})
        self.assertEqual(answer.code, 204)
        domains = await self.models.context.hypervisors.list_domains("node2")
        self.assertNotIn(vm["uuid"], [d.uuid for d in domains.values()])
        assertError(self, await self.client.get("/cluster/lab/vms/small-1"), 404, "not_found")

    async def test_stop_without_force_when_guest_ignores(self):
        """A guest that does not shut down in time fails the stop task and stays running."""
        await self.reach("running")
        self.guest_ignores_shutdown()
        task = await self.wait_task(await self.action("small-1", "stop", {"timeout": 0.2}))
        self.assertEqual(task["status"], "failed")
        self.assertIn("did not shut down within 0.2 s", task["message"])
        vm = await self.vm()
        self.assertEqual((vm["state"], vm["host"]), ("running", "node2"))
        task = await self.wait_task(
            await self.action("small-1", "stop", {"timeout": 0.2, "force": True})
        )
        self.assertEqual(task["status"], "finished")
        self.assertIn("powered off", task["message"])

    async def start_failing_at(self, step: str, detail: str):
        """Start small-1 with the libvirt operation C{step} failing as a host that died."""
        hv = self.models.context.hypervisors

        async def broken(*args):
            raise Unavailable(f"compute host 'node2' does not answer: {detail}")

        original = getattr(hv, step)
        setattr(hv, step, broken)
        try:
            return await self.action("small-1", "start")
        finally:
            setattr(hv, step, original)

    async def test_failed_define_leaves_nothing(self):
        """A start whose define fails leaves no domain and no placement."""
        answer = await self.start_failing_at("define", "cut")
        assertError(self, answer, 503, "unavailable", "starting VM 'small-1'")
        vm = await self.vm()
        self.assertEqual((vm["state"], vm["host"]), ("shutoff", None))
        self.assertEqual(await self.models.context.hypervisors.list_domains("node2"), {})

    async def test_failed_start_undefines(self):
        """A start that fails after define undefines the domain and releases the placement."""
        answer = await self.start_failing_at("start", "died")
        assertError(self, answer, 503, "unavailable", "died")
        self.assertEqual(await self.models.context.hypervisors.list_domains("node2"), {})
        self.assertIsNone((await self.vm())["host"])

    async def test_busy_vm(self):
        """A second operation on a VM while one runs is a 409 naming the first."""
        await self.reach("running")
        self.guest_ignores_shutdown()
        # (Long enough that the stop still runs at the next request on a
        # loaded machine: 0.5 s once was not.)
        answer = await self.action("small-1", "stop", {"timeout": 3})
        self.assertEqual(answer.code, 202)
        href = answer.header("location")
        assertError(self, await self.action("small-1", "suspend"), 409, "conflict",
                    f"VM 'small-1' is busy: it is stopping (task {href})")
        uuid = (await self.vm())["uuid"]
        rows = await self.models.locks.rows()
        self.assertEqual([(r.object, f"/tasks/{r.task_id}") for r in rows], [(uuid, href)])
        await self.wait_task(answer)
        self.assertEqual(await self.models.locks.rows(), [])

    async def test_lock_released_after_success_and_failure(self):
        """No lock row outlives an action, whether it worked or failed."""
        answer = await self.start_failing_at("define", "cut")
        self.assertEqual(answer.code, 503)
        self.assertEqual(await self.models.locks.rows(), [])
        self.assertEqual((await self.action("small-1", "start")).code, 200)
        self.assertEqual(await self.models.locks.rows(), [])
        self.assertEqual(self.models.locks.held, {})


class MigrateTests(VMTestMixin, TestCase):
    """C{POST /cluster/:c/vms/:v/migrate}: a task that moves the VM live to another host."""

    async def setUp(self):
        # (a short timeout for test_timeout_cancels; the others' are instant)
        await self.setUpVMs(wrap_hypervisors=Migrating,
                            compute=ComputeConfig(migration_timeout=1.5))
        self.hv = self.models.context.hypervisors
        await self.create()
        self.assertEqual((await self.action("small-1", "start")).code, 200)
        self.source = (await self.vm())["host"]
        self.other = "node1" if self.source == "node2" else "node2"

    async def test_placement_picks_the_other_host(self):
        """
        Without a host, the placement rule picks one among the others: a
        202 task whose message names both hosts; afterwards the VM runs
        there, with the same state, and its record names that host.
        """
        answer = await self.action("small-1", "migrate")
        self.assertEqual(answer.code, 202, answer.body)
        self.assertIn(f"from {self.source!r} to {self.other!r}", answer.json["message"])
        task = await self.wait_task(answer)
        self.assertEqual(task["status"], "finished", task)
        self.assertIn(f"migrated from {self.source!r} to {self.other!r}", task["message"])
        vm = await self.vm()
        self.assertEqual((vm["state"], vm["host"]), ("running", self.other))
        self.assertIn("migrate", vm["actions"])
        self.assertEqual(self.hv.migrations, [(self.source, self.other, f"comet-{vm['uuid']}")])
        self.assertEqual(await self.hv.domain_states(self.source), {})

    async def test_named_host_and_paused(self):
        """A paused VM moves to the host named, and stays paused there."""
        self.assertEqual((await self.action("small-1", "suspend")).code, 200)
        task = await self.wait_task(await self.action("small-1", "migrate", {"host": self.other}))
        self.assertEqual(task["status"], "finished", task)
        vm = await self.vm()
        self.assertEqual((vm["state"], vm["host"]), ("paused", self.other))

    async def test_bad_hosts(self):
        """Its own host: 400; an unknown one: 404; a bad body: 400; nothing moves."""
        assertError(self, await self.action("small-1", "migrate", {"host": self.source}), 400,
                    "bad_request", "already")
        assertError(self, await self.action("small-1", "migrate", {"host": "node9"}), 404,
                    "not_found", "node9")
        assertError(self, await self.action("small-1", "migrate", {"host": 3}), 400,
                    "bad_request")
        assertError(self, await self.action("small-1", "migrate", {"to": "node1"}), 400,
                    "bad_request")
        self.assertEqual((await self.vm())["host"], self.source)
        self.assertEqual(self.hv.migrations, [])

    async def test_wrong_state(self):
        """A shut-off or stopped VM: 409 naming its state, and no migrate in its actions."""
        self.assertEqual((await self.action("small-1", "poweroff")).code, 200)
        vm = await self.vm()
        self.assertNotIn("migrate", vm["actions"])
        assertError(self, await self.action("small-1", "migrate"), 409, "conflict", "shutoff")
        self.assertEqual((await self.create()).code, 201)
        assertError(self, await self.action("small-2", "migrate"), 409, "conflict", "shutoff")
        self.assertEqual(self.hv.migrations, [])

    async def test_host_down(self):
        """
        The destination not answering: 503 naming it, and C{actions} offers no
        migrate while no other host is connected; the VM's own host not
        answering: 503 naming that one.
        """
        real = self.hv.real
        status = real.status

        def down(host, which=self.other):
            answer = status(host)
            if host == which:
                return attrs.evolve(answer, state="unreachable", reason="it is gone")
            return answer

        self.patch(real, "status", down)
        assertError(self, await self.action("small-1", "migrate", {"host": self.other}), 503,
                    "unavailable", repr(self.other))
        self.assertNotIn("migrate", (await self.vm())["actions"])
        assertError(self, await self.action("small-1", "migrate"), 409, "conflict",
                    "no other compute host")

        async def silent(host):
            raise Unavailable(f"compute host {host!r} does not answer")

        self.patch(self.hv, "ping", silent)
        assertError(self, await self.action("small-1", "migrate"), 503, "unavailable",
                    repr(self.source))
        self.assertEqual(self.hv.migrations, [])

    async def test_failed_migration_stays(self):
        """A migration libvirt refuses fails its task; the VM runs on at its source."""
        self.hv.fail = "the destination refused"
        task = await self.wait_task(await self.action("small-1", "migrate"))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("the destination refused", task["message"])
        self.assertIn(f"it stays on {self.source}", task["message"])
        vm = await self.vm()
        self.assertEqual((vm["state"], vm["host"]), ("running", self.source))
        self.hv.fail = None
        task = await self.wait_task(await self.action("small-1", "migrate"))
        self.assertEqual(task["status"], "finished", task)

    async def test_timeout_cancels(self):
        """
        A migration that takes longer than C{migration_timeout} is cancelled:
        the task fails saying so, the VM runs on at its source.  Meanwhile
        the task's progress follows the job (half the memory copied) and the
        VM is busy (409) for other actions.
        """
        self.hv.hold = Deferred()
        answer = await self.action("small-1", "migrate")
        href = answer.header("location")
        for _ in range(100):
            task = (await self.client.get(href)).json
            if task["progress"] == 50:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(task["progress"], 50, task)
        self.assertIn("MiB of memory left to copy", task["message"])
        assertError(self, await self.action("small-1", "suspend"), 409, "conflict", "migrating")
        task = await self.wait_task(answer)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("did not complete within 1.5 s and was cancelled", task["message"])
        self.assertEqual(self.hv.aborted, 1)
        vm = await self.vm()
        self.assertEqual((vm["state"], vm["host"]), ("running", self.source))


class LateEventActionTests(VMTestMixin, TestCase):
    """
    An action's answer shows the state the action left the VM in (a client
    reads its own writes) whenever libvirt's lifecycle events arrive: here
    every event is held back until after the answer and then let through,
    late, as on a machine too busy for libvirt's event thread to keep up.
    """

    async def setUp(self):
        from tests.virt._events import LateEvents

        def late(hypervisors):
            self.events = LateEvents(hypervisors)
            self.addCleanup(self.events.close)
            return self.events

        await self.setUpVMs(wrap_hypervisors=late)

    async def test_every_action_answer_is_its_own_write(self):
        steps = [
            ("start", "running"),
            ("suspend", "paused"),
            ("resume", "running"),
            ("reset", "running"),
            ("shutdown", "shutoff"),
            ("start", "running"),
            ("suspend", "paused"),
            ("poweroff", "shutoff"),
            ("start", "running"),
            ("poweroff", "shutoff"),
        ]
        await self.create()
        for action, state in steps:
            answer = await self.action("small-1", action)
            self.assertEqual(answer.code, 200, (action, answer.body))
            self.assertEqual(answer.json["state"], state, action)
            self.assertEqual((await self.vm())["state"], state, action)
            # The events of this action (and of the ones before it) arrive now.
            self.events.release()
            self.assertEqual((await self.vm())["state"], state, (action, "after its events"))

    async def test_events_older_than_the_answer(self):
        """
        Events of earlier actions that arrive after a later action's answer
        (here: a poweroff's, after the start that followed it) do not take
        the VM back.
        """
        await self.create()
        domain = "comet-" + (await self.vm())["uuid"]
        stopped = self.events.arrival(domain, "stopped")
        for action, state in [("start", "running"), ("suspend", "paused"),
                              ("poweroff", "shutoff"), ("start", "running")]:
            answer = await self.action("small-1", action)
            self.assertEqual(answer.json["state"], state, action)
        await stopped  # the poweroff's event has come from libvirt, and waits
        # Up to the poweroff's: the VM was started again since.
        upto = self.events.held.index(("node2", domain, "stopped")) + 1
        self.events.release(upto)
        vm = await self.vm()
        self.assertEqual((vm["state"], vm["host"]), ("running", "node2"))
        self.events.holding = False
        self.events.release()
        self.assertEqual((await self.vm())["state"], "running")
        self.assertEqual((await self.action("small-1", "shutdown")).json["state"], "shutoff")


class ClusterActionTests(VMTestMixin, TestCase):
    async def setUp(self):
        # node1 fits two 256 MB VMs only.
        await self.setUpVMs(sizes=((2, 600),))
        for _ in range(3):
            await self.create()

    async def test_start_with_one_failing(self):
        """Cluster start acts on every VM; one failing does not stop the others."""
        cluster = (await self.client.get("/cluster/lab")).json
        self.assertEqual(cluster["actions"], {"start": "/cluster/lab/start", "stop": "/cluster/lab/stop"})
        task = await self.wait_task(await self.client.post("/cluster/lab/start", {}))
        self.assertEqual(task["status"], "failed")
        self.assertIn("2 of 3 VM(s) ok", task["message"])
        self.assertIn("FAILED: no compute host fits", task["message"])
        states = sorted(v["state"] for v in (await self.client.get("/cluster/lab/vms")).json)
        self.assertEqual(states, ["running", "running", "shutoff"])
        self.assertEqual((await self.client.get("/cluster/lab")).json["state"], "partial")

    async def test_stop(self):
        await self.client.post("/cluster/lab/vms/small-1/start")
        await self.client.post("/cluster/lab/vms/small-2/start")
        task = await self.wait_task(await self.client.post("/cluster/lab/stop", {"timeout": 1, "force": True}))
        self.assertEqual(task["status"], "finished", task)
        self.assertIn("small-3: already stopped", task["message"])
        listed = (await self.client.get("/cluster/lab/vms")).json
        self.assertEqual({(v["state"], v["host"]) for v in listed}, {("shutoff", None)})
        self.assertEqual(await self.models.context.hypervisors.list_domains("node1"), {})

    async def test_empty_cluster_has_no_actions(self):
        await self.client.post("/cluster", {"name": "empty"})
        assertError(self, await self.client.post("/cluster/empty/start"), 409, "conflict", "empty")

    async def test_forced_cluster_delete(self):
        await self.client.post("/cluster/lab/vms/small-1/start")
        assertError(self, await self.client.delete("/cluster/lab"), 409, "conflict")
        self.assertEqual((await self.client.delete("/cluster/lab", {"force": True})).code, 204)
        self.assertEqual(await self.models.context.hypervisors.list_domains("node1"), {})


class TemplateAndHostTests(VMTestMixin, TestCase):
    async def setUp(self):
        await self.setUpVMs()

    async def test_templates(self):
        template = (await self.client.get("/templates/small")).json
        self.assertEqual(
            template,
            {"name": "small", "memory": 256, "cpus": 1, "disk": None, "nics": [],
             "cpu_model": None, "disk_mode": "iscsi", "created": template["created"], "href": "/templates/small"},
        )
        answer = await self.client.put("/templates/small", {"memory": 1024})
        self.assertEqual(answer.json["memory"], 1024)
        await self.create()
        assertError(self, await self.client.delete("/templates/small"), 409, "conflict", "used by 1")
        await self.client.delete("/cluster/lab/vms/small-1")
        self.assertEqual((await self.client.delete("/templates/small")).code, 204)
        self.assertEqual((await self.client.get("/templates")).json, [])

    async def test_template_disk_needs_storage(self):
        answer = await self.client.post(
            "/templates", {"name": "t", "disk": {"pool": "p", "volume": "v"}}
        )
        self.assertEqual(answer.code, 404)

    async def test_template_bad_input(self):
        for body in [{"name": "t", "memory": 10}, {"name": "t", "cpus": 99}, {"name": "a b"}, {"name": "t", "x": 1}]:
            assertError(self, await self.client.post("/templates", body), 400, "bad_request")

    async def test_hosts(self):
        hosts = (await self.client.get("/hosts")).json
        self.assertEqual([h["name"] for h in hosts], ["node1", "node2"])
        node1 = (await self.client.get("/hosts/node1")).json
        self.assertEqual(
            {k: node1[k] for k in ("state", "cpus", "memory", "memory_free", "vms")},
            {"state": "connected", "cpus": 4, "memory": 8192, "memory_free": 8192, "vms": 0},
        )
        assertError(self, await self.client.get("/hosts/none"), 404, "not_found")

    async def test_host_uri_admins_only(self):
        """
        A host's libvirt URI (a login, a key's path) is shown to admins only:
        a viewer or an operator sees every other field.
        """
        from tests._api import APIClient, bearer, make_token

        self.assertTrue((await self.client.get("/hosts/node1")).json["uri"].startswith("test://"))
        for role in ("viewer", "operator"):
            auth = {"Authorization": bearer(make_token(self.models.users.db.path, role))}
            for answer in [(await self.client.get("/hosts", headers=auth)).json[0],
                           (await self.client.get("/hosts/node1", headers=auth)).json]:
                self.assertNotIn("uri", answer)
                self.assertEqual((answer["name"], answer["state"]), ("node1", "connected"))


class ClusterListTests(VMTestMixin, TestCase):
    """C{GET /cluster} reads every cluster's VM states in one pass over the hosts."""

    async def setUp(self):
        await self.setUpVMs()

    async def test_list_states_match_each_cluster(self):
        self.assertEqual((await self.client.post("/cluster", {"name": "idle"})).code, 201)
        self.assertEqual((await self.client.post("/cluster", {"name": "none"})).code, 201)
        for _ in range(2):
            self.assertEqual((await self.create()).code, 201)
        body = {"template": "small"}
        self.assertEqual((await self.client.post("/cluster/idle/vms", body)).code, 201)
        answer = await self.action("small-1", "start")
        self.assertEqual(answer.code, 200, answer.body)

        listed = {c["name"]: (c["state"], c["vms"]) for c in (await self.client.get("/cluster")).json}
        self.assertEqual(
            listed, {"lab": ("partial", 2), "idle": ("stopped", 1), "none": ("empty", 0)}
        )
        for name, shown in listed.items():
            one = (await self.client.get(f"/cluster/{name}")).json
            self.assertEqual((one["state"], one["vms"]), shown)

    async def test_states_by_cluster_host_not_answering(self):
        """
        With a host not answering, the narrow pass still gives what a full
        list gives: its VMs C{unknown}, a stopped VM C{shutoff}, by cluster.
        """
        self.assertEqual((await self.client.post("/cluster", {"name": "b"})).code, 201)
        for _ in range(3):
            self.assertEqual((await self.create()).code, 201)
        self.assertEqual(
            (await self.client.post("/cluster/b/vms", {"template": "small"})).code, 201)
        for cluster, name in (("lab", "small-1"), ("lab", "small-3"), ("b", "small-1")):
            answer = await self.client.post(f"/cluster/{cluster}/vms/{name}/start", {})
            self.assertEqual(answer.code, 200, answer.body)

        async def silent(host):
            raise Unavailable(f"compute host {host!r} does not answer")

        self.patch(self.models.context.hypervisors, "ping", silent)
        full: dict = {}
        for vm in await self.models.vms.list():
            full.setdefault(vm.record.cluster, []).append(vm.state)
        self.assertEqual(
            {c: sorted(states) for c, states in full.items()},
            {"lab": ["shutoff", "unknown", "unknown"], "b": ["unknown"]},
        )
        self.assertEqual(
            {c: sorted(states) for c, states in (await self.models.vms.states_by_cluster()).items()},
            {c: sorted(states) for c, states in full.items()},
        )

    async def test_states_by_cluster_as_a_list(self):
        """The narrow pass of C{GET /cluster} gives each cluster the states a full list gives."""
        for _ in range(3):
            self.assertEqual((await self.create()).code, 201)
        self.assertEqual((await self.action("small-2", "start")).code, 200)
        self.assertEqual((await self.action("small-3", "start")).code, 200)
        self.assertEqual((await self.action("small-3", "suspend")).code, 200)
        full: dict = {}
        for vm in await self.models.vms.list():
            full.setdefault(vm.record.cluster, []).append(vm.state)
        self.assertEqual(full, {"lab": ["shutoff", "running", "paused"]})
        self.assertEqual(
            await self.models.vms.states_by_cluster(), {k: tuple(v) for k, v in full.items()}
        )


class ListTextTests(VMTestMixin, TestCase):
    """
    C{GET .../vms} joins each VM's kept summary text (L{comet.web._listing}):
    byte for byte what encoding the summaries of L{VMModel.list} gives, and
    every change shows in the very next list.
    """

    async def setUp(self):
        self.hv = None

        def keep(hv):
            self.hv = hv
            return hv

        await self.setUpVMs(wrap_hypervisors=keep)

    async def listed(self, cluster="lab"):
        """The list's answer, checked against a fresh encoding of the model's list."""
        answer = await self.client.get(f"/cluster/{cluster}/vms")
        self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(answer.header("content-type"), "application/json; charset=utf-8")
        fresh = [summary(vm) for vm in await self.models.vms.list(cluster)]
        self.assertEqual(answer.body, ENCODER.encode(fresh).encode("utf-8"))
        return {vm["name"]: vm for vm in answer.json}

    async def test_every_change_shows_at_once(self):
        for name in ("a", "b", "c"):
            self.assertEqual((await self.create(name=name)).code, 201)
        self.assertEqual({vm["state"] for vm in (await self.listed()).values()}, {"shutoff"})

        started = (await self.action("a", "start")).json
        listed = await self.listed()
        self.assertEqual((listed["a"]["state"], listed["a"]["host"]), ("running", started["host"]))
        self.assertEqual((await self.action("a", "suspend")).code, 200)
        self.assertEqual((await self.listed())["a"]["state"], "paused")

        # Behind Comet's back: shown once its event has arrived.
        domain = f"comet-{started['uuid']}"
        await self.hv.resume(started["host"], domain)
        # (Polled without listed()'s comparison: the event may come between
        # the answer and the fresh encoding it is compared with.)
        for _ in range(200):
            shown = {vm["name"]: vm for vm in (await self.client.get("/cluster/lab/vms")).json}
            if shown["a"]["state"] == "running":
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual((await self.listed())["a"]["state"], "running")

        answer = await self.client.put("/cluster/lab/vms/c", {"name": "c2"})
        self.assertEqual(answer.code, 200, answer.body)
        listed = await self.listed()
        self.assertNotIn("c", listed)
        self.assertEqual(listed["c2"]["href"], "/cluster/lab/vms/c2")
        self.assertEqual((await self.client.put("/cluster/lab/vms/b", {"memory": 512})).code, 200)
        await self.listed()
        self.assertEqual((await self.client.delete("/cluster/lab/vms/b")).code, 204)
        self.assertEqual(sorted(await self.listed()), ["a", "c2"])
        self.assertEqual((await self.create(name="d")).code, 201)
        self.assertEqual(sorted(await self.listed()), ["a", "c2", "d"])
        self.assertEqual((await self.action("a", "poweroff")).code, 200)
        self.assertEqual((await self.listed())["a"]["state"], "shutoff")

        answer = await self.client.put("/cluster/lab", {"name": "prod"})
        self.assertEqual(answer.code, 200, answer.body)
        listed = await self.listed("prod")
        self.assertEqual(listed["d"]["href"], "/cluster/prod/vms/d")

    async def test_host_not_answering(self):
        """A VM whose host does not answer is listed C{unknown}, and C{running} once it answers."""
        self.assertEqual((await self.create(name="a")).code, 201)
        self.assertEqual((await self.action("a", "start")).code, 200)
        self.assertEqual((await self.listed())["a"]["state"], "running")

        async def silent(host):
            raise Unavailable(f"compute host {host!r} does not answer")

        silence = self.patch(self.hv, "ping", silent)
        self.assertEqual((await self.listed())["a"]["state"], "unknown")
        silence.restore()
        self.assertEqual((await self.listed())["a"]["state"], "running")

    async def test_states_by_cluster_follows_changes(self):
        """C{GET /cluster}'s pass gives the full list's states after every kind of change."""
        self.assertEqual((await self.client.post("/cluster", {"name": "b"})).code, 201)

        async def check():
            full: dict = {}
            for vm in await self.models.vms.list():
                full.setdefault(vm.record.cluster, []).append(vm.state)
            self.assertEqual(
                {c: sorted(s) for c, s in (await self.models.vms.states_by_cluster()).items()},
                {c: sorted(s) for c, s in full.items()},
            )
            return full

        for _ in range(3):
            self.assertEqual((await self.create()).code, 201)
        await check()
        self.assertEqual((await self.action("small-1", "start")).code, 200)
        self.assertEqual(sorted((await check())["lab"]), ["running", "shutoff", "shutoff"])
        self.assertEqual((await self.action("small-2", "start")).code, 200)
        self.assertEqual((await self.action("small-2", "suspend")).code, 200)
        self.assertEqual(sorted((await check())["lab"]), ["paused", "running", "shutoff"])
        self.assertEqual(
            (await self.client.post("/cluster/b/vms", {"template": "small"})).code, 201)
        self.assertEqual((await self.action("small-1", "poweroff")).code, 200)
        self.assertEqual(
            (await self.client.delete("/cluster/lab/vms/small-3")).code, 204)
        full = await check()
        self.assertEqual((sorted(full["lab"]), full["b"]), (["paused", "shutoff"], ["shutoff"]))
        self.assertEqual((await self.client.put("/cluster/b", {"name": "b2"})).code, 200)
        self.assertEqual(set(await check()), {"lab", "b2"})
