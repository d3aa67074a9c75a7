"""
Authentication and roles on every endpoint, generated from the route table, and
the rest of the guard: Basic, tokens, revocation, throttling, 413, the audit log.
"""

from __future__ import annotations

import base64
import json

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, ensureDeferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from comet.admin import connect
from comet.store import users as users_sql
from comet.store.users import Users
from comet.web import CometAPI, api_routes
from comet.web._auth import CHALLENGE, Authenticator, Guard
from comet.web._errors import HTTPError
from comet.web._throttle import LoginThrottle, PasswordChecks, WrongTokens
from comet.web._table import ADMIN, PUBLIC, ROLE_RANKS, TICKET, RouteTable, allows
from tests._api import (
    APIClient, bearer, cheap_passwords, make_client, make_models, make_token, temp_database,
)
from tests.web.test_serve import assertError

ROLES = sorted(ROLE_RANKS, key=ROLE_RANKS.get)

#: The API's route table, as every app below builds its own.
ROUTES = api_routes()


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
    """
    A CometAPI over the real route table whose users are in a fresh database,
    with cheap password hashes and no limit on failed logins (these tests
    send hundreds).
    """
    cheap_passwords(testcase)
    db = temp_database(testcase)
    users = Users(db)
    throttle = LoginThrottle(clock, per_address=10**6, per_user=10**6)
    checks = PasswordChecks(reactor)
    testcase.addCleanup(checks.stop)
    guard = Guard(Authenticator(users, clock, throttle, checks=checks), users, max_body=1024)
    api = CometAPI(models if models is not None else Untouchable(), guard=guard)
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
        for action in ("start", "stop", "poweroff", "shutdown", "reset", "suspend", "resume",
                       "migrate"):
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
        # The health check reads the models (Untouchable here): a daemon's, with its lease.
        models = make_models(self)
        await models.context.hypervisors.connect()
        await models.locks.take_lease()
        health_api, _ = guarded(self, models)
        answer = await APIClient(health_api, role=None).get("/health")
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
            users_sql.add_user(conn, "pw", "admin", "right password")
            users_sql.add_user(conn, "tokenonly", "admin", None)
        client = APIClient(api, role=None)
        answers = [
            await client.get("/cluster", headers={"Authorization": basic(user, password)})
            for user, password in [("pw", "wrong"), ("ghost", "right password"), ("tokenonly", "")]
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
        client = APIClient(CometAPI(models, guard=guard), role=None, base="http://localhost:8080")
        self.assertEqual((await client.post("/cluster", {"name": "a"})).code, 201)
        with connect(models.users.db.path) as conn:
            (entry,) = users_sql.list_audit(conn)
        self.assertEqual(entry.user, "anonymous")

    async def test_auth_disabled_rebinding(self):
        """
        Without credentials, a request whose Host is not loopback (a page of
        evil.example whose name was made to resolve to 127.0.0.1) is refused
        403, reads included, and changes nothing; api.allowed_hosts names
        more hosts.
        """
        from comet.web._origin import OriginPolicy

        models = make_models(self)
        guard = Guard(Authenticator(models.users, enabled=False), models.users)
        for base in ["http://evil.example:8080", "http://127.0.0.1.evil.example"]:
            client = APIClient(CometAPI(models, guard=guard), role=None, base=base)
            assertError(self, await client.post("/cluster", {"name": "a"}), 403, "forbidden",
                        "is not this daemon's")
            assertError(self, await client.get("/cluster"), 403, "forbidden", "DNS rebinding")
        for base in ["http://127.0.0.1:8080", "http://127.1.2.3", "http://localhost"]:
            client = APIClient(CometAPI(models, guard=guard), role=None, base=base)
            self.assertEqual((await client.get("/cluster")).json, [])
        guard = Guard(Authenticator(models.users, enabled=False), models.users,
                      origins=OriginPolicy(check_host=True, allowed_hosts=("comet.lan",)))
        client = APIClient(CometAPI(models, guard=guard), role=None, base="http://comet.lan:8080")
        self.assertEqual((await client.get("/cluster")).json, [])


class ThrottleTests(TestCase):
    def test_window(self):
        """Failures count per user and address for the window; a success counts for nothing."""
        clock = Clock()
        throttle = LoginThrottle(clock, per_address=2, per_user=3, window=100.0)
        for _ in range(2):
            throttle.reserve("ann", "10.0.0.1")
            throttle.failed("ann", "10.0.0.1")
        e = self.assertRaises(HTTPError, throttle.reserve, "ann", "10.0.0.1")
        self.assertEqual((e.code, e.headers), (429, {"Retry-After": "100"}))
        # Another user from that address, and that user from another address: allowed.
        throttle.reserve("bob", "10.0.0.1")
        throttle.succeeded("bob", "10.0.0.1")
        throttle.reserve("ann", "10.0.0.2")
        throttle.failed("ann", "10.0.0.2")
        # Three failures for 'ann' in all: a fourth address is refused too.
        e = self.assertRaises(HTTPError, throttle.reserve, "ann", "10.0.0.3")
        self.assertEqual(e.code, 429)
        clock.advance(60)
        self.assertEqual(throttle.retry_after("ann", "10.0.0.1"), 40)
        clock.advance(41)
        self.assertEqual(throttle.retry_after("ann", "10.0.0.1"), 0)
        throttle.reserve("ann", "10.0.0.1")
        throttle.succeeded("ann", "10.0.0.1")
        self.assertEqual(throttle.retry_after("ann", "10.0.0.1"), 0)

    def test_reserved_before_checked(self):
        """Guesses being checked count already: parallel ones cannot pass the limit together."""
        throttle = LoginThrottle(Clock(), per_address=3, per_user=100)
        for _ in range(3):
            throttle.reserve("ann", "10.0.0.1")
        e = self.assertRaises(HTTPError, throttle.reserve, "ann", "10.0.0.1")
        self.assertEqual((e.code, e.headers), (429, {"Retry-After": "1"}))
        throttle.cancelled("ann", "10.0.0.1")
        throttle.reserve("ann", "10.0.0.1")

    def test_bounded(self):
        """At most C{size} keys are remembered (two per user name and address)."""
        throttle = LoginThrottle(Clock(), size=6)
        for i in range(10):
            throttle.reserve(f"u{i}", "a")
            throttle.failed(f"u{i}", "a")
        self.assertEqual(throttle.retry_after("u0", "a"), 0)
        self.assertLessEqual(sum(1 for i in range(10) if throttle.retry_after(f"u{i}", "a") == 0), 10)


class WrongTokensTests(TestCase):
    def test_per_address_window(self):
        """The first 20 wrong tokens of an address in 10 minutes are audited; others' are apart."""
        clock = Clock()
        tokens = WrongTokens(clock)
        self.assertEqual([tokens.audit("192.0.2.1") for _ in range(21)], [True] * 20 + [False])
        self.assertTrue(tokens.audit("192.0.2.2"))
        clock.advance(600)
        self.assertTrue(tokens.audit("192.0.2.1"))


class PasswordCheckTests(TestCase):
    async def test_bounded(self):
        """
        At most C{per_address} checks from one address (429) and C{in_flight}
        in all (503), counted until their thread ends, even when the caller
        gave up.
        """
        import threading

        checks = PasswordChecks(reactor, threads=1, in_flight=3, per_address=2)
        self.addCleanup(checks.stop)
        gate = threading.Event()
        self.addCleanup(gate.set)
        first = checks.run("a", gate.wait, 10)
        checks.run("a", gate.wait, 10)
        e = self.assertRaises(HTTPError, checks.run, "a", gate.wait, 10)
        self.assertEqual((e.code, e.headers), (429, {"Retry-After": "1"}))
        third = checks.run("b", gate.wait, 10)
        e = self.assertRaises(HTTPError, checks.run, "c", gate.wait, 10)
        self.assertEqual(e.code, 503)
        first.cancel()
        self.failureResultOf(first).trap(CancelledError)
        self.assertEqual(checks.in_flight, 3)
        gate.set()
        self.assertTrue(await third)
        while checks.in_flight:
            await deferLater(reactor, 0.01, lambda: None)


class BurstTests(TestCase):
    """
    An attack from one address: many wrong tokens and passwords at once,
    then the right credentials.
    """

    def setUp(self):
        cheap_passwords(self)
        self.clock = Clock()   # never advanced: anything that waited on it would never answer
        self.models = make_models(self)
        self.throttle = LoginThrottle(self.clock, per_address=5, per_user=20)
        self.checks = PasswordChecks(reactor, threads=2, in_flight=100, per_address=100)
        self.addCleanup(self.checks.stop)
        authenticator = Authenticator(self.models.users, self.clock, self.throttle,
                                      checks=self.checks)
        self.client = APIClient(CometAPI(self.models, guard=Guard(authenticator, self.models.users)))
        with connect(self.models.users.db.path) as conn:
            users_sql.add_user(conn, "alice", "admin", "alice's long password")
            users_sql.add_user(conn, "bob", "viewer", "bob's long password")

    async def burst(self, authorizations):
        answers = await gatherResults([
            ensureDeferred(self.client.get("/templates", headers={"Authorization": a}))
            for a in authorizations
        ])
        return [a.code for a in answers]

    async def test_right_credentials_answered_at_once(self):
        """
        After 50 wrong tokens and 30 wrong passwords sent at once from one
        address, the right token and the right passwords of both users are
        answered at once: nothing waited on the clock, which never moved.
        """
        bad = ["Bearer comet_" + "x" * 43] * 25 + ["Bearer nonsense"] * 25
        bad += [basic("alice", f"guess {i}") for i in range(20)]
        bad += [basic(f"ghost{i}", "guess") for i in range(10)]
        codes = await self.burst(bad)
        self.assertEqual(set(codes[:50]), {401})
        self.assertEqual(set(codes[50:]) - {401, 429}, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for authorization in [self.client.authorization, basic("bob", "bob's long password")]:
            answer = ensureDeferred(self.client.get("/templates", headers={"Authorization": authorization}))
            answer.addTimeout(30, reactor)
            self.assertEqual((await answer).code, 200)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    async def test_parallel_guesses_limited(self):
        """
        30 guesses of alice's password at once: only as many are checked as
        the limit allows (5), even the right one sent among them; the others
        are refused with 429 and Retry-After before any scrypt work.
        """
        import comet.web._auth as auth

        checked = []
        real = auth.verify_password

        def spy(password, stored):
            checked.append(password)
            return real(password, stored)

        self.patch(auth, "verify_password", spy)
        guesses = [basic("alice", f"guess {i}") for i in range(29)] + [
            basic("alice", "alice's long password")
        ]
        codes = await self.burst(guesses)
        self.assertEqual(len(checked), 5)
        self.assertEqual(codes.count(429), 25)
        self.assertEqual(codes.count(401), 5)
        answer = await self.client.get(
            "/templates", headers={"Authorization": basic("alice", "alice's long password")}
        )
        assertError(self, answer, 429, "too_many_requests", "too many failed logins as 'alice'")
        self.assertEqual(answer.header("retry-after"), "600")
        self.assertEqual(len(checked), 5)
        # alice's token still works, at once.
        token = make_token(self.models.users.db.path, "admin", "alice")
        self.assertEqual((await self.client.get("/templates", headers={"Authorization": bearer(token)})).code, 200)

    async def test_failed_logins_audited(self):
        """
        A wrong password is in the audit log (the name tried, 401), and so is
        a wrong token of ours (as C{(token)}); a header that is no token of
        ours at all costs nothing.
        """
        await self.burst([basic("alice", "wrong guess"), basic("a b", "x"), "Bearer comet_nope",
                          "Bearer nonsense"])
        log = (await self.client.get("/auditlog")).json
        self.assertEqual(
            sorted((e["user"], e["method"], e["uri"], e["status"]) for e in log),
            [("(not a name)", "GET", "/templates", 401), ("(token)", "GET", "/templates", 401),
             ("alice", "GET", "/templates", 401)],
        )

    async def test_wrong_token_writes_bounded(self):
        """
        A flood of wrong tokens from one address writes at most the limit's
        worth of audit entries (20 per 10 minutes), is answered 401 all the
        same, and refuses no right token from that address.
        """
        codes = await self.burst(["Bearer comet_" + f"{i:043d}" for i in range(60)])
        self.assertEqual(set(codes), {401})
        log = (await self.client.get("/auditlog?limit=1000")).json
        self.assertEqual(len([e for e in log if e["user"] == "(token)"]), 20)
        self.assertEqual((await self.client.get("/templates")).code, 200)

    async def test_rehash(self):
        """A login with a hash of older parameters stores it again with today's; both verify."""
        from comet import credentials

        old = credentials.hash_password("carol's long password", n=2**8, r=8, p=1)
        with connect(self.models.users.db.path) as conn:
            users_sql.add_user(conn, "carol", "viewer", None)
            conn.execute("UPDATE users SET password = ? WHERE name = 'carol'", (old,))
        auth = {"Authorization": basic("carol", "carol's long password")}
        self.assertEqual((await self.client.get("/templates", headers=auth)).code, 200)
        with connect(self.models.users.db.path) as conn:
            new = users_sql.get_user(conn, "carol").password
        self.assertNotEqual(new, old)
        self.assertFalse(credentials.needs_rehash(new))
        self.assertEqual((await self.client.get("/templates", headers=auth)).code, 200)


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
        # Past SQLite's integers: a 400, not an OverflowError (a 500; found by the fuzz run).
        for name in ("since", "offset"):
            assertError(self, await client.get(f"/auditlog?{name}={2**63}"), 400, "bad_request", name)
        assertError(self, await client.get("/auditlog", headers=operator), 403, "forbidden")
