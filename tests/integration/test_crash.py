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
import secrets
import shutil
import signal
import tempfile
import time

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests._process import spawn
from tests._util import temp_dir
from tests.integration import _testbed
from tests.integration._testbed import requireTestbed
from tests.integration import test_compute as _compute
from tests.integration.test_compute import _sleep, comet_config
from tests.test_service import TWISTD, _twistd_env, free_port

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


class CrashIntegrationTests(TestCase):
    """SIGKILL during a volume create; the next start repairs it."""

    timeout = 300

    # The child and its API, as the compute test runs them.
    _log_tail = _compute.ComputeIntegrationTests._log_tail
    _wait_listening = _compute.ComputeIntegrationTests._wait_listening
    _stop_twistd = _compute.ComputeIntegrationTests._stop_twistd
    request = _compute.ComputeIntegrationTests.request
    get = _compute.ComputeIntegrationTests.get

    def setUp(self):
        self.stack = requireTestbed()
        self.token = secrets.token_hex(3)
        self.directory = temp_dir(self)
        control = tempfile.mkdtemp(prefix="cr-", dir="/tmp")
        self.addCleanup(shutil.rmtree, control, True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config = comet_config(self.stack, self.directory, self.port, control)
        # Retry soon a repair that could not be made at start (a zvol still busy).
        with open(self.config, "a") as f:
            f.write("[reconcile]\ninterval = 2\n")
        self.logfile = os.path.join(self.directory, "twistd.log")

    async def _spawn(self):
        self.process, self.done = spawn(
            TWISTD + ["-n", "--pidfile=", "--logfile", self.logfile, "comet",
                      "--config", self.config],
            env=_twistd_env(), path=self.directory)
        await self._wait_listening()

    async def _kill_first(self, process, done):
        if not done.called:
            process.signalProcess("KILL")
            await done

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

        await self._spawn()
        self.addCleanup(self._kill_first, self.process, self.done)
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

        await self._spawn()
        self.addCleanup(self._stop_twistd)
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
