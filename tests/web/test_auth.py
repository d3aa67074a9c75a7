"""
Authentication and roles on every endpoint, generated from the route table, and
the rest of the guard: Basic, tokens, revocation, throttling, 413, the audit log.
"""

from __future__ import annotations

import base64
import json

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

import comet.web  # noqa: F401  (fills ROUTES)
from comet.admin import connect
from comet.store import users as users_sql
from comet.store.users import Users
from comet.web import CometAPI, ROUTES
from comet.web._auth import CHALLENGE, Authenticator, Guard, Throttle
from comet.web._table import ADMIN, PUBLIC, ROLE_RANKS, TICKET, RouteTable, allows
from tests._api import APIClient, bearer, make_client, make_models, make_token, temp_database
from tests.web.test_serve import assertError

ROLES = sorted(ROLE_RANKS, key=ROLE_RANKS.get)


class Touched(Exception):
    """A handler reached the models: the request got past the guard."""


class Untouchable:
    """Models that record (and refuse) every use: a handler that runs shows here."""

    def __init__(self):
        self.touched = []

    def __getattr__(self, name):
        self.touched.append(name)
        raise Touched(name)


def uri_of(endpoint) -> str:
    """A concrete URI of an endpoint's path (every parameter filled in)."""
    values = {}
    for param in ROUTES.params(endpoint.path):
        values[param] = 1 if param == "id" else ("core/rfb.js" if param == "file" else "x")
    return ROUTES.href(endpoint.path, **values)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def guarded(testcase, models=None, clock=reactor):
    """A CometAPI over the real route table whose users are in a fresh database."""
    db = temp_database(testcase)
    users = Users(db)
    throttle = Throttle(clock, base=0)
    guard = Guard(Authenticator(users, clock, throttle), users, max_body=1024)
    api = CometAPI(models if models is not None else Untouchable(), ROUTES, guard)
    return api, db


PROTECTED = [e for e in ROUTES.endpoints if e.role not in (PUBLIC, TICKET)]


class RouteTableTests(TestCase):
    def test_every_endpoint_has_a_role(self):
        """Every endpoint names a known role; only the health check and static console files are public."""
        for e in ROUTES.endpoints:
            self.assertIn(e.role, list(ROLE_RANKS) + [PUBLIC, TICKET], (e.method, e.path))
        public = sorted(e.path for e in ROUTES.endpoints if e.role == PUBLIC)
        self.assertEqual(
            public, ["console.novnc", "console.page", "console.serial", "health"]
        )
        self.assertEqual([e.path for e in ROUTES.endpoints if e.role == TICKET], ["console.ws"])

    def test_safe_default(self):
        """A new endpoint that names no role is GET: viewer; anything else: admin."""
        table = RouteTable()
        table.path("p", "/p")
        table.route("GET", "p")(lambda *a: None)
        table.route("POST", "p")(lambda *a: None)
        table.route("DELETE", "p", role="operator")(lambda *a: None)
        self.assertEqual([e.role for e in table.endpoints], ["viewer", "admin", "operator"])
        self.assertRaises(ValueError, table.route, "GET", "p", role="root")

    def test_operator_and_viewer(self):
        """The issue's roles: operators act on VMs and snapshots; viewers have no console."""
        roles = {(e.method, e.path): e.role for e in ROUTES.endpoints}
        for action in ("start", "stop", "poweroff", "shutdown", "reset", "suspend", "resume"):
            self.assertEqual(roles[("POST", f"vm.{action}")], "operator")
        self.assertEqual(roles[("GET", "vm.console")], "operator")
        self.assertEqual(roles[("POST", "vm.snapshots")], "operator")
        for path in ("clusters", "storagepools", "storagevolumes", "templates"):
            self.assertEqual(roles[("POST", path)], ADMIN)
        self.assertEqual(roles[("GET", "auditlog")], ADMIN)


class EveryEndpointTests(TestCase):
    """Generated from the route table: a new endpoint is covered without a new test."""

    async def asyncSetUp(self):
        self.models = Untouchable()
        self.api, self.db = guarded(self, self.models)
        self.client = APIClient(self.api, role=None)
        self.tokens = {role: make_token(self.db.path, role) for role in ROLES}
        with connect(self.db.path) as conn:
            users_sql.add_user(conn, "pw", "admin", "right password")

    async def call(self, endpoint, authorization):
        body = {} if endpoint.schema is not None else None
        return await self.client.request(
            endpoint.method, uri_of(endpoint), body, headers={"Authorization": authorization}
        )

    def assertUnauthorized(self, answer, what):
        self.assertEqual(answer.code, 401, what)
        assertError(self, answer, 401, "unauthorized")
        self.assertEqual(answer.header("www-authenticate"), CHALLENGE)

    async def test_no_or_wrong_credentials(self):
        """Every protected endpoint answers 401 to no, a wrong, or a malformed credential."""
        await self.asyncSetUp()
        wrong = [None, "Bearer comet_nope", basic("pw", "wrong password"),
                 basic("nobody", "right password"), "Basic !!!", "Digest x"]
        for endpoint in PROTECTED:
            for authorization in wrong:
                answer = await self.call(endpoint, authorization)
                self.assertUnauthorized(answer, (endpoint.method, endpoint.path, authorization))
        self.assertEqual(self.models.touched, [])

    async def test_forbidden_roles(self):
        """Every role/endpoint pair the role does not allow: 403, and the handler never runs."""
        await self.asyncSetUp()
        pairs = 0
        for endpoint in PROTECTED:
            for role in ROLES:
                if allows(role, endpoint.role):
                    continue
                pairs += 1
                answer = await self.call(endpoint, bearer(self.tokens[role]))
                assertError(self, answer, 403, "forbidden", f"needs the {endpoint.role} role")
        self.assertEqual(self.models.touched, [])
        self.assertGreater(pairs, 40)

    async def test_allowed_roles(self):
        """Every allowed role/endpoint pair gets past the guard to its handler."""
        await self.asyncSetUp()
        for endpoint in PROTECTED:
            for role in ROLES:
                if not allows(role, endpoint.role):
                    continue
                answer = await self.call(endpoint, bearer(self.tokens[role]))
                self.assertNotIn(answer.code, (401, 403), (endpoint.path, role, answer.body))
        self.flushLoggedErrors(Touched)

    async def test_public(self):
        """The health check answers without credentials; unknown URIs do not."""
        await self.asyncSetUp()
        answer = await self.client.get("/health")
        self.assertEqual((answer.code, answer.json), (200, {"status": "ok"}))
        self.assertUnauthorized(await self.client.get("/nowhere"), "404 needs credentials")
        self.assertUnauthorized(await self.client.request("PATCH", "/cluster"), "405 too")
        answer = await self.client.get("/nowhere", headers={"Authorization": bearer(self.tokens["viewer"])})
        assertError(self, answer, 404, "not_found")


class CredentialTests(TestCase):
    async def test_basic(self):
        """HTTP Basic with the right password works; the user's role applies."""
        api, db = guarded(self, make_models(self))
        with connect(db.path) as conn:
            users_sql.add_user(conn, "olga", "operator", "s3cret: with colon")
        client = APIClient(api, role=None)
        answer = await client.get("/cluster", headers={"Authorization": basic("olga", "s3cret: with colon")})
        self.assertEqual((answer.code, answer.json), (200, []))
        answer = await client.post("/cluster", {"name": "x"},
                                   headers={"Authorization": basic("olga", "s3cret: with colon")})
        assertError(self, answer, 403, "forbidden", "'olga' (operator)")

    async def test_same_path_unknown_user_and_wrong_password(self):
        """
        An unknown user, a token-only user and a wrong password each run the
        one scrypt check (against a dummy hash when there is no real one) and
        get the same answer.
        """
        import comet.web._auth as auth

        calls = []
        real = auth.verify_password

        def spy(password, stored):
            calls.append(stored is None)
            return real(password, stored)

        self.patch(auth, "verify_password", spy)
        api, db = guarded(self, Untouchable())
        with connect(db.path) as conn:
            users_sql.add_user(conn, "pw", "admin", "right")
            users_sql.add_user(conn, "tokenonly", "admin", None)
        client = APIClient(api, role=None)
        answers = [
            await client.get("/cluster", headers={"Authorization": basic(user, password)})
            for user, password in [("pw", "wrong"), ("ghost", "right"), ("tokenonly", "")]
        ]
        self.assertEqual(calls, [False, True, True])
        self.assertEqual(len({(a.code, a.body) for a in answers}), 1)
        self.assertEqual(answers[0].code, 401)

    async def test_revoke_at_once(self):
        """A revoked token is refused by the very next request."""
        models = make_models(self)
        client = make_client(self, models)
        token = make_token(models.users.db.path, "viewer", "vic")
        auth = {"Authorization": bearer(token)}
        self.assertEqual((await client.get("/cluster", headers=auth)).code, 200)
        with connect(models.users.db.path) as conn:
            (record,) = [t for t in users_sql.list_tokens(conn) if t.user == "vic"]
            users_sql.revoke_token(conn, record.id)
        answer = await client.get("/cluster", headers=auth)
        assertError(self, answer, 401, "unauthorized")

    async def test_auth_disabled(self):
        """C{[api] auth = false}: every caller is the admin 'anonymous'."""
        models = make_models(self)
        guard = Guard(Authenticator(models.users, enabled=False), models.users)
        client = APIClient(CometAPI(models, guard=guard), role=None)
        self.assertEqual((await client.post("/cluster", {"name": "a"})).code, 201)
        with connect(models.users.db.path) as conn:
            (entry,) = users_sql.list_audit(conn)
        self.assertEqual(entry.user, "anonymous")


class ThrottleTests(TestCase):
    def test_delays(self):
        """After the free failures, the delay doubles up to the cap; it is forgotten later."""
        clock = Clock()
        throttle = Throttle(clock, free=2, base=1.0, cap=5.0, forget=100.0)
        delays = []
        for _ in range(6):
            delays.append(throttle.delay("10.0.0.1"))
            throttle.failed("10.0.0.1")
        self.assertEqual(delays, [0, 0, 1.0, 2.0, 4.0, 5.0])
        self.assertEqual(throttle.delay("10.0.0.2"), 0)
        clock.advance(101)
        self.assertEqual(throttle.delay("10.0.0.1"), 0)

    def test_bounded(self):
        throttle = Throttle(Clock(), size=3)
        for i in range(10):
            throttle.failed(f"a{i}")
        self.assertEqual(len(throttle._failures), 3)

    async def test_slowed_on_the_clock(self):
        """A request from a failing address is not even checked until the clock says so."""
        clock = Clock()
        models = make_models(self)
        throttle = Throttle(clock, free=1, base=10.0)
        guard = Guard(Authenticator(models.users, clock, throttle), models.users)
        client = APIClient(CometAPI(models, guard=guard))
        bad = {"Authorization": "Bearer comet_wrong"}
        self.assertEqual((await client.get("/cluster", headers=bad)).code, 401)
        # The good token, from the same address: it waits for the clock.
        d = ensureDeferred(client.get("/cluster"))
        for _ in range(20):
            await deferLater(reactor, 0.001, lambda: None)
        self.assertFalse(d.called)
        clock.advance(10)
        answer = await d
        self.assertEqual(answer.code, 200)


class LimitTests(TestCase):
    async def test_413(self):
        """A body over max_body is refused 413, also when it is well-formed JSON, before the handler."""
        models = Untouchable()
        api, db = guarded(self, models)
        client = APIClient(api, role=None)
        token = make_token(db.path, "admin")
        big = json.dumps({"name": "x" * 2000}).encode()
        answer = await client.post("/cluster", raw=big, headers={
            "Authorization": bearer(token), "Content-Type": "application/json"})
        assertError(self, answer, 413, "payload_too_large", "1024 bytes")
        self.assertEqual(models.touched, [])


class AuditTests(TestCase):
    async def test_recorded(self):
        """POST/PUT/DELETE are recorded with user, method, URI, status and task id; GET is not."""
        clock = Clock()
        clock.advance(1000)
        models = make_models(self)
        guard = Guard(Authenticator(models.users), models.users, clock=clock)
        client = APIClient(CometAPI(models, guard=guard))
        viewer = {"Authorization": bearer(make_token(models.users.db.path, "viewer"))}
        await client.post("/cluster", {"name": "lab"})
        await client.get("/cluster/lab")
        clock.advance(10)
        await client.put("/cluster/lab", {"description": "d"})
        await client.delete("/cluster/lab", headers=viewer)
        await client.delete("/cluster/nope")
        log = (await client.get("/auditlog")).json
        self.assertEqual(
            [(e["time"], e["user"], e["method"], e["uri"], e["status"]) for e in log],
            [
                (1000, "test-admin", "POST", "/cluster", 201),
                (1010, "test-admin", "PUT", "/cluster/lab", 200),
                (1010, "test-viewer", "DELETE", "/cluster/lab", 403),
                (1010, "test-admin", "DELETE", "/cluster/nope", 404),
            ],
        )
        self.assertEqual({e["task_id"] for e in log}, {None})

    async def test_task_id(self):
        """A change answered with a task (202) is recorded with the task's id."""
        models = make_models(self)
        client = make_client(self, models)
        await client.post("/templates", {"name": "t", "memory": 128, "cpus": 1})
        await client.post("/cluster", {"name": "lab"})
        await client.post("/cluster/lab/vms", {"template": "t", "name": "v"})
        answer = await client.post("/cluster/lab/start", {})
        self.assertEqual(answer.code, 202, answer.body)
        for _ in range(400):
            if (await client.get(answer.header("location"))).json["status"] != "running":
                break
            await deferLater(reactor, 0.05, lambda: None)
        log = (await client.get("/auditlog?user=test-admin")).json
        self.assertEqual(log[-1]["task_id"], answer.json["id"])
        self.assertEqual(log[-1]["task"], f"/tasks/{answer.json['id']}")

    async def test_paging_and_filters(self):
        """limit/offset page the log; user and since filter it; only admins read it."""
        clock = Clock()
        models = make_models(self)
        guard = Guard(Authenticator(models.users), models.users, clock=clock)
        client = APIClient(CometAPI(models, guard=guard))
        operator = {"Authorization": bearer(make_token(models.users.db.path, "operator"))}
        for i in range(5):
            clock.advance(100)
            await client.post("/cluster", {"name": f"c{i}"})
        await client.post("/cluster", {"name": "o"}, headers=operator)
        self.assertEqual(len((await client.get("/auditlog")).json), 6)
        page = (await client.get("/auditlog?limit=2&offset=1")).json
        self.assertEqual([e["time"] for e in page], [200, 300])
        since = (await client.get("/auditlog?since=400")).json
        self.assertEqual([e["time"] for e in since], [400, 500, 500])
        mine = (await client.get("/auditlog?user=test-operator")).json
        self.assertEqual([(e["status"], e["user"]) for e in mine], [(403, "test-operator")])
        assertError(self, await client.get("/auditlog?limit=0"), 400, "bad_request", "limit")
        assertError(self, await client.get("/auditlog?since=x"), 400, "bad_request", "since")
        assertError(self, await client.get("/auditlog", headers=operator), 403, "forbidden")
