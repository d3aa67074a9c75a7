"""
Volumes (L{comet.model.storage.volumes}): a DELETE and the ZFS snapshots
and clones no record owns.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from comet.model.storage import vm_disk_name
from tests._api import make_client
from tests.model.storage._setup import _Setup
from tests.web.test_serve import assertError

class LeftoverVolumeTests(_Setup, TestCase):
    """
    ZFS snapshots and clones of a volume that Comet has no record of (left by
    an earlier Comet, or made by hand): a DELETE says what blocks it and how
    to clear it; an admin's C{{"force": true}} destroys what carries Comet's
    tag, never what a record owns.
    """

    async def setUp(self):
        await super().setUp()
        answer = await self.client.post("/storagepools/pool1/storagevolumes",
                                        {"name": "data", "capacity": 1})
        await self.models.tasks.wait(answer.json["id"])
        self.zfs = self.models.storage.server("s1").zfs

    async def test_unrecorded_snapshots_and_clones(self):
        await self.zfs.snapshot(["tank/comet/data"], "comet-snap-1")
        await self.zfs.clone("tank/comet/data@comet-snap-1", "tank/comet", "data-old-0a1b")
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/data")
        assertError(self, answer, 409, "conflict", "tank/comet/data@comet-snap-1")
        for part in ("tank/comet/data-old-0a1b", '{"force": true}', "no record"):
            self.assertIn(part, answer.json["reason"])
        self.assertIn("tank/comet/data@comet-snap-1", self.server.datasets)
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/data",
                                          {"force": True})
        self.assertEqual(answer.code, 204, answer.body)
        self.assertEqual([n for n in self.server.datasets if "data" in n], [])

    async def test_force_leaves_what_is_not_comets(self):
        """A snapshot without Comet's tag stays, and so does the volume: 409, nothing destroyed."""
        self.server.handle(["zfs", "snapshot", "tank/comet/data@by-hand"], None)
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/data",
                                          {"force": True})
        assertError(self, answer, 409, "conflict", "tank/comet/data@by-hand")
        self.assertIn("tank/comet/data", self.server.datasets)

    async def test_force_never_destroys_recorded_clones(self):
        """The base of a VM's disk stays a 409, forced or not: the VM's disk is a record."""
        vm = await self.make_vm()
        answer = await self.client.delete("/storagepools/pool1/storagevolumes/base",
                                          {"force": True})
        assertError(self, answer, 409, "conflict", vm_disk_name(vm["uuid"]))
        self.assertIn(f"tank/comet/{vm_disk_name(vm['uuid'])}", self.server.datasets)
        self.assertIn("tank/comet/base", self.server.datasets)

    async def test_force_needs_admin(self):
        await self.zfs.snapshot(["tank/comet/data"], "comet-snap-1")
        operator = make_client(self, self.models, role="operator")
        answer = await operator.delete("/storagepools/pool1/storagevolumes/data", {"force": True})
        assertError(self, answer, 403, "forbidden")
        self.assertIn("tank/comet/data@comet-snap-1", self.server.datasets)
