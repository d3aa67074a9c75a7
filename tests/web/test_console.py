"""
The browser console through the HTTP API: the 303 with a single-use token, the
page and noVNC's files, and the websocket relay over a real listening port,
with a real websocket client (Autobahn) and a fake VNC server on loopback.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from comet.model.console import TICKET_TTL
from comet.virt import GraphicsAddress
from comet.web import CometAPI
from comet.web import console as console_web
from tests._api import Answer
from tests.test_service import free_port
from tests._util import temp_dir
from tests.web.test_serve import assertError
from tests.web.test_vms import VMTestMixin

GREETING = b"RFB 003.008\n"


class FakeVNCServer(Factory):
    """A TCP server on loopback that records every connection and what it got."""

    def __init__(self):
        self.connections: list["_FakeVNC"] = []
        self.received = b""
        self.got_data = Deferred()

    def buildProtocol(self, addr):
        p = _FakeVNC()
        p.factory = self
        self.connections.append(p)
        return p


class _FakeVNC(Protocol):
    def connectionMade(self):
        self.transport.write(GREETING)

    def dataReceived(self, data):
        self.factory.received += data
        if not self.factory.got_data.called:
            self.factory.got_data.callback(None)


class FakeDisplays:
    """Stands for the libvirt calls the console makes (the test driver has no VNC)."""

    def __init__(self, port):
        self.port = port
        self.passwords = []

    def set_vnc_password(self, host, name, password, valid_to=None):
        self.passwords.append((host, name, password))
        return succeed(None)

    def graphics_address(self, host, name):
        return succeed(GraphicsAddress("127.0.0.1", self.port))


class _Client(WebSocketClientProtocol):
    def onConnect(self, response):
        self.factory.protocol_chosen = response.protocol

    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.messages.append((payload, isBinary))
        if not self.factory.first_message.called:
            self.factory.first_message.callback(None)

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(Exception(f"websocket refused: {reason}"))
        if not self.factory.closed.called:
            self.factory.closed.callback((wasClean, code, reason))


def _timeout(d, seconds=5):
    return d.addTimeout(seconds, reactor)


class ConsoleTestMixin(VMTestMixin):
    async def setUpConsole(self):
        await self.setUpVMs()
        await self.create(name="web")
        await self.create(name="db")
        for name in ("web", "db"):
            self.assertEqual((await self.action(name, "start")).code, 200)
        self.vnc = FakeVNCServer()
        vnc_port = reactor.listenTCP(0, self.vnc, interface="127.0.0.1")
        self.addCleanup(vnc_port.stopListening)
        self.displays = FakeDisplays(vnc_port.getHost().port)
        self.patch(self.models.console, "_hv", self.displays)

    async def get_console(self, name="web"):
        """GET the console of VM C{name}, not following the redirect."""
        stub = self.client._stub
        url = f"http://comet.test/cluster/lab/vms/{name}/console"
        response = await self.client._settle(
            stub.request("GET", url, allow_redirects=False,
                         headers={"Authorization": [self.client.authorization]})
        )
        content = await self.client._settle(stub.content(response))
        return Answer(response.code, response.headers, content)

    async def ticket(self, name="web"):
        """GET the console of VM C{name}: the fragment of the 303's Location, as a dict."""
        answer = await self.get_console(name)
        self.assertEqual(answer.code, 303, answer.body)
        location = urlsplit(answer.header("location"))
        self.assertEqual(location.path, "/console/vnc")
        return {k: v[0] for k, v in parse_qs(location.fragment).items()}


class ConsoleRedirectTests(ConsoleTestMixin, TestCase):
    async def setUp(self):
        await self.setUpConsole()

    async def test_303(self):
        """303 to the page with a token, the VM, and the password just set live."""
        ticket = await self.ticket()
        self.assertGreaterEqual(len(ticket["token"]), 40)
        self.assertEqual(ticket["vm"], "lab/web")
        self.assertEqual(len(ticket["password"]), 8)
        [(host, domain, password)] = self.displays.passwords
        self.assertEqual(password, ticket["password"])
        self.assertTrue(domain.startswith("comet-"))

    async def test_fresh_each_time(self):
        a, b = await self.ticket(), await self.ticket()
        self.assertNotEqual(a["token"], b["token"])
        self.assertNotEqual(a["password"], b["password"])

    async def test_in_representation(self):
        vm = await self.vm("web")
        self.assertEqual(vm["console"], "/cluster/lab/vms/web/console")

    async def test_paused(self):
        await self.action("web", "suspend")
        await self.ticket()

    async def test_shut_off(self):
        """409 for a VM that is not running, and no password is set."""
        await self.create(name="off")
        answer = await self.get_console("off")
        assertError(self, answer, 409, "conflict")
        self.assertIn("console", answer.json["reason"])
        await self.action("web", "poweroff")
        assertError(self, await self.get_console("web"), 409, "conflict")
        self.assertEqual(self.displays.passwords, [])

    async def test_unknown_vm(self):
        assertError(self, await self.get_console("nope"), 404, "not_found")

    async def test_ticket_audited(self):
        """Each console ticket is in the audit log: who, which VM, when (a GET, status 303)."""
        await self.ticket()
        await self.get_console("nope")
        log = (await self.client.get("/auditlog")).json
        consoles = [(e["user"], e["method"], e["uri"], e["status"]) for e in log
                    if e["uri"].endswith("/console")]
        self.assertEqual(consoles, [
            ("test-admin", "GET", "/cluster/lab/vms/web/console", 303),
            ("test-admin", "GET", "/cluster/lab/vms/nope/console", 404),
        ])

    async def test_driver_without_vnc_password(self):
        """
        On a host whose libvirt driver cannot set a VNC password (the test
        driver of the embedded default) a VNC console is a 409 that says so,
        not a 502 (found by schemathesis); the serial console is still issued.
        """
        self.models.console._hv = self.models.context.hypervisors  # the real test-driver hosts
        answer = await self.get_console("web")
        assertError(self, answer, 409, "conflict")
        self.assertIn("has no VNC console on host", answer.json["reason"])
        self.assertIn("not supported", answer.json["reason"])
        stub = self.client._stub
        url = "http://comet.test/cluster/lab/vms/web/console?type=serial"
        serial = await self.client._settle(stub.request(
            "GET", url, allow_redirects=False, headers={"Authorization": [self.client.authorization]}))
        serial = Answer(serial.code, serial.headers, await self.client._settle(stub.content(serial)))
        self.assertEqual(serial.code, 303)
        self.assertTrue(serial.header("location").startswith("/console/serial#token="))


class ConsoleTokenTests(ConsoleTestMixin, TestCase):
    """Bad tokens are refused with 403 before any websocket or VNC connection."""

    async def setUp(self):
        await self.setUpConsole()

    async def ws_get(self, token, name="web"):
        return await self.client.get(f"/console/ws/lab/{name}/{token}")

    async def test_unknown(self):
        answer = await self.ws_get("not-a-token")
        assertError(self, answer, 403, "forbidden")
        self.assertEqual(self.vnc.connections, [])

    async def test_reused(self):
        token = (await self.ticket())["token"]
        self.models.console.consume(token)  # first use
        answer = await self.ws_get(token)
        assertError(self, answer, 403, "forbidden")
        self.assertIn("already used", answer.json["reason"])

    async def test_expired(self):
        clock = Clock()
        clock.advance(5000)
        self.patch(self.models.console, "_clock", clock)
        token = (await self.ticket())["token"]
        clock.advance(TICKET_TTL)
        answer = await self.ws_get(token)
        assertError(self, answer, 403, "forbidden")
        self.assertIn("expired", answer.json["reason"])
        self.assertEqual(self.vnc.connections, [])

    async def test_unknown_vm(self):
        """
        Without a valid token, a VM that does not exist is a 403 like one that
        does (it was a 404: the websocket told strangers which VMs exist); a
        valid token for another name is used up.
        """
        for name in ("web", "ghost"):
            answer = await self.ws_get("not-a-token", name=name)
            assertError(self, answer, 403, "forbidden", "not valid (unknown or already used)")
        token = (await self.ticket("web"))["token"]
        assertError(self, await self.ws_get(token, name="ghost"), 403, "forbidden", "another VM")
        assertError(self, await self.ws_get(token, name="web"), 403, "forbidden", "already used")
        self.assertEqual(self.vnc.connections, [])

    async def test_other_origin(self):
        """A token presented by a page of another origin is refused, and used up."""
        token = (await self.ticket("web"))["token"]
        answer = await self.client.get(f"/console/ws/lab/web/{token}",
                                       headers={"Origin": "http://evil.example"})
        assertError(self, answer, 403, "forbidden", "Comet's own console page only")
        assertError(self, await self.ws_get(token), 403, "forbidden", "already used")
        self.assertEqual(self.vnc.connections, [])

    async def test_other_vm(self):
        """A token for VM web, presented for VM db: refused, and used up."""
        token = (await self.ticket("web"))["token"]
        answer = await self.ws_get(token, name="db")
        assertError(self, answer, 403, "forbidden")
        self.assertIn("another VM", answer.json["reason"])
        assertError(self, await self.ws_get(token, name="web"), 403, "forbidden")


class ConsolePageTests(ConsoleTestMixin, TestCase):
    async def setUp(self):
        await self.setUpConsole()
        self.novnc = temp_dir(self)
        os.makedirs(os.path.join(self.novnc, "core"))
        with open(os.path.join(self.novnc, "core", "rfb.js"), "w") as f:
            f.write("export default class RFB {}\n")
        self.patch(console_web, "NOVNC_DIR", self.novnc)

    async def test_page(self):
        answer = await self.client.get("/console/vnc", headers={"Accept": "text/html"})
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("content-type"), "text/html; charset=utf-8")
        self.assertIn(b"./novnc/core/rfb.js", answer.body)
        self.assertIn(b"/console/ws/", answer.body)

    async def test_novnc_file(self):
        answer = await self.client.get("/console/novnc/core/rfb.js")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("content-type"), "text/javascript")
        self.assertEqual(answer.body, b"export default class RFB {}\n")

    async def test_novnc_outside(self):
        """Nothing outside the noVNC folder is served."""
        for path in ("/console/novnc/core/nope.js", "/console/novnc/..%2F..%2Fetc%2Fpasswd"):
            answer = await self.client.get(path)
            self.assertEqual(answer.code, 404, path)

    async def test_missing_package(self):
        """Without the novnc package: 503 saying so."""
        self.patch(console_web, "NOVNC_DIR", os.path.join(self.novnc, "gone"))
        for path in ("/console/vnc", "/console/novnc/core/rfb.js"):
            answer = await self.client.get(path)
            assertError(self, answer, 503, "unavailable")
            self.assertIn("novnc", answer.json["reason"])


class WebsocketTests(ConsoleTestMixin, TestCase):
    """The websocket over a real listening port, with Autobahn's client."""

    async def setUp(self):
        await self.setUpConsole()
        self.api = CometAPI(self.models)
        port = reactor.listenTCP(0, Site(self.api.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.api_port = port.getHost().port

    def connect(self, token, name="web", origin=None):
        url = f"ws://127.0.0.1:{self.api_port}/console/ws/lab/{name}/{token}"
        factory = WebSocketClientFactory(url, protocols=["binary"], origin=origin)
        factory.protocol = _Client
        factory.opened, factory.closed, factory.first_message = Deferred(), Deferred(), Deferred()
        factory.messages = []
        factory.protocol_chosen = None
        connector = reactor.connectTCP("127.0.0.1", self.api_port, factory)
        self.addCleanup(connector.disconnect)
        return factory

    async def test_relay(self):
        """Bytes flow both ways, as binary frames with subprotocol binary."""
        token = (await self.ticket())["token"]
        client = self.connect(token)
        protocol = await _timeout(client.opened)
        self.assertEqual(client.protocol_chosen, "binary")
        await _timeout(client.first_message)
        self.assertEqual(client.messages, [(GREETING, True)])
        protocol.sendMessage(b"RFB 003.008\n\x01\x02", isBinary=True)
        await _timeout(self.vnc.got_data)
        self.assertEqual(self.vnc.received, b"RFB 003.008\n\x01\x02")
        self.assertEqual(len(self.vnc.connections), 1)
        # The browser closes: the relay closes its VNC connection.
        protocol.sendClose()
        await _timeout(client.closed)
        for _ in range(100):
            if not self.vnc.connections[0].transport.connected:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertFalse(self.vnc.connections[0].transport.connected)
        # The upgraded request no longer counts as in flight.
        self.assertEqual(self.api._in_flight, 0)

    async def test_bulk(self):
        """Megabytes each way arrive whole and in order (with flow control on both sides)."""
        token = (await self.ticket())["token"]
        client = self.connect(token)
        protocol = await _timeout(client.opened)
        await _timeout(client.first_message)
        vnc = self.vnc.connections[0]
        down = bytes(range(256)) * 4096 * 8  # 8 MiB to the browser
        up = bytes(reversed(range(256))) * 4096 * 4  # 4 MiB to VNC
        vnc.transport.write(down)
        for i in range(0, len(up), 65536):
            protocol.sendMessage(up[i : i + 65536], isBinary=True)
        for _ in range(1000):
            got = sum(len(m) for m, _ in client.messages)
            if got >= len(GREETING) + len(down) and len(self.vnc.received) >= len(up):
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(b"".join(m for m, _ in client.messages), GREETING + down)
        self.assertEqual(self.vnc.received, up)

    async def test_vnc_talks_while_closing(self):
        """VNC bytes that arrive while the websocket closes are dropped, not an error."""
        from twisted.internet.task import LoopingCall

        token = (await self.ticket())["token"]
        client = self.connect(token)
        protocol = await _timeout(client.opened)
        await _timeout(client.first_message)
        vnc = self.vnc.connections[0]
        chatter = LoopingCall(lambda: vnc.transport.write(b"x" * 1000))
        chatter.start(0.001)
        self.addCleanup(lambda: chatter.running and chatter.stop())
        await deferLater(reactor, 0.05, lambda: None)
        protocol.sendClose()
        await _timeout(client.closed)
        await deferLater(reactor, 0.1, lambda: None)
        chatter.stop()

    async def test_vnc_closes(self):
        """The VNC server closes: the websocket is closed too."""
        token = (await self.ticket())["token"]
        client = self.connect(token)
        await _timeout(client.opened)
        await _timeout(client.first_message)
        self.vnc.connections[0].transport.loseConnection()
        was_clean, code, reason = await _timeout(client.closed)
        self.assertEqual(code, 1000)

    async def test_token_used_once(self):
        """A second websocket with the same token is refused; VNC saw one connection."""
        token = (await self.ticket())["token"]
        first = self.connect(token)
        await _timeout(first.opened)
        await _timeout(first.first_message)
        second = self.connect(token)
        with self.assertRaises(Exception):
            await _timeout(second.opened)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(len(self.vnc.connections), 1)

    async def test_origin(self):
        """
        The console page's own origin opens the websocket; a page of another
        origin (another port of the same host too) does not, and VNC sees
        nothing of it.
        """
        for origin in ("http://evil.example", "http://127.0.0.1:1"):
            client = self.connect((await self.ticket())["token"], origin=origin)
            with self.assertRaises(Exception):
                await _timeout(client.opened)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.vnc.connections, [])
        client = self.connect((await self.ticket())["token"],
                              origin=f"http://127.0.0.1:{self.api_port}")
        await _timeout(client.opened)
        await _timeout(client.first_message)

    async def test_message_size_limit(self):
        """A message over [console] max_message closes the websocket (1009); VNC never gets it."""
        self.patch(self.models.console, "max_message", 4096)
        client = self.connect((await self.ticket())["token"])
        protocol = await _timeout(client.opened)
        await _timeout(client.first_message)
        protocol.sendMessage(b"y" * 4097, isBinary=True)
        was_clean, code, reason = await _timeout(client.closed)
        self.assertEqual(code, 1009)
        self.assertEqual(self.vnc.received, b"")

    async def test_session_limit(self):
        """A session is closed after [console] max_session seconds, whatever goes on in it."""
        from comet.web.console import CLOSE_SESSION_EXPIRED

        self.patch(self.models.console, "max_session", 0.3)
        client = self.connect((await self.ticket())["token"])
        protocol = await _timeout(client.opened)
        await _timeout(client.first_message)
        protocol.sendMessage(b"RFB 003.008\n", isBinary=True)
        was_clean, code, reason = await _timeout(client.closed)
        self.assertEqual((code, reason), (CLOSE_SESSION_EXPIRED,
                                          "the console session reached its limit of 0.3 s"))
        for _ in range(100):
            if not self.vnc.connections[0].transport.connected:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertFalse(self.vnc.connections[0].transport.connected)

    async def test_refused_before_vnc(self):
        """Unknown, expired, other-VM tokens: no websocket, and no connection to VNC."""
        clock = Clock()
        clock.advance(5000)
        self.patch(self.models.console, "_clock", clock)
        expired = (await self.ticket())["token"]
        clock.advance(TICKET_TTL + 1)
        other = (await self.ticket("db"))["token"]
        for token in ("nope", expired, other):
            client = self.connect(token)
            with self.assertRaises(Exception):
                await _timeout(client.opened)
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(self.vnc.connections, [])


class FakeSerialConsole:
    """Stands for L{comet.virt.console_stream.SerialConsole}; the last one made is C{made[-1]}."""

    made: list["FakeSerialConsole"] = []

    def __init__(self, reactor, uri, domain, received, ended):
        self.uri, self.domain = uri, domain
        self.received, self.ended = received, ended
        self.written = b""
        self.started = self.closed = False
        self.got_data, self.was_closed = Deferred(), Deferred()
        FakeSerialConsole.made.append(self)

    def start(self):
        self.started = True

    def write(self, data):
        self.written += data
        if not self.got_data.called:
            self.got_data.callback(None)

    def close(self):
        self.closed = True
        if not self.was_closed.called:
            self.was_closed.callback(None)


class SerialConsoleTests(ConsoleTestMixin, TestCase):
    async def setUp(self):
        await self.setUpConsole()
        FakeSerialConsole.made = []
        self.patch(console_web.SerialRelayProtocol, "console_factory", FakeSerialConsole)
        self.api = CometAPI(self.models)
        port = reactor.listenTCP(0, Site(self.api.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.api_port = port.getHost().port

    async def serial_ticket(self, name="web"):
        stub = self.client._stub
        url = f"http://comet.test/cluster/lab/vms/{name}/console?type=serial"
        response = await self.client._settle(
            stub.request("GET", url, allow_redirects=False,
                         headers={"Authorization": [self.client.authorization]})
        )
        self.assertEqual(response.code, 303)
        location = urlsplit(response.headers.getRawHeaders("location")[0])
        self.assertEqual(location.path, "/console/serial")
        return {k: v[0] for k, v in parse_qs(location.fragment).items()}

    async def test_303(self):
        """A serial ticket: token and VM, no VNC password (none is set)."""
        ticket = await self.serial_ticket()
        self.assertEqual(set(ticket), {"token", "vm"})
        self.assertEqual(self.displays.passwords, [])

    async def test_bad_type(self):
        answer = await self.client.get("/cluster/lab/vms/web/console?type=spice")
        assertError(self, answer, 400, "bad_request")

    async def test_page(self):
        answer = await self.client.get("/console/serial")
        self.assertEqual(answer.code, 200)
        self.assertIn(b"/console/ws/", answer.body)

    async def test_relay(self):
        """Guest output reaches the browser; the browser's bytes reach the guest; close closes."""
        ticket = await self.serial_ticket()
        client = WebsocketTests.connect(self, ticket["token"])
        protocol = await _timeout(client.opened)
        [console] = FakeSerialConsole.made
        self.assertTrue(console.started)
        self.assertEqual(console.domain, f"comet-{(await self.vm('web'))['uuid']}")
        self.assertTrue(console.uri.startswith("test:///"))
        console.received(b"comet-guest# ")
        await _timeout(client.first_message)
        self.assertEqual(client.messages, [(b"comet-guest# ", True)])
        protocol.sendMessage(b"echo hi\r", isBinary=True)
        await _timeout(console.got_data)
        self.assertEqual(console.written, b"echo hi\r")
        self.assertEqual(self.vnc.connections, [])
        protocol.sendClose()
        await _timeout(client.closed)
        # the server learns of the close in its own time (it drops the TCP
        # connection after its close frame, so the client may hear first)
        await _timeout(console.was_closed)
        self.assertTrue(console.closed)

    async def test_console_fails(self):
        """libvirt cannot open the console: the websocket closes with 4502 and why."""
        ticket = await self.serial_ticket()
        client = WebsocketTests.connect(self, ticket["token"])
        await _timeout(client.opened)
        FakeSerialConsole.made[0].ended("domain has no serial console")
        was_clean, code, reason = await _timeout(client.closed)
        self.assertEqual((code, reason), (console_web.CLOSE_BACKEND_FAILED, "domain has no serial console"))

    async def test_vnc_unreachable(self):
        """Nothing listens on the display's port: 4502."""
        self.displays.port = free_port()
        token = (await self.ticket())["token"]
        client = WebsocketTests.connect(self, token)
        await _timeout(client.opened)
        was_clean, code, reason = await _timeout(client.closed)
        self.assertEqual((code, reason), (console_web.CLOSE_BACKEND_FAILED, "cannot reach the VM's display"))

    async def test_console_ends(self):
        """The console ends (the domain stopped): the websocket closes."""
        ticket = await self.serial_ticket()
        client = WebsocketTests.connect(self, ticket["token"])
        await _timeout(client.opened)
        FakeSerialConsole.made[0].ended(None)
        was_clean, code, reason = await _timeout(client.closed)
        self.assertEqual(code, 1000)

    async def test_refused(self):
        """A serial token is single use, like a VNC one: no second console is opened."""
        token = (await self.serial_ticket())["token"]
        first = WebsocketTests.connect(self, token)
        await _timeout(first.opened)
        second = WebsocketTests.connect(self, token)
        with self.assertRaises(Exception):
            await _timeout(second.opened)
        self.assertEqual(len(FakeSerialConsole.made), 1)


#: Stands for ssh: records its argv, then relays stdio to the -W target (here, on loopback).
FAKE_SSH = r"""#!PYTHON
import os, socket, sys, threading
args = sys.argv[1:]
with open(os.environ["FAKE_SSH_LOG"], "a") as f:
    f.write(" ".join(args) + "\n")
host, port = args[args.index("-W") + 1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    data = s.recv(65536)
    if not data:
        break
    os.write(1, data)
"""

REMOTE = "qemu+ssh://comet@far.example:2222/system?keyfile=/etc/comet/id&no_verify=1"


class SSHTunnelTests(ConsoleTestMixin, TestCase):
    """The VNC display of a VM on a remote host is reached through C{ssh -W}."""

    async def setUp(self):
        import sys

        await self.setUpConsole()
        directory = temp_dir(self)
        ssh = os.path.join(directory, "ssh")
        with open(ssh, "w") as f:
            f.write(FAKE_SSH.replace("PYTHON", sys.executable))
        os.chmod(ssh, 0o755)
        self.log = os.path.join(directory, "ssh.log")
        self.patch(console_web, "SSH", ssh)
        self.patch(os, "environ", dict(os.environ, FAKE_SSH_LOG=self.log))
        uris = {name: REMOTE for name in self.models.console._uris}
        self.patch(self.models.console, "_uris", uris)
        self.api = CometAPI(self.models)
        port = reactor.listenTCP(0, Site(self.api.resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.api_port = port.getHost().port

    def test_argv(self):
        self.assertEqual(
            console_web.ssh_tunnel_argv(REMOTE, "127.0.0.1", 5901)[1:],
            ["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-p", "2222",
             "-i", "/etc/comet/id", "-o", "StrictHostKeyChecking=no",
             "-W", "127.0.0.1:5901", "--", "comet@far.example"],
        )
        self.assertEqual(
            console_web.ssh_tunnel_argv("qemu+ssh://h1/system?known_hosts=/k", "127.0.0.1", 1)[1:],
            ["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
             "-o", "UserKnownHostsFile=/k", "-W", "127.0.0.1:1", "--", "h1"],
        )

    async def test_relay_through_ssh(self):
        """Bytes flow both ways through ssh; closing the websocket ends ssh and the VNC connection."""
        token = (await self.ticket())["token"]
        client = WebsocketTests.connect(self, token)
        protocol = await _timeout(client.opened)
        await _timeout(client.first_message, 20)
        self.assertEqual(client.messages, [(GREETING, True)])
        protocol.sendMessage(b"hello", isBinary=True)
        await _timeout(self.vnc.got_data, 20)
        self.assertEqual(self.vnc.received, b"hello")
        with open(self.log) as f:
            argv = f.read().split()
        self.assertEqual(argv[-4:], ["-W", f"127.0.0.1:{self.displays.port}", "--", "comet@far.example"])
        protocol.sendClose()
        await _timeout(client.closed)
        for _ in range(200):
            if not self.vnc.connections[0].transport.connected:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertFalse(self.vnc.connections[0].transport.connected)

    async def test_ssh_fails(self):
        """ssh cannot reach the host: the websocket closes with 4502 and what ssh said."""
        import sys

        failing = os.path.join(temp_dir(self), "ssh")
        with open(failing, "w") as f:
            f.write(f"#!{sys.executable}\nimport sys\n"
                    "sys.stderr.write('comet@far.example: Permission denied (publickey).\\n')\n"
                    "sys.exit(255)\n")
        os.chmod(failing, 0o755)
        self.patch(console_web, "SSH", failing)
        token = (await self.ticket())["token"]
        client = WebsocketTests.connect(self, token)
        await _timeout(client.opened)
        was_clean, code, reason = await _timeout(client.closed, 20)
        self.assertEqual(code, console_web.CLOSE_BACKEND_FAILED)
        self.assertIn("Permission denied", reason)
        self.assertEqual(self.vnc.connections, [])
        self.flushLoggedErrors()
