"""
The browser console end to end: real headless Chromium (Debian's C{chromium},
driven over the DevTools protocol with Autobahn's websocket client) opens
C{GET …/console} of a TCG VM on the testbed's libvirtd, follows the 303 to the
noVNC page, the canvas connects through the daemon's websocket relay, and what
the canvas shows is the VM's own screenshot.

The API runs in this process (the real models, C{qemu:///system} as the only
compute host, no storage servers); the VM has no disk, so its screen is
SeaBIOS's; the keyboard and serial tests boot the testbed guest's kernel and
initramfs directly.  Skipped, saying why, when the testbed, Chromium or noVNC
is missing.  C{COMET_CONSOLE_SCREENSHOT=/tmp/x.png} keeps the page's screenshot.
"""

from __future__ import annotations

import base64
import time
import io
import os
import secrets
import subprocess

import attrs
import libvirt
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from comet.config import HostConfig
from comet.web import CometAPI
from comet.web import console as console_web
from tests._api import APIClient, make_models
from tests.integration._browser import CHROMIUM, DevTools, start_chromium
from tests.integration._testbed import requireTestbed

def _sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class _BrowserConsole(TestCase):
    timeout = 300
    #: Boot the testbed guest's kernel and initramfs directly (no disk needed).
    kernel_boot = False

    async def setUp(self):
        stack = requireTestbed()
        if CHROMIUM is None:
            raise SkipTest("chromium is not installed (apt-get install chromium)")
        if not os.path.isfile(os.path.join(console_web.NOVNC_DIR, "core", "rfb.js")):
            raise SkipTest("noVNC is not installed (apt-get install novnc)")
        host = HostConfig(name="local", uri=stack["host_uri"], domain_type=stack["domain_type"])
        self.models = make_models(self, hosts=(host,), wrap_hypervisors=self._keep_hypervisors)
        if self.kernel_boot:
            self._boot_guest_kernel(stack["guest"])
        self.client = APIClient(CometAPI(self.models))
        port = reactor.listenTCP(0, Site(CometAPI(self.models).resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.name = "console-" + secrets.token_hex(3)
        J = {"template": "tiny"}
        self.assertEqual(
            (await self.client.post("/templates", {"name": "tiny", "memory": 192, "cpus": 1})).code,
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

    def _keep_hypervisors(self, hypervisors):
        """The models' libvirt adapter, kept to read the screen and to boot a kernel."""
        self.hypervisors = hypervisors
        return hypervisors

    def _boot_guest_kernel(self, guest):
        """
        Comet boots VMs from their disks; these boot the testbed guest's kernel
        and initramfs (root shells on ttyS0 and tty1) through a define that adds
        them to the domain Comet asks for.
        """
        hypervisors = self.hypervisors
        define = hypervisors.define

        def define_with_kernel(host, spec):
            return define(
                host,
                attrs.evolve(
                    spec, kernel=guest["kernel"], initrd=guest["initrd"], cmdline=guest["cmdline"]
                ),
            )

        self.patch(hypervisors, "define", define_with_kernel)

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

    async def _start_chromium(self) -> DevTools:
        return await start_chromium(self)

    async def navigate(self, url):
        """
        Open C{url} in Chromium as an operator would: every request it makes
        carries the test admin's token (the console page and noVNC need none;
        the websocket is authorised by the ticket in its URI).
        """
        await self.browser.call("Network.enable")
        await self.browser.call(
            "Network.setExtraHTTPHeaders", headers={"Authorization": self.client.authorization}
        )
        await self.browser.call("Page.navigate", url=url)

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

        png = await self.hypervisors.screenshot("local", f"comet-{self.vm['uuid']}")
        return Image.open(io.BytesIO(png)).convert("RGB")

    @staticmethod
    def _difference(a, b) -> float:
        """The fraction of pixels that differ between two images of one size."""
        from PIL import ImageChops

        diff = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v > 48 else 0)
        return sum(diff.histogram()[255:]) / (a.width * a.height)


class BrowserConsoleTests(_BrowserConsole):
    async def test_canvas_shows_the_vm_screen(self):
        """Chromium follows the 303, the canvas connects, and shows the VM's screen."""
        await self.browser.call("Page.enable")
        await self.navigate(f"{self.base}/cluster/lab/vms/{self.name}/console")
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
        # The page's own screenshot shows the canvas (the guest's screen, not blank).
        from PIL import Image

        shot = base64.b64decode((await self.browser.call("Page.captureScreenshot", format="png"))["data"])
        page = Image.open(io.BytesIO(shot)).convert("L")
        box = await self.browser.evaluate(
            "(() => { const r = document.querySelector('#screen canvas').getBoundingClientRect();"
            " return [r.left, r.top, r.right, r.bottom].map(Math.round); })()"
        )
        self.assertGreater(box[2] - box[0], 100)
        low, high = page.crop(tuple(box)).getextrema()
        self.assertLess(low, 50)
        self.assertGreater(high, 150)
        if os.environ.get("COMET_CONSOLE_SCREENSHOT"):  # a file to look at
            with open(os.environ["COMET_CONSOLE_SCREENSHOT"], "wb") as f:
                f.write(shot)

    async def test_reused_token_does_not_connect(self):
        """The page opened a second time with the same (used) token stays disconnected."""
        stub = self.client._stub
        url = f"http://comet.test/cluster/lab/vms/{self.name}/console"
        response = await self.client._settle(
            stub.request("GET", url, allow_redirects=False,
                         headers={"Authorization": [self.client.authorization]})
        )
        self.assertEqual(response.code, 303, await self.client._settle(stub.content(response)))
        page = self.base + response.headers.getRawHeaders("location")[0]
        await self.browser.call("Page.enable")
        await self.browser.call("Page.navigate", url=page)
        await self._wait_state("connected")
        await self.browser.call("Page.navigate", url="about:blank")
        await self.browser.call("Page.navigate", url=page)
        await self._wait_state("disconnected")


#: US keyboard: character -> (key, code, Windows virtual key code), unshifted only.
def _key(c):
    if c.isalpha():
        return c, f"Key{c.upper()}", ord(c.upper())
    if c.isdigit():
        return c, f"Digit{c}", ord(c)
    return {" ": (" ", "Space", 32), "/": ("/", "Slash", 191), "-": ("-", "Minus", 189),
            "\n": ("Enter", "Enter", 13)}[c]


def _read_serial(domain: str, wanted: str, timeout: float) -> str:
    """The guest's serial output, read through libvirt, until C{wanted} appears (or time is up)."""
    conn = libvirt.open("qemu:///system")
    try:
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        conn.lookupByName(domain).openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        seen = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and wanted.encode() not in seen:
            data = stream.recv(4096)
            if data == -2 or data == b"":
                time.sleep(0.1)
                continue
            seen += data
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        return seen.decode("utf-8", "replace")
    finally:
        conn.close()


class GuestKeyboardTests(_BrowserConsole):
    kernel_boot = True

    async def type(self, text):
        """Type C{text} as real key events of the page (noVNC turns them into VNC keys)."""
        for c in text:
            key, code, vk = _key(c)
            down = dict(key=key, code=code, windowsVirtualKeyCode=vk, nativeVirtualKeyCode=vk)
            if key != "Enter":
                down["text"] = key
            else:
                down["text"] = "\r"
            await self.browser.call("Input.dispatchKeyEvent", type="keyDown", **down)
            await self.browser.call(
                "Input.dispatchKeyEvent", type="keyUp", key=key, code=code,
                windowsVirtualKeyCode=vk, nativeVirtualKeyCode=vk,
            )
            await _sleep(0.03)

    async def test_typed_keys_reach_the_guest(self):
        """Keys typed into the page reach the guest's shell on tty1 (seen on its serial output)."""
        domain = f"comet-{self.vm['uuid']}"
        ready = await deferToThread(_read_serial, domain, "COMET-GUEST: ready", 120)
        self.assertIn("COMET-GUEST: ready", ready)
        await self.browser.call("Page.enable")
        await self.navigate(f"{self.base}/cluster/lab/vms/{self.name}/console")
        await self._wait_state("connected")
        await self.browser.evaluate("window.rfb.focus()")
        word = "keys" + secrets.token_hex(4)
        reading = deferToThread(_read_serial, domain, word, 60)
        await _sleep(1)
        # On tty1 (the screen): copy the next line to /dev/console, which is
        # ttyS0 (the last console= of the guest's command line).
        await self.type("\ntee /dev/console\n")
        await self.type(word + "\n")
        serial = await reading
        self.assertIn(word, serial)

    async def test_serial_console_in_the_browser(self):
        """
        ?type=serial: the page shows the guest's serial output, and keys typed
        there run in its shell on ttyS0 (through libvirt's console stream).
        """
        domain = f"comet-{self.vm['uuid']}"
        ready = await deferToThread(_read_serial, domain, "COMET-GUEST: ready", 120)
        self.assertIn("COMET-GUEST: ready", ready)
        await self.browser.call("Page.enable")
        await self.navigate(f"{self.base}/cluster/lab/vms/{self.name}/console?type=serial")
        await self._wait_state("connected")
        location = await self.browser.evaluate("location.pathname + location.hash")
        self.assertEqual(location, "/console/serial")
        n = secrets.randbelow(900) + 100
        await self.type(f"\necho serial {n} {n}\n")
        # The output's own line, ended by the next prompt's: the typed command
        # ("echo serial n n") shows first, and under load the output a while later.
        text = ""
        for _ in range(600):
            text = await self.browser.evaluate("document.getElementById('screen').textContent")
            if f"\nserial {n} {n}\n" in text:
                break
            await _sleep(0.1)
        self.assertIn(f"\nserial {n} {n}\n", text)
