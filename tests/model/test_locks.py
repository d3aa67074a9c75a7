"""
Locks with leases: a second operation on a locked object is a 409 naming the
first, a live daemon keeps a second off its database, and only a dead
owner's locks are ever released.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.model import locks as _locks
from comet.model.locks import LeaseHeld, Locks, alive, this_process
from comet.model.tasks import CURRENT_TASK
from comet.store import Locks as LockTable
from tests._api import temp_database


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


class AliveTests(TestCase):
    """Whether an owner's process still runs, as seen from this one."""

    def setUp(self):
        self.me = this_process(Clock())
        # This very process as another owner (another start over the database).
        self.twin = attrs.evolve(self.me, owner="twin")

    def test_running_process(self):
        self.assertTrue(alive(self.twin, self.me, now=0))

    def test_stale_renewal_but_running(self):
        """A renewal long past does not make a running process dead."""
        self.assertTrue(alive(attrs.evolve(self.twin, renewed=0), self.me, now=10**9))

    def test_no_such_pid(self):
        self.assertFalse(alive(attrs.evolve(self.twin, pid=dead_pid()), self.me, now=0))

    def test_pid_reused(self):
        """The pid runs, but a process that started at another time: dead."""
        if self.me.proc_start is None:
            self.skipTest("no /proc here")
        other = attrs.evolve(self.twin, proc_start=self.me.proc_start + 1)
        self.assertFalse(alive(other, self.me, now=0))

    def test_other_boot(self):
        if not self.me.boot:
            self.skipTest("no boot id here")
        self.assertFalse(alive(attrs.evolve(self.twin, boot="another boot"), self.me, now=0))

    def test_other_host(self):
        """On another host the pid cannot be looked at: a recent renewal is all there is."""
        remote = attrs.evolve(self.twin, hostname="elsewhere", renewed=1000)
        self.assertTrue(alive(remote, self.me, now=1000 + _locks.STALE_AFTER - 1))
        self.assertFalse(alive(remote, self.me, now=1000 + _locks.STALE_AFTER))


class LockTests(TestCase):
    async def test_memory_only(self):
        """Without a database: a second lock is a 409 naming what holds it."""
        locks = Locks()
        first = locks.lock("uuid-1", "VM 'web'", "stopping")
        await first.acquire()
        self.assertTrue(locks.busy("uuid-1"))
        self.assertEqual(await locks.rows(), [])   # no database, no rows
        with self.assertRaises(Conflict) as caught:
            await locks.lock("uuid-1", "VM 'web'", "running start").acquire()
        self.assertEqual(caught.exception.reason, "VM 'web' is busy: it is stopping")
        await first.set_task(4)
        with self.assertRaises(Conflict) as caught:
            await locks.lock("uuid-1", "VM 'web'", "running start").acquire()
        self.assertEqual((caught.exception.reason, caught.exception.task_id),
                         ("VM 'web' is busy: it is stopping", 4))
        await first.release()
        self.assertFalse(locks.busy("uuid-1"))
        async with locks.lock("uuid-1", "VM 'web'", "running start"):
            self.assertTrue(locks.busy("uuid-1"))
        self.assertFalse(locks.busy("uuid-1"))

    async def test_task_of_the_running_code(self):
        """A lock taken inside a task names that task."""
        locks = Locks()
        token = CURRENT_TASK.set(9)
        try:
            await locks.lock("pool1/v", "volume 'v' in storage pool 'pool1'", "being created"
                             ).acquire()
        finally:
            CURRENT_TASK.reset(token)
        with self.assertRaises(Conflict) as caught:
            await locks.lock("pool1/v", "volume 'v' in storage pool 'pool1'", "being deleted"
                             ).acquire()
        self.assertEqual((caught.exception.reason, caught.exception.task_id),
                         ("volume 'v' in storage pool 'pool1' is busy: it is being created", 9))

    async def test_row_is_the_truth(self):
        """
        Two processes over one database: the second is refused by the row
        (not by its memory), and the row goes when the first releases it.
        """
        table = LockTable(temp_database(self))
        first, second = Locks(table, Clock()), Locks(table, Clock())
        lock = first.lock("uuid-1", "VM 'web'", "stopping")
        await lock.acquire()
        await lock.set_task(3)
        self.assertEqual([(r.object, r.task_id, r.owner) for r in await table.list()],
                         [("uuid-1", 3, first.me.owner)])
        self.assertEqual(await second.rows(), await table.list())  # every owner's rows
        with self.assertRaises(Conflict) as caught:
            await second.lock("uuid-1", "VM 'web'", "running suspend").acquire()
        self.assertIn("is busy: it is stopping", caught.exception.reason)
        self.assertEqual(caught.exception.task_id, 3)
        self.assertFalse(second.busy("uuid-1"))
        await lock.release()
        self.assertEqual(await table.list(), [])
        async with second.lock("uuid-1", "VM 'web'", "running suspend"):
            self.assertEqual([r.owner for r in await table.list()], [second.me.owner])
        self.assertEqual(await table.list(), [])

    async def test_released_after_failure(self):
        """The lock goes when the operation under it raises."""
        table = LockTable(temp_database(self))
        locks = Locks(table, Clock())
        with self.assertRaises(ZeroDivisionError):
            async with locks.lock("uuid-1", "VM 'web'", "running start"):
                1 / 0
        self.assertEqual(await table.list(), [])
        self.assertEqual(locks.held, {})


class _Tasks:
    """A task runner that runs the job at once, as task 7 (or refuses to start one)."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.started = []

    async def start(self, target, job, message):
        if self.refuse:
            raise RuntimeError("the tasks table is gone")
        self.started.append((target, message))
        self.outcome = await job(attrs.make_class("Handle", ["id"])(7))
        return "task 7"


class LockedTaskTests(TestCase):
    """L{_locks.locked_task}: a task's work under locks the caller took."""

    async def test_held_for_the_work(self):
        """The locks name the task while its work runs, and go when it ends."""
        locks, tasks = Locks(), _Tasks()
        taken = [locks.lock("uuid-1", "VM 'web'", "stopping"),
                 locks.lock("pool1/v", "volume 'v'", "being unmapped")]
        await _locks.acquire_all(taken)
        seen = []

        async def work(task):
            for obj, label in (("uuid-1", "VM 'web'"), ("pool1/v", "volume 'v'")):
                with self.assertRaises(Conflict) as caught:
                    await locks.lock(obj, label, "running start").acquire()
                seen.append(caught.exception.task_id)
            return "stopped"

        self.assertEqual(await _locks.locked_task(tasks, taken, "target", "stopping", work),
                         "task 7")
        self.assertEqual((seen, tasks.outcome, tasks.started), ([7, 7], "stopped",
                                                                [("target", "stopping")]))
        self.assertEqual((locks.busy("uuid-1"), locks.busy("pool1/v")), (False, False))

    async def test_released_when_the_work_fails(self):
        locks, tasks = Locks(), _Tasks()
        lock = locks.lock("uuid-1", "VM 'web'", "stopping")
        await lock.acquire()

        async def work(task):
            1 / 0

        with self.assertRaises(ZeroDivisionError):
            await _locks.locked_task(tasks, [lock], "target", "stopping", work)
        self.assertFalse(locks.busy("uuid-1"))

    async def test_released_when_no_task_starts(self):
        locks = Locks()
        lock = locks.lock("uuid-1", "VM 'web'", "stopping")
        await lock.acquire()
        with self.assertRaises(RuntimeError):
            await _locks.locked_task(_Tasks(refuse=True), [lock], "target", "stopping", None)
        self.assertFalse(locks.busy("uuid-1"))


class LeaseTests(TestCase):
    def setUp(self):
        self.table = LockTable(temp_database(self))
        self.clock = Clock()
        self.clock.advance(10_000)

    def daemon(self) -> Locks:
        return Locks(self.table, self.clock)

    async def test_live_owner_refuses(self):
        """A second daemon beside a live one (this process) refuses to start."""
        first = self.daemon()
        await first.take_lease("comet.sqlite")
        second = self.daemon()
        with self.assertRaises(LeaseHeld) as caught:
            await second.take_lease("comet.sqlite")
        message = str(caught.exception)
        self.assertIn(f"pid {os.getpid()} on {socket.gethostname()}", message)
        self.assertIn("comet.sqlite", message)
        self.assertEqual([o.owner for o in await self.table.owners()], [first.me.owner])

    async def test_stale_renewal_live_pid_refuses(self):
        """Not renewed for ages, but its process runs: still refused (no timeout-only release)."""
        first = self.daemon()
        await first.take_lease()
        self.clock.advance(100 * _locks.STALE_AFTER)
        with self.assertRaises(LeaseHeld):
            await self.daemon().take_lease()

    async def test_dead_owner_taken_over(self):
        """An owner whose process ended: the lease is taken; its locks are released as dead."""
        ghost = Locks(self.table, self.clock,
                      me=attrs.evolve(this_process(self.clock), pid=dead_pid()))
        await ghost.take_lease()
        held = ghost.lock("uuid-1", "VM 'web'", "stopping")
        await held.acquire()
        await held.set_task(5)
        daemon = self.daemon()
        await daemon.take_lease()
        self.assertTrue(daemon.leased)
        released = await daemon.release_dead()
        self.assertEqual([(lock.object, lock.task_id, owner.owner) for lock, owner in released],
                         [("uuid-1", 5, ghost.me.owner)])
        self.assertEqual(await self.table.list(), [])
        self.assertEqual([o.owner for o in await self.table.owners()], [daemon.me.owner])

    async def test_live_owner_locks_kept(self):
        """The locks of an owner that runs are never released."""
        other = self.daemon()
        await other.take_lease()
        await other.lock("uuid-1", "VM 'web'", "stopping").acquire()
        self.clock.advance(100 * _locks.STALE_AFTER)
        self.assertEqual(await self.daemon().release_dead(), [])
        self.assertEqual(len(await self.table.list()), 1)

    async def test_renewing_and_release(self):
        """The lease is renewed every interval; a clean stop removes the owner."""
        daemon = self.daemon()
        await daemon.take_lease()
        daemon.start_renewing(5)
        self.clock.advance(5)
        # The renewal is queued in the database thread (one, in order) before this read.
        owners = await self.table.owners()
        self.assertEqual(owners[0].renewed, 10_005)
        await daemon.release_lease()
        self.assertEqual(await self.table.owners(), [])
        self.assertIsNone(daemon._renewing)
