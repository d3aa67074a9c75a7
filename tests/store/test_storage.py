"""The storage tables: pool registrations and states, volumes and VM disks."""

from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.store import Storage
from tests._api import temp_database


class StorageStoreTests(TestCase):
    def setUp(self):
        self.store = Storage(temp_database(self))

    def _volume(self, name, pool="p", **more):
        fields = dict(pool=pool, name=name, zvol=f"tank/c/{name}", capacity=1024,
                      chap_user="u", chap_secret="s" * 20, secret_uuid="x", created=1)
        fields.update(more)
        return self.store.add_volume(**fields)

    async def test_pools(self):
        """A registered pool is listed; its name is unique; activation is stored."""
        await self.store.register_pool("p", "srv", "tank/c", True, 1)
        with self.assertRaises(Conflict):
            await self.store.register_pool("p", "srv", "tank/d", False, 2)
        await self.store.set_active("p", "srv", "tank/c", False, 3)
        self.assertEqual((await self.store.pool("p")).active, 0)
        await self.store.set_active("cfg", "srv", "tank/e", False, 3)
        cfg = await self.store.pool("cfg")
        self.assertEqual((cfg.registered, cfg.active), (0, 0))
        self.assertEqual([p.name for p in await self.store.pools()], ["cfg", "p"])

    async def test_volumes(self):
        """Volumes are unique per pool; a pool holding one cannot be unregistered."""
        await self.store.register_pool("p", "srv", "tank/c", False, 1)
        await self._volume("v1")
        with self.assertRaises(Conflict):
            await self._volume("v1")
        with self.assertRaises(Conflict):
            await self.store.unregister_pool("p")
        await self._volume("d", vm_uuid="u1", dev="vda", own=1)
        self.assertEqual([v.name for v in await self.store.volumes_of_vm("u1")], ["d"])
        with self.assertRaises(Conflict):
            await self._volume("d2", vm_uuid="u1", dev="vda")
        v = await self.store.update_volume("p", "v1", target="iqn.x", exported_to="h")
        self.assertEqual((v.target, v.exported_to), ("iqn.x", "h"))
        await self.store.delete_volume("p", "v1")
        await self.store.delete_volume("p", "d")
        self.assertIsNone(await self.store.volume("p", "v1"))
        await self.store.unregister_pool("p")
        self.assertIsNone(await self.store.pool("p"))


class SnapshotStoreTests(TestCase):
    def setUp(self):
        from comet.store import Snapshots

        self.snapshots = Snapshots(temp_database(self))

    async def test_tree(self):
        """Each snapshot's parent is the one current when it was taken; delete re-parents."""
        await self.snapshots.add("u", "a", "[]", 1)
        await self.snapshots.add("u", "b", "[]", 2)
        await self.snapshots.set_current("u", "a")
        await self.snapshots.add("u", "c", "[]", 3)
        tree = {s.name: (s.parent, s.current) for s in await self.snapshots.list("u")}
        self.assertEqual(tree, {"a": ("", 0), "b": ("a", 0), "c": ("a", 1)})
        with self.assertRaises(Conflict):
            await self.snapshots.add("u", "a", "[]", 4)
        await self.snapshots.delete("u", "a")
        tree = {s.name: (s.parent, s.current) for s in await self.snapshots.list("u")}
        self.assertEqual(tree, {"b": ("", 0), "c": ("", 1)})
        await self.snapshots.forget("u")
        self.assertEqual(await self.snapshots.list("u"), [])
