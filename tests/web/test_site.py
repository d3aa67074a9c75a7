"""
The API on real ports: a body over the limit refused before it is read, and
TLS (an ``ssl:`` endpoint with a certificate made here) with a real TLS client.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.internet.ssl import Certificate
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from comet import config
from comet.admin import bootstrap
from comet.service import makeService
from comet.web import CometAPI
from comet.web._site import api_site
from tests._api import fixed_guard, make_models
from tests._util import bearer, temp_dir


def make_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key: (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


class _Collect(Protocol):
    def __init__(self, payload: bytes):
        self.payload = payload
        self.data = b""
        self.closed = Deferred()

    def connectionMade(self):
        self.transport.write(self.payload)

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.closed.callback(self.data)


class BodyLimitTests(TestCase):
    async def test_refused_before_reading(self):
        """
        A Content-Length over the limit is answered 413 and the connection
        closed as soon as the headers are in: the body is never sent here.
        """
        api = CometAPI(make_models(self), guard=fixed_guard())
        port = reactor.listenTCP(0, api_site(api.resource(), 1000), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        head = (
            b"POST /cluster HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        client = _Collect(head)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        answer = await client.closed
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertIn(b'"error": "payload_too_large"', answer)

    async def test_chunked_cut_off(self):
        """A chunked body is counted as it comes and cut off past the limit."""
        api = CometAPI(make_models(self), guard=fixed_guard())
        port = reactor.listenTCP(0, api_site(api.resource(), 1000), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        chunk = b"x" * 600
        head = (
            b"POST /cluster HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2
        )
        client = _Collect(head)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        answer = await client.closed
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)

    async def test_small_body_passes(self):
        api = CometAPI(make_models(self), guard=fixed_guard())
        port = reactor.listenTCP(0, api_site(api.resource(), 1000), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.post(
            f"http://127.0.0.1:{port.getHost().port}/cluster", json={"name": "ok"}, pool=pool
        )
        self.assertEqual(response.code, 201)
        await response.content()


class _Gated:
    """An authenticator that holds every request until L{release}."""

    def __init__(self):
        self.requests = []
        self.waiting = Deferred()
        self.gate = Deferred()

    async def identify(self, request):
        from comet.web._auth import Identity

        self.requests.append(request)
        self.waiting.callback(None)
        await self.gate
        return Identity("test", "admin")


class ClientGoneTests(TestCase):
    async def test_change_whose_client_left_during_authentication(self):
        """
        A POST whose client goes away while its credentials are checked is
        not run, nothing is written to the closed request, and no error is
        logged (it read the closed body: "ValueError: I/O operation on
        closed file", a 500 in the log).
        """
        from comet.web._auth import Guard

        models = make_models(self)
        gated = _Gated()
        api = CometAPI(models, guard=Guard(gated, models.users))
        port = reactor.listenTCP(0, api_site(api.resource(), 1000), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        body = b'{"name": "lab"}'
        head = (
            b"POST /cluster HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        client = _Collect(head + body)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        await gated.waiting
        (request,) = gated.requests
        lost = request.notifyFinish()
        client.transport.loseConnection()
        await client.closed
        await lost.addErrback(lambda f: None)
        gated.gate.callback(None)
        await api.drain()
        for _ in range(5):
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(await models.clusters.list(), [])
        self.assertEqual(client.data, b"")


class TLSTests(TestCase):
    async def test_tls(self):
        """The daemon on an ssl: endpoint serves a TLS client that trusts the test certificate."""
        directory = temp_dir(self)
        cert, key = make_certificate(directory)
        db = os.path.join(directory, "comet.sqlite")
        token = bootstrap(db)
        text = (
            f'[api]\nendpoint = "ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"\n'
            f'[database]\npath = "{db}"\n'
        )
        service = makeService(config.parse(text))
        service.startService()
        self.addCleanup(service.stopService)
        await service.ready
        port = service.port.getHost().port
        with open(cert, "rb") as f:
            trust = Certificate.loadPEM(f.read())
        agent = Agent(
            reactor,
            contextFactory=BrowserLikePolicyForHTTPS(trustRoot=trust),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
        client = treq.client.HTTPClient(agent)
        response = await client.get(f"https://localhost:{port}/cluster", headers=bearer(token))
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.json(), [])
        refused = await client.get(f"https://localhost:{port}/cluster")
        self.assertEqual(refused.code, 401)
        await refused.content()
        # A client that does not trust the certificate gets no answer at all.
        untrusting = treq.client.HTTPClient(
            Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        )
        with self.assertRaises(Exception):
            await untrusting.get(f"https://localhost:{port}/health")
