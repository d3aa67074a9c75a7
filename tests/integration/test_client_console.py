"""
C{comet vm console CLUSTER/VM --serial} on the testbed: the real C{comet}
command (installed in its own virtualenv, L{tests.client._cli}) runs in a
pseudo-terminal against an API served in this process for the testbed's
libvirtd, whose VM boots the testbed guest's kernel and initramfs (a root
shell on ttyS0).  The test reads the guest's prompt through the command,
runs a shell command in the guest, and leaves with Ctrl-].
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time

import attrs
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from comet.config import HostConfig
from comet.web import CometAPI
from tests._api import APIClient, make_models, make_token
from tests._util import temp_dir
from tests.client._cli import client_venv
from tests.integration._testbed import requireTestbed


class _Terminal(ProcessProtocol):
    """What the command writes to its terminal, and its end."""

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def childDataReceived(self, fd, data):
        self.output += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


def _sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


class SerialConsoleCommandTests(TestCase):
    timeout = 400

    async def setUp(self):
        stack = requireTestbed()
        self.guest = stack["guest"]
        host = HostConfig(name="local", uri=stack["host_uri"], domain_type=stack["domain_type"])
        self.models = make_models(self, hosts=(host,), wrap_hypervisors=self._boot_kernel)
        self.client = APIClient(CometAPI(self.models))
        port = reactor.listenTCP(0, Site(CometAPI(self.models).resource()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.name = "cli-" + secrets.token_hex(3)
        self.assertEqual((await self.client.post("/templates", {"name": "tiny", "memory": 192, "cpus": 1})).code, 201)
        self.assertEqual((await self.client.post("/cluster", {"name": "lab"})).code, 201)
        answer = await self.client.post("/cluster/lab/vms", {"template": "tiny", "name": self.name})
        self.assertEqual(answer.code, 201, answer.body)
        self.vm = answer.json
        self.addCleanup(self._remove_vm)
        answer = await self.client.post(f"/cluster/lab/vms/{self.name}/start")
        self.assertEqual(answer.code, 200, answer.body)

    def _boot_kernel(self, hypervisors):
        """Comet boots VMs from disks; this one boots the guest's kernel (no disk needed)."""
        define = hypervisors.define
        guest = requireTestbed()["guest"]

        def define_with_kernel(host, spec):
            return define(host, attrs.evolve(spec, kernel=guest["kernel"], initrd=guest["initrd"],
                                             cmdline=guest["cmdline"]))

        self.patch(hypervisors, "define", define_with_kernel)
        return hypervisors

    async def _remove_vm(self):
        answer = await self.client.post(f"/cluster/lab/vms/{self.name}/stop", {"timeout": 0, "force": True})
        if answer.code == 202:
            for _ in range(600):
                if (await self.client.get(answer.header("location"))).json["status"] != "running":
                    break
                await _sleep(0.1)
        await self.client.delete(f"/cluster/lab/vms/{self.name}", {"force": True})
        domain = f"comet-{self.vm['uuid']}"
        for command in ("destroy", "undefine"):
            subprocess.run(["virsh", "-c", "qemu:///system", command, domain], capture_output=True)

    async def _until(self, terminal: _Terminal, text: bytes, timeout: float, poke: bytes | None = None):
        deadline = time.monotonic() + timeout
        while text not in terminal.output:
            if terminal.ended.called or time.monotonic() > deadline:
                self.fail(f"{text!r} not seen on the terminal: {terminal.output[-2000:]!r}")
            if poke is not None:
                terminal.transport.write(poke)
            await _sleep(2 if poke is not None else 0.2)

    async def test_prompt_command_and_escape(self):
        token = make_token(self.models.users.db.path, "operator")
        venv = client_venv()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "HOME": temp_dir(self, "comet-client-home-"),
               "COMET_URL": self.base, "COMET_TOKEN": token, "TERM": "dumb"}
        terminal = _Terminal()
        reactor.spawnProcess(terminal, os.path.join(venv, "bin", "comet"),
                             ["comet", "vm", "console", f"lab/{self.name}", "--serial"],
                             env=env, usePTY=True)
        self.addCleanup(lambda: terminal.ended.called or terminal.transport.signalProcess("KILL"))
        await self._until(terminal, b"Ctrl-] leaves", 30)
        # The guest boots (TCG: up to minutes); Enter until its shell's prompt shows.
        await self._until(terminal, self.guest["prompt"].encode(), 240, poke=b"\r")
        n = secrets.randbelow(10**6)
        terminal.transport.write(f"echo from-comet $(({n}+1))\r".encode())
        await self._until(terminal, f"from-comet {n + 1}".encode(), 60)
        terminal.transport.write(b"\x1d")
        code = await terminal.ended
        self.assertEqual(code, 0, terminal.output[-2000:])
        self.assertIn(b"Serial console closed (left with Ctrl-])", terminal.output)
