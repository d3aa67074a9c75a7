"""
Tests for L{comet.web.health}: C{GET /health} (its codes, and what an
anonymous and an authenticated caller are told) and C{GET /metrics} (who may
read it, and what it says, parsed with C{prometheus_client}'s own parser).
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from comet.config import HostConfig
from comet.store import Locks as LockTable
from comet.web import CometAPI
from comet.web._auth import Authenticator, Guard
from comet.web._throttle import LoginThrottle
from tests import _api
from tests._api import APIClient, bearer, make_models
from tests.web.test_serve import assertError

SCRAPE_TOKEN = "scrape-token-0123456789abcdef"

#: A compute host whose test-driver node file does not exist: libvirt refuses it.
GONE = HostConfig(name="gone", uri="test:///nonexistent/comet-gone-node.xml", domain_type="test")


def samples(text: str) -> dict:
    """(name, sorted labels) -> value of every sample of a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


class HealthTests(TestCase):
    async def setUpAPI(self, hosts=None):
        self.models = make_models(self, hosts=hosts)
        await self.models.context.hypervisors.connect()
        await self.models.locks.take_lease()
        users = self.models.users
        authenticator = Authenticator(users, reactor, LoginThrottle(reactor),
                                      scrape_token=SCRAPE_TOKEN)
        self.api = CometAPI(self.models, guard=Guard(authenticator, users),
                            metrics=self.models.metrics)
        self.anonymous = APIClient(self.api, role=None)
        self.viewer = APIClient(self.api, role="viewer")

    async def test_ok(self):
        """All is well: 200, and an anonymous caller learns just that."""
        await self.setUpAPI()
        answer = await self.anonymous.get("/health")
        self.assertEqual((answer.code, answer.json), (200, {"status": "ok"}))
        self.assertEqual(answer.header("cache-control"), "no-store")
        answer = await self.viewer.get("/health")
        self.assertEqual(answer.code, 200)
        self.assertEqual([(c["name"], c["state"]) for c in answer.json["checks"]],
                         [("database", "ok"), ("lease", "ok"), ("reconcile", "ok"),
                          ("hosts", "ok"), ("storage", "ok")])

    async def test_host_down(self):
        """
        A compute host libvirt cannot reach: degraded, still 200.  A stranger
        is told which check, not which host nor its URI; a viewer is told both.
        """
        await self.setUpAPI(hosts=_api.test_hosts(self) + (GONE,))
        answer = await self.anonymous.get("/health")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.json["status"], "degraded")
        self.assertEqual(set(answer.json), {"status", "message"})
        self.assertIn("hosts", answer.json["message"])
        self.assertNotIn(b"gone", answer.body)
        self.assertNotIn(b"nonexistent", answer.body)
        answer = await self.viewer.get("/health")
        hosts = {c["name"]: c for c in answer.json["checks"]}["hosts"]
        self.assertEqual(hosts["state"], "degraded")
        self.assertIn("gone", hosts["reason"])
        self.assertIn("the rest of the API works", hosts["reason"])
        self.assertEqual({h["name"]: h["state"] for h in hosts["detail"]},
                         {"node1": "connected", "node2": "connected", "gone": "unreachable"})

    async def test_lease_lost(self):
        """The lease is gone from the database: 503, for everyone."""
        await self.setUpAPI()
        await LockTable(self.models.users.db).drop_owner(self.models.locks.me.owner)
        answer = await self.anonymous.get("/health")
        self.assertEqual((answer.code, answer.json["status"]), (503, "failing"))
        self.assertIn("lease", answer.json["message"])
        answer = await self.viewer.get("/health")
        self.assertEqual(answer.code, 503)
        lease = {c["name"]: c for c in answer.json["checks"]}["lease"]
        self.assertIn("gone from the database", lease["reason"])

    async def test_wrong_credentials_are_none(self):
        """A wrong token on /health is no credential: the anonymous answer, never a 401."""
        await self.setUpAPI()
        answer = await self.anonymous.get("/health", headers={"Authorization": "Bearer comet_nope"})
        self.assertEqual((answer.code, answer.json), (200, {"status": "ok"}))

    async def test_metrics_refused_without_credentials(self):
        await self.setUpAPI()
        assertError(self, await self.anonymous.get("/metrics"), 401, "unauthorized")
        answer = await self.anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"})
        assertError(self, answer, 401, "unauthorized")

    async def test_scrape_token(self):
        """The scrape token reads /metrics, and nothing else (403)."""
        await self.setUpAPI()
        scrape = {"Authorization": bearer(SCRAPE_TOKEN)}
        answer = await self.anonymous.get("/metrics", headers=scrape)
        self.assertEqual(answer.code, 200)
        self.assertTrue(answer.header("content-type").startswith("text/plain; version=0.0.4"))
        self.assertIn(("comet_lease_held", ()), samples(answer.body.decode()))
        assertError(self, await self.anonymous.get("/cluster", headers=scrape), 403, "forbidden")
        assertError(self, await self.anonymous.get("/hosts", headers=scrape), 403, "forbidden")

    async def test_metrics_content(self):
        """What a viewer's scrape says: requests, hosts, VMs, tasks, lease, reconciler."""
        await self.setUpAPI(hosts=_api.test_hosts(self) + (GONE,))
        admin = APIClient(self.api, role="admin")
        self.assertEqual((await admin.post("/templates", {"name": "small", "memory": 256,
                                                           "cpus": 1})).code, 201)
        self.assertEqual((await admin.post("/cluster", {"name": "lab"})).code, 201)
        self.assertEqual((await admin.post("/cluster/lab/vms", {"template": "small"})).code, 201)
        for _ in range(2):
            self.assertEqual((await admin.get("/cluster")).code, 200)
        self.assertEqual((await admin.get("/nowhere")).code, 404)
        await self.models.reconciler.run()
        found = samples((await self.viewer.get("/metrics")).body.decode())
        route = lambda r, m, s: ("comet_http_requests_total",
                                 (("method", m), ("route", r), ("status", s)))
        self.assertEqual(found[route("clusters", "GET", "200")], 2)
        self.assertEqual(found[route("clusters", "POST", "201")], 1)
        self.assertEqual(found[route("(unmatched)", "GET", "404")], 1)
        self.assertEqual(found["comet_http_request_duration_seconds_count",
                               (("method", "GET"), ("route", "clusters"))], 2)
        self.assertEqual(found["comet_host_up", (("host", "node1"),)], 1)
        self.assertEqual(found["comet_host_up", (("host", "gone"),)], 0)
        self.assertEqual(found["comet_vms", (("host", ""), ("state", "shutoff"))], 1)
        self.assertEqual(found["comet_vms_read", ()], 1)
        self.assertEqual(found["comet_lease_held", ()], 1)
        self.assertEqual(found["comet_reconcile_passes_total", (("outcome", "ok"),)], 1)
        self.assertIn(("comet_reconcile_repairs_total", ()), found)
        self.assertIn(("comet_reconcile_last_pass_timestamp_seconds", ()), found)

    async def test_get_changes_nothing(self):
        """Neither GET writes the audit log, a task or a lease renewal."""
        await self.setUpAPI()
        users, locks = self.models.users, LockTable(self.models.users.db)
        before = (await users.audit_log(), await self.models.tasks.list(), await locks.owners())
        for _ in range(3):
            await self.viewer.get("/health")
            await self.anonymous.get("/health")
            await self.viewer.get("/metrics")
            await self.anonymous.get("/metrics", headers={"Authorization": bearer(SCRAPE_TOKEN)})
        after = (await users.audit_log(), await self.models.tasks.list(), await locks.owners())
        self.assertEqual(before, after)
