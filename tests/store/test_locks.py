"""The C{locks} and C{owners} tables: an INSERT per lock, the lease in one transaction."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.store import Locks, LockRecord, OwnerRecord
from tests._api import temp_database


def owner(name: str, pid: int = 1, hostname: str = "h", renewed: int = 10) -> OwnerRecord:
    return OwnerRecord(owner=name, pid=pid, hostname=hostname, boot="b", proc_start=5,
                       started=1, renewed=renewed)


class LockTableTests(TestCase):
    def setUp(self):
        self.table = Locks(temp_database(self))

    async def test_second_acquire_answers_the_holder(self):
        """The primary key refuses a second lock; the answer is the row that holds it."""
        self.assertIsNone(await self.table.acquire("vm-1", 7, "stopping", "a", 100))
        holder = await self.table.acquire("vm-1", None, "running start", "b", 101)
        self.assertEqual(holder, LockRecord("vm-1", 7, "stopping", "a", 100))
        # Another object is free.
        self.assertIsNone(await self.table.acquire("pool1/v", None, "being created", "b", 101))
        self.assertEqual([lock.object for lock in await self.table.list()], ["pool1/v", "vm-1"])

    async def test_release_only_own(self):
        """An owner releases its own lock, never another's."""
        await self.table.acquire("vm-1", None, "stopping", "a", 100)
        self.assertEqual(await self.table.release("vm-1", "b"), 0)
        self.assertIsNotNone(await self.table.get("vm-1"))
        self.assertEqual(await self.table.release("vm-1", "a"), 1)
        self.assertIsNone(await self.table.get("vm-1"))

    async def test_set_task(self):
        await self.table.acquire("vm-1", None, "stopping", "a", 100)
        await self.table.set_task("vm-1", "a", 12)
        self.assertEqual((await self.table.get("vm-1")).task_id, 12)

    async def test_take_lease(self):
        """A live other owner: nothing written, it is answered; none: this one is recorded."""
        await self.table.take_lease(owner("old"), lambda other: True)
        seen = []

        def alive(other):
            seen.append(other.owner)
            return True

        self.assertEqual(await self.table.take_lease(owner("new"), alive), owner("old"))
        self.assertEqual(seen, ["old"])
        self.assertEqual([o.owner for o in await self.table.owners()], ["old"])
        self.assertIsNone(await self.table.take_lease(owner("new"), lambda other: False))
        self.assertEqual({o.owner for o in await self.table.owners()}, {"old", "new"})

    async def test_renew_and_drop(self):
        await self.table.take_lease(owner("me", renewed=10), lambda other: False)
        self.assertTrue(await self.table.renew("me", 50))
        self.assertEqual((await self.table.owners())[0].renewed, 50)
        await self.table.drop_owner("me")
        self.assertFalse(await self.table.renew("me", 60))
        self.assertEqual(await self.table.owners(), [])

    async def test_release_dead(self):
        """Dead owners' locks (and unrecorded owners') go with the dead owners; the rest stay."""
        for name in ("me", "live", "dead"):
            await self.table.take_lease(owner(name), lambda other: False)
        for obj, who in (("a", "me"), ("b", "live"), ("c", "dead"), ("d", "ghost")):
            await self.table.acquire(obj, None, "x", who, 1)
        released = await self.table.release_dead("me", lambda o: o.owner == "live")
        self.assertEqual(sorted((lock.object, o and o.owner) for lock, o in released),
                         [("c", "dead"), ("d", None)])
        self.assertEqual([lock.object for lock in await self.table.list()], ["a", "b"])
        self.assertEqual({o.owner for o in await self.table.owners()}, {"me", "live"})
