"""
Tests for L{comet.remote._fake}: the recording L{FakeRunner} and its
streams behave like L{comet.remote.SSHRunner} as far as callers can tell.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from comet.errors import CommandFailed, InvalidInput, Unavailable
from comet.remote import Answer, Call, FakeRunner, IRunner, IStreamingCommand


class Echo:
    """A backend answering every command with its argv, and stdin on stderr."""

    def handle(self, argv, stdin):
        return Answer(stdout=" ".join(argv).encode())


class FakeRunnerTests(SynchronousTestCase):
    """L{FakeRunner} records what it is asked and answers from recordings."""

    def test_interface(self):
        self.assertTrue(verifyObject(IRunner, FakeRunner()))

    def test_recorded(self):
        runner = FakeRunner(host="10.0.0.1")
        runner.answer(["zfs", "list"], stdout=b"tank\n")
        self.assertEqual(self.successResultOf(runner.run(["zfs", "list"])), b"tank\n")
        self.assertEqual(runner.calls, [Call(("zfs", "list"), None, None)])
        self.assertEqual(runner.ran, [["zfs", "list"]])

    def test_recorded_failure(self):
        runner = FakeRunner(host="10.0.0.1")
        runner.answer(["zfs", "destroy", "x"], code=1, stderr="cannot open 'x'\n")
        error = self.failureResultOf(runner.run(["zfs", "destroy", "x"]), CommandFailed).value
        self.assertEqual((error.code, error.stderr, error.server), (1, "cannot open 'x'", "10.0.0.1"))

    def test_unrecorded(self):
        """Without a recording or backend, a command fails with 127, naming itself."""
        error = self.failureResultOf(FakeRunner().run(["zfs", "upgrade"]), CommandFailed).value
        self.assertEqual(error.code, 127)
        self.assertIn("zfs upgrade", error.stderr)

    def test_recording_wins_over_backend(self):
        runner = FakeRunner(Echo())
        runner.answer(["a"], stdout=b"recorded")
        self.assertEqual(self.successResultOf(runner.run(["a"])), b"recorded")
        self.assertEqual(self.successResultOf(runner.run(["b", "c"])), b"b c")
        runner.forget(["a"])
        self.assertEqual(self.successResultOf(runner.run(["a"])), b"a")

    def test_stdin_recorded(self):
        runner = FakeRunner(Echo())
        runner.run(["cat"], stdin=b"data", timeout=3)
        self.assertEqual(runner.calls, [Call(("cat",), b"data", 3)])

    def test_invalid_argv(self):
        """Bad argv is refused like the real runner does, and not recorded."""
        runner = FakeRunner(Echo())
        for bad in ([], "ls", ["a\0"], [1]):
            self.assertRaises(InvalidInput, runner.run, bad)
            self.assertRaises(InvalidInput, runner.run_stream, bad)
        self.assertEqual(runner.calls, [])

    def test_unavailable(self):
        runner = FakeRunner(Echo(), host="10.0.0.1")
        runner.unavailable = "Connection refused"
        error = self.failureResultOf(runner.run(["true"]), Unavailable).value
        self.assertEqual(error.reason, "storage server 10.0.0.1 does not answer: Connection refused")

    def test_stop(self):
        runner = FakeRunner(Echo())
        stream = runner.run_stream(["dd"])
        self.successResultOf(runner.stop())
        self.failureResultOf(runner.run(["true"]), Unavailable)
        self.failureResultOf(stream.finish(), Unavailable)


class FakeStreamTests(SynchronousTestCase):
    """L{FakeStream} collects stdin and imitates a pipe that fills."""

    def test_interface(self):
        self.assertTrue(verifyObject(IStreamingCommand, FakeRunner(Echo()).run_stream(["dd"])))

    def test_finish_runs_with_everything_written(self):
        runner = FakeRunner(Echo())
        stream = runner.run_stream(["dd", "of=/dev/zd0"])
        self.successResultOf(stream.write(b"ab"))
        self.successResultOf(stream.write(b"cd"))
        self.assertEqual(runner.calls, [])
        self.assertEqual(self.successResultOf(stream.finish()), b"dd of=/dev/zd0")
        self.assertEqual(runner.calls, [Call(("dd", "of=/dev/zd0"), b"abcd", None)])
        self.failureResultOf(stream.write(b"late"), RuntimeError)

    def test_pipe_fills(self):
        """Past pipe_size, writers wait, and a producer is paused, until drain()."""
        runner = FakeRunner(Echo())
        runner.pipe_size = 4
        stream = runner.run_stream(["dd"])

        class Producer:
            state = "running"

            def pauseProducing(self):
                self.state = "paused"

            def resumeProducing(self):
                self.state = "running"

            def stopProducing(self):
                self.state = "stopped"

        producer = Producer()
        stream.registerProducer(producer, True)
        self.successResultOf(stream.write(b"1234"))
        waiting = stream.write(b"5")
        self.assertNoResult(waiting)
        self.assertEqual(producer.state, "paused")
        stream.drain()
        self.successResultOf(waiting)
        self.assertEqual(producer.state, "running")
        stream.unregisterProducer()
        self.assertRaises(ValueError, stream.registerProducer, producer, False)

    def test_failure_reaches_waiting_writer(self):
        """A writer waiting on a full pipe learns how the command ended."""
        runner = FakeRunner(host="s")
        runner.pipe_size = 1
        stream = runner.run_stream(["dd"])
        waiting = stream.write(b"too much")
        runner.stop()
        self.failureResultOf(waiting, Unavailable)

    def test_finish_failure(self):
        stream = FakeRunner().run_stream(["dd"])
        self.failureResultOf(stream.finish(), CommandFailed)

    def test_output(self):
        """With an output consumer, standard output goes there, in pieces."""
        runner = FakeRunner()
        runner.answer(["dd", "if=/dev/zd0"], stdout=b"x" * 100000)
        chunks, events = [], []

        class Consumer:
            def registerProducer(self, producer, streaming):
                events.append("registered")

            def unregisterProducer(self):
                events.append("unregistered")

            def write(self, data):
                chunks.append(data)

        stream = runner.run_stream(["dd", "if=/dev/zd0"], output=Consumer())
        self.assertEqual(self.successResultOf(stream.finish()), b"")
        self.assertEqual((b"".join(chunks), len(chunks)), (b"x" * 100000, 2))
        self.assertEqual(events, ["registered", "unregistered"])

    def test_abort(self):
        runner = FakeRunner(Echo())
        stream = runner.run_stream(["dd"])
        stream.write(b"x")
        self.failureResultOf(stream.abort(), CancelledError)
        self.assertEqual(runner.calls, [])
