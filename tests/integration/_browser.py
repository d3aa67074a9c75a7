"""
Headless Chromium (Debian's C{chromium}) for tests, driven over the DevTools
protocol with Autobahn's websocket client: L{start_chromium}.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from tests._util import http, temp_dir
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


class DevTools(WebSocketClientProtocol):
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


async def start_chromium(testcase) -> DevTools:
    """
    Start headless Chromium on a blank page for C{testcase} (stopped at its
    cleanup; its log is C{testcase.chromium_log}) and connect to its page.
    """
    port = free_port()
    profile = temp_dir(testcase, "comet-chromium-")
    testcase.chromium_log = open(os.path.join(profile, "chromium.log"), "wb")
    argv = [
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--remote-debugging-port={port}",
        "--remote-allow-origins=*",
        f"--user-data-dir={profile}",
        "--window-size=1024,800",
        "about:blank",
    ]
    process = subprocess.Popen(argv, stdout=testcase.chromium_log, stderr=subprocess.STDOUT)

    def stop():
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        testcase.chromium_log.close()

    testcase.addCleanup(stop)
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
        testcase.fail("chromium's DevTools did not answer")
    factory = WebSocketClientFactory(pages[0]["webSocketDebuggerUrl"])
    factory.protocol = DevTools
    factory.opened = Deferred()
    connector = reactor.connectTCP("127.0.0.1", port, factory)
    testcase.addCleanup(connector.disconnect)
    return await factory.opened.addTimeout(30, reactor)
