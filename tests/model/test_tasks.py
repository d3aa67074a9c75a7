"""Running jobs as tasks: progress, how they end, and recovery after a restart."""

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.model.tasks import RESTARTED, Target, TaskRunner
from comet.store import Database, Tasks
from tests._api import temp_database


class TaskRunnerTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.db = temp_database(self)
        self.runner = TaskRunner(Tasks(self.db), self.clock)

    async def test_running_then_finished(self):
        """A task is recorded running before its job ends, then finished with its message."""
        gate, reached = Deferred(), Deferred()
        seen = []

        async def job(handle):
            seen.append((await self.runner.get(handle.id)).status)
            await handle.progress(40, "copying")
            self.clock.advance(5)
            reached.callback(None)
            await gate
            return "copied 3 blocks"

        task = await self.runner.start(Target("volume", {"pool": "p", "volume": "v"}), job)
        self.assertEqual((task.status, task.progress, task.created), ("running", 0, 1000))
        self.assertEqual(self.runner.running(), [task.id])
        await reached
        middle = await self.runner.get(task.id)
        self.assertEqual((middle.progress, middle.message), (40, "copying"))
        gate.callback(None)
        await self.runner.wait(task.id)
        done = await self.runner.get(task.id)
        self.assertEqual(
            (done.status, done.message, done.progress, done.updated),
            ("finished", "copied 3 blocks", 100, 1005),
        )
        self.assertEqual(seen, ["running"])
        self.assertEqual(self.runner.running(), [])

    async def test_domain_error_fails_task(self):
        """A job that raises a domain error fails its task with the reason."""

        async def job(handle):
            raise Conflict("VM 'a' is running")

        task = await self.runner.start(Target("cluster", {"name": "c"}), job)
        await self.runner.wait(task.id)
        done = await self.runner.get(task.id)
        self.assertEqual((done.status, done.message), ("failed", "VM 'a' is running"))

    async def test_bug_fails_task_generically(self):
        """A job that raises anything else fails its task with a generic message, logged."""

        async def job(handle):
            raise ZeroDivisionError("inside detail")

        task = await self.runner.start(Target("cluster", {"name": "c"}), job)
        await self.runner.wait(task.id)
        done = await self.runner.get(task.id)
        self.assertEqual(done.status, "failed")
        self.assertNotIn("inside detail", done.message)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_progress_clamped(self):
        """Progress is kept within 0-100."""
        gate, reached = Deferred(), Deferred()

        async def job(handle):
            await handle.progress(250)
            reached.callback(None)
            await gate
            return ""

        task = await self.runner.start(Target("cluster", {"name": "x"}), job)
        await reached
        self.assertEqual((await self.runner.get(task.id)).progress, 100)
        gate.callback(None)
        await self.runner.wait_all()

    async def test_list_filters(self):
        gate = Deferred()

        async def slow(handle):
            await gate
            return "ok"

        async def quick(handle):
            return "ok"

        first = await self.runner.start(Target("cluster", {"name": "a"}), quick)
        await self.runner.wait(first.id)
        second = await self.runner.start(Target("cluster", {"name": "b"}), slow)
        self.assertEqual([t.id for t in await self.runner.list("running")], [second.id])
        self.assertEqual([t.id for t in await self.runner.list()], [first.id, second.id])
        gate.callback(None)
        await self.runner.wait_all()


class RecoveryTests(TestCase):
    async def test_restart_fails_running_tasks(self):
        """Tasks a previous process left running are failed, saying the daemon stopped."""
        db = temp_database(self)
        old = TaskRunner(Tasks(db), Clock())
        never = Deferred()

        async def job(handle):
            await never

        left = await old.start(Target("cluster", {"name": "c"}), job)

        async def quick(handle):
            return "all good"

        ended = await old.start(Target("cluster", {"name": "d"}), quick)
        await old.wait(ended.id)

        # A new process on the same file:
        db2 = Database(db.path)
        db2.open()
        self.addCleanup(db2.close)
        new = TaskRunner(Tasks(db2), Clock())
        self.assertEqual(await new.recover(), [left.id])
        failed = await new.get(left.id)
        self.assertEqual((failed.status, failed.message), ("failed", RESTARTED))
        self.assertEqual((await new.get(ended.id)).status, "finished")
        never.cancel()
        self.flushLoggedErrors()
