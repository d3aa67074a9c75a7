"""VM rows: the row cache of C{VMs.get} never outlives a commit."""

from twisted.trial.unittest import TestCase

from comet.admin import connect
from comet.errors import NotFound
from comet.store import Clusters, Templates, VMs
from tests._api import temp_database


class RowCacheTests(TestCase):
    async def setUp(self):
        self.db = temp_database(self)
        await Clusters(self.db).create("lab", "", 1)
        await Templates(self.db).create("small", 256, 1, None, None, 1)
        self.vms = VMs(self.db)
        self.addCleanup(self.vms.rows.close)
        self.record = await self.vms.create("lab", "web", "small", None, None, "u-1", 2)
        self.reads = 0
        real = self.db.read

        def counting(fn, *args):
            self.reads += 1
            return real(fn, *args)

        self.patch(self.db, "read", counting)

    async def test_hit(self):
        """A second get of an unchanged row reads nothing."""
        self.assertEqual(await self.vms.get("lab", "web"), self.record)
        self.assertEqual(await self.vms.get("lab", "web"), self.record)
        self.assertEqual(self.reads, 1)

    async def test_own_write(self):
        """A change through the daemon's own connection is seen at the next get."""
        await self.vms.get("lab", "web")
        await self.vms.set_host("u-1", "node1")
        self.assertEqual((await self.vms.get("lab", "web")).host, "node1")
        await self.vms.update("lab", "web", name="db")
        with self.assertRaises(NotFound):
            await self.vms.get("lab", "web")
        self.assertEqual((await self.vms.get("lab", "db")).uuid, "u-1")

    async def test_other_connection(self):
        """A change by another connection (another process) is seen at the next get."""
        await self.vms.get("lab", "web")
        with connect(self.db.path) as conn:
            conn.execute("UPDATE vms SET memory = 512 WHERE uuid = 'u-1'")
        self.assertEqual((await self.vms.get("lab", "web")).memory, 512)

    async def test_not_found_not_cached(self):
        with self.assertRaises(NotFound):
            await self.vms.get("lab", "nope")
        with self.assertRaises(NotFound):
            await self.vms.get("lab", "nope")
        self.assertEqual(self.reads, 2)
