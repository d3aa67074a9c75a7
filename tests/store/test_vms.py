"""VM rows: the cache of records, placements and clusters never outlives a write to them."""

from twisted.trial.unittest import TestCase

from comet.admin import connect
from comet.errors import NotFound
from comet.store import Clusters, Tasks, Templates, VMs, placements
from tests._api import temp_database


class RowCacheTests(TestCase):
    async def setUp(self):
        self.db = temp_database(self)
        await Clusters(self.db).create("lab", "", 1)
        await Templates(self.db).create("small", 256, 1, None, None, 1)
        self.vms = VMs(self.db)
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

    async def test_other_commits_keep_it(self):
        """Commits to other tables (tasks, intents, locks, audit) leave the cache whole."""
        await self.vms.get("lab", "web")
        await self.vms.placements()
        await Tasks(self.db).create("/cluster/lab/vms/web", "stopping", 3)
        with connect(self.db.path) as conn:
            conn.execute("INSERT INTO audit_log (time, user, method, uri, status)"
                         " VALUES (1, 'ann', 'POST', '/x', 200)")
        await self.vms.get("lab", "web")
        self.assertEqual(await self.vms.placements(), (("lab", None, "u-1"),))
        self.assertEqual(self.reads, 2)

    async def test_placements(self):
        """Placements are cached until a VM is placed, added, or its cluster renamed."""
        self.assertEqual(await self.vms.placements(), (("lab", None, "u-1"),))
        await self.vms.set_host("u-1", "node1")
        self.assertEqual(await self.vms.placements(), (("lab", "node1", "u-1"),))
        await self.vms.create("lab", "db", "small", None, None, "u-2", 2)
        self.assertEqual(
            set(await self.vms.placements()), {("lab", None, "u-2"), ("lab", "node1", "u-1")}
        )
        await Clusters(self.db).update("lab", "prod")
        self.assertEqual({c for c, _, _ in await self.vms.placements()}, {"prod"})
        self.assertEqual(self.reads, 4)
        await self.vms.placements()
        self.assertEqual(self.reads, 4)

    async def test_placement_runs(self):
        """
        Grouped placements are the very same tuple while no VM, cluster or
        template row is written (a caller keeps what it derives from them),
        a new one after any write, by the daemon or another process.
        """
        first = await self.vms.placement_runs()
        self.assertEqual(first, (("lab", None, ("u-1",)),))
        self.assertIs(await self.vms.placement_runs(), first)
        await self.vms.create("lab", "db", "small", None, None, "u-2", 2)
        await self.vms.set_host("u-1", "node1")
        second = await self.vms.placement_runs()
        self.assertEqual(set(second), {("lab", None, ("u-2",)), ("lab", "node1", ("u-1",))})
        self.assertIs(await self.vms.placement_runs(), second)
        await self.vms.set_host("u-2", "node1")
        self.assertEqual(
            [(c, h, sorted(u)) for c, h, u in await self.vms.placement_runs()],
            [("lab", "node1", ["u-1", "u-2"])],
        )
        with connect(self.db.path) as conn:
            conn.execute("UPDATE clusters SET name = 'prod'")
        self.assertEqual({c for c, _, _ in await self.vms.placement_runs()}, {"prod"})
        self.assertEqual(self.reads, 4)

    async def test_list(self):
        """
        A cluster's list is cached until a VM row is written, by the daemon or
        another process; each caller gets a list of its own.
        """
        self.assertEqual(await self.vms.list("lab"), [self.record])
        first = await self.vms.list("lab")
        first.clear()
        self.assertEqual(await self.vms.list("lab"), [self.record])
        self.assertEqual(await self.vms.list(None), [self.record])
        self.assertEqual(self.reads, 2)
        placed = await self.vms.set_host("u-1", "node1")
        self.assertEqual(await self.vms.list("lab"), [placed])
        with connect(self.db.path) as conn:
            conn.execute("UPDATE vms SET memory = 512 WHERE uuid = 'u-1'")
        self.assertEqual([r.memory for r in await self.vms.list("lab")], [512])
        self.assertEqual(self.reads, 4)
        with self.assertRaises(NotFound):
            await self.vms.list("nope")

    async def test_cluster_list(self):
        """The cluster list and a cluster are cached until a cluster row is written."""
        clusters = Clusters(self.db)
        self.assertEqual([c.name for c in await clusters.list()], ["lab"])
        self.assertEqual((await clusters.get("lab")).name, "lab")
        await clusters.list()
        await clusters.get("lab")
        self.assertEqual(self.reads, 2)
        with connect(self.db.path) as conn:
            conn.execute("INSERT INTO clusters (name, description, created) VALUES ('b', '', 1)")
        self.assertEqual([c.name for c in await clusters.list()], ["b", "lab"])
        await clusters.update("lab", description="x")
        self.assertEqual((await clusters.get("lab")).description, "x")

    async def test_template_rename(self):
        """A template's new name (part of a VM's record) is seen at the next get."""
        await self.vms.get("lab", "web")
        with connect(self.db.path) as conn:
            conn.execute("UPDATE templates SET name = 'tiny' WHERE name = 'small'")
        self.assertEqual((await self.vms.get("lab", "web")).template, "tiny")


class PlacementWriteThroughTests(TestCase):
    """
    The daemon's own placements (many at once while VMs start) drop only the
    cache entries they change, and the placement runs are replayed from the
    moves instead of read from every row; any other write breaks the chain.
    """

    setUp_rows = RowCacheTests.setUp

    async def setUp(self):
        await self.setUp_rows()
        self.other = await self.vms.create("lab", "db", "small", None, None, "u-2", 2)
        self.full = 0
        real = self.read_all = placements.read_all

        def counting(conn):
            self.full += 1
            return real(conn)

        self.patch(placements, "read_all", counting)

    def fresh(self):
        with connect(self.db.path) as conn:
            return self.read_all(conn)

    async def test_others_kept(self):
        """Another VM's record and the cluster list are not read again after a placement."""
        clusters = Clusters(self.db)
        await self.vms.get("lab", "db")
        await clusters.list()
        self.assertEqual(self.reads, 2)
        placed = await self.vms.set_host("u-1", "node1")
        self.assertEqual(await self.vms.get("lab", "db"), self.other)
        self.assertEqual([c.name for c in await clusters.list()], ["lab"])
        self.assertEqual(self.reads, 2)
        self.assertEqual(await self.vms.get("lab", "web"), placed)
        self.assertEqual(self.reads, 3)

    async def test_other_writer_breaks_the_chain(self):
        """A write by anyone else between placements empties the cache as before."""
        await self.vms.get("lab", "db")
        await self.vms.set_host("u-1", "node1")
        with connect(self.db.path) as conn:
            conn.execute("UPDATE vms SET memory = 512 WHERE uuid = 'u-2'")
        await self.vms.set_host("u-1", "node2")
        self.assertEqual((await self.vms.get("lab", "db")).memory, 512)

    async def test_runs_replayed(self):
        """After placements only, the runs are the moves replayed: what every row says."""
        await self.vms.placement_runs()
        self.assertEqual(self.full, 1)
        await self.vms.set_host("u-1", "node1")
        await self.vms.set_host("u-2", "node1")
        await self.vms.set_host("u-1", "node2")
        await self.vms.set_host("u-2", None)
        runs = await self.vms.placement_runs()
        self.assertEqual(self.full, 1)
        self.assertEqual(runs, self.fresh())
        await self.vms.set_host("u-2", "node2")
        runs = await self.vms.placement_runs()
        self.assertEqual([(c, h, sorted(u)) for c, h, u in runs],
                         [("lab", "node2", ["u-1", "u-2"])])
        self.assertEqual(self.full, 1)

    async def test_runs_read_in_full_after_another_write(self):
        """A VM created, or any write by another process, among placements: every row is read."""
        await self.vms.placement_runs()
        await self.vms.set_host("u-1", "node1")
        await self.vms.create("lab", "db2", "small", None, None, "u-3", 2)
        await self.vms.set_host("u-3", "node1")
        self.assertEqual(await self.vms.placement_runs(), self.fresh())
        self.assertEqual(self.full, 2)
        with connect(self.db.path) as conn:
            conn.execute("UPDATE vms SET host = 'node9' WHERE uuid = 'u-2'")
        await self.vms.set_host("u-1", None)
        self.assertEqual(await self.vms.placement_runs(), self.fresh())
        self.assertEqual(self.full, 3)
