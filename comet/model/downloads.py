"""
Fetching a volume's image from a URL, without letting the URL reach what the
daemon's host can reach.

A client names any http(s) URL; the daemon fetches it from its own host, which
can reach the cloud metadata service (169.254.169.254), its own loopback
ports and the management network.  So:

  - Only globally routable addresses are connected to, unless
    C{[storage] download_allow} names more networks.  The check is made on
    the address that is connected to: each hop (the first request and every
    redirect) resolves its host name once, drops the addresses the policy
    refuses, and connects to a remaining one by address (TLS still checks
    the certificate against the name).  There is no second lookup that
    could answer differently (DNS rebinding).
  - A connect timeout, an idle-read timeout (no byte for so long while Comet
    is not itself holding the transfer back) and a limit on the whole
    download end a stalled server; the caller destroys what it made.
  - At most C{max_downloads} run at once; the others wait in line.
  - URLs in messages (tasks, errors, logs) lose their user-info and query
    string (L{scrub}): they may carry credentials.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

import hyperlink
import idna
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IResolutionReceiver, IStreamClientEndpoint
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.client import (Agent, BrowserLikePolicyForHTTPS, BrowserLikeRedirectAgent,
                                HTTPConnectionPool)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from comet.errors import InvalidInput, Unavailable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def scrub(url: str) -> str:
    """C{url} without user-info, query string and fragment: what messages may show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
    except ValueError:
        return "<an unreadable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """
    C{url} without its user-info, and that user-info as HTTP Basic
    credentials (what it means in an http URL; Twisted's agent would take it
    for part of the host name).  Twisted drops them on a redirect to
    another origin.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), auth


_URL = re.compile(r"https?://[^\s'\"<>]+", re.IGNORECASE)


def _describe(error: BaseException) -> str:
    """
    What went wrong, in words, with every URL in them scrubbed: Twisted's
    messages quote redirect targets whole (query strings included).
    """
    reasons = getattr(error, "reasons", None)  # ResponseFailed, ResponseNeverReceived
    if reasons:
        text = "; ".join(r.getErrorMessage() for r in reasons)
    else:
        text = str(error) or type(error).__name__
    return _URL.sub(lambda m: scrub(m.group(0)), text)


class DownloadRefused(InvalidInput):
    """The URL (or a redirect) leads to an address downloads may not reach."""


class AddressPolicy:
    """
    Which addresses a download may connect to: globally routable ones, and
    those in the allowed networks.
    """

    def __init__(self, allow: Sequence[str] = ()):
        self._allow = [ipaddress.ip_network(cidr, strict=False) for cidr in allow]

    @property
    def networks(self) -> tuple:
        """The networks allowed besides the globally routable addresses."""
        return tuple(self._allow)

    def permits(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self._allow):
            return True
        return address.is_global and not address.is_multicast


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects what one host name lookup answers."""

    def __init__(self):
        self.addresses: list[Address] = []
        self.done: Deferred = Deferred()

    def resolutionBegan(self, resolution):
        pass

    def addressResolved(self, address):
        found = _literal(address.host)
        if found is not None and found not in self.addresses:
            self.addresses.append(found)

    def resolutionComplete(self):
        self.done.callback(self.addresses)


class _Session:
    """
    One download's connections (the first request and its redirects) and its
    timers: what ended it, if a limit did.
    """

    def __init__(self, clock, idle: float, total: float):
        self.clock = clock
        self.idle = idle
        self.total = total
        self.why: str | None = None
        self.connections: set[_IdleTimeout] = set()
        self.request: Deferred | None = None
        self._limit = clock.callLater(total, self.expire, f"did not finish within {total:g} s")

    def expire(self, why: str) -> None:
        """End the download: abort its connections, cancel a request not yet answered."""
        if self.why is None:
            self.why = why
        for connection in list(self.connections):
            connection.transport.abortConnection()
        if self.request is not None and not self.request.called:
            self.request.cancel()

    def close(self) -> None:
        if self._limit.active():
            self._limit.cancel()
        for connection in list(self.connections):
            connection.stop_timer()


class _IdleTimeout(ProtocolWrapper):
    """
    Sits between a connection and its HTTP protocol: aborts the connection
    when no byte arrives for C{session.idle} seconds, except while the
    transport is paused (the pipe to the storage server is full: the wait
    is ours, not the server's).
    """

    def __init__(self, factory, wrapped, session: _Session):
        super().__init__(factory, wrapped)
        self._session = session
        self._timer = None
        self._paused = False

    def connectionMade(self):
        self._session.connections.add(self)
        self._restart()

    def dataReceived(self, data):
        self._restart()
        super().dataReceived(data)

    def connectionLost(self, reason):
        self.stop_timer()
        self._session.connections.discard(self)
        super().connectionLost(reason)

    def pauseProducing(self):
        self._paused = True
        self.stop_timer()
        self.transport.pauseProducing()

    def resumeProducing(self):
        self._paused = False
        self._restart()
        self.transport.resumeProducing()

    def stop_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _restart(self):
        self.stop_timer()
        if not self._paused:
            self._timer = self._session.clock.callLater(self._session.idle, self._idle)

    def _idle(self):
        self._timer = None
        self._session.expire(f"received nothing for {self._session.idle:g} s")


class _IdleTimeoutFactory(WrappingFactory):
    def __init__(self, wrapped, session: _Session):
        super().__init__(wrapped)
        self._session = session

    def buildProtocol(self, addr):
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else _IdleTimeout(self, inner, self._session)


@implementer(IStreamClientEndpoint)
class _CheckedEndpoint:
    """Connects to an address of C{host} that the policy permits, by that address."""

    def __init__(self, downloads: Downloads, session: _Session, scheme: bytes, host: str,
                 port: int):
        self._downloads = downloads
        self._session = session
        self._scheme = scheme
        self._host = host
        self._port = port

    def connect(self, factory):
        return ensureDeferred(self._connect(factory))

    async def _connect(self, factory):
        d = self._downloads
        permitted = await d.permitted_addresses(self._host, self._port)
        last: BaseException | None = None
        for address in permitted:
            kind = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
            endpoint = kind(d.reactor, str(address), self._port, timeout=d.connect_timeout)
            if self._scheme == b"https":
                creator = d.tls.creatorForNetloc(self._host.encode("idna"), self._port)
                endpoint = wrapClientTLS(creator, endpoint)
            try:
                wrapper = await endpoint.connect(_IdleTimeoutFactory(factory, self._session))
            except Exception as e:
                last = e
                continue
            return wrapper.wrappedProtocol
        raise last if last is not None else Unavailable(f"{self._host} has no address")


@implementer(IAgentEndpointFactory)
class _CheckedEndpoints:
    def __init__(self, downloads: Downloads, session: _Session):
        self._downloads = downloads
        self._session = session

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii") if isinstance(uri.host, bytes) else uri.host
        return _CheckedEndpoint(self._downloads, self._session, uri.scheme, host.strip("[]"),
                                uri.port)


class Download:
    """
    One download in progress: L{response} once the headers came; L{failure}
    turns what went wrong into the message a task shows; L{close} when done.
    """

    def __init__(self, session: _Session, url: str, slot: DeferredSemaphore):
        self._session = session
        self.url = url
        self._slot = slot
        self.response = None
        self.closed = False

    def failure(self, error: BaseException) -> BaseException:
        """The error to report for C{error}: the limit that ended it, if one did."""
        if isinstance(error, InvalidInput):
            return error
        if self._session.why is not None:
            return Unavailable(f"downloading {scrub(self.url)} failed: {self._session.why}")
        if isinstance(error, Unavailable):
            return error
        return Unavailable(f"downloading {scrub(self.url)} failed: {_describe(error)}")

    def close(self) -> None:
        """End the download and give its slot back (once: closing again does nothing)."""
        if self.closed:
            return
        self.closed = True
        self._session.close()
        self._slot.release()


class Downloads:
    """
    The daemon's downloads: the address policy, the limits and the line of
    downloads waiting for a slot.

    @param storage: the L{comet.config.StorageConfig} (C{download_*},
        C{max_downloads}).
    @param resolver: an L{IHostnameResolver}; by default the reactor's.
    """

    def __init__(self, reactor, storage, resolver=None, tls=None):
        self.reactor = reactor
        self.policy = AddressPolicy(storage.download_allow)
        self.connect_timeout = storage.download_connect_timeout
        self.idle_timeout = storage.download_idle_timeout
        self.total_timeout = storage.download_timeout
        self._resolver = resolver if resolver is not None else reactor.nameResolver
        self.tls = tls if tls is not None else BrowserLikePolicyForHTTPS()
        self._slots = DeferredSemaphore(storage.max_downloads)

    async def addresses(self, host: str) -> list[Address]:
        """What C{host} resolves to (an address literal: itself)."""
        literal = _literal(host)
        if literal is not None:
            return [literal]
        receiver = _Addresses()
        self._resolver.resolveHostName(receiver, host, 0)
        return await receiver.done

    async def permitted_addresses(self, host: str, port: int) -> list[Address]:
        """
        The addresses of C{host} a download may connect to.

        @raise DownloadRefused: it has addresses, none of them permitted.
        @raise Unavailable: it has none.
        """
        found = await self.addresses(host)
        if not found:
            raise Unavailable(f"the name {host} does not resolve")
        permitted = [a for a in found if self.policy.permits(a)]
        if not permitted:
            raise DownloadRefused(
                f"downloads may not connect to {host}"
                f" ({', '.join(str(a) for a in found)}): not a public address and not in"
                " [storage] download_allow"
            )
        return permitted

    async def check(self, url: str) -> None:
        """
        Refuse, at request time, a URL whose host is known already to be out
        of bounds: an address literal the policy refuses, or a name all of
        whose addresses it refuses.  A name that does not resolve (now) is
        left to the download, which checks every hop again anyway.

        @raise DownloadRefused: it is.
        """
        host = urlsplit(url).hostname or ""
        if _literal(host) is None:
            try:
                idna.encode(host, uts46=True)
            except (idna.IDNAError, UnicodeError, ValueError):
                raise InvalidInput(f"url: {host!r} is not a valid host name") from None
        try:
            await self.permitted_addresses(host, 0)
        except Unavailable:
            pass

    @property
    def waiting(self) -> bool:
        """Whether a new download would wait for a slot."""
        return self._slots.tokens == 0

    async def start(self, url: str) -> Download:
        """
        Wait for a slot, then request C{url} (following redirects, each hop
        checked) until its headers come: a L{Download} whose C{response}
        streams the body.  The slot and the limits are held until
        L{Download.close}.

        @raise CometError: the request failed (see L{Download.failure}).
        """
        await self._slots.acquire()
        session = _Session(self.reactor, self.idle_timeout, self.total_timeout)
        download = Download(session, url, self._slots)
        try:
            # No persistent connections: a download is one long request, and
            # an idle connection kept for later would outlive it.
            pool = HTTPConnectionPool(self.reactor, persistent=False)
            agent = Agent.usingEndpointFactory(self.reactor, _CheckedEndpoints(self, session),
                                               pool=pool)
            target, auth = _split_userinfo(url)
            # The bytes as served: no content decoding (treq would undo a
            # Content-Encoding: gzip, which servers put on *.gz files, leaving
            # a body of unknown length that the storage server would then
            # try to decompress again), "identity" asked for.  Twisted's
            # redirect agent drops Authorization on a redirect to another
            # origin.
            headers = Headers({b"Accept-Encoding": [b"identity"]})
            if auth is not None:
                token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
                headers.addRawHeader(b"Authorization", f"Basic {token}".encode())
            try:
                uri = hyperlink.URL.from_text(target).to_uri().to_text().encode("ascii")
                session.request = BrowserLikeRedirectAgent(agent).request(b"GET", uri, headers)
                download.response = await session.request
            except Exception as e:
                raise download.failure(e) from None
        except BaseException:
            download.close()
            raise
        return download
