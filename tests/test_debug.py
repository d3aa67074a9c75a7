"""Tests for L{comet.debug}: the kill file's parsing and matching (the kill injected)."""

import os

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from comet import config
from comet.debug import KillAt, parse
from comet.model.intents import Intents
from comet.store import Intents as IntentTable
from tests._api import temp_database
from tests._util import temp_dir


class ParseTests(TestCase):
    def test_lines(self):
        """One checkpoint a line; steps may hold spaces; junk lines are ignored."""
        text = ("vm.start define domain after\n"
                "  volume.create record before  \n"
                "\n# vm.stop unplace before\n"
                "vm.stop unplace\n"            # no before/after
                "snapshot take during\n"
                "attach\n")
        self.assertEqual(parse(text), {("vm.start", "define domain", "after"),
                                       ("volume.create", "record", "before")})

    def test_empty(self):
        self.assertEqual(parse(""), set())


class KillAtTests(TestCase):
    def setUp(self):
        self.path = os.path.join(temp_dir(self), "kill")
        self.kills = []
        self.hook = KillAt(self.path, kill=lambda: self.kills.append(True))

    def write(self, text):
        with open(self.path, "w") as f:
            f.write(text)

    def test_no_file(self):
        """Without the file (the usual case) nothing happens."""
        self.assertFalse(self.hook("vm.start", "place", "before"))
        self.assertEqual(self.kills, [])

    def test_no_match(self):
        """Another checkpoint (kind, step or side) leaves the file and the process alone."""
        self.write("vm.start define domain after\n")
        for point in [("vm.stop", "define domain", "after"), ("vm.start", "place", "after"),
                      ("vm.start", "define domain", "before")]:
            self.assertFalse(self.hook(*point))
        self.assertEqual(self.kills, [])
        self.assertTrue(os.path.exists(self.path))

    def test_match_removes_file_then_kills(self):
        """A match removes the file first (the restart must not die again), then kills."""
        self.write("volume.create create zvol before\nvm.start define domain after\n")
        seen = []
        self.hook._kill = lambda: seen.append(os.path.exists(self.path))
        self.hook("vm.start", "define domain", "after")
        self.assertEqual(seen, [False])
        self.hook("vm.start", "define domain", "after")   # the file is gone: once only
        self.assertEqual(seen, [False])

    async def test_at_an_operation_step(self):
        """As C{intents.halt}: reached at the step's checkpoint, with the step's row written."""
        table = IntentTable(temp_database(self))
        intents = Intents(table, Clock())
        intents.halt = self.hook
        self.write("vm.start define domain after\n")
        rows = []

        def kill():
            rows.extend((r.step, r.state) for r in table_rows)
            self.kills.append(True)

        self.hook._kill = kill
        async with intents.operation("vm.start", "u1") as op:
            async with op.step("place"):
                pass
            table_rows = await table.list()
            async with op.step("define domain"):
                table_rows = await table.list()
        self.assertEqual(self.kills, [True])
        self.assertEqual(rows, [("place", "done"), ("define domain", "planned")])


class ConfigTests(TestCase):
    def test_off_by_default(self):
        self.assertEqual(config.Config().debug.kill_at_file, "")

    def test_key(self):
        parsed = config.parse('[debug]\nkill_at_file = "/tmp/k"')
        self.assertEqual(parsed.debug.kill_at_file, "/tmp/k")
        with self.assertRaises(config.ConfigError):
            config.parse("[debug]\nkill_at_file = 1")
