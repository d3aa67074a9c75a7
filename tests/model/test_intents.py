"""Tests for L{comet.model.intents}."""

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.model.intents import Intents
from comet.store import Intents as IntentTable
from tests._api import temp_database


class IntentsTests(TestCase):
    def setUp(self):
        self.table = IntentTable(temp_database(self))
        self.intents = Intents(self.table, Clock())

    async def test_steps_written_then_removed(self):
        """Each step is a row before its body runs; the rows go when the operation ends."""
        seen = []
        async with self.intents.operation("vm.start", "u1") as op:
            async with op.step("define domain", host="h1"):
                [row] = await self.table.list()
                seen.append((row.kind, row.object, row.step, row.state))
            self.assertTrue(self.intents.busy("u1"))
        self.assertEqual(seen, [("vm.start", "u1", "define domain", "planned")])
        self.assertEqual(await self.table.list(), [])
        self.assertFalse(self.intents.busy("u1"))

    async def test_pending_repair_refuses_new_operations(self):
        """An object whose interrupted operation is not repaired yet takes no new one."""
        self.intents.pending["pool1/data"] = "volume.create"
        e = self.assertRaises(Conflict, self.intents.check, "pool1/data")
        self.assertIn("interrupted volume.create", e.reason)
        with self.assertRaises(Conflict):
            async with self.intents.operation("volume.delete", "pool1/data"):
                self.fail("the operation ran")
        self.assertEqual(await self.table.list(), [])
        self.intents.check("pool1/other")   # others are free
        del self.intents.pending["pool1/data"]
        self.intents.check("pool1/data")
