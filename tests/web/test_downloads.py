"""
Volume downloads as an attacker would use them: to reach the daemon's own
host, its metadata service or its network (SSRF), to stall a download forever,
or to read credentials back from task messages.  Real HTTP servers on
loopback, the real API and models over in-memory storage servers.
"""

from __future__ import annotations

import ipaddress
import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from comet.config import StorageConfig
from comet.model.downloads import AddressPolicy, scrub
from tests._api import make_client
from tests.web.test_serve import assertError
from tests.web.test_storage import storage_models

#: Short limits so that a stall ends within the test.
FAST = dict(download_idle_timeout=0.5, download_connect_timeout=2.0)


class Recorder(Resource):
    """Counts requests; /image serves C{data}; /redirect sends them to C{location}."""

    isLeaf = True

    def __init__(self, data: bytes = b"", location: bytes = b""):
        super().__init__()
        self.data = data
        self.location = location
        self.requests: list[bytes] = []

    def render_GET(self, request):
        self.requests.append(request.uri)
        if request.path == b"/redirect":
            request.redirect(self.location)
            return b""
        request.setHeader(b"content-length", str(len(self.data)).encode())
        return self.data


class _Trickle(Resource):
    """
    /body: says 1 MiB are coming, then sends one byte a minute.
    /headers: never answers at all.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.calls = []
        self.open = []

    def render_GET(self, request):
        self.open.append(request)
        if request.path == b"/body":
            request.setHeader(b"content-length", str(1024 * 1024).encode())
            self._drip(request)
        return NOT_DONE_YET

    def _drip(self, request):
        if request.finished or request.channel is None:
            return
        request.write(b"x")
        self.calls.append(reactor.callLater(60, self._drip, request))

    def stop(self):
        for call in self.calls:
            if call.active():
                call.cancel()


class DownloadCase(TestCase):
    storage = StorageConfig(**FAST)

    def setUp(self):
        self.models = storage_models(self, storage=self.storage)
        self.client = make_client(self, self.models)

    def serve(self, resource, interface="127.0.0.1") -> str:
        site = Site(resource)
        site.timeOut = None
        port = reactor.listenTCP(0, site, interface=interface)
        self.addCleanup(port.stopListening)
        return f"http://{interface}:{port.getHost().port}"

    def ran(self):
        return [c for r in self.runners.values() for c in r.ran]

    async def create(self, url, name="img"):
        return await self.client.post("/storagepools/pool1/storagevolumes",
                                      {"name": name, "url": url})

    async def wait(self, answer):
        self.assertEqual(answer.code, 202, answer.body)
        await self.models.tasks.wait(answer.json["id"])
        return (await self.client.get(f"/tasks/{answer.json['id']}")).json

    def assertNothingMade(self, name="img"):
        self.assertNotIn(f"tank/comet/{name}", self.servers["s1"].datasets)
        self.assertEqual([c for c in self.ran() if c[:2] == ["zfs", "create"] or c[0] == "dd"],
                         [])


class PolicyTests(TestCase):
    def test_public_only_by_default(self):
        policy = AddressPolicy()
        for refused in ["127.0.0.1", "169.254.169.254", "10.1.2.3", "172.16.0.1",
                        "192.168.1.1", "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1",
                        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "224.0.0.1", "::"]:
            self.assertFalse(policy.permits(ipaddress.ip_address(refused)), refused)
        for allowed in ["8.8.8.8", "151.101.0.223", "2a00:1450:4001::200e"]:
            self.assertTrue(policy.permits(ipaddress.ip_address(allowed)), allowed)

    def test_allow_list(self):
        policy = AddressPolicy(["10.0.0.0/8", "127.0.0.1"])
        self.assertTrue(policy.permits(ipaddress.ip_address("10.9.9.9")))
        self.assertTrue(policy.permits(ipaddress.ip_address("127.0.0.1")))
        self.assertFalse(policy.permits(ipaddress.ip_address("127.0.0.2")))
        self.assertFalse(policy.permits(ipaddress.ip_address("169.254.169.254")))

    def test_scrub(self):
        self.assertEqual(scrub("https://user:pw@example.org:8443/a/b.img?token=s3cret#frag"),
                         "https://example.org:8443/a/b.img")
        self.assertEqual(scrub("http://u@[::1]/x?y"), "http://[::1]/x")


class RefusedAtRequestTests(DownloadCase):
    """Without download_allow, the host's own and private addresses are a 400: no task, nothing made."""

    async def test_literal_addresses(self):
        listening = Recorder(b"x")
        base = self.serve(listening)
        for url in [base + "/image", "http://169.254.169.254/latest/meta-data/",
                    "http://[::1]:22/", "http://10.200.0.21:22/", "https://192.168.1.1/",
                    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0:80/"]:
            answer = await self.create(url)
            assertError(self, answer, 400, "bad_request", "may not connect")
        self.assertEqual(listening.requests, [])
        self.assertEqual((await self.client.get("/tasks")).json, [])
        self.assertNothingMade()

    async def test_name_resolving_to_loopback(self):
        """A name (localhost, from /etc/hosts) that resolves to refused addresses only."""
        answer = await self.create("http://localhost:1/image")
        assertError(self, answer, 400, "bad_request", "may not connect to localhost")
        self.assertNothingMade()


class RedirectTests(DownloadCase):
    """The allowed server redirects to a refused address: the hop is checked too."""

    storage = StorageConfig(download_allow=("127.0.0.1/32",), **FAST)

    async def test_redirect_to_a_refused_address(self):
        inside = Recorder(os.urandom(1000))
        hidden = self.serve(inside, interface="127.0.0.2")
        outside = Recorder(location=(hidden + "/image").encode())
        base = self.serve(outside)
        task = await self.wait(await self.create(base + "/redirect"))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("may not connect to 127.0.0.2", task["message"])
        self.assertEqual(outside.requests, [b"/redirect"])
        self.assertEqual(inside.requests, [])  # never connected to
        self.assertNothingMade()
        assertError(self, await self.client.get("/storagepools/pool1/storagevolumes/img"),
                    404, "not_found")

    async def test_redirect_to_metadata_service(self):
        outside = Recorder(location=b"http://169.254.169.254/latest/meta-data/iam/")
        task = await self.wait(await self.create(self.serve(outside) + "/redirect"))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("may not connect to 169.254.169.254", task["message"])
        self.assertNothingMade()

    async def test_allowed_redirect_still_works(self):
        """A redirect within what is allowed is followed (the policy is not 'no redirects')."""
        data = os.urandom(4096)
        target = self.serve(Recorder(data))
        outside = Recorder(location=(target + "/image").encode())
        task = await self.wait(await self.create(self.serve(outside) + "/redirect"))
        self.assertEqual(task["status"], "finished", task)
        self.assertEqual(bytes(self.servers["s1"].datasets["tank/comet/img"].data[:4096]), data)


class StallTests(DownloadCase):
    storage = StorageConfig(download_allow=("127.0.0.0/8",), **FAST)

    def trickle(self):
        trickle = _Trickle()
        self.addCleanup(trickle.stop)
        return trickle, self.serve(trickle)

    async def test_one_byte_a_minute(self):
        """A body that trickles is ended by the idle-read timeout; the zvol is destroyed."""
        trickle, base = self.trickle()
        started = reactor.seconds()
        task = await self.wait(await self.create(base + "/body"))
        self.assertLess(reactor.seconds() - started, 10)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("received nothing for 0.5 s", task["message"])
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)
        # It got as far as writing, then was undone.
        self.assertTrue([c for c in self.ran() if c[:2] == ["zfs", "destroy"]])
        self.assertTrue(all(r.finished or r.channel is None or r._disconnected
                            for r in trickle.open))

    async def test_no_headers(self):
        """A server that accepts and never answers is ended too, before anything is made."""
        _, base = self.trickle()
        task = await self.wait(await self.create(base + "/headers"))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("received nothing for 0.5 s", task["message"])
        self.assertNothingMade()


class TotalLimitTests(DownloadCase):
    storage = StorageConfig(download_allow=("127.0.0.0/8",), download_idle_timeout=5.0,
                            download_timeout=1.0)

    async def test_total_limit(self):
        """A server that keeps the line busy (a byte every 0.1 s) is stopped by the total limit."""

        class Steady(Resource):
            isLeaf = True
            calls = []

            def render_GET(self, request):
                request.setHeader(b"content-length", str(1024 * 1024).encode())

                def drip():
                    if not request.finished and not request._disconnected:
                        request.write(b"x")
                        self.calls.append(reactor.callLater(0.1, drip))

                drip()
                return NOT_DONE_YET

        steady = Steady()
        self.addCleanup(lambda: [c.cancel() for c in steady.calls if c.active()])
        task = await self.wait(await self.create(self.serve(steady) + "/image"))
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("did not finish within 1 s", task["message"])
        self.assertNotIn("tank/comet/img", self.servers["s1"].datasets)


class ConcurrencyTests(DownloadCase):
    storage = StorageConfig(download_allow=("127.0.0.0/8",), max_downloads=1,
                            download_idle_timeout=30.0)

    async def test_downloads_wait_in_line(self):
        """With max_downloads = 1 the second download waits (saying so) until the first ends."""
        release = Deferred()
        data = os.urandom(2048)

        class Held(Resource):
            isLeaf = True
            active = 0
            most = 0

            def render_GET(self, request):
                Held.active += 1
                Held.most = max(Held.most, Held.active)
                request.setHeader(b"content-length", str(len(data)).encode())

                def go(_):
                    Held.active -= 1
                    request.write(data)
                    request.finish()

                if request.path == b"/first":
                    release.addCallback(go)
                else:
                    go(None)
                return NOT_DONE_YET

        base = self.serve(Held())
        first = await self.create(base + "/first", "one")
        second = await self.create(base + "/second", "two")
        self.assertEqual(second.code, 202)
        await deferLater(reactor, 0.3, lambda: None)
        waiting = (await self.client.get(f"/tasks/{second.json['id']}")).json
        self.assertEqual(waiting["status"], "running")
        self.assertIn("waiting for a download slot", waiting["message"])
        self.assertEqual(Held.active, 1)
        release.callback(None)
        for answer in (first, second):
            self.assertEqual((await self.wait(answer))["status"], "finished")
        self.assertEqual(Held.most, 1)


class MessageTests(DownloadCase):
    storage = StorageConfig(download_allow=("127.0.0.0/8",), **FAST)

    async def test_credentials_never_shown(self):
        """User-info and query string stay out of task messages, whether it works or not."""
        base = self.serve(Recorder(b"abc"))
        secret_base = base.replace("http://", "http://alice:pw-s3cret@")
        done = await self.wait(await self.create(secret_base + "/image?token=s3cret"))
        self.assertEqual(done["status"], "finished", done)
        failed = await self.wait(await self.create(secret_base + "/redirect?token=s3cret", "b"))
        self.assertEqual(failed["status"], "failed", failed)
        everything = str((await self.client.get("/tasks")).json)
        self.assertNotIn("s3cret", everything)
        self.assertNotIn("alice", everything)
        self.assertIn(base + "/image", done["message"])

    async def test_userinfo_is_basic_auth(self):
        """user:password@ in the URL is sent as HTTP Basic credentials, not taken for the host."""

        class Guarded(Resource):
            isLeaf = True

            def render_GET(self, request):
                if (request.getUser(), request.getPassword()) != (b"alice", b"pw s3cret"):
                    request.setResponseCode(401)
                    return b"who?"
                request.setHeader(b"content-length", b"3")
                return b"abc"

        base = self.serve(Guarded()).replace("http://", "http://alice:pw%20s3cret@")
        task = await self.wait(await self.create(base + "/image"))
        self.assertEqual(task["status"], "finished", task)
        self.assertNotIn("s3cret", task["message"])


class HostNameTests(DownloadCase):
    async def test_invalid_host_name(self):
        """A host no resolver could take (found by schemathesis) is a 400, not a task's traceback."""
        answer = await self.create("http://\x96E\U0001f60d\x81\xcb.J/image")
        # The request schema itself refuses it now (it names hosts as IDNA takes them).
        assertError(self, answer, 400, "bad_request", "url must be an http or https URL")
