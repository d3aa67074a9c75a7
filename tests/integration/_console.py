"""
The serial console of a domain Comet defined, for integration tests.

Comet gives a VM C{<serial type='pty'>}: no log file and no socket a test
could pick, so the test reads and types through libvirt's console stream
(C{virDomainOpenConsole}, what C{virsh console} uses) with Comet's own pump,
L{comet.virt.console_stream.SerialConsole}; the shell helpers (C{run},
C{waitFor}) are L{_testbed.SerialConsole}'s.

Non-blocking libvirt streams receive data only in a process that runs
libvirt's event loop (registered before the connection is opened):
L{comet.virt.ensure_event_loop} does that once per process.

A pty drops what the guest prints while no one is connected: connect right
after the start, before the kernel boots, to see the guest's boot lines.
"""

from __future__ import annotations

from twisted.internet import defer, reactor

from comet.virt import ensure_event_loop
from comet.virt.console_stream import SerialConsole as _Stream
from tests.integration._testbed import SerialConsole, _ConsoleProtocol


class _StreamTransport:
    """What the console protocol writes to: the stream."""

    def __init__(self, stream: _Stream):
        self._stream = stream

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    def loseConnection(self) -> None:
        self._stream.close()


class DomainConsole(SerialConsole):
    """
    The serial console of domain C{domain} on libvirt C{uri}.  L{connect},
    then L{run} shell commands in the guest or L{waitFor} what it prints;
    L{aclose} (also fine after the domain is gone) ends the stream's thread.
    """

    def __init__(self, uri: str, domain: str):
        super().__init__(socketPath=None)
        self.uri = uri
        self.domain = domain
        self._ended: defer.Deferred | None = None
        #: Why the stream ended (C{None}: closed, or the guest's side closed).
        self.why: str | None = None

    async def connect(self, timeout=None):
        ensure_event_loop()
        protocol = _ConsoleProtocol()
        done = self._ended = defer.Deferred()

        def ended(why):
            self.why = why
            protocol.connectionLost(None)
            done.callback(why)

        stream = _Stream(reactor, self.uri, self.domain, protocol.dataReceived, ended)
        protocol.transport = _StreamTransport(stream)
        stream.start()
        self.protocol = protocol
        return self

    async def aclose(self) -> None:
        """Close the stream and wait until its thread is over."""
        if self._ended is None:
            return
        ended, self._ended = self._ended, None
        self.protocol.transport.loseConnection()
        await ended
