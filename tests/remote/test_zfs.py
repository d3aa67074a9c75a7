"""
Tests for L{comet.remote.zfs}: error translation (on real messages captured
from the testbed's OpenZFS 2.1.11, see C{data/manifest.json}) and the L{ZFS}
API over a L{FakeRunner}.
"""

from __future__ import annotations

import os

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from comet.errors import CommandFailed, Conflict, InvalidInput, NotFound
from comet.remote import Answer, FakeRunner, FakeStorageServer
from comet.remote import zfs
from tests.remote._captured import DATA, TOP, fixture


class TranslateTests(SynchronousTestCase):
    """ZFS's real error messages become the domain's errors."""

    cases = {
        "zfs-create-exists.err": Conflict,
        "zfs-create-no-parent.err": NotFound,
        "zfs-create-no-space.err": Conflict,
        "zfs-list-missing.err": NotFound,
        "zfs-destroy-children.err": Conflict,
        "zfs-destroy-clones.err": Conflict,
        "zfs-destroy-recursive-clones.err": Conflict,
        "zfs-destroy-missing.err": NotFound,
        "zfs-snapshot-exists.err": Conflict,
        "zfs-snapshot-missing.err": NotFound,
        "zfs-rollback-newer.err": Conflict,
        "zfs-promote-not-clone.err": Conflict,
        "zfs-rename-exists.err": Conflict,
        "zfs-clone-missing.err": NotFound,
    }

    def test_real_messages(self):
        from twisted.python.failure import Failure

        for name, kind in self.cases.items():
            stderr = fixture(name).decode().strip()
            error = CommandFailed(["zfs"], 1, stderr, "10.200.0.21")
            with self.assertRaises(kind) as caught:
                zfs.translate(Failure(error))
            self.assertEqual(caught.exception.reason,
                             stderr.splitlines()[0] + " (on 10.200.0.21)")

    def test_other_failures_unchanged(self):
        from twisted.python.failure import Failure

        failure = Failure(CommandFailed(["zfs"], 1, "internal error: Bad file descriptor"))
        self.assertIs(zfs.translate(failure), failure)


class ZFSTests(TestCase):
    """L{zfs.ZFS} over a fake runner: what it runs and what it refuses."""

    def setUp(self):
        self.server = FakeStorageServer()
        self.runner = FakeRunner(self.server, host="10.200.0.21")
        self.zfs = zfs.ZFS(self.runner, owner="me")

    @inlineCallbacks
    def test_create_runs(self):
        """Creating a volume runs one zfs create, tagged, then reads the volume back."""
        yield self.zfs.create_volume("tank/comet", "v", 1)
        self.assertEqual(self.runner.ran, [
            ["zfs", "create", "-V", "16384", "-o", "volblocksize=16384",
             "-o", "comet:owner=me", "tank/comet/v"],
            zfs.get_volume_argv("tank/comet/v"),
        ])

    @inlineCallbacks
    def test_bad_input_runs_nothing(self):
        """Invalid names and sizes are refused before any command runs."""
        for call in (
            lambda: self.zfs.create_volume("tank/comet", "a b", 1),
            lambda: self.zfs.create_volume("tank/comet", "v", 0),
            lambda: self.zfs.create_volume("tank/co met", "v", 1),
            lambda: self.zfs.create_volume("tank/comet", "v", 1, {"comet:x": "a\nb"}),
            lambda: self.zfs.snapshot(["tank/comet/v"], "$(x)"),
            lambda: self.zfs.clone("tank/comet/v@s", "tank/comet", "-x"),
            lambda: self.zfs.set_properties("tank/comet/v", {"comet:owner": "other"}),
            lambda: self.zfs.rename("tank/comet/v", "tank/comet/v w"),
        ):
            try:
                d = call()
            except InvalidInput:
                continue
            yield self.assertFailure(d, InvalidInput)
        self.assertEqual(self.runner.calls, [])

    @inlineCallbacks
    def test_destroy_checks_owner_first(self):
        """Destroying something not Comet's runs no zfs destroy at all."""
        other = zfs.ZFS(self.runner, owner="other")
        yield other.create_volume("tank/comet", "v", 1)
        del self.runner.calls[:]
        yield self.assertFailure(self.zfs.destroy("tank/comet/v"), Conflict)
        self.assertEqual([argv[:2] for argv in self.runner.ran], [["zfs", "get"]])

    def busy_for(self, tries: int, volume: str) -> list:
        """The server says C{volume} "is busy" to the next C{tries} destroys (a device opened a moment)."""
        left = [tries]
        server, argv = self.server, zfs.destroy_argv(volume, False)

        class Busy:
            def handle(self, command, stdin):
                if command == argv and left[0]:
                    left[0] -= 1
                    return Answer(code=1, stderr=f"cannot destroy '{volume}': dataset is busy")
                return server.handle(command, stdin)

        self.runner.backend = Busy()
        return left

    @inlineCallbacks
    def test_destroy_waits_out_a_moment_of_busy(self):
        """A zvol busy for a moment (another command opened its device) is destroyed on a later try."""
        clock = Clock()
        self.zfs = zfs.ZFS(self.runner, owner="me", clock=clock)
        yield self.zfs.create_volume("tank/comet", "v", 1)
        self.busy_for(2, "tank/comet/v")
        destroying = self.zfs.destroy("tank/comet/v")
        self.assertNoResult(destroying)
        clock.advance(zfs.BUSY_WAITS[0])
        self.assertNoResult(destroying)
        clock.advance(zfs.BUSY_WAITS[1])
        yield destroying
        self.assertFalse((yield self.zfs.exists("tank/comet/v")))

    @inlineCallbacks
    def test_destroy_busy_for_good(self):
        """A zvol that stays busy: the last try's L{Conflict}, after the waits, nothing destroyed."""
        clock = Clock()
        self.zfs = zfs.ZFS(self.runner, owner="me", clock=clock)
        yield self.zfs.create_volume("tank/comet", "v", 1)
        self.busy_for(len(zfs.BUSY_WAITS) + 1, "tank/comet/v")
        destroying = self.zfs.destroy("tank/comet/v")
        for wait in zfs.BUSY_WAITS:
            self.assertNoResult(destroying)
            clock.advance(wait)
        caught = yield self.assertFailure(destroying, Conflict)
        self.assertIn("is busy", caught.reason)
        self.assertTrue((yield self.zfs.exists("tank/comet/v")))

    @inlineCallbacks
    def test_device_of_resolves_each_time(self):
        """The device is asked for anew on every call, never cached."""
        yield self.zfs.create_volume("tank/comet", "a", 1)
        first = yield self.zfs.device_of("tank/comet/a")
        self.server.reimport()
        second = yield self.zfs.device_of("tank/comet/a")
        self.assertNotEqual(first, second)
        self.assertEqual(second, self.server.device("tank/comet/a"))

    @inlineCallbacks
    def test_device_missing_is_not_found(self):
        """A volume whose device never appears is reported as not found."""
        yield self.zfs.create_volume("tank/comet", "a", 1)
        del self.server.devices["tank/comet/a"]
        yield self.assertFailure(self.zfs.device_of("tank/comet/a"), NotFound)

    @inlineCallbacks
    def test_device_script_missing_zvol_id(self):
        """If the server lacks zvol_id, the failure says so (it is not 'not found')."""
        yield self.zfs.create_volume("tank/comet", "a", 1)
        self.runner.answer(zfs.device_argv("tank/comet/a"), code=127,
                           stderr="zvol_id not found (OpenZFS zfsutils: /lib/udev/zvol_id)")
        with self.assertRaises(CommandFailed) as caught:
            yield self.zfs.device_of("tank/comet/a")
        self.assertIn("zvol_id", caught.exception.stderr)

    @inlineCallbacks
    def test_recorded_answers(self):
        """The API reads real recorded output through a recording-only fake."""
        runner = FakeRunner()
        runner.answer_from_file(zfs.list_volumes_argv(TOP), os.path.join(DATA, "zfs-list-volumes.out"))
        runner.answer_from_file(zfs.list_volumes_argv(TOP + "/nope"),
                                os.path.join(DATA, "zfs-list-missing.err"), code=1)
        volumes = yield zfs.ZFS(runner).list_volumes(TOP)
        self.assertEqual(len(volumes), 4)
        yield self.assertFailure(zfs.ZFS(runner).list_volumes(TOP + "/nope"), NotFound)
