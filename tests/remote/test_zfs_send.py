"""
Tests for L{comet.remote.zfs_send.pipe}, the byte mover under
L{comet.remote.zfs_send.send}: two real commands through the real
L{SSHRunner} and a real sshd on loopback, so that flow control, a failure on
either side and cancellation are those of real processes and pipes.  (What
ZFS does with the stream is the send contract suite's:
C{tests/contract/send_suite.py}.)
"""

from __future__ import annotations

import os
import time

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from comet.errors import CommandFailed
from comet.remote import SSHRunner
from comet.remote.zfs_send import pipe
from tests.remote import _sshd

MiB = 1024 * 1024


class PipeTests(TestCase):
    """L{pipe} streams one command's output into another's input, through Comet."""

    def setUp(self):
        self.sshd = _sshd.started(self)
        # Two runners, as for two machines (each its own ControlMaster).
        self.source = self.runner()
        self.dest = self.runner(control_dir=os.path.join(self.sshd.directory, "ctl2"))

    def runner(self, **changes) -> SSHRunner:
        runner = SSHRunner(reactor, self.sshd.server_config(),
                           self.sshd.storage_config(**changes), kill_grace=2.0)
        self.addCleanup(runner.stop)
        return runner

    def path(self, name: str) -> str:
        return os.path.join(self.sshd.directory, name)

    @inlineCallbacks
    def test_bytes_arrive_counted(self):
        """Every byte arrives, in order, and is counted; progress grows to the total."""
        data = os.urandom(3 * MiB + 17)
        with open(self.path("in"), "wb") as f:
            f.write(data)
        seen = []
        moved = yield pipe(self.source, ["cat", self.path("in")],
                           self.dest, ["sh", "-c", 'cat > "$1"', "-", self.path("out")],
                           progress=seen.append)
        self.assertEqual(moved, len(data))
        with open(self.path("out"), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual(seen[-1], len(data))
        self.assertEqual(seen, sorted(seen))

    @inlineCallbacks
    def test_flow_control(self):
        """
        While the receiver reads nothing, the sender is held back (only what
        the pipes and ssh channels buffer moves: Comet holds no stream in
        memory); once it reads, the rest follows.
        """
        total = 128 * MiB
        go = self.path("go")
        seen = [0]
        copying = pipe(self.source, ["head", "-c", str(total), "/dev/zero"],
                       self.dest, ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.1; done;'
                                   " exec cat > /dev/null", "-", go],
                       progress=lambda moved: seen.__setitem__(0, moved))
        while not seen[0]:
            yield deferLater(reactor, 0.1, lambda: None)
        yield deferLater(reactor, 3, lambda: None)
        held = seen[0]
        open(go, "w").close()
        moved = yield copying
        self.assertEqual(moved, total)
        self.assertLess(held, 16 * MiB)

    #: More than the receiver's side buffers while it reads nothing (its pipe,
    #: its ssh channel's 2 MiB window), less than that plus the sender's side:
    #: the sender's remote command can write it all and exit.
    HELD = 3 * MiB

    @inlineCallbacks
    def held_back(self, after_go: str, *args: str):
        """
        A copy of L{HELD} bytes whose receiver waits for a file C{go}, then
        runs C{sh -c 'after_go'} with C{args}: answered once the sender's
        remote command has written it all and exited while held back (its
        ssh client gone, the ControlMaster holding the rest), with a
        function that lets the receiver go.
        """
        go, sent = self.path("go"), self.path("sent")
        seen = [0]
        copying = pipe(self.source, ["sh", "-c", 'head -c "$1" /dev/zero && touch "$2"', "-",
                                     str(self.HELD), sent],
                       self.dest, ["sh", "-c", 'while [ ! -e "$1" ]; do sleep 0.1; done;'
                                   " shift; " + after_go, "-", go, *args],
                       progress=lambda moved: seen.__setitem__(0, moved))
        deadline = time.monotonic() + 30
        while not os.path.exists(sent):
            self.assertLess(time.monotonic(), deadline, "the sender never wrote it all")
            yield deferLater(reactor, 0.1, lambda: None)
        # its exit status reaches its ssh client, which exits
        yield deferLater(reactor, 2, lambda: None)
        self.assertLess(seen[0], self.HELD)

        def release():
            open(go, "w").close()
            return copying

        return release

    @inlineCallbacks
    def test_sender_exits_while_held_back(self):
        """
        A sender whose remote command wrote its last bytes and exited while
        the receiver's pipe was full (its ssh client gone, the ControlMaster
        still holding the rest) is read on once the receiver drains: the
        copy ends whole, its receiver's input closed.  (It once waited for
        ever here: the output was resumed only while the client ran.)
        """
        release = yield self.held_back('exec cat > "$1"', self.path("out"))
        moved = yield release()
        self.assertEqual(moved, self.HELD)
        self.assertEqual(os.path.getsize(self.path("out")), self.HELD)

    @inlineCallbacks
    def test_receiver_fails_after_sender_exited(self):
        """
        A receiver that fails while the sender, held back, has exited (its
        ssh client gone, the ControlMaster still holding the rest of its
        output) ends the copy with the receiver's error, and the sender's
        command ends too: nothing of the copy is left in flight.  (CI once
        found the sender left paused for ever here, its session never
        freed: a whole send onto a volume that exists.)
        """
        release = yield self.held_back("echo exists >&2; exit 1")
        with self.assertRaises(CommandFailed) as caught:
            yield release()
        self.assertIn("exists", caught.exception.stderr)
        self.assertEqual((self.source.in_flight, self.dest.in_flight), (0, 0))

    @inlineCallbacks
    def test_receiver_fails(self):
        """
        A receiver that stops reading and fails ends the copy with its error,
        and the sender is stopped: the copy does not wait for its gigabyte.
        """
        began = time.monotonic()
        with self.assertRaises(CommandFailed) as caught:
            yield pipe(self.source, ["head", "-c", str(1024 * MiB), "/dev/zero"],
                       self.dest, ["sh", "-c", "head -c 1000 > /dev/null; echo no room >&2;"
                                   " exit 3"])
        self.assertEqual(caught.exception.code, 3)
        self.assertIn("no room", caught.exception.stderr)
        self.assertLess(time.monotonic() - began, 60)
        self.assertEqual((self.source.in_flight, self.dest.in_flight), (0, 0))

    @inlineCallbacks
    def test_receiver_done_before_sender_exits(self):
        """
        A receiver that took the whole stream and exited 0 while the
        sender's client has not yet exited (as with a tiny zfs send stream
        whose exit status comes late): the copy succeeded.  (The receiver's
        input closing stops the sender; that stop is no failure of the copy.
        It once failed the copy as cancelled: a local-mode start in CI.)
        """
        moved = yield pipe(self.source, ["sh", "-c", "printf 12345; sleep 5"],
                           self.dest, ["sh", "-c", 'head -c 5 > "$1"', "-", self.path("out")])
        self.assertEqual(moved, 5)
        with open(self.path("out"), "rb") as f:
            self.assertEqual(f.read(), b"12345")
        self.assertEqual((self.source.in_flight, self.dest.in_flight), (0, 0))

    @inlineCallbacks
    def test_sender_fails(self):
        """
        A sender that fails part way ends the copy with the sender's error,
        once the receiver has seen its input end (and exited).
        """
        with self.assertRaises(CommandFailed) as caught:
            yield pipe(self.source, ["sh", "-c", "head -c 100000 /dev/zero; echo gone >&2; exit 4"],
                       self.dest, ["sh", "-c", 'cat > "$1"; echo done >> "$1.end"', "-",
                                   self.path("out")])
        self.assertEqual(caught.exception.code, 4)
        self.assertIn("gone", caught.exception.stderr)
        with open(self.path("out.end")) as f:
            self.assertEqual(f.read(), "done\n")
        self.assertEqual(os.path.getsize(self.path("out")), 100000)

    @inlineCallbacks
    def test_cancel(self):
        """
        A cancelled copy stops the sender and ends the receiver's input, and
        fails with L{CancelledError} only once both have exited.
        """
        holder = []

        def progress(moved):
            if holder and not holder[0].called:
                holder[0].cancel()

        holder.append(pipe(self.source, ["head", "-c", str(1024 * MiB), "/dev/zero"],
                           self.dest, ["sh", "-c", 'cat > /dev/null; echo eof > "$1"', "-",
                                       self.path("eof")],
                           progress=progress))
        yield self.assertFailure(holder[0], CancelledError)
        self.assertEqual((self.source.in_flight, self.dest.in_flight), (0, 0))
        with open(self.path("eof")) as f:
            self.assertEqual(f.read(), "eof\n")
