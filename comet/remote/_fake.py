"""
A fake L{IRunner} for tests: it records every command it is asked to run and
answers either from answers a test recorded for an exact argv (for example
real output kept as a fixture) or from a backend such as
L{comet.remote.FakeStorageServer}, an in-memory ZFS and tgt that answers the
same commands the real storage servers do.

The fake checks argument lists exactly like L{comet.remote.SSHRunner}, so
input the real runner would refuse is refused here too, and
L{FakeRunner.calls} stays empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer
from twisted.python.failure import Failure
from zope.interface import implementer

from comet.errors import CommandFailed, Unavailable
from comet.remote._command import check_argv, describe
from comet.remote._interface import IRunner, IStreamingCommand
from comet.remote._observed import Observed


@attrs.frozen
class Call:
    """One command a L{FakeRunner} was asked to run."""

    argv: tuple[str, ...]
    stdin: bytes | None = None
    timeout: float | None = None


@attrs.frozen
class Answer:
    """What a command answers: standard output, exit status, standard error."""

    stdout: bytes = b""
    code: int = 0
    stderr: str = ""


@implementer(IRunner)
class FakeRunner:
    """
    An L{IRunner} that runs nothing.

    @ivar calls: every L{Call}, in order.
    @ivar backend: answers what no recorded answer covers: any object with
        C{handle(argv: list[str], stdin: bytes | None) -> Answer}, or L{None}
        (then such a command fails with exit status 127).
    @ivar unavailable: L{None}, or the reason every command now fails with
        L{Unavailable} (the server "does not answer").
    @ivar pipe_size: L{None}, or how many bytes a stream takes before its
        writer must wait for L{FakeStream.drain}.
    @ivar drain_clock: L{None}, or an L{IReactorTime} on whose next turn a
        full pipe drains by itself (a reader that keeps up, but not at
        once: the writer is paused in between, as a real pipe pauses it).
    """

    def __init__(self, backend=None, host: str = "fake-storage", role: str = "storage server"):
        self.host = host
        #: What the machine is to Comet, for its errors (as L{SSHRunner}'s).
        self.role = role
        self.backend = backend
        self.calls: list[Call] = []
        self.unavailable: str | None = None
        self.pipe_size: int | None = None
        self.drain_clock = None
        self.stopped = False
        self.streams: list[FakeStream] = []
        self._answers: dict[tuple[str, ...], Answer] = {}

    @property
    def ran(self) -> list[list[str]]:
        """The argv of every call, in order."""
        return [list(c.argv) for c in self.calls]

    def answer(self, argv: Sequence[str], stdout: bytes = b"", code: int = 0,
               stderr: str = "") -> None:
        """Answer C{argv} (exactly) with this output from now on."""
        self._answers[tuple(check_argv(argv))] = Answer(stdout, code, stderr)

    def answer_from_file(self, argv: Sequence[str], path: str, code: int = 0) -> None:
        """Answer C{argv} with the content of C{path}: its stdout, or its stderr if C{code}."""
        with open(path, "rb") as f:
            data = f.read()
        if code:
            self.answer(argv, code=code, stderr=data.decode("utf-8", "replace").strip())
        else:
            self.answer(argv, stdout=data)

    def forget(self, argv: Sequence[str]) -> None:
        """Stop answering C{argv} from a recording."""
        self._answers.pop(tuple(argv), None)

    def _answer(self, argv: list[str], stdin: bytes | None) -> Answer:
        recorded = self._answers.get(tuple(argv))
        if recorded is not None:
            return recorded
        if self.backend is not None:
            return self.backend.handle(argv, stdin)
        return Answer(code=127, stderr=f"fake: no answer recorded for {describe(argv)}")

    def outcome(self, argv: list[str], stdin: bytes | None) -> Deferred:
        """
        What running C{argv} with C{stdin} gives now (its standard output, or
        the failure), without recording a L{Call}: for L{run} and for a
        L{FakeStream} that finishes.
        """
        if self.stopped:
            return fail(Unavailable(
                f"storage server {self.host} is unavailable: Comet is shutting down"
            ))
        if self.unavailable is not None:
            return fail(Unavailable(
                f"{self.role} {self.host} does not answer: {self.unavailable}"
            ))
        answer = self._answer(argv, stdin)
        if answer.code:
            return fail(CommandFailed(argv, answer.code, answer.stderr.strip(), self.host))
        return succeed(answer.stdout)

    # IRunner

    def run(self, argv: Sequence[str], stdin: bytes | None = None,
            timeout: float | None = None) -> Deferred:
        argv = check_argv(argv)
        self.calls.append(Call(tuple(argv), stdin, timeout))
        return self.outcome(argv, stdin)

    def run_stream(self, argv: Sequence[str], timeout: float | None = None,
                   output=None) -> FakeStream:
        argv = check_argv(argv)
        stream = FakeStream(self, argv, timeout, output)
        self.streams.append(stream)
        return stream

    def stop(self) -> Deferred:
        self.stopped = True
        for stream in self.streams:
            if not stream.ended:
                stream.end(fail(Unavailable(
                    f"storage server {self.host} is unavailable: Comet is shutting down"
                )))
        return succeed(None)


@implementer(IStreamingCommand, IConsumer)
class FakeStream:
    """
    A streaming command of a L{FakeRunner}: it collects what is written and,
    on L{finish}, runs the command with all of it as standard input (the
    L{Call} is recorded then).

    With the runner's C{pipe_size} set, a write that brings the bytes not yet
    drained past it returns a L{Deferred} that fires (and a registered
    producer that is resumed) only on L{drain}, as a full pipe would.
    """

    def __init__(self, runner: FakeRunner, argv: list[str], timeout: float | None,
                 output=None):
        self._runner = runner
        self.output = output
        self.argv = argv
        self.timeout = timeout
        self.written = bytearray()
        self.ended = False
        self._pending = 0
        self._waiting: list[Deferred] = []
        self._outcome = Observed()
        self._producer = None
        self._finishing = False
        self._ran = False

    def write(self, data: bytes) -> Deferred:
        if self._finishing:
            return fail(RuntimeError("write() after finish() or abort()"))
        if self.ended:
            return self.when_done().addCallback(lambda _: None)
        self.written += data
        self._pending += len(data)
        size = self._runner.pipe_size
        if size is not None and self._pending > size:
            d = Deferred()
            self._waiting.append(d)
            if len(self._waiting) == 1:
                if self._producer is not None:
                    self._producer.pauseProducing()
                if self._runner.drain_clock is not None:
                    self._runner.drain_clock.callLater(0, self.drain)
            return d
        return succeed(None)

    def drain(self) -> None:
        """Let the pipe empty: waiting writers (and a paused producer) go on."""
        self._pending = 0
        waiting, self._waiting = self._waiting, []
        if waiting and self._producer is not None:
            self._producer.resumeProducing()
        for d in waiting:
            d.callback(None)

    def finish(self) -> Deferred:
        self._finishing = True
        if not self.ended and not self._ran:
            self._ran = True
            self.drain()
            runner = self._runner
            runner.calls.append(Call(tuple(self.argv), bytes(self.written), self.timeout))
            result = runner.outcome(self.argv, bytes(self.written))
            if self.output is None:
                self.end(result)
            else:
                # It ends once its output is all handed on (or when aborted first).
                result.addCallback(self._deliver).addBoth(self._delivered)
        return self.when_done()

    def _delivered(self, outcome) -> None:
        self.end(fail(outcome) if isinstance(outcome, Failure) else succeed(outcome))

    def abort(self) -> Deferred:
        self._finishing = True
        if not self.ended:
            self.end(fail(CancelledError(f"{describe(self.argv, 60)} was cancelled")))
        return self.when_done()

    def _deliver(self, stdout: bytes) -> Deferred:
        """
        Hand standard output to the output consumer, in pipe-sized pieces,
        pausing while the consumer pauses it.

        @return: a L{Deferred} that fires with C{b""} once it is all handed on.
        """
        delivery = _Delivery(self, stdout)
        self.output.registerProducer(delivery, True)
        delivery.resumeProducing()
        return delivery.done

    def when_done(self) -> Deferred:
        return self._outcome.observe()

    def registerProducer(self, producer, streaming):
        if not streaming:
            raise ValueError("only streaming (push) producers are supported")
        self._producer = producer

    def unregisterProducer(self):
        self._producer = None

    def end(self, result: Deferred) -> None:
        """
        End the command with C{result} (its runner stops it, or it finishes or
        is aborted); a command already ended keeps its first end.
        """
        if self.ended:
            result.addErrback(lambda _: None)
            return
        self.ended = True
        result.addBoth(self._outcome.settle)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self.when_done().addCallback(lambda _: None).chainDeferred(d)


class _Delivery:
    """
    The producer a fake stream registers on its output consumer: standard
    output in 64 KiB pieces, none while paused, the rest dropped once the
    command has been aborted.
    """

    def __init__(self, stream: FakeStream, data: bytes):
        self._stream = stream
        self._data = data
        self._at = 0
        self._paused = False
        self._delivering = False
        self.done = Deferred()

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        if self._delivering:  # resumed from inside a write: the loop below goes on
            return
        self._delivering = True
        try:
            while not self._paused and not self.done.called:
                if self._stream.ended or self._at >= len(self._data):
                    self._stream.output.unregisterProducer()
                    self.done.callback(b"")
                    return
                piece = self._data[self._at:self._at + 65536]
                self._at += len(piece)
                self._stream.output.write(piece)
        finally:
            self._delivering = False

    def stopProducing(self):
        self._stream.abort()
