"""
C{GET /events}: the stream over a real loopback connection (the real site,
the real models on test-driver libvirt), its resume, filters, permissions
and what happens to a client that does not read; C{POST /login}.
"""

from __future__ import annotations

import base64

import attrs
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from comet.admin import connect
from comet.store import users as users_sql
from comet.web import Authenticator, CometAPI, Guard, PasswordChecks, api_site
from comet.web._table import OPERATOR, RouteTable, Routes
from comet.web.paths import PATHS
from comet.web.routes import RESOURCES
from tests._api import APIClient, bearer, cheap_passwords, make_models, make_token
from tests._sse import SSEClient, open_stream
from tests.web.test_serve import assertError


class _StreamCase(TestCase):
    """An API on a loopback port, its admin's in-memory client, and stream clients."""

    timeout = 60

    def setUp(self):
        self.models = make_models(self)
        self.api = CometAPI(self.models, clock=reactor, **self.settings())
        self.port = reactor.listenTCP(0, api_site(self.api.resource(), 1 << 20),
                                      interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.api.close_streams)
        self.admin = APIClient(self.api, "admin")

    def settings(self) -> dict:
        return {}

    async def connect(self, role="viewer", query="", headers=b"") -> SSEClient:
        token = make_token(self.models.users.db.path, role)
        return await open_stream(self, self.port.getHost().port, token, query, headers)

    async def until(self, protocol, check, timeout=20.0):
        await protocol.until(check, timeout)

    async def make_vm(self):
        self.assertEqual((await self.admin.post("/templates", {
            "name": "small", "memory": 256, "cpus": 1})).code, 201)
        self.assertEqual((await self.admin.post("/cluster", {"name": "lab"})).code, 201)
        answer = await self.admin.post("/cluster/lab/vms", {"template": "small", "name": "web-1"})
        self.assertEqual(answer.code, 201)



class EventStreamTests(_StreamCase):
    async def test_changes_and_vm_states(self):
        """Created records, a VM's state by Comet's action and behind its back, each with its href."""
        stream = await self.connect()
        self.assertIn(b"200 OK", stream.head)
        self.assertIn(b"text/event-stream", stream.head)
        await self.make_vm()
        await self.admin.post("/cluster/lab/vms/web-1/start", {})
        await self.until(stream, lambda p: "vm.state" in p.types())
        messages = stream.messages()
        by_type = {m["event"]: m["data"] for m in messages}
        self.assertEqual(by_type["cluster.created"]["href"], "/cluster/lab")
        self.assertEqual(by_type["template.created"]["href"], "/templates/small")
        self.assertEqual(by_type["vm.created"]["href"], "/cluster/lab/vms/web-1")
        self.assertEqual(by_type["vm.state"]["state"], "running")
        self.assertEqual(by_type["vm.state"]["href"], "/cluster/lab/vms/web-1")
        for m in messages:
            self.assertEqual(m["id"], m["data"]["id"])
        # Behind Comet's back (as virsh would): the domain is destroyed.
        vm = (await self.admin.get("/cluster/lab/vms/web-1")).json
        record = await self.models.context.vms.get("lab", "web-1")
        await self.models.context.hypervisors.destroy(vm["host"], record.domain_name)
        await self.until(stream, lambda p: [m["data"].get("state") for m in p.messages()
                                            if m["event"] == "vm.state"][-1] == "shutoff")

    async def test_placement_released(self):
        """
        A stop that releases the VM's placement says so (C{vm.changed},
        host null): no libvirt event does, and a watcher shows the host.
        """
        stream = await self.connect()
        await self.make_vm()
        await self.admin.post("/cluster/lab/vms/web-1/start", {})
        await self.admin.post("/cluster/lab/vms/web-1/poweroff", {})
        answer = await self.admin.post("/cluster/lab/vms/web-1/stop", {})
        await self.models.tasks.wait(answer.json["id"])
        self.assertIsNone((await self.admin.get("/cluster/lab/vms/web-1")).json["host"])
        await self.until(stream, lambda p: any(
            m["event"] == "vm.changed" and m["data"].get("host", "") is None
            for m in p.messages()))
        changed = [m["data"] for m in stream.messages() if m["event"] == "vm.changed"]
        self.assertEqual(changed[-1]["href"], "/cluster/lab/vms/web-1")

    async def test_task_events(self):
        await self.make_vm()
        stream = await self.connect(query="?type=task")
        await self.admin.post("/cluster/lab/vms/web-1/start", {})
        answer = await self.admin.post("/cluster/lab/vms/web-1/stop", {})
        self.assertEqual(answer.code, 202)
        href = answer.json["href"]
        await self.until(stream, lambda p: "task.finished" in p.types())
        mine = [m for m in stream.messages() if m["data"]["href"] == href]
        self.assertEqual(mine[0]["event"], "task.created")
        self.assertEqual(mine[-1]["event"], "task.finished")
        self.assertEqual(mine[-1]["data"]["status"], "finished")
        self.assertEqual({m["event"].partition(".")[0] for m in stream.messages()}, {"task"})

    async def test_resume(self):
        """Last-Event-ID: only what was missed; an id the log no longer holds: reset."""
        stream = await self.connect()
        await self.admin.post("/cluster", {"name": "a"})
        await self.until(stream, lambda p: len(p.messages()) == 1)
        last = stream.messages()[0]["id"]
        stream.transport.loseConnection()
        await stream.closed
        await self.admin.post("/cluster", {"name": "b"})
        await self.admin.post("/cluster", {"name": "c"})
        again = await self.connect(headers=f"Last-Event-ID: {last}\r\n".encode())
        await self.until(again, lambda p: len(p.messages()) == 2)
        self.assertEqual([m["data"]["href"] for m in again.messages()], ["/cluster/b", "/cluster/c"])
        # An id of another run of the daemon (or older than the log): reset, then live.
        stale = await self.connect(headers=b"Last-Event-ID: 12-3\r\n")
        await self.until(stale, lambda p: len(p.messages()) == 1)
        self.assertEqual(stale.types(), ["reset"])
        self.assertIn("list the resources again", stale.messages()[0]["data"]["reason"])

    async def test_resume_older_than_the_log(self):
        log = self.models.events
        stream = await self.connect()
        await self.admin.post("/cluster", {"name": "first"})
        await self.until(stream, lambda p: len(p.messages()) == 1)
        first = stream.messages()[0]["id"]
        for i in range(log.size + 1):
            log.emit("host.state", {"name": "node1"}, state="connected", reason="")
        self.assertIsNone(log.since(first))
        late = await self.connect(headers=f"Last-Event-ID: {first}\r\n".encode())
        await self.until(late, lambda p: len(p.messages()) >= 1)
        self.assertEqual(late.types()[0], "reset")

    async def test_filters(self):
        stream = await self.connect(query="?type=cluster.created&resource=/cluster/lab")
        await self.make_vm()
        await self.admin.post("/cluster", {"name": "other"})
        await self.admin.post("/cluster/lab/vms/web-1/start", {})
        by_kind = await self.connect(query="?type=vm&resource=/cluster/lab")
        await self.admin.post("/cluster/lab/vms/web-1/poweroff", {})
        await self.until(by_kind, lambda p: "vm.state" in p.types())
        self.assertEqual([m["data"]["href"] for m in stream.messages()], ["/cluster/lab"])
        self.assertEqual({m["data"]["href"] for m in by_kind.messages()}, {"/cluster/lab/vms/web-1"})

    async def test_bad_filters(self):
        """A bad filter is a 400 JSON error (and no stream)."""
        for query in ("?type=nope", "?type=vm.nope", "?resource=cluster/lab", "?resource=/a%0Ab",
                      "?resource=/a%3Fb", "?timeout=-1", "?timeout=x", "?type=%ff"):
            answer = await self.admin.get(f"/events{query}")
            assertError(self, answer, 400, "bad_request")
        self.assertEqual(self.api.event_streams().clients, set())

    async def test_not_found_or_viewer_only(self):
        answer = await APIClient(self.api, None).get("/events")
        self.assertEqual(answer.code, 401)


class PermissionTests(_StreamCase):
    """
    A viewer sees the events of what it may GET: with a table in which a
    cluster's GET needs an operator, a viewer sees no cluster's event.
    """

    def setUp(self):
        self.models = make_models(self)
        table = RouteTable(PATHS)
        for declared in RESOURCES:
            routes = Routes()
            routes.endpoints = [
                attrs.evolve(e, role=OPERATOR) if (e.method, e.path) == ("GET", "cluster") else e
                for e in declared.endpoints
            ]
            table.add(routes)
        self.api = CometAPI(self.models, routes=table, clock=reactor)
        self.port = reactor.listenTCP(0, api_site(self.api.resource(), 1 << 20),
                                      interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(self.api.close_streams)
        self.admin = APIClient(self.api, "admin", conformance=False)

    async def test_viewer_cannot_see_a_cluster_it_may_not_get(self):
        viewer = await self.connect("viewer")
        operator = await self.connect("operator")
        self.assertEqual((await APIClient(self.api, "viewer", conformance=False)
                          .get("/cluster/x")).code, 403)
        await self.admin.post("/cluster", {"name": "secret"})
        await self.admin.post("/templates", {"name": "t", "memory": 256, "cpus": 1})
        await self.until(operator, lambda p: "template.created" in p.types())
        await self.until(viewer, lambda p: "template.created" in p.types())
        self.assertIn("cluster.created", operator.types())
        self.assertNotIn("cluster.created", viewer.types())


class SlowClientTests(_StreamCase):
    def settings(self):
        return {"event_buffer": 16, "event_heartbeat": 0.5}

    async def test_client_that_never_reads_is_dropped(self):
        """
        A client that reads nothing: the daemon's buffer for it stays bounded
        (the transport's, then C{event_buffer} messages) and it is dropped.
        """
        stream = await self.connect()
        stream.transport.pauseProducing()   # it reads nothing from now on
        streams = self.api.event_streams()
        (client,) = streams.clients
        big = "x" * 16384
        for _ in range(2000):
            self.models.events.emit("task.progress", {"id": 1}, status="running",
                                    progress=1, message=big)
            if not streams.clients:
                break
            await deferLater(reactor, 0, lambda: None)
        self.assertEqual(streams.clients, set())
        self.assertIn("fell more than 16 events behind", client.dropped)
        stream.transport.resumeProducing()
        await stream.closed

    async def test_paused_for_two_heartbeats_is_dropped(self):
        stream = await self.connect()
        streams = self.api.event_streams()
        (client,) = streams.clients
        client.pauseProducing()   # as the transport does when its buffer is full
        await stream.closed
        self.assertIn("two heartbeats", client.dropped)
        self.assertEqual(streams.clients, set())

    async def test_heartbeats(self):
        stream = await self.connect()
        await self.until(stream, lambda p: b": keep-alive" in p.raw)

    async def test_no_listener_no_subscription(self):
        """With no client the streams do not follow the log (emitting costs a ring append)."""
        stream = await self.connect()
        self.assertEqual(self.models.events.followers, 1)
        stream.transport.loseConnection()
        await stream.closed
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.models.events.followers, 0)


class LoginTests(TestCase):
    def setUp(self):
        cheap_passwords(self)
        self.models = make_models(self)
        checks = PasswordChecks(reactor)
        self.addCleanup(checks.stop)
        users = self.models.users
        guard = Guard(Authenticator(users, reactor, checks=checks), users)
        self.api = CometAPI(self.models, guard=guard, login_token_lifetime=3600)
        self.client = APIClient(self.api, None)
        with connect(self.models.users.db.path) as conn:
            users_sql.add_user(conn, "olga", "operator", "right password")

    def basic(self, user, password):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    async def test_password_for_token(self):
        answer = await self.client.post("/login", {}, headers={
            "Authorization": self.basic("olga", "right password")})
        self.assertEqual(answer.code, 200)
        body = answer.json
        self.assertEqual((body["user"], body["role"]), ("olga", "operator"))
        self.assertEqual(body["expires"] - body["created"], 3600)
        listed = await self.client.get("/cluster", headers={"Authorization": bearer(body["token"])})
        self.assertEqual(listed.code, 200)
        audit = await self.models.users.audit_log()
        self.assertIn(("olga", "POST", "/login", 200),
                      [(e.user, e.method, e.uri, e.status) for e in audit])
        self.assertNotIn(body["token"], repr(audit))

    async def test_lifetime_is_bounded(self):
        answer = await self.client.post("/login", {"lifetime": 10**6}, headers={
            "Authorization": self.basic("olga", "right password")})
        body = answer.json
        self.assertEqual(body["expires"] - body["created"], 3600)
        answer = await self.client.post("/login", {"lifetime": 120}, headers={
            "Authorization": self.basic("olga", "right password")})
        body = answer.json
        self.assertEqual(body["expires"] - body["created"], 120)

    async def test_token_is_not_renewed_past_its_end(self):
        """With a token: a new one, which expires no later than the one presented."""
        answer = await self.client.post("/login", {"lifetime": 600}, headers={
            "Authorization": self.basic("olga", "right password")})
        first = answer.json
        answer = await self.client.post("/login", {}, headers={
            "Authorization": bearer(first["token"])})
        self.assertEqual(answer.code, 200)
        self.assertLessEqual(answer.json["expires"], first["expires"])
        token = make_token(self.models.users.db.path, "admin")   # one that never expires
        answer = await self.client.post("/login", {}, headers={"Authorization": bearer(token)})
        self.assertEqual(answer.json["expires"] - answer.json["created"], 3600)

    async def test_wrong_password_is_throttled(self):
        codes = []
        for _ in range(7):
            answer = await self.client.post("/login", {}, headers={
                "Authorization": self.basic("olga", "wrong")})
            codes.append(answer.code)
        self.assertEqual(codes[0], 401)
        self.assertEqual(codes[-1], 429)
        audit = await self.models.users.audit_log()
        self.assertIn(("olga", "POST", "/login", 401),
                      [(e.user, e.method, e.uri, e.status) for e in audit])
