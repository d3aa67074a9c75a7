"""
A raw client of C{GET /events} for tests (tests/web/test_events.py over the
in-process site, tests/integration/test_events.py over a real daemon).
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Protocol


class SSEClient(Protocol):
    """A raw HTTP/1.0 client of C{/events}: collects the SSE messages it reads."""

    def __init__(self, request: bytes):
        self._request = request
        self.raw = b""
        self.closed: Deferred = Deferred()
        self.waiting: list[tuple[callable, Deferred]] = []

    def connectionMade(self):
        self.transport.write(self._request)

    def dataReceived(self, data):
        self.raw += data
        for check, d in list(self.waiting):
            if check(self):
                self.waiting.remove((check, d))
                d.callback(None)

    def connectionLost(self, reason):
        self.closed.callback(None)

    @property
    def head(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[0]

    def messages(self) -> list[dict]:
        body = self.raw.partition(b"\r\n\r\n")[2].decode("utf-8")
        out = []
        for block in body.split("\n\n"):
            fields = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                if name in ("id", "event", "data"):
                    fields[name] = value
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
                out.append(fields)
        return out

    def types(self) -> list[str]:
        return [m["event"] for m in self.messages()]

    async def until(self, check, timeout: float = 20.0) -> None:
        """Once C{check(self)} is true (a timeout fails after C{timeout} seconds)."""
        if check(self):
            return
        d: Deferred = Deferred()
        self.waiting.append((check, d))
        d.addTimeout(timeout, reactor)
        await d


async def open_stream(testcase, port: int, token: str, query: str = "",
                      headers: bytes = b"") -> SSEClient:
    """An L{SSEClient} of C{127.0.0.1:port}'s C{/events}, once the stream has begun."""
    request = (f"GET /events{query} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n"
               .encode() + headers + b"\r\n")
    protocol = SSEClient(request)
    factory = ClientFactory.forProtocol(lambda: protocol)
    connector = reactor.connectTCP("127.0.0.1", port, factory)
    testcase.addCleanup(connector.disconnect)
    await protocol.until(lambda p: b": comet events" in p.raw)
    return protocol
