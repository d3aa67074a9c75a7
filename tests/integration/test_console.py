"""
The browser console end to end: real headless Chromium (Debian's C{chromium},
driven over the DevTools protocol with Autobahn's websocket client) opens
C{GET …/console} of a TCG VM on the testbed's libvirtd, follows the 303 to the
noVNC page, the canvas connects through the daemon's websocket relay, and what
the canvas shows is the VM's own screenshot.

The API runs in this process (the real models, C{qemu:///system} as the only
compute host, no storage servers); the VM has no disk, so its screen is
SeaBIOS's.  Skipped, saying why, when the testbed, Chromium or noVNC is missing.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import secrets
import shutil
import subprocess

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from comet.config import HostConfig
from comet.web import CometAPI
from comet.web import console as console_web
from tests._api import APIClient, make_models
from tests._util import http, temp_dir
from tests.integration._testbed import requireTestbed
from tests.test_service import free_port

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class _DevTools(WebSocketClientProtocol):
    """A minimal Chrome DevTools protocol client: C{call(method, **params)}."""

    def onOpen(self):
        self._ids = itertools.count(1)
        self._pending: dict[int, Deferred] = {}
        self.factory.opened.callback(self)

    def call(self, method, **params):
        id = next(self._ids)
        d = self._pending[id] = Deferred()
        self.sendMessage(json.dumps({"id": id, "method": method, "params": params}).encode())
        return d.addTimeout(60, reactor)

    def onMessage(self, payload, isBinary):
        message = json.loads(payload)
        d = self._pending.pop(message.get("id"), None)
        if d is None:
            return
        if "error" in message:
            d.errback(RuntimeError(f"DevTools: {message['error']}"))
        else:
            d.callback(message.get("result", {}))

    async def evaluate(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


class BrowserConsoleTests(TestCase):
    timeout = 300

    async def setUp(self):
        stack = requireTestbed()
        if CHROMIUM is None:
            raise SkipTest("chromium is not installed (apt-get install chromium)")
        if not os.path.isfile(os.path.join(console_web.NOVNC_DIR, "core", "rfb.js")):
            raise SkipTest("noVNC is not installed (apt-get install novnc)")
        host = HostConfig(name="local", uri=stack["host_uri"], domain_type=stack["domain_type"])
        self.models = make_models(self, hosts=(host,))
        self.client = APIClient(CometAPI(self.models))
        port = reactor.listenTCP(0, Site(CometAPI(self.models).resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.name = "console-" + secrets.token_hex(3)
        J = {"template": "tiny"}
        self.assertEqual(
            (await self.client.post("/templates", {"name": "tiny", "memory": 128, "cpus": 1})).code,
            201,
        )
        self.assertEqual((await self.client.post("/cluster", {"name": "lab"})).code, 201)
        answer = await self.client.post("/cluster/lab/vms", dict(J, name=self.name))
        self.assertEqual(answer.code, 201, answer.body)
        self.addCleanup(self._remove_vm)
        answer = await self.client.post(f"/cluster/lab/vms/{self.name}/start")
        self.assertEqual(answer.code, 200, answer.body)
        self.vm = (await self.client.get(f"/cluster/lab/vms/{self.name}")).json
        self.assertEqual(self.vm["state"], "running")
        self.browser = await self._start_chromium()

    async def _remove_vm(self):
        domain = f"comet-{self.vm['uuid']}" if getattr(self, "vm", None) else None
        answer = await self.client.post(
            f"/cluster/lab/vms/{self.name}/stop", {"timeout": 0, "force": True}
        )
        if answer.code == 202:
            href = answer.header("location")
            for _ in range(600):
                if (await self.client.get(href)).json["status"] != "running":
                    break
                await _sleep(0.1)
        await self.client.delete(f"/cluster/lab/vms/{self.name}", {"force": True})
        if domain:  # whatever the API left
            for command in ("destroy", "undefine"):
                subprocess.run(
                    ["virsh", "-c", "qemu:///system", command, domain], capture_output=True
                )

    async def _start_chromium(self) -> _DevTools:
        port = free_port()
        profile = temp_dir(self, "comet-chromium-")
        self.chromium_log = open(os.path.join(profile, "chromium.log"), "wb")
        argv = [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--remote-debugging-port={port}",
            "--remote-allow-origins=*",
            f"--user-data-dir={profile}",
            "--window-size=1024,800",
            "about:blank",
        ]
        process = subprocess.Popen(argv, stdout=self.chromium_log, stderr=subprocess.STDOUT)

        def stop():
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.chromium_log.close()

        self.addCleanup(stop)
        client = http()
        for _ in range(300):
            try:
                response = await client.get(f"http://127.0.0.1:{port}/json/list")
                targets = json.loads(await response.content())
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    break
            except Exception:
                pass
            await _sleep(0.1)
        else:
            self.fail("chromium's DevTools did not answer")
        factory = WebSocketClientFactory(pages[0]["webSocketDebuggerUrl"])
        factory.protocol = _DevTools
        factory.opened = Deferred()
        connector = reactor.connectTCP("127.0.0.1", port, factory)
        self.addCleanup(connector.disconnect)
        return await factory.opened.addTimeout(30, reactor)

    async def _wait_state(self, state, timeout=60):
        seen = None
        for _ in range(int(timeout / 0.25)):
            seen = await self.browser.evaluate(
                "document.body ? document.body.dataset.state : null"
            )
            if seen == state:
                return
            await _sleep(0.25)
        status = await self.browser.evaluate(
            "document.getElementById('status') && document.getElementById('status').textContent"
        )
        self.fail(f"the console page is {seen!r} ({status!r}), not {state!r}")

    async def _canvas(self):
        from PIL import Image

        url = await self.browser.evaluate(
            "(() => { const c = document.querySelector('#screen canvas');"
            " return c && c.width > 0 ? c.toDataURL('image/png') : null; })()"
        )
        if not url:
            return None
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")

    async def _vm_screen(self):
        from PIL import Image

        png = await self.models.vms._hv.screenshot("local", f"comet-{self.vm['uuid']}")
        return Image.open(io.BytesIO(png)).convert("RGB")

    @staticmethod
    def _difference(a, b) -> float:
        """The fraction of pixels that differ between two images of one size."""
        from PIL import ImageChops

        diff = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > 48 else 0)
        return sum(diff.histogram()[255:]) / (a.width * a.height)

    async def test_canvas_shows_the_vm_screen(self):
        """Chromium follows the 303, the canvas connects, and shows the VM's screen."""
        await self.browser.call("Page.enable")
        await self.browser.call("Page.navigate", url=f"{self.base}/cluster/lab/vms/{self.name}/console")
        await self._wait_state("connected")
        location = await self.browser.evaluate("location.pathname + location.hash")
        self.assertEqual(location, "/console/vnc")  # the token left the address bar
        best = None
        for _ in range(60):
            canvas, screen = await self._canvas(), await self._vm_screen()
            if canvas is not None and canvas.size == screen.size:
                best = self._difference(canvas, screen)
                if best < 0.01:
                    break
            await _sleep(0.5)
        self.assertIsNotNone(best, "the canvas never had the size of the VM's screen")
        self.assertLess(best, 0.01, "the canvas does not show what the VM's screenshot shows")
        # The screen is not blank: SeaBIOS wrote something.
        extrema = screen.convert("L").getextrema()
        self.assertNotEqual(extrema[0], extrema[1])
        shot = await self.browser.call("Page.captureScreenshot", format="png")
        path = os.path.abspath(f"console-{self.name}.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

    async def test_reused_token_does_not_connect(self):
        """The page opened a second time with the same (used) token stays disconnected."""
        stub = self.client._stub
        url = f"http://comet.test/cluster/lab/vms/{self.name}/console"
        response = await self.client._settle(stub.request("GET", url, allow_redirects=False))
        self.assertEqual(response.code, 303, await self.client._settle(stub.content(response)))
        page = self.base + response.headers.getRawHeaders("location")[0]
        await self.browser.call("Page.enable")
        await self.browser.call("Page.navigate", url=page)
        await self._wait_state("connected")
        await self.browser.call("Page.navigate", url="about:blank")
        await self.browser.call("Page.navigate", url=page)
        await self._wait_state("disconnected")
