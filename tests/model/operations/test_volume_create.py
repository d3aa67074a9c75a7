"""
Volume create (L{comet.model.operations.volume_create}), empty or from a
download, cut short after any of its steps, then repaired by a fresh
daemon's reconciler (L{tests.model.operations.crash}).
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from comet.errors import Conflict
from comet.model.downloads import Downloads
from comet.model.operations import volume_create
from comet.remote import FakeRunner
from comet.remote.zfs import ZFS
from comet.store import Intents as IntentTable
from tests._qcow2 import qcow2_of
from tests.model.operations.crash import WHEN, Crash, CrashBase
from tests.web.test_storage import LOOPBACK_DOWNLOADS, _Image

Step = volume_create.Step
#: The steps of an empty volume's create.
EMPTY = [Step.CREATE_ZVOL, Step.RECORD]
#: The steps of a raw (or compressed) image's create.
RAW = [Step.CREATE_ZVOL, Step.WRITE_IMAGE, Step.RECORD]
#: The steps of a qcow2 image's create: all but the raw image's write.
QCOW2 = [step for step in Step if step is not Step.WRITE_IMAGE]


class _Abort(Protocol):
    """Takes a response body only to drop its connection."""

    def connectionMade(self):
        self.transport.stopProducing()

    def connectionLost(self, reason):
        pass


class _Kept(Downloads):
    """
    L{Downloads} that keep each download they start, so that the test can end
    what a frozen (dead) operation left open: its connection and its timer.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started: list = []

    async def start(self, url):
        download = await super().start(url)
        self.started.append(download)
        return download

    async def end(self) -> None:
        for download in self.started:
            try:
                download.response.deliverBody(_Abort())
            except Exception:
                pass   # its body was delivered (and its connection closed) already
            download.close()
        # The server's side sees the connection go on the reactor's next turns.
        await deferLater(reactor, 0.1, lambda: None)


class VolumeCreateCrashTests(CrashBase, TestCase):
    async def image_url(self, qcow2: bool = False) -> str:
        """
        The URL of a 3 MiB image served on loopback (which downloads may
        reach here), or of a qcow2 image of it.
        """
        downloads = self.models.storage.downloads = _Kept(reactor, LOOPBACK_DOWNLOADS)
        self.addCleanup(downloads.end)
        raw = b"\x5a" * (3 * 1024**2)
        site = Site(_Image(await qcow2_of(raw) if qcow2 else raw))
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        if qcow2:
            self.world.server.commands |= {"qemu-img"}
        return f"http://127.0.0.1:{port.getHost().port}/image"

    async def check(self, step: volume_create.Step, when: str, url: str | None) -> None:
        await self.setUp()
        qcow2 = url == "qcow2"
        if url is not None:
            url = await self.image_url(qcow2)
        task_id = await self.crash_volume_create(step.value, when, url=url,
                                                 format="qcow2" if qcow2 else None)
        models, repairs = await self.world.restart()
        await self.assertConsistent(models)
        await self.assertTaskRepaired(models, task_id)
        recorded = await models.storage.records.volume("pool1", "data")
        if (step, when) == (volume_create.Step.RECORD, "after"):
            self.assertIsNotNone(recorded)
            if url is not None:
                data = bytes(self.world.server.datasets["tank/comet/data"].data)
                self.assertEqual(data[:3 * 1024**2], b"\x5a" * (3 * 1024**2))
        else:
            self.assertIsNone(recorded)
            self.assertNotIn("tank/comet/data", self.world.server.datasets)
            # The name is free again.
            await self.models.tasks.wait((await models.storage.create_volume(
                "pool1", "data", capacity_gb=1)).id)

    async def test_each_step(self):
        """A volume create cut short leaves the volume whole and recorded, or nothing."""
        for step in volume_create.Step:
            for when in WHEN:
                if step in EMPTY:
                    await self.check(step, when, url=None)
                if step in RAW:
                    await self.check(step, when, url="download")
                if step in QCOW2:
                    await self.check(step, when, url="qcow2")

    async def test_server_down_repaired_later(self):
        """A repair that needs a server that does not answer waits for a later run."""
        task_id = await self.crash_volume_create("record", "before")
        models = self.world.boot()
        runner = models.storage.server("s1").runner
        runner.unavailable = "switched off"
        await models.tasks.recover()
        self.assertEqual(await models.reconciler.run(), [])
        self.assertEqual(len(await IntentTable(self.world.db).list()), 2)
        self.assertIn("tank/comet/data", self.world.server.datasets)
        # Until it is repaired, the name is not free for a new volume.
        e = await self.assertFailure(ensureDeferred(models.storage.create_volume(
            "pool1", "data", capacity_gb=1)), Conflict)
        self.assertIn("interrupted volume.create", e.reason)
        runner.unavailable = None
        [repair] = await models.reconciler.run()
        self.assertEqual(models.intents.pending, {})
        self.assertIn("tank/comet/data on s1 was destroyed", repair)
        await self.assertConsistent(models)
        await self.assertTaskRepaired(models, task_id)


class StagingSweepTests(CrashBase, TestCase):
    """
    The reconciler's leftovers sweep destroys a qcow2 download's staging
    zvol that no operation owns (its undo failed, or its intent is gone),
    and nothing else.
    """

    async def stage(self, name: str, made_for: str | None, owner: str = "comet") -> str:
        zfs = ZFS(FakeRunner(self.world.server), owner=owner)
        properties = {volume_create.STAGING_PROPERTY: made_for} if made_for else {}
        volume = await zfs.create_volume("tank/comet", name, 1024**2, properties, sparse=True)
        return volume.name

    async def test_left_over_staging_destroyed(self):
        left = await self.stage(volume_create.staging_name("data"), "data")
        unmarked = await self.stage(volume_create.staging_name("other"), None)
        foreign = await self.stage(volume_create.staging_name("theirs"), "theirs",
                                   owner="someone-else")
        named = await self.stage("data-staging", "data")   # not a staging zvol's name
        models, repairs = await self.world.restart()
        self.assertEqual(repairs, [f"staging zvol {left} on s1 (of a qcow2 download into"
                                   " volume pool1/data) was left over: destroyed"])
        self.assertNotIn(left, self.world.server.datasets)
        for kept in (unmarked, foreign, named):
            self.assertIn(kept, self.world.server.datasets)

    async def test_staging_of_a_volume_being_created_kept(self):
        """While volume pool1/data is being created (its lock held), its staging zvol stays."""
        left = await self.stage(volume_create.staging_name("data"), "data")
        models = self.world.boot()
        lock = models.storage.volume_set.lock("pool1", "data", "being created")
        await lock.acquire()
        self.assertEqual(await models.reconciler.run(), [])
        self.assertIn(left, self.world.server.datasets)
        await lock.release()
        [repair] = await models.reconciler.run()
        self.assertIn(f"staging zvol {left}", repair)
        self.assertNotIn(left, self.world.server.datasets)
