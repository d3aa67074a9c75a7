"""
Tests for L{comet.remote._runner}: the real L{SSHRunner} against a real
OpenSSH server on loopback that each test starts for itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface.verify import verifyObject

from comet.errors import CommandFailed, InvalidInput, Unavailable
from comet.remote import IRunner, IStreamingCommand, SSHRunner
from tests.remote import _sshd

#: Arguments a shell would read specially, each of which must reach the
#: remote command unchanged.
HOSTILE = [
    "a;b", "$(touch /tmp/comet-pwned)", "`id`", "with space", "  lead and trail  ",
    "'single'", '"double"', "new\nline", "-n", "--help", "*", "~", "$HOME", "a\\b",
    "tab\there", "", "&&", "|", ">x", "<y", "#comment", "!bang", "ünïcødé", "\x01\x7f",
]


class SSHRunnerTests(TestCase):
    """L{SSHRunner} runs commands through a real sshd."""

    def setUp(self):
        self.sshd = _sshd.started(self)

    def runner(self, clock=None, role="storage server", **server_changes) -> SSHRunner:
        runner = SSHRunner(
            reactor, self.sshd.server_config(**server_changes),
            self.sshd.storage_config(), clock=clock, kill_grace=2.0, role=role,
        )
        self.addCleanup(runner.stop)
        return runner

    def sockets(self) -> list[str]:
        """The ControlMaster sockets in the control directory."""
        d = self.sshd.control_dir
        if not os.path.isdir(d):
            return []
        return [n for n in os.listdir(d) if stat.S_ISSOCK(os.lstat(os.path.join(d, n)).st_mode)]

    def test_interface(self):
        """L{SSHRunner} provides L{IRunner}."""
        self.assertTrue(verifyObject(IRunner, self.runner()))

    @inlineCallbacks
    def test_latency_measured(self):
        """Each command's latency is observed in the daemon's metrics, by outcome."""
        from comet.metrics import Metrics

        metrics = Metrics()
        runner = SSHRunner(reactor, self.sshd.server_config(), self.sshd.storage_config(),
                           kill_grace=2.0, metrics=metrics)
        self.addCleanup(runner.stop)
        yield runner.run(["echo", "hello"])
        with self.assertRaises(CommandFailed):
            yield runner.run(["false"])
        host = self.sshd.server_config().host
        value = metrics.registry.get_sample_value
        self.assertEqual(value("comet_ssh_command_duration_seconds_count",
                               {"server": host, "command": "echo", "outcome": "ok"}), 1)
        self.assertEqual(value("comet_ssh_command_duration_seconds_count",
                               {"server": host, "command": "false", "outcome": "failed"}), 1)
        self.assertGreater(value("comet_ssh_command_duration_seconds_sum",
                                 {"server": host, "command": "echo", "outcome": "ok"}), 0)

    @inlineCallbacks
    def test_stdout(self):
        """A command's standard output comes back as bytes."""
        out = yield self.runner().run(["echo", "hello", "world"])
        self.assertEqual(out, b"hello world\n")

    @inlineCallbacks
    def test_stdin(self):
        """Bytes given as standard input reach the command."""
        data = bytes(range(256)) * 100
        out = yield self.runner().run(["cat"], stdin=data)
        self.assertEqual(out, data)

    @inlineCallbacks
    def test_no_stdin(self):
        """Without stdin the command reads end-of-file at once (it never hangs)."""
        out = yield self.runner().run(["wc", "-c"])
        self.assertEqual(out.strip(), b"0")

    @inlineCallbacks
    def test_failure(self):
        """
        A non-zero exit is L{CommandFailed} with the argv, the exit code, the
        decoded standard error and the server.
        """
        argv = ["sh", "-c", "echo partial; echo 'it broke' >&2; exit 3"]
        with self.assertRaises(CommandFailed) as caught:
            yield self.runner().run(argv)
        e = caught.exception
        self.assertEqual((e.argv, e.code, e.stderr, e.server), (argv, 3, "it broke", "127.0.0.1"))

    @inlineCallbacks
    def test_exit_255_from_command(self):
        """A command that itself exits 255 is a failed command, not an unreachable server."""
        with self.assertRaises(CommandFailed) as caught:
            yield self.runner().run(["sh", "-c", "echo no >&2; exit 255"])
        self.assertEqual(caught.exception.code, 255)

    @inlineCallbacks
    def test_hostile_arguments(self):
        """Every argument reaches the remote command byte for byte."""
        out = yield self.runner().run(["printf", r"%s\0"] + HOSTILE)
        self.assertEqual(out.split(b"\0")[:-1], [a.encode() for a in HOSTILE])
        self.assertFalse(os.path.exists("/tmp/comet-pwned"))

    @inlineCallbacks
    def test_leading_dash_command(self):
        """A first argument that looks like an option is still the command."""
        with self.assertRaises(CommandFailed):
            yield self.runner().run(["-oProxyCommand=touch /tmp/comet-pwned", "x"])
        self.assertFalse(os.path.exists("/tmp/comet-pwned"))

    def test_invalid_argv(self):
        """An argv that cannot be run is refused before any process starts."""
        runner = self.runner()
        for bad in ([], "echo hi", ["echo", b"bytes"], ["echo", "nul\0"]):
            self.assertRaises(InvalidInput, runner.run, bad)
        self.assertEqual(runner._running, set())

    @inlineCallbacks
    def test_control_master_reused(self):
        """
        The first command leaves a ControlMaster socket; later commands go
        through it, so the server authenticates one connection only.
        """
        runner = self.runner()
        self.assertEqual(self.sockets(), [])
        yield runner.run(["true"])
        self.assertEqual(len(self.sockets()), 1)
        first = self.sockets()
        for _ in range(3):
            yield runner.run(["true"])
        self.assertEqual(self.sockets(), first)
        self.assertEqual(self.sshd.accepted(), 1)

    @inlineCallbacks
    def test_control_dir_private(self):
        """The control directory is made, readable by its owner only."""
        yield self.runner().run(["true"])
        self.assertEqual(stat.S_IMODE(os.stat(self.sshd.control_dir).st_mode), 0o700)

    @inlineCallbacks
    def test_timeout(self):
        """
        A command still running after its timeout (on the injected clock) is
        killed and reported as the server not answering.
        """
        clock = Clock()
        runner = self.runner(clock=clock)
        yield runner.run(["true"])  # the master is up: the next command starts fast
        d = runner.run(["sleep", "60"], timeout=7)
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(d.called)
        clock.advance(7)
        with self.assertRaises(Unavailable) as caught:
            yield d
        self.assertIn("127.0.0.1 does not answer", caught.exception.reason)
        self.assertIn("7 s", caught.exception.reason)
        self.assertEqual(runner._running, set())

    @inlineCallbacks
    def test_timeout_kills_remote_command(self):
        """
        The remote command of a timed-out command dies too (by the server's
        own timeout, a grace period after the local one).
        """
        runner = self.runner()
        marker = f"comet-marker-{os.getpid()}-{id(self)}"
        d = runner.run(["sh", "-c", "sleep 60; :", marker], timeout=1)
        yield self.assertFailure(d, Unavailable)
        for _ in range(100):  # kill_grace is 2 s here
            found = subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout
            if not found:
                break
            yield deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(found, b"")

    @inlineCallbacks
    def test_default_timeout(self):
        """Without a timeout, the configured command_timeout applies."""
        clock = Clock()
        runner = SSHRunner(reactor, self.sshd.server_config(),
                           self.sshd.storage_config(command_timeout=12.0), clock=clock)
        self.addCleanup(runner.stop)
        d = runner.run(["sleep", "60"])
        clock.advance(11.9)
        self.assertFalse(d.called)
        clock.advance(0.1)
        yield self.assertFailure(d, Unavailable)

    @inlineCallbacks
    def test_kill_after_grace(self):
        """
        A child that ignores SIGTERM gets SIGKILL once the grace period has
        passed.
        """
        script = os.path.join(self.sshd.directory, "stubborn-ssh")
        with open(script, "w") as f:
            f.write(
                "#!/bin/sh\nexec %s -c 'import signal, time; "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(\"ready\", flush=True); "
                "time.sleep(60)'\n" % sys.executable
            )
        os.chmod(script, 0o755)
        clock = Clock()
        runner = SSHRunner(reactor, self.sshd.server_config(), self.sshd.storage_config(),
                           clock=clock, ssh=script, kill_grace=3.0)
        d = runner.run(["anything"], timeout=1)
        yield deferLater(reactor, 1.0, lambda: None)  # the child is up and ignores TERM
        clock.advance(1)
        yield deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(d.called, "SIGTERM should have been ignored")
        clock.advance(3)
        yield self.assertFailure(d, Unavailable)

    @inlineCallbacks
    def test_cancel(self):
        """Cancelling the Deferred of a command kills it."""
        runner = self.runner()
        d = runner.run(["sleep", "60"])
        yield deferLater(reactor, 0.3, lambda: None)
        d.cancel()
        yield self.assertFailure(d, CancelledError)
        while runner._running:
            yield deferLater(reactor, 0.05, lambda: None)

    @inlineCallbacks
    def test_not_listening(self):
        """A server where nothing listens is unavailable, named in the reason."""
        runner = self.runner(ssh_port=_sshd.free_port())
        with self.assertRaises(Unavailable) as caught:
            yield runner.run(["true"])
        self.assertIn("storage server 127.0.0.1 does not answer:", caught.exception.reason)
        self.assertIn("Connection refused", caught.exception.reason)

    @inlineCallbacks
    def test_not_listening_named_by_role(self):
        """A compute host's runner (local-copy mode, networks) names it as one."""
        runner = self.runner(ssh_port=_sshd.free_port(), role="compute host")
        with self.assertRaises(Unavailable) as caught:
            yield runner.run(["true"])
        self.assertIn("compute host 127.0.0.1 does not answer:", caught.exception.reason)

    @inlineCallbacks
    def test_wrong_host_key(self):
        """A server whose host key is not the known one is refused as unavailable."""
        other = _sshd.keygen(os.path.join(self.sshd.directory, "otherkey"))
        known = self.sshd.write_known_hosts("wrong_known_hosts", other)
        with self.assertRaises(Unavailable) as caught:
            yield self.runner(ssh_known_hosts=known).run(["true"])
        self.assertIn("Host key verification failed", caught.exception.reason)

    @inlineCallbacks
    def test_unknown_host_key(self):
        """An empty known_hosts file means no server is trusted."""
        known = os.path.join(self.sshd.directory, "empty_known_hosts")
        open(known, "w").close()
        yield self.assertFailure(self.runner(ssh_known_hosts=known).run(["true"]), Unavailable)

    @inlineCallbacks
    def test_refused_key(self):
        """A client key the server does not accept makes the server unavailable."""
        key = os.path.join(self.sshd.directory, "strangerkey")
        _sshd.keygen(key)
        with self.assertRaises(Unavailable) as caught:
            yield self.runner(ssh_identity=key).run(["true"])
        self.assertIn("Permission denied", caught.exception.reason)

    @inlineCallbacks
    def test_stop(self):
        """
        C{stop()} kills running commands, closes the ControlMaster, and later
        commands are refused.
        """
        runner = self.runner()
        yield runner.run(["true"])
        self.assertEqual(len(self.sockets()), 1)
        running = runner.run(["sleep", "60"])
        yield deferLater(reactor, 0.3, lambda: None)
        yield runner.stop()
        with self.assertRaises(Unavailable) as caught:
            yield running
        self.assertIn("shutting down", caught.exception.reason)
        self.assertEqual(runner._running, set())
        for _ in range(100):  # the master removes its socket as it exits
            if not self.sockets():
                break
            yield deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(self.sockets(), [])
        yield self.assertFailure(runner.run(["true"]), Unavailable)
        yield runner.stop()  # a second stop is harmless

    @inlineCallbacks
    def test_stream(self):
        """
        A streamed standard input arrives whole, and the writer is paused
        while the command does not read.
        """
        runner = self.runner()
        target = os.path.join(self.sshd.directory, "streamed")
        stream = runner.run_stream(["sh", "-c", 'sleep 1; cat > "$1"', "sh", target])
        self.assertTrue(verifyObject(IStreamingCommand, stream))
        chunk = os.urandom(64 * 1024)
        digest = hashlib.sha256()
        paused = 0
        for _ in range(128):  # 8 MiB
            d = stream.write(chunk)
            digest.update(chunk)
            if not d.called:
                paused += 1
            yield d
        out = yield stream.finish()
        self.assertEqual(out, b"")
        with open(target, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), digest.hexdigest())
        self.assertGreater(paused, 0)

    @inlineCallbacks
    def test_stream_finish_while_paused(self):
        """
        C{finish()} while the pipe is still full and paused (writes not waited
        for) closes standard input once it drains: the command sees EOF.
        """
        runner = self.runner()
        target = os.path.join(self.sshd.directory, "streamed")
        stream = runner.run_stream(["sh", "-c", 'sleep 1; cat > "$1"', "sh", target])
        chunk = os.urandom(64 * 1024)
        pending = [stream.write(chunk) for _ in range(128)]  # 8 MiB, not waited for
        self.assertFalse(all(d.called for d in pending))
        finished = stream.finish()
        finished.addTimeout(60, reactor)
        out = yield finished
        self.assertEqual(out, b"")
        with open(target, "rb") as f:
            self.assertEqual(len(f.read()), 128 * len(chunk))

    @inlineCallbacks
    def test_stream_producer(self):
        """A push producer registered on a stream is paused while the pipe is full."""
        runner = self.runner()
        stream = runner.run_stream(["sh", "-c", "sleep 1; wc -c"])

        class Producer:
            paused = resumed = 0

            def pauseProducing(self):
                self.paused += 1

            def resumeProducing(self):
                self.resumed += 1

            def stopProducing(self):
                pass

        producer = Producer()
        stream.registerProducer(producer, True)
        for _ in range(128):
            yield stream.write(b"x" * 65536)
        stream.unregisterProducer()
        out = yield stream.finish()
        self.assertEqual(out.strip(), str(128 * 65536).encode())
        self.assertGreater(producer.paused, 0)
        self.assertEqual(producer.paused, producer.resumed)

    @inlineCallbacks
    def test_stream_output(self):
        """
        Standard output can go to a consumer as it comes; while the consumer
        pauses the producer it is given, nothing more arrives.
        """
        runner = self.runner()

        class Consumer:
            producer = None
            received = 0
            registered = unregistered = False

            def registerProducer(self, producer, streaming):
                self.producer, self.registered = producer, streaming

            def unregisterProducer(self):
                self.unregistered = True

            def write(self, data):
                self.received += len(data)

        consumer = Consumer()
        size = 8 * 1024 * 1024
        stream = runner.run_stream(["head", "-c", str(size), "/dev/zero"], output=consumer)
        self.assertTrue(consumer.registered)
        consumer.producer.pauseProducing()
        yield deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(consumer.received, 0)
        consumer.producer.resumeProducing()
        out = yield stream.finish()
        self.assertEqual((out, consumer.received, consumer.unregistered), (b"", size, True))

    @inlineCallbacks
    def test_stream_command_fails(self):
        """A streamed command that exits early fails the writes and the finish."""
        runner = self.runner()
        stream = runner.run_stream(["sh", "-c", "echo nope >&2; exit 4"])
        failure = None
        for _ in range(1000):
            try:
                yield stream.write(b"y" * 65536)
            except CommandFailed as e:
                failure = e
                break
        with self.assertRaises(CommandFailed) as caught:
            yield stream.finish()
        self.assertEqual((caught.exception.code, caught.exception.stderr), (4, "nope"))
        self.assertIsNotNone(failure)

    @inlineCallbacks
    def test_stream_abort(self):
        """Aborting a stream kills its command."""
        runner = self.runner()
        stream = runner.run_stream(["sleep", "60"])
        yield deferLater(reactor, 0.3, lambda: None)
        yield self.assertFailure(stream.abort(), CancelledError)
        self.assertEqual(runner._running, set())

    @inlineCallbacks
    def test_stream_abort_after_client_exited(self):
        """
        Aborting a stream whose ssh client has exited while something else
        (a ControlMaster, for a client sharing one) still holds its output
        pipe ends the command at once: Comet closes its ends of the pipes
        rather than wait for the holder.  (A copy onto a volume that exists
        once left its sender's session taken for ever this way.)
        """
        marker = "comet-held-" + os.urandom(4).hex()
        script = os.path.join(self.sshd.directory, "exiting-ssh")
        with open(script, "w") as f:
            # The holder keeps standard output and error open; the client exits.
            f.write(f"#!/bin/sh\nsh -c 'sleep 60; : {marker}' &\necho started\nexit 0\n")
        os.chmod(script, 0o755)
        self.addCleanup(subprocess.run, ["pkill", "-f", marker])
        runner = SSHRunner(reactor, self.sshd.server_config(), self.sshd.storage_config(),
                           ssh=script, kill_grace=2.0)
        seen = []

        class Paused:
            def registerProducer(self, producer, streaming):
                producer.pauseProducing()   # a receiver whose pipe is full

            def unregisterProducer(self):
                pass

            def write(self, data):
                seen.append(data)

        stream = runner.run_stream(["anything"], timeout=None, output=Paused())
        yield deferLater(reactor, 1.0, lambda: None)   # the client has exited
        self.assertEqual(runner.in_flight, 1)
        yield self.assertFailure(stream.abort(), CancelledError)
        self.assertEqual(runner.in_flight, 0)

    @inlineCallbacks
    def test_stream_unavailable(self):
        """A stream to a server that does not answer fails as unavailable."""
        stream = self.runner(ssh_port=_sshd.free_port()).run_stream(["cat"])
        yield self.assertFailure(stream.finish(), Unavailable)

    @inlineCallbacks
    def test_concurrent(self):
        """Many commands at once all complete, whichever becomes the master."""
        runner = self.runner()
        ds = [runner.run(["echo", str(i)]) for i in range(10)]
        for i, d in enumerate(ds):
            out = yield d
            self.assertEqual(out, f"{i}\n".encode())


class SessionLimitTests(TestCase):
    """Against an sshd as it comes: MaxSessions 10."""

    def setUp(self):
        why = _sshd.missing()
        if why:
            raise SkipTest(why)
        self.sshd = _sshd.LocalSSHServer(max_sessions=10)
        self.addCleanup(shutil.rmtree, self.sshd.directory, True)
        self.sshd.start()
        self.addCleanup(self.sshd.stop)

    def runner(self) -> SSHRunner:
        runner = SSHRunner(reactor, self.sshd.server_config(), self.sshd.storage_config(),
                           kill_grace=2.0)
        self.addCleanup(runner.stop)
        return runner

    @inlineCallbacks
    def test_more_commands_than_sshd_sessions(self):
        """
        Thirty commands at once all succeed over the one shared connection:
        sshd refuses sessions beyond its MaxSessions (10) (ssh then opens a
        connection of its own for each refused one), so the runner keeps at
        most max_sessions (8) in flight and the rest wait.
        """
        from twisted.internet.defer import gatherResults

        runner = self.runner()
        yield runner.run(["true"])  # the master is up
        results = yield gatherResults(
            [runner.run(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(30)],
            consumeErrors=True,
        )
        self.assertEqual(results, [f"{i}\n".encode() for i in range(30)])
        self.assertEqual(self.sshd.accepted(), 1)

