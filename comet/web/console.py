"""
The VM console in the browser, served by the daemon itself.

  - C{GET /cluster/:cluster/vms/:name/console}: 303 to the console page, with
    a single-use token and the VNC password (set live, fresh for this ticket)
    in the URI's fragment, which the browser does not send to any server.
  - C{GET /console/vnc}: the page (ours, L{PAGE}), which runs noVNC's RFB client.
  - C{GET /console/novnc/...}: noVNC itself, from Debian's C{novnc} package
    (L{NOVNC_DIR}); 503 when it is not installed.
  - C{GET /console/ws/:cluster/:name/:token}: the websocket (Autobahn, subprotocol
    C{binary}) that relays bytes between the browser and the VM's VNC server.
    The token is checked (it must be for that VM), and used up, before the
    websocket handshake and before any connection to the VNC server.
"""

from __future__ import annotations

import mimetypes
import os
from urllib.parse import parse_qs, urlencode, urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IPushProducer, ITCPTransport
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.logger import Logger
from zope.interface import implementer
from twisted.web.server import NOT_DONE_YET

from comet.errors import NotFound, Unavailable
from comet.model.console import TicketRefused, is_local
from comet.virt.console_stream import SerialConsole
from comet.web._errors import HTTPError
from comet.web._origin import same_origin
from comet.web._table import OPERATOR, PUBLIC, TICKET, Response, Routes
from comet.web.paths import PATHS

#: The endpoints this module declares (each app serves them: L{comet.web.routes}).
routes = Routes()

log = Logger()

#: Where Debian's C{novnc} package puts noVNC.
NOVNC_DIR = "/usr/share/novnc"

#: Our page, which connects noVNC's RFB client to the websocket.
PAGE = os.path.join(os.path.dirname(__file__), "console.html")
#: Our page for a serial console (plain text).
SERIAL_PAGE = os.path.join(os.path.dirname(__file__), "console-serial.html")

#: Seconds to wait for the VM's VNC server to accept the relay's connection.
VNC_CONNECT_TIMEOUT = 10

#: The websocket close code when the VM's display or console cannot be reached
#: (an application code: 1011 is the server's own to send, not an application's).
CLOSE_BACKEND_FAILED = 4502


def _reason(why: str) -> str:
    """A close reason: at most 123 bytes of UTF-8."""
    return why.encode("utf-8")[:120].decode("utf-8", "ignore")




def _novnc_missing() -> Unavailable:
    return Unavailable(
        f"the noVNC client is not installed (no {NOVNC_DIR}/core/rfb.js):"
        " install Debian's novnc package"
    )


@routes.route("GET", "vm.console", role=OPERATOR, audited=True, answers={303: None},
              errors=(409, 502, 503))
async def console(models, request, body, cluster, name):
    """303 to the VM's console page (?type=serial: its serial console), with a single-use token."""
    kind = request.args.get(b"type", [b"vnc"])[0].decode("utf-8", "replace")
    ticket = await models.console.issue(cluster, name, kind)
    log.info("console ticket ({kind}) for VM {cluster}/{name} issued to {user}",
             kind=ticket.kind, cluster=cluster, name=ticket.name,
             user=getattr(getattr(request, "comet_identity", None), "name", "?"))
    values = {"token": ticket.token, "vm": f"{cluster}/{ticket.name}"}
    if ticket.password is not None:
        values["password"] = ticket.password
    page = "console.page" if ticket.kind == "vnc" else "console.serial"
    location = PATHS.href(page) + "#" + urlencode(values)
    return Response(code=303, headers={"Location": location, "Cache-Control": "no-store"})


@routes.route("GET", "console.page", produces="text/html", role=PUBLIC, answers={200: None},
              errors=(503,))
async def page(models, request, body):
    """The console page (noVNC), for the token in its URI's fragment."""
    if not os.path.isfile(os.path.join(NOVNC_DIR, "core", "rfb.js")):
        raise _novnc_missing()
    with open(PAGE, "rb") as f:
        html = f.read()
    return Response(raw=html, content_type="text/html; charset=utf-8")


@routes.route("GET", "console.serial", produces="text/html", role=PUBLIC, answers={200: None})
async def serial_page(models, request, body):
    """The serial console page (plain text), for the token in its URI's fragment."""
    with open(SERIAL_PAGE, "rb") as f:
        html = f.read()
    return Response(raw=html, content_type="text/html; charset=utf-8")


@routes.route("GET", "console.novnc", produces="text/javascript", role=PUBLIC, answers={200: None},
              errors=(503,))
async def novnc(models, request, body, file):
    """A file of the noVNC client (Debian's novnc package)."""
    root = os.path.realpath(NOVNC_DIR)
    if not os.path.isdir(root):
        raise _novnc_missing()
    path = os.path.realpath(os.path.join(root, file))
    if not path.startswith(root + os.sep) or not os.path.isfile(path):
        raise HTTPError(404, f"noVNC has no file {file!r}")
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if path.endswith(".js"):
        content_type = "text/javascript"
    with open(path, "rb") as f:
        data = f.read()
    return Response(raw=data, content_type=content_type, headers={"Cache-Control": "max-age=3600"})


@routes.route("GET", "console.ws", produces="application/octet-stream", role=TICKET,
              answers={101: None}, errors=(403, 502, 503))
async def websocket(models, request, body, cluster, name, token):
    """The console's websocket (subprotocol binary): the VM's VNC bytes."""
    # The token first, and 403 for every refusal: whether a VM of that name
    # exists is told to no one without a ticket for it.
    try:
        ticket = models.console.consume(token)
        try:
            vm = await models.vms.get(cluster, name)
        except NotFound:
            raise TicketRefused("the console token is for another VM") from None
        if vm.record.uuid != ticket.uuid:
            raise TicketRefused("the console token is for another VM")
    except TicketRefused as e:
        raise HTTPError(403, e.reason) from None
    origin = request.getHeader(b"origin")
    if origin is not None and not same_origin(request):
        # A page of another site with a token it should not have.
        raise HTTPError(403, "the console's websocket is opened by Comet's own console page only")
    factory = WebSocketServerFactory()
    factory.setProtocolOptions(
        # Autobahn checks the Origin again in the handshake; a client without
        # one (not a browser) is let in by the ticket alone.
        allowedOrigins=[origin.decode("latin-1")] if origin is not None else ["*"],
        maxMessagePayloadSize=models.console.max_message,
        maxFramePayloadSize=models.console.max_message,
        # Say why (1009, message too big) before closing, instead of dropping
        # the connection without a word (the browser's 1006).
        failByDrop=False,
    )
    factory.ticket = ticket
    factory.max_session = models.console.max_session
    if ticket.kind == "serial":
        factory.protocol = SerialRelayProtocol
    else:
        factory.protocol = RelayProtocol
        factory.vnc = await models.console.address(ticket)
    return _UpgradeResource(factory)


class _UpgradeResource(WebSocketResource):
    """
    Autobahn's resource, which takes over the connection; the HTTP request is
    then over, so whoever waits for it to finish (the count of requests in
    flight that the daemon drains at stop) is told now, and the HTTP channel's
    idle timeout no longer applies.
    """

    def render(self, request):
        upgrading = request.channel is not None and request.channel.transport is not None
        result = super().render(request)
        if upgrading and result is NOT_DONE_YET:
            request.channel.setTimeout(None)
            waiting, request.notifications = request.notifications, []
            for d in waiting:
                d.callback(None)
        return result


@implementer(IPushProducer)
class _PauseOnly:
    """
    A connection as the producer of the other side of the relay: paused and
    resumed with it, but not closed by it (each side closes the other itself).
    """

    def __init__(self, transport):
        self._transport = transport

    def pauseProducing(self):
        self._transport.pauseProducing()

    def resumeProducing(self):
        self._transport.resumeProducing()

    def stopProducing(self):
        pass


class _VNCClient(Protocol):
    """The relay's TCP connection to the VM's VNC server."""

    def __init__(self, relay: "RelayProtocol"):
        self.relay = relay

    def connectionMade(self):
        self.relay.vnc_connected(self.transport)

    def dataReceived(self, data: bytes):
        self.relay.from_vnc(data)

    def connectionLost(self, reason):
        self.relay.vnc_lost()


#: The OpenSSH client that reaches the VNC display of a VM on a remote host.
SSH = "ssh"


def ssh_tunnel_argv(uri: str, host: str, port: int) -> list[str]:
    """
    The argv of C{ssh -W host:port} through the compute host of a
    C{qemu+ssh://} URI, with the user, port and C{keyfile}, C{known_hosts} and
    C{no_verify} parameters libvirt itself would use.
    """
    parts = urlsplit(uri)
    query = parse_qs(parts.query)
    argv = [SSH, "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={VNC_CONNECT_TIMEOUT}"]
    if parts.port:
        argv += ["-p", str(parts.port)]
    if "keyfile" in query:
        argv += ["-i", query["keyfile"][0]]
    if "known_hosts" in query:
        argv += ["-o", f"UserKnownHostsFile={query['known_hosts'][0]}"]
    if query.get("no_verify", ["0"])[0] == "1":
        argv += ["-o", "StrictHostKeyChecking=no"]
    target = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
    return argv + ["-W", f"{host}:{port}", "--", target]


class _SSHTunnel(ProcessProtocol):
    """C{ssh -W} to the VM's VNC display on its remote host: its stdio are the relay's connection."""

    def __init__(self, relay: "RelayProtocol"):
        self.relay = relay
        self.stderr = b""
        self._ended = False

    def connectionMade(self):
        self.relay.vnc_connected(self)

    def outReceived(self, data: bytes):
        self.relay.from_vnc(data)

    def errReceived(self, data: bytes):
        self.stderr = (self.stderr + data)[-2000:]

    def write(self, data: bytes):
        if not self._ended:
            self.transport.write(data)

    def loseConnection(self):
        if not self._ended:
            try:
                self.transport.signalProcess("TERM")
            except ProcessExitedAlready:
                pass

    def processEnded(self, reason):
        self._ended = True
        said = self.stderr.decode("utf-8", "replace").strip()
        if said:
            log.warn("console: ssh said: {stderr}", stderr=said)
        code = getattr(reason.value, "exitCode", None)
        if code not in (0, None):
            last = said.splitlines()[-1] if said else f"exit {code}"
            self.relay.vnc_failed(f"ssh to the VM's host failed: {last}")
        else:
            self.relay.vnc_lost()


#: The websocket close code of a session that reached C{[console] max_session}.
CLOSE_SESSION_EXPIRED = 4408


class _SessionLimit:
    """
    Ends a console session C{factory.max_session} seconds after it opened
    (none: no limit), whatever is going on in it: a ticket lets one in once,
    not for ever.
    """

    _expiry = None

    def limit_session(self, clock=None):
        seconds = getattr(self.factory, "max_session", 0)
        if not seconds:
            return
        if clock is None:
            from twisted.internet import reactor as clock
        self._expiry = clock.callLater(seconds, self._session_expired, seconds)

    def _session_expired(self, seconds):
        self._expiry = None
        ticket = self.factory.ticket
        log.info("console of VM {cluster}/{name} closed after {seconds} s (console.max_session)",
                 cluster=ticket.cluster, name=ticket.name, seconds=seconds)
        if self._open():
            self.sendClose(CLOSE_SESSION_EXPIRED,
                           _reason(f"the console session reached its limit of {seconds:g} s"))

    def end_session_limit(self):
        expiry, self._expiry = self._expiry, None
        if expiry is not None and expiry.active():
            expiry.cancel()


class RelayProtocol(_SessionLimit, WebSocketServerProtocol):
    """Relays binary frames from the browser to VNC, and VNC's bytes back as binary frames."""

    def onConnect(self, request):
        self._vnc = None
        self._pending: list[bytes] = []
        self._closed = False
        # noVNC asks for "binary"; a client that asks for nothing gets none.
        return "binary" if "binary" in request.protocols else None

    def onOpen(self):
        self.limit_session()
        host, port = self.factory.vnc
        ticket = self.factory.ticket
        log.info(
            "console of VM {cluster}/{name} opened: relaying to {host}:{port}",
            cluster=ticket.cluster,
            name=ticket.name,
            host=host,
            port=port,
        )
        from twisted.internet import reactor

        if not is_local(ticket.uri):
            argv = ssh_tunnel_argv(ticket.uri, host, port)
            reactor.spawnProcess(_SSHTunnel(self), argv[0], argv, env=os.environ.copy())
            return
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=VNC_CONNECT_TIMEOUT)
        d = connectProtocol(endpoint, _VNCClient(self))
        d.addErrback(self._vnc_failed)

    def _vnc_failed(self, failure):
        log.warn("console: cannot reach the VNC server: {why}", why=failure.getErrorMessage())
        self.vnc_failed("cannot reach the VM's display")

    def vnc_failed(self, why: str):
        """The VNC server cannot be reached (or its tunnel broke): close with 4502 and why."""
        vnc, self._vnc = self._vnc, None
        self._stop_flow_control(vnc)
        if self._open():
            self.sendClose(CLOSE_BACKEND_FAILED, _reason(why))

    def vnc_connected(self, transport):
        if self._closed:
            transport.loseConnection()
            return
        self._vnc = transport
        pending, self._pending = self._pending, []
        for data in pending:
            transport.write(data)
        if ITCPTransport.providedBy(transport):
            # Flow control: each side stops reading while the other cannot keep up.
            # (The websocket's connection still has the HTTP channel it was
            # taken from as its producer.)
            self.transport.unregisterProducer()
            self.transport.registerProducer(_PauseOnly(transport), True)
            transport.registerProducer(_PauseOnly(self.transport), True)

    def _open(self) -> bool:
        return not self._closed and self.state == WebSocketServerProtocol.STATE_OPEN

    def from_vnc(self, data: bytes):
        # Bytes that arrive while the websocket closes are dropped.
        if self._open():
            self.sendMessage(data, isBinary=True)

    def _stop_flow_control(self, vnc):
        # A connection with a producer registered waits for it to go before it closes.
        if vnc is not None and ITCPTransport.providedBy(vnc):
            vnc.unregisterProducer()
            if self.transport is not None:
                self.transport.unregisterProducer()

    def vnc_lost(self):
        vnc, self._vnc = self._vnc, None
        self._stop_flow_control(vnc)
        if self._open():
            self.sendClose(1000, "the VM's display closed the connection")

    def onMessage(self, payload, isBinary):
        if self._vnc is None:
            self._pending.append(payload)
        else:
            self._vnc.write(payload)

    def onClose(self, wasClean, code, reason):
        self._closed = True
        self.end_session_limit()
        vnc, self._vnc = getattr(self, "_vnc", None), None
        if vnc is not None:
            self._stop_flow_control(vnc)
            vnc.loseConnection()


class SerialRelayProtocol(_SessionLimit, WebSocketServerProtocol):
    """
    Relays the guest's first serial console: its output as binary frames, and
    every frame from the browser (binary or text) to its input.
    """

    #: Makes the console stream (tests give a fake).
    console_factory = SerialConsole

    def onConnect(self, request):
        self._console = None
        self._closed = False
        return "binary" if "binary" in request.protocols else None

    def onOpen(self):
        from twisted.internet import reactor

        self.limit_session()
        ticket = self.factory.ticket
        log.info(
            "serial console of VM {cluster}/{name} opened",
            cluster=ticket.cluster,
            name=ticket.name,
        )
        self._console = self.console_factory(
            reactor, ticket.uri, ticket.domain, self._from_console, self._console_ended
        )
        self._console.start()

    def _open(self) -> bool:
        return not self._closed and self.state == WebSocketServerProtocol.STATE_OPEN

    def _from_console(self, data: bytes):
        if self._open():
            self.sendMessage(data, isBinary=True)

    def _console_ended(self, why):
        self._console = None
        if why is not None:
            log.warn("serial console ended: {why}", why=why)
        if self._open():
            self.sendClose(
                1000 if why is None else CLOSE_BACKEND_FAILED, _reason(why or "the console closed")
            )

    def onMessage(self, payload, isBinary):
        if self._console is not None:
            self._console.write(payload)

    def onClose(self, wasClean, code, reason):
        self._closed = True
        self.end_session_limit()
        console = getattr(self, "_console", None)
        if console is not None:
            console.close()
