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

from comet.errors import Conflict, Unavailable
from comet.model.downloads import Downloads
from comet.model.operations import volume_create
from comet.remote import Answer, FakeRunner
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


class _Images:
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


class VolumeCreateCrashTests(_Images, CrashBase, TestCase):

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


class _SwitchedOffAt:
    """
    A storage server backend that fails command C{argv0 verb} and stops
    answering there (as a server switched off mid-operation): the undo that
    follows fails too.
    """

    def __init__(self, runner, backend, argv0: str, verb: str):
        self.runner = runner
        self.backend = backend
        self.at = [argv0, verb]

    def handle(self, argv, stdin):
        if argv[:2] == self.at:
            self.runner.unavailable = "switched off"
            return Answer(code=1, stderr=f"{self.at[0]}: I/O error")
        return self.backend.handle(argv, stdin)


class UndoFailureTests(_Images, CrashBase, TestCase):
    """
    A create that fails and cannot undo itself (its server stopped
    answering) leaves its intent for the reconciler's repair, as a crash
    would; a staging zvol this database has no intent for is never touched
    (another Comet sharing the server may be downloading into it).
    """

    async def test_failed_undo_left_for_repair(self):
        url = await self.image_url(qcow2=True)
        runner = self.models.storage.server("s1").runner
        runner.backend = _SwitchedOffAt(runner, runner.backend, "qemu-img", "convert")
        task = await self.models.storage.create_volume("pool1", "data", url=url,
                                                       format="qcow2")
        await self.models.tasks.wait(task.id)
        self.assertEqual((await self.models.tasks.get(task.id)).status, "failed")
        # the two undos' failures, logged (the convert's is the task's)
        self.assertEqual(len(self.flushLoggedErrors(Unavailable)), 2)
        left = {n for n, d in self.world.server.datasets.items() if d.type == "volume"}
        [staging] = [n for n in left if ".staging-" in n]
        self.assertIn("tank/comet/data", left)
        self.assertEqual(self.models.intents.pending, {"pool1/data": "volume.create"})
        self.assertNotEqual(await IntentTable(self.world.db).list(), [])
        # Until it is repaired, the name is not free for a new volume.
        e = await self.assertFailure(ensureDeferred(self.models.storage.create_volume(
            "pool1", "data", capacity_gb=1)), Conflict)
        self.assertIn("interrupted volume.create", e.reason)
        runner.unavailable = None
        [repair] = await self.models.reconciler.run()
        self.assertIn(f"the staging zvol {staging} on s1 was destroyed", repair)
        self.assertEqual(self.models.intents.pending, {})
        await self.assertConsistent(self.models)

    async def test_staging_without_intent_left_alone(self):
        zfs = ZFS(FakeRunner(self.world.server))
        theirs = (await zfs.create_volume(
            "tank/comet", volume_create.staging_name("data"), 1024**2,
            {volume_create.STAGING_PROPERTY: "data"}, sparse=True)).name
        models, repairs = await self.world.restart()
        self.assertEqual(repairs, [])
        self.assertIn(theirs, self.world.server.datasets)
