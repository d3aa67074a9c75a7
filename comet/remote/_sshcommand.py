"""
One command on a storage server: the C{ssh} child process that runs it
(L{_Command}: its output, how it ends, how it is killed, what its failure
means), and the flow of its standard input (L{_Stream}) and output
(L{_OutputFlow}).  L{comet.remote._runner.SSHRunner} starts them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from comet.errors import CommandFailed, Unavailable
from comet.remote._command import describe
from comet.remote._interface import IStreamingCommand
from comet.remote._observed import Observed as _Observed

if TYPE_CHECKING:
    from comet.remote._runner import SSHRunner

_log = Logger()

#: Lines OpenSSH writes when it, not the remote command, failed (it then
#: exits 255): no connection, no route, refused or unknown host key, refused
#: key, a connection dropped or timed out.
_SSH_FAILURE = re.compile(
    r"^ssh: |Host key verification failed|host key is known|"
    r"REMOTE HOST IDENTIFICATION HAS CHANGED|Permission denied \(|"
    r"kex_exchange_identification|banner exchange|Connection (closed|reset|refused|timed out)|"
    r"closed by remote host|Timeout, server .* not responding|client_loop: |"
    r"Bad owner or permissions|Load key |too long for Unix domain socket|mux_client_",
    re.MULTILINE,
)

#: At most this much standard error (bytes) is kept per command.
_STDERR_LIMIT = 64 * 1024


class _Command(ProcessProtocol):
    """
    One C{ssh} child: what it writes, how it ends, and how to kill it.

    @ivar why_killed: L{None}, or why Comet killed it (C{"timeout"},
        C{"stop"}, C{"cancel"}): that, not its exit status, says what
        happened.
    """

    def __init__(self, runner: SSHRunner, argv: list[str], stdin: bytes | None,
                 timeout: float | None):
        self.runner = runner
        self.argv = argv
        self._stdin = stdin
        self.timeout = timeout
        self.stream: _Stream | None = None
        self.output = None  # an IConsumer that takes standard output as it comes
        self._stdout: list[bytes] = []
        self._stderr = bytearray()
        self.outcome = _Observed()
        self.why_killed: str | None = None
        #: The child has exited (or never ran): nothing more to signal.
        self.exited = False
        #: Its pipes have closed too (or it never ran): its outcome is settled.
        self.ended = False
        self._timer = None
        self._kill_timer = None

    # ProcessProtocol

    def connectionMade(self):
        if self.timeout is not None:
            self._timer = self.runner.clock.callLater(self.timeout, self.kill, "timeout")
        if self.output is not None:
            self.output.registerProducer(_OutputFlow(self), True)
        if self.stream is not None:
            self.transport.registerProducer(self.stream, True)
            self.stream.started()
        else:
            if self._stdin:
                self.transport.write(self._stdin)
            self.transport.closeStdin()
        self._stdin = None

    def outReceived(self, data: bytes):
        if self.output is not None:
            self.output.write(data)
        else:
            self._stdout.append(data)

    def errReceived(self, data: bytes):
        room = _STDERR_LIMIT - len(self._stderr)
        if room > 0:
            self._stderr += data[:room]

    def processExited(self, reason):
        self.exited = True
        if self.why_killed is not None:
            # A client sharing the ControlMaster hands its pipes to the master,
            # which keeps them open until the remote command ends; a killed
            # command must not wait for that, so close our ends now.  The
            # remote command then dies on its next write (SIGPIPE) at the latest.
            self.transport.loseConnection()

    def processEnded(self, reason):
        self.exited = self.ended = True
        for timer in (self._timer, self._kill_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self.runner.ended(self)
        if self.output is not None:
            self.output.unregisterProducer()
        status = reason.value
        self.outcome.settle(self._result(status.exitCode, status.signal))

    # Killing

    def kill(self, why: str) -> None:
        """
        Kill the child: SIGTERM now, SIGKILL after the runner's grace period
        (seconds) if it is still there.
        """
        if self.ended:
            return
        if self.why_killed is None:
            self.why_killed = why
        if self.runner.withdraw(self):
            # It was waiting for a session: it never ran.
            self.exited = self.ended = True
            if self.stream is not None:
                self.stream.closed = True
            self.outcome.settle(self._result(None, None))
            return
        if self.exited:
            # The child is gone but its pipes are not: a ControlMaster holds
            # them for the remote command (whose output Comet may be holding
            # back).  Nothing to signal; stop waiting for the holder.
            self.transport.loseConnection()
            return
        _log.info(
            "killing {command} on {host} ({why})",
            command=describe(self.argv), host=self.runner.host, why=why,
        )
        self._signal("TERM")
        if self._kill_timer is None:
            self._kill_timer = self.runner.clock.callLater(
                self.runner.kill_grace, self._signal, "KILL"
            )

    def _signal(self, name: str) -> None:
        if self.exited or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except (ProcessExitedAlready, OSError):
            pass

    # The result

    def _result(self, code: int | None, signal: int | None) -> object:
        host = self.runner.host
        where = f"{self.runner.role} {host}"
        stderr = self._stderr.decode("utf-8", "replace").strip()
        if self.why_killed == "timeout":
            return Failure(Unavailable(
                f"{where} does not answer: {describe(self.argv, 60)}"
                f" did not finish within {self.timeout:g} s"
            ))
        if self.why_killed == "stop":
            return Failure(Unavailable(
                f"{where} is unavailable: Comet is shutting down"
                f" and stopped {describe(self.argv, 60)}"
            ))
        if self.why_killed == "cancel":
            return Failure(CancelledError(f"{describe(self.argv, 60)} was cancelled"))
        if code == 0:
            return b"".join(self._stdout)
        if code == 255:
            # The last line that is OpenSSH's own says best what happened.
            lines = [l.strip() for l in stderr.splitlines() if _SSH_FAILURE.search(l)]
            if lines:
                return Failure(Unavailable(f"{where} does not answer: {lines[-1]}"))
        return Failure(CommandFailed(
            self.argv, code if code is not None else -(signal or 0), stderr, host
        ))


@implementer(IPushProducer)
class _OutputFlow:
    """
    Flow control for a command whose standard output goes to a consumer:
    while the consumer is paused, the output pipe is not read, so the pipe,
    then ssh, then the remote command wait.

    Paused and resumed until the output pipe closes, not until the child
    exits: a client sharing a ControlMaster may exit (its remote command
    ended) while the master still holds output for the pipe, which a flow
    left paused would never let through (the copy then waited for ever).
    """

    def __init__(self, command: _Command):
        self._command = command

    def pauseProducing(self):
        if self._command.transport is not None:
            self._command.transport.pauseProducing()

    def resumeProducing(self):
        if self._command.transport is not None:
            self._command.transport.resumeProducing()

    def stopProducing(self):
        self._command.kill("cancel")


@implementer(IStreamingCommand, IConsumer, IPushProducer)
class _Stream:
    """
    The writing end of a streaming command; see L{IStreamingCommand}.

    It registers itself as the streaming producer of the child's standard
    input pipe, so the reactor tells it when the pipe's buffer passes its
    high-water mark (C{pauseProducing}) and when it has drained
    (C{resumeProducing}).
    """

    def __init__(self, command: _Command):
        self._command = command
        self._paused = False
        #: Standard input is closed (or never opened): no more writes.
        self.closed = False
        self._finishing = False
        self._waiting: list[Deferred] = []
        self._producer = None
        #: Whether the child runs: until then (it waits for a session) what is
        #: written is kept, and the producer is held paused.
        self._started = False
        self._pending: list[bytes] = []

    # IStreamingCommand

    def write(self, data: bytes) -> Deferred:
        if self._finishing:
            return fail(RuntimeError("write() after finish() or abort()"))
        if self.closed:
            return self._after_close()
        if not self._started:
            self._pending.append(data)
            d = Deferred()
            self._waiting.append(d)
            return d
        self._command.transport.write(data)
        if self._paused:
            d = Deferred()
            self._waiting.append(d)
            return d
        d = Deferred()
        d.callback(None)
        return d

    def finish(self) -> Deferred:
        self._finishing = True
        if self._started and not self.closed and self._command.transport is not None:
            # Unregister first: a pipe whose streaming producer is registered and
            # was paused resumes the producer when its buffer drains, instead of
            # closing, so standard input would never reach EOF (dd waits forever).
            self._command.transport.unregisterProducer()
            self._command.transport.closeStdin()
        return self.when_done()

    def abort(self) -> Deferred:
        self._finishing = True
        self._command.kill("cancel")
        return self.when_done()

    def when_done(self) -> Deferred:
        return self._command.outcome.observe()

    # IConsumer

    def registerProducer(self, producer, streaming):
        if not streaming:
            raise ValueError("only streaming (push) producers are supported")
        self._producer = producer
        if self._paused or not self._started:
            producer.pauseProducing()

    def started(self) -> None:
        """
        The child runs (L{_Command.connectionMade}, the pipe's producer
        registered): send what was written while it waited, then let the
        producer go unless the pipe is full, or close standard input if
        L{finish} came first.
        """
        self._started = True
        pending, self._pending = self._pending, []
        for data in pending:
            self._command.transport.write(data)
        if self._finishing:
            # Nothing more comes: what waited is handed to the pipe.
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)
            self._finishing = False
            self.finish()
        elif not self._paused:
            self.resumeProducing()

    def unregisterProducer(self):
        self._producer = None

    # IPushProducer, called by the pipe

    def pauseProducing(self):
        self._paused = True
        if self._producer is not None:
            self._producer.pauseProducing()

    def resumeProducing(self):
        self._paused = False
        if self._producer is not None:
            self._producer.resumeProducing()
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def stopProducing(self):
        # The pipe is gone: we closed it (finish) or the command stopped
        # reading.  Writers still waiting learn how the command ended.
        self.closed = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._after_close().chainDeferred(d)
        if self._producer is not None and not self._finishing:
            self._producer.stopProducing()

    def _after_close(self) -> Deferred:
        command = self._command

        def ended(_):
            raise CommandFailed(
                command.argv, 0, "the command exited before reading all its input",
                command.runner.host,
            )

        return command.outcome.observe().addCallback(ended)
