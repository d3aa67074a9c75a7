"""
The bound on ssh sessions per storage server (L{SSHRunner.max_sessions}):
sshd refuses sessions beyond its MaxSessions on the shared connection, so
Comet keeps fewer in flight, and a crowd of reads (a viewer polling volume
lists) cannot hold back a change (a VM start's export).

The children are not real processes here: a reactor that records what would
be spawned and lets the test end each child, so that the order and the count
in flight are exact.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.error import ProcessDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from comet.config import StorageConfig, StorageServerConfig
from comet.errors import Unavailable
from comet.remote import SSHRunner
from comet.remote._runner import is_read
from tests._util import temp_dir


class _Pipe:
    """What a spawned child's transport offers the runner."""

    def __init__(self):
        self.written = b""
        self.closed_stdin = False
        self.producer = None

    def write(self, data):
        self.written += data

    def closeStdin(self):
        self.closed_stdin = True

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def signalProcess(self, name):
        pass

    def loseConnection(self):
        pass


class _Children:
    """An IReactorProcess whose children run until the test ends them."""

    def __init__(self):
        self.clock = Clock()
        self.running = []   # (protocol, remote command)
        self.started = []   # remote commands, in the order they started
        self.most = 0

    def spawnProcess(self, protocol, executable, args, env=None):
        pipe = _Pipe()
        protocol.makeConnection(pipe)
        self.running.append((protocol, args[-1]))
        self.started.append(args[-1])
        self.most = max(self.most, len(self.running))

    def end(self, index=0, code=0):
        protocol, _ = self.running.pop(index)
        protocol.processExited(Failure(ProcessDone(code)))
        protocol.processEnded(Failure(ProcessDone(code)))

    def callLater(self, *a, **kw):
        return self.clock.callLater(*a, **kw)

    def seconds(self):
        return self.clock.seconds()


class SessionBoundTests(TestCase):
    def setUp(self):
        self.children = _Children()
        self.runner = SSHRunner(
            self.children, StorageServerConfig(host="10.200.0.21", max_sessions=3),
            StorageConfig(control_dir=temp_dir(self) + "/ctl"), clock=self.children.clock,
            ssh="/bin/true", remote_timeout=False,
        )

    def test_reads_and_changes(self):
        self.assertTrue(is_read(["zfs", "list", "-H", "tank"]))
        self.assertTrue(is_read(["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "show"]))
        self.assertFalse(is_read(["zfs", "create", "-V", "1G", "tank/v"]))
        self.assertFalse(is_read(["tgtadm", "--lld", "iscsi", "--op", "new"]))
        self.assertFalse(is_read(["dd", "of=/dev/zd0"]))

    def test_never_more_than_the_bound(self):
        """Twenty reads at once: three in flight, the rest start as others end; all answer."""
        results = [self.runner.run(["zfs", "list", "-H", f"tank/{i}"]) for i in range(20)]
        self.assertEqual(len(self.children.running), 3)
        while self.children.running:
            self.children.end()
        self.assertEqual(self.children.most, 3)
        self.assertEqual(len(self.children.started), 20)
        for d in results:
            self.assertEqual(self.successResultOf(d), b"")

    def test_a_change_passes_waiting_reads(self):
        """
        A viewer's reads fill every session and queue up; a change (a VM
        start's export) made later runs as soon as one session frees, before
        the reads that waited longer.
        """
        reads = [self.runner.run(["zfs", "list", "-H", f"tank/{i}"]) for i in range(10)]
        change = self.runner.run(["tgtadm", "--lld", "iscsi", "--mode", "target", "--op", "new",
                                  "--tid", "1", "--targetname", "iqn.2026-12.org.comet:p.v"])
        self.assertNoResult(change)
        self.children.end()
        self.assertIn("--op new", self.children.started[3])
        self.children.end(self.children.running.index(
            next(r for r in self.children.running if "--op new" in r[1])))
        self.assertEqual(self.successResultOf(change), b"")
        while self.children.running:
            self.children.end()
        self.assertEqual(self.children.most, 3)
        for d in reads:
            self.successResultOf(d)

    def test_cancel_while_waiting(self):
        """A command cancelled while it waits never starts, and frees its place."""
        for i in range(3):
            self.runner.run(["zfs", "list", f"tank/{i}"])
        waiting = self.runner.run(["zfs", "destroy", "tank/x"])
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        while self.children.running:
            self.children.end()
        self.assertEqual(len(self.children.started), 3)

    def test_stop_fails_waiting_commands(self):
        for i in range(3):
            self.runner.run(["zfs", "list", f"tank/{i}"])
        waiting = self.runner.run(["zfs", "destroy", "tank/x"])
        self.runner.stop()
        self.failureResultOf(waiting, Unavailable)
        self.assertEqual(len(self.children.started), 3)

    def test_stream_waits_for_a_session(self):
        """A stream (dd of a download) opened while all sessions are busy keeps its data until it starts."""
        for i in range(3):
            self.runner.run(["zfs", "list", f"tank/{i}"])

        class Producer:
            paused = 0

            def pauseProducing(self):
                Producer.paused += 1

            def resumeProducing(self):
                Producer.paused -= 1

            def stopProducing(self):
                pass

        stream = self.runner.run_stream(["dd", "of=/dev/zd0", "bs=1M"])
        stream.registerProducer(Producer(), True)
        self.assertEqual(Producer.paused, 1)
        written = stream.write(b"first")
        self.assertNoResult(written)
        done = stream.finish()
        self.children.end()
        protocol, command = self.children.running[-1]
        self.assertIn("dd", command)
        self.assertEqual(protocol.transport.written, b"first")
        self.assertTrue(protocol.transport.closed_stdin)
        self.successResultOf(written)
        self.children.end(len(self.children.running) - 1)
        self.assertEqual(self.successResultOf(done), b"")
