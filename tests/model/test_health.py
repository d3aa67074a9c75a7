"""
Tests for L{comet.model.health}: each failure made real (a closed or locked
database, a lease another process took, a reconciler that failed or stopped,
a storage server that does not answer) and what the check says of it.
"""

from __future__ import annotations

import sqlite3

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from comet.model.health import DEGRADED, FAILING, OK, Health, stale_after
from comet.model.locks import Locks
from comet.model.serverwatch import ServerWatch
from comet.remote import FakeRunner, FakeStorageServer
from comet.store import Locks as LockTable
from tests._api import make_models, temp_database


def by_name(report) -> dict:
    return {c.name: c for c in report.checks}


class DatabaseAndLeaseTests(TestCase):
    """The checks that need the database: a real file, a real lease."""

    async def asyncSetUp(self, db_timeout=2.0):
        self.db = temp_database(self)
        self.locks = Locks(LockTable(self.db), reactor)
        await self.locks.take_lease()
        self.health = Health(self.locks, None, None, None, reactor, db_timeout=db_timeout)

    async def test_ok(self):
        """A writable database and a held lease: ok, 200."""
        await self.asyncSetUp()
        report = await self.health.check()
        self.assertEqual((report.status, report.code), (OK, 200))
        checks = by_name(report)
        self.assertEqual([c.name for c in report.checks],
                         ["database", "lease", "reconcile", "hosts", "storage"])
        self.assertEqual((checks["database"].state, checks["lease"].state), (OK, OK))

    async def test_closed_database(self):
        """A closed database takes no write: failing, 503."""
        await self.asyncSetUp()
        self.db.close()
        report = await self.health.check()
        self.assertEqual((report.status, report.code), (FAILING, 503))
        database = by_name(report)["database"]
        self.assertEqual(database.state, FAILING)
        self.assertIn("takes no write", database.reason)

    async def test_locked_database(self):
        """
        Another process holds the database's write lock: the check answers
        within its timeout (not SQLite's 5 s busy wait), failing; once the
        lock is let go the next check is ok.
        """
        await self.asyncSetUp(db_timeout=0.3)
        other = sqlite3.connect(self.db.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN EXCLUSIVE")
        try:
            report = await self.health.check()
            self.assertEqual((report.status, report.code), (FAILING, 503))
            self.assertIn("took no write within 0.3 s", by_name(report)["database"].reason)
        finally:
            other.execute("ROLLBACK")
        # The statement that waited ends now; a check after it is ok.
        for _ in range(100):
            report = await self.health.check()
            if report.status == OK:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(report.status, OK)

    async def test_checks_share_one_write(self):
        """Checks made while a write hangs queue no second statement."""
        await self.asyncSetUp(db_timeout=0.2)
        writes = []
        real = self.locks.check_lease

        def counted():
            writes.append(1)
            return real()

        self.patch(self.locks, "check_lease", counted)
        other = sqlite3.connect(self.db.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN EXCLUSIVE")
        try:
            reports = [ensureDeferred(self.health.check()) for _ in range(5)]
            for d in reports:
                self.assertEqual((await d).status, FAILING)
        finally:
            other.execute("ROLLBACK")
        self.assertEqual(len(writes), 1)

    async def test_lease_taken(self):
        """Another Comet took this one's lease for dead (its row is gone): failing."""
        await self.asyncSetUp()
        await LockTable(self.db).drop_owner(self.locks.me.owner)
        report = await self.health.check()
        self.assertEqual((report.status, report.code), (FAILING, 503))
        checks = by_name(report)
        self.assertEqual((checks["database"].state, checks["lease"].state), (OK, FAILING))
        self.assertIn("lease is gone", checks["lease"].reason)

    async def test_lease_released(self):
        """A daemon that released its lease (stopping) cannot serve."""
        await self.asyncSetUp()
        await self.locks.release_lease()
        report = await self.health.check()
        self.assertEqual(by_name(report)["lease"].state, FAILING)

    async def test_no_state_change(self):
        """The check's write changes no row."""
        await self.asyncSetUp()
        before = await LockTable(self.db).owners()
        await self.health.check()
        self.assertEqual(await LockTable(self.db).owners(), before)


class ReconcileTests(TestCase):
    """The reconciler's last pass, on a clock the test moves."""

    async def asyncSetUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.models = make_models(self, clock=self.clock)
        await self.models.locks.take_lease()
        self.reconciler = self.models.reconciler
        self.health = Health(self.models.locks, self.reconciler, None, None, self.clock)

    async def test_pass_recorded(self):
        await self.asyncSetUp()
        await self.reconciler.run()
        self.reconciler.start(60)
        self.addCleanup(self.reconciler.stop)
        check = by_name(await self.health.check())["reconcile"]
        self.assertEqual(check.state, OK)
        self.assertEqual(check.detail["last_pass"]["ended"], 1000)
        self.assertEqual(self.reconciler.pass_counts, {"ok": 1, "failed": 0})

    async def test_failed_pass_degrades(self):
        """A pass that raised: degraded (the API serves; the next pass tries again)."""
        await self.asyncSetUp()

        async def broken():
            raise RuntimeError("the intents table is unreadable")

        self.patch(self.models.locks, "release_dead", broken)
        with self.assertRaises(RuntimeError):
            await self.reconciler.run()
        report = await self.health.check()
        check = by_name(report)["reconcile"]
        self.assertEqual((report.status, report.code, check.state), (DEGRADED, 200, DEGRADED))
        self.assertIn("the intents table is unreadable", check.reason)
        self.assertEqual(self.reconciler.pass_counts, {"ok": 0, "failed": 1})

    async def test_stuck(self):
        """No pass has ended for longer than stale_after(interval): failing, 503."""
        await self.asyncSetUp()
        await self.reconciler.run()
        self.reconciler.interval = 60   # as start(60) sets it, without its loop
        self.clock.advance(stale_after(60) - 1)
        self.assertEqual(by_name(await self.health.check())["reconcile"].state, OK)
        self.clock.advance(2)
        report = await self.health.check()
        self.assertEqual((report.code, by_name(report)["reconcile"].state), (503, FAILING))

    async def test_only_at_start(self):
        """Interval 0: the pass at start is all there is, never stale."""
        await self.asyncSetUp()
        await self.reconciler.run()
        self.clock.advance(10**6)
        self.assertEqual(by_name(await self.health.check())["reconcile"].state, OK)


class PartialTests(TestCase):
    """Hosts and storage servers that do not answer: degraded, 200."""

    async def test_storage_server_down(self):
        db = temp_database(self)
        locks = Locks(LockTable(db), reactor)
        await locks.take_lease()
        runner = FakeRunner(FakeStorageServer(), host="s1")
        watch = ServerWatch({"s1": runner}, reactor, lambda server: None)
        health = Health(locks, None, None, watch, reactor)
        await watch.check()
        self.assertEqual(by_name(await health.check())["storage"].state, OK)
        runner.unavailable = "No route to host"
        await watch.check()
        report = await health.check()
        storage = by_name(report)["storage"]
        self.assertEqual((report.status, report.code, storage.state), (DEGRADED, 200, DEGRADED))
        self.assertIn("s1", storage.reason)
        self.assertIn("the rest of the API works", storage.reason)
        self.assertEqual(storage.detail, [{"name": "s1", "state": "unreachable"}])
