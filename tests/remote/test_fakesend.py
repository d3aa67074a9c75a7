"""
Tests for L{comet.remote.zfs_send} against two in-memory storage servers:
the send contract suite, plus what only a fake can show.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from comet.errors import CommandFailed, Conflict, Unavailable
from comet.remote import FakeRunner, FakeStorageServer
from comet.remote.zfs import get_argv, receive_abort_argv
from comet.remote.zfs_send import send
from tests.contract.send_suite import MiB, OWNER, SendContractMixin
from tests.remote._fakepair import FakePair


class FakeSendContractTests(SendContractMixin, TestCase):
    """Two fake storage servers meet the send contract."""

    def makeRunners(self):
        self.servers = FakeStorageServer(), FakeStorageServer()
        source = FakeRunner(self.servers[0], host="10.200.0.98")
        dest = FakeRunner(self.servers[1], host="10.200.0.99")
        # The receiver's pipe fills and drains on the reactor's next turn, as a
        # real one does: the copy pauses and goes on asynchronously.
        dest.pipe_size = 256 * 1024
        dest.drain_clock = reactor
        return source, dest


class FakeSendTests(FakePair, TestCase):
    """What only a fake can show of a copy."""

    @inlineCallbacks
    def copied(self):
        name = yield self.written_volume()
        yield self.zfs.snapshot([name], "s1")
        yield send(self.source, f"{name}@s1", self.dest, "tank/comet/v1", owner=OWNER)
        yield self.zfs.snapshot([name], "s2")
        return name

    @inlineCallbacks
    def test_foreign_destination(self):
        """An increment into a volume that is not this Comet's is refused before anything moves."""
        name = yield self.copied()
        yield self.dest.run(["zfs", "set", "comet:owner=someone-else", "tank/comet/v1"])
        before = len(self.dest.calls)
        yield self.assertFailure(send(self.source, f"{name}@s2", self.dest, "tank/comet/v1",
                                      base=f"{name}@s1", owner=OWNER), Conflict)
        self.assertNotIn("receive", [c.argv[1] for c in self.dest.calls[before:]])
        self.assertEqual([s.snapname for s in (yield self.other.list_snapshots("tank/comet/v1"))],
                         ["s1"])

    @inlineCallbacks
    def test_sender_unreachable(self):
        """A source that does not answer fails the copy as unavailable; nothing is made."""
        volume = yield self.zfs.create_volume("tank/comet", "v1", MiB)
        yield self.zfs.snapshot([volume.name], "s1")
        self.source.unavailable = "Connection timed out"
        yield self.assertFailure(send(self.source, f"{volume.name}@s1", self.dest,
                                      "tank/comet/v1", owner=OWNER), Unavailable)
        self.assertFalse((yield self.other.exists("tank/comet/v1")))

    @inlineCallbacks
    def test_partial_receive_discarded(self):
        """
        After a failed receive, resumable partial state left in the
        destination (which would refuse every later receive) is discarded.
        """
        name = yield self.copied()
        token = get_argv(["tank/comet/v1"], ["receive_resume_token"])
        self.dest.answer(token, stdout=b"tank/comet/v1\treceive_resume_token\t1-e3f-b8\t-\n")
        self.dest.answer(receive_abort_argv("tank/comet/v1"))
        # The destination has moved on: the increment fails.
        yield self.dest.run(["zfs", "snapshot", "tank/comet/v1@theirs"])
        yield self.assertFailure(send(self.source, f"{name}@s2", self.dest, "tank/comet/v1",
                                      base=f"{name}@s1", owner=OWNER), Conflict)
        self.assertEqual(self.dest.ran[-2:], [token, receive_abort_argv("tank/comet/v1")])

    @inlineCallbacks
    def test_no_partial_state(self):
        """Without partial state, a failed receive only reads the token."""
        name = yield self.copied()
        yield self.dest.run(["zfs", "snapshot", "tank/comet/v1@theirs"])
        yield self.assertFailure(send(self.source, f"{name}@s2", self.dest, "tank/comet/v1",
                                      base=f"{name}@s1", owner=OWNER), Conflict)
        self.assertEqual(self.dest.ran[-1], get_argv(["tank/comet/v1"],
                                                     ["receive_resume_token"]))

    @inlineCallbacks
    def test_cut_stream_refused(self):
        """The fake's receiver refuses a stream cut short or altered, as ZFS's does."""
        volume = yield self.zfs.create_volume("tank/comet", "v1", MiB)
        yield self.zfs.snapshot([volume.name], "s1")
        stream = yield self.source.run(["zfs", "send", f"{volume.name}@s1"])
        for bad in (stream[:-1], stream[:-40], stream[:-32] + bytes(32)):
            with self.assertRaises(CommandFailed) as caught:
                yield self.dest.run(["zfs", "receive", "tank/comet/v1"], stdin=bad)
            self.assertIn("incomplete stream", caught.exception.stderr)
        self.assertFalse((yield self.other.exists("tank/comet/v1")))
