"""The task collection and resource, through the HTTP API."""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from comet.model.tasks import Target
from tests._api import make_client, make_models, temp_database
from tests.web.test_serve import assertError


class TaskAPITests(TestCase):
    async def test_tasks(self):
        """Tasks are listed, filtered by status, and shown with every field."""
        models = make_models(self)
        client = make_client(self, models)
        self.assertEqual((await client.get("/tasks")).json, [])
        gate = Deferred()

        async def job(handle):
            await gate
            return "done it"

        task = await models.tasks.start(Target("cluster", {"name": "lab"}), job, "starting")
        shown = (await client.get(f"/tasks/{task.id}")).json
        self.assertEqual(
            set(shown),
            {"id", "status", "message", "target_uri", "progress", "created", "updated", "href"},
        )
        self.assertEqual(shown["status"], "running")
        self.assertEqual(shown["target_uri"], "/cluster/lab")
        self.assertEqual(shown["href"], f"/tasks/{task.id}")
        self.assertEqual(len((await client.get("/tasks?status=running")).json), 1)
        gate.callback(None)
        await models.tasks.wait(task.id)
        shown = (await client.get(f"/tasks/{task.id}")).json
        self.assertEqual((shown["status"], shown["message"], shown["progress"]), ("finished", "done it", 100))
        self.assertEqual((await client.get("/tasks?status=running")).json, [])
        assertError(self, await client.get("/tasks/999"), 404, "not_found", "999")

    async def test_paging(self):
        """
        Newest first, C{?limit=} (default 100, at most 1000) and C{?offset=};
        out of range: a 400 naming the parameter.
        """
        models = make_models(self)
        client = make_client(self, models)

        async def job(handle):
            return "ok"

        ids = []
        for i in range(105):
            task = await models.tasks.start(Target("cluster", {"name": f"c{i}"}), job, "working")
            ids.append(task.id)
        await models.tasks.wait_all()
        page = (await client.get("/tasks")).json
        self.assertEqual([t["id"] for t in page], ids[::-1][:100])
        page = (await client.get("/tasks?limit=3&offset=2")).json
        self.assertEqual([t["id"] for t in page], ids[::-1][2:5])
        page = (await client.get("/tasks?status=finished&limit=1000&offset=100")).json
        self.assertEqual([t["id"] for t in page], ids[::-1][100:])
        for query in ("limit=0", "limit=1001", "limit=x", "offset=-1"):
            assertError(self, await client.get(f"/tasks?{query}"), 400, "bad_request",
                        query.split("=")[0])

    async def test_retention(self):
        """
        Tasks that ended more than [tasks] keep_days ago are deleted, at
        start and every prune_interval; running ones and newer ones stay.
        """
        from twisted.internet.task import Clock

        clock = Clock()
        clock.advance(100 * 86400)
        models = make_models(self, clock=clock)
        client = make_client(self, models)
        gate = Deferred()

        async def job(handle):
            return "ok"

        async def slow(handle):
            await gate

        old = await models.tasks.start(Target("cluster", {"name": "a"}), job, "old")
        running = await models.tasks.start(Target("cluster", {"name": "b"}), slow, "running for ever")
        await models.tasks.wait(old.id)
        clock.advance(2 * 86400)
        newer = await models.tasks.start(Target("cluster", {"name": "c"}), job, "newer")
        await models.tasks.wait(newer.id)
        models.tasks.start_pruning(keep_days=1.5, interval=3600)
        self.addCleanup(models.tasks.stop_pruning)
        for _ in range(100):
            ids = {t["id"] for t in (await client.get("/tasks")).json}
            if old.id not in ids:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(ids, {running.id, newer.id})
        clock.advance(2 * 86400)   # the next pruning: 'newer' is old now
        for _ in range(100):
            ids = {t["id"] for t in (await client.get("/tasks")).json}
            if newer.id not in ids:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(ids, {running.id})
        gate.callback(None)
        await models.tasks.wait(running.id)

    async def test_id_beyond_sqlite_integers(self):
        """
        An id no SQLite INTEGER can hold is a 404 like any other missing
        task, not an OverflowError (a 500; found by schemathesis).
        """
        client = make_client(self, make_models(self))
        for id in (2**63, 2**64 + 1, 10**30):
            assertError(self, await client.get(f"/tasks/{id}"), 404, "not_found", str(id))
        assertError(self, await client.get(f"/tasks/{2**63 - 1}"), 404, "not_found", "does not exist")

    async def test_unknown_status_filter(self):
        """
        A C{status} filter that no task can have is a 400 naming the valid
        ones, not an empty list (schemathesis: invalid data accepted).
        """
        client = make_client(self, make_models(self))
        answer = await client.get("/tasks?status=null")
        assertError(self, answer, 400, "bad_request", "running, finished, failed")
        self.assertEqual((await client.get("/tasks?status=failed")).json, [])

    async def test_id_ascii_digits_only(self):
        """An id in another script's digits is no URI of ours (it was task 3)."""
        client = make_client(self, make_models(self))
        assertError(self, await client.get("/tasks/%D9%A3"), 404, "not_found", "no resource at")
        assertError(self, await client.get("/tasks/3"), 404, "not_found", "task 3 does not exist")
