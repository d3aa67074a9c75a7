"""
Crash safety on the real testbed: a C{twistd -n comet} child is killed with
SIGKILL in the middle of a volume create (its zvol made, the image half
written), started again over the same database, and the reconciler removes
the half-made zvol and fails the task with what it repaired.  Skipped, with
the reason, when the testbed is not up.

The volume's name holds a random token; it is destroyed directly over ssh if
the test fails before the daemon does.
"""

from __future__ import annotations

import os
import signal
import time

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests._process import spawn
from tests.integration import _testbed
from tests.integration._daemon import CometDaemonCase, _sleep
from tests.test_service import TWISTD, _twistd_env

MiB = 1024**2


class _Stalling(Resource):
    """Says it will send 64 MiB, sends 1 MiB, then nothing more (ever)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_GET(self, request):
        request.setHeader(b"content-length", str(64 * MiB).encode())
        request.write(b"\xab" * MiB)
        self.requests.append(request)
        return NOT_DONE_YET

    def close(self):
        for request in self.requests:
            if request.channel is not None and request.channel.transport is not None:
                request.channel.transport.abortConnection()


class CrashIntegrationTests(CometDaemonCase):
    """SIGKILL during a volume create; the next start repairs it."""

    timeout = 300

    async def _restart(self):
        """Start the daemon again over the same files, retrying repairs every 2 s."""
        directory = os.path.dirname(self.logfile)
        config = os.path.join(directory, "comet.toml")
        with open(config, "a") as f:
            f.write("[reconcile]\ninterval = 2\n")
        self.process, self.done = spawn(
            TWISTD + ["-n", "--pidfile=", "--logfile", self.logfile, "comet", "--config", config],
            env=_twistd_env(), path=directory)
        await self._wait_listening()

    async def _zvols(self, server) -> list[str]:
        out = await _testbed.ssh(self.stack, server,
                                 f"zfs list -H -o name -t volume -r {server['dataset']}")
        return out.split()

    async def test_sigkill_during_volume_create(self):
        """The half-written zvol of a killed create is destroyed at the next start."""
        server = self.stack["servers"][0]
        pool = server["storagepool"]
        name = f"it-{self.token}-crash"
        zvol = f"{server['dataset']}/{name}"
        self.addCleanup(_testbed.ssh, self.stack, server,
                        f"zfs destroy {zvol} 2>/dev/null || true", check=False)

        image = _Stalling()
        site = Site(image)
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(image.close)
        url = f"http://127.0.0.1:{listening.getHost().port}/image"

        answer = await self.request(
            "POST", f"/storagepools/{pool}/storagevolumes", {"name": name, "url": url})
        self.assertEqual(answer.code, 202, answer)
        task_href = answer.json["href"]

        # Wait until the zvol exists and the image is being written.
        deadline = time.monotonic() + 60
        while True:
            task = await self.get(task_href)
            if zvol in await self._zvols(server) and " bytes" in task["message"]:
                break
            self.assertEqual(task["status"], "running", task)
            if time.monotonic() > deadline:
                self.fail(f"the create did not start writing: {task}\n{self._log_tail()}")
            await _sleep(0.5)

        self.process.signalProcess("KILL")
        outcome = await self.done
        self.assertEqual(outcome.signal, signal.SIGKILL)
        self.assertIn(zvol, await self._zvols(server))

        await self._restart()
        deadline = time.monotonic() + 60
        while zvol in await self._zvols(server):
            if time.monotonic() > deadline:
                self.fail(f"{zvol} is still there after the restart:\n{self._log_tail()}")
            await _sleep(1)
        task = await self.get(task_href)
        self.assertEqual(task["status"], "failed", task)
        self.assertIn("repaired", task["message"])
        self.assertIn(f"volume.create of {pool}/{name}", task["message"])
        answer = await self.request("GET", f"/storagepools/{pool}/storagevolumes/{name}")
        self.assertEqual(answer.code, 404, answer)
        self.assertIn("reconciler:", self._log_tail(20000))
