"""
The HTTP site of the API, with a request class that refuses an oversized body
before reading it.

Twisted's L{Request} buffers the whole body (in memory, or a temporary file
above 100 kB) before the resource sees the request, so a check in the
resource comes too late to save the reading.  L{LimitedRequest} acts when the
headers are in: a C{Content-Length} over the limit is answered 413 at once,
and the connection closed, without reading the body; a chunked body is
counted as it arrives and cut off the same way once it passes the limit.
"""

from __future__ import annotations

from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from comet.web._errors import error_body


class LimitedRequest(Request):
    #: Largest body accepted, in bytes (set per site by L{api_site}).
    max_body = 1024 * 1024
    #: Set once the body passed the limit: the rest of it is dropped.
    body_too_large = False
    _refused = False
    _received = 0

    def gotLength(self, length):
        if length is not None and length > self.max_body:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self._refused or self.body_too_large:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if self._refused:
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        """Answer 413 and close the connection: the body is never read."""
        from io import BytesIO

        self.body_too_large = True
        self.content = BytesIO()
        if not isinstance(self.channel, HTTPChannel):
            # Not HTTP/1 (an HTTP/2 stream): the body is dropped as it comes
            # and the pipeline answers 413 when the request is complete.
            return
        self._refused = True
        # No "100 Continue" after this answer.
        self.requestHeaders.removeHeader(b"expect")
        body = error_body(413, f"the request body is larger than {self.max_body} bytes")
        head = (
            b"HTTP/1.1 413 Content Too Large\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b"Content-Security-Policy: frame-ancestors 'none'\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"Connection: close\r\n\r\n"
        )
        self.channel.transport.write(head + body)
        self.channel.transport.loseConnection()


class APISite(Site):
    """
    The API's site: quiet (no access log) and body-limited.

    Twisted's default access log formats a line and sends it through the
    global log publisher on every request: 14% of the daemon's CPU under a
    stream of C{GET}s (bench/README.md, session 12).  Comet does not keep it:
    what changes something is in the audit log, errors are logged where they
    happen.
    """

    noisy = False

    def log(self, request) -> None:
        pass


def api_site(resource, max_body: int) -> APISite:
    request_class = type("LimitedRequest", (LimitedRequest,), {"max_body": max_body})
    return APISite(resource, requestFactory=request_class)
