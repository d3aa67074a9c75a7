"""Run a child process from a test without blocking the reactor."""

from __future__ import annotations

import attrs
from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred


@attrs.frozen
class Outcome:
    out: bytes
    err: bytes
    #: Exit code, or C{None} if killed by a signal.
    code: int | None
    signal: int | None


class _Collect(protocol.ProcessProtocol):
    def __init__(self, stdin: bytes | None, close_stdin: bool):
        self.out, self.err = [], []
        self.done = Deferred()
        self._stdin = stdin
        self._close_stdin = close_stdin

    def connectionMade(self):
        if self._stdin:
            self.transport.write(self._stdin)
        if self._close_stdin:
            self.transport.closeStdin()

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.err.append(data)

    def processEnded(self, reason):
        value = reason.value
        self.done.callback(
            Outcome(b"".join(self.out), b"".join(self.err), value.exitCode, value.signal)
        )


def spawn(argv, env=None, path=None, stdin: bytes | None = None, close_stdin: bool = True):
    """
    Start C{argv}; return C{(process transport, Deferred of Outcome)}.
    """
    collect = _Collect(stdin, close_stdin)
    transport = reactor.spawnProcess(collect, argv[0], argv, env=env, path=path)
    return transport, collect.done


def run(argv, env=None, path=None, stdin=None, timeout: float = 30, close_stdin=True):
    """Run C{argv} to its end (killed after C{timeout} seconds); a Deferred of L{Outcome}."""
    transport, done = spawn(argv, env, path, stdin, close_stdin)
    killer = reactor.callLater(timeout, _kill, transport)
    done.addBoth(lambda r: (killer.cancel() if killer.active() else None, r)[1])
    return done


def _kill(transport):
    try:
        transport.signalProcess("KILL")
    except Exception:
        pass
