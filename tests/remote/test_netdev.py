"""
L{comet.remote.netdev} on the real thing (C{ip} and C{bridge} in a network
namespace of its own, C{unshare --net}) and on the fake beside it
(L{comet.remote.fakenet}): the same steps, the same answers.
"""

from __future__ import annotations

import json
import os
import subprocess

from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from comet.errors import CommandFailed, InvalidInput
from comet.remote import check_argv
from comet.remote.fakenet import FakeHostNetwork
from comet.remote.netdev import HostNetwork, ParseError, parse_devices

PEERS = ["192.0.2.2", "192.0.2.3"]


class NamespaceRunner:
    """Runs argv in a network namespace of its own (held by a C{sleep})."""

    def __init__(self, testcase: TestCase):
        self.host = "netns"
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])
        testcase.addCleanup(self._end)

    def _end(self):
        self.holder.kill()
        self.holder.wait()

    async def run(self, argv, stdin=None, timeout=None):
        argv = check_argv(argv)
        out, err, code = await getProcessOutputAndValue(
            "nsenter", ["-t", str(self.holder.pid), "-n", "--", *argv], env=os.environ,
            reactor=reactor)
        if code != 0:
            raise CommandFailed(argv, code, err.decode().strip(), self.host)
        return out

    def stop(self):
        return succeed(None)


class NetdevContract:
    def runner(self):
        raise NotImplementedError

    async def fdb(self, runner, name) -> list[str]:
        raise NotImplementedError

    async def setUp(self):
        self.run = self.runner()
        # A namespace needs a moment to exist once its holder runs.
        for _ in range(100):
            try:
                await self.run.run(["ip", "link", "add", "br0", "type", "bridge"])
                break
            except CommandFailed:
                from twisted.internet.task import deferLater
                await deferLater(reactor, 0.02, lambda: None)
        self.net = HostNetwork(self.run, "192.0.2.1", ["192.0.2.1", *PEERS])

    async def test_up_and_down(self):
        net = self.net
        self.assertEqual(await net.vnis(), set())   # br0 is not Comet's
        self.assertEqual(net.peers, tuple(PEERS))    # itself left out
        self.assertTrue(await net.add_bridge(7))
        self.assertFalse(await net.add_bridge(7))
        self.assertTrue(await net.add_tunnel(7))
        self.assertFalse(await net.add_tunnel(7))
        devices = await net.devices()
        self.assertEqual(sorted(devices), ["cometb7", "cometv7"])
        bridge, vxlan = devices["cometb7"], devices["cometv7"]
        self.assertEqual((bridge.role, bridge.kind, bridge.vni, bridge.up), ("bridge", "bridge", 7, True))
        self.assertEqual((vxlan.role, vxlan.kind, vxlan.master, vxlan.up),
                         ("vxlan", "vxlan", "cometb7", True))
        self.assertEqual(sorted(await self.fdb(self.run, "cometv7")), PEERS)
        self.assertEqual(await net.vnis(), {7})
        self.assertTrue(await net.remove(7, "vxlan"))
        self.assertTrue(await net.remove(7, "bridge"))
        self.assertFalse(await net.remove(7, "bridge"))
        self.assertEqual(await net.vnis(), set())

    async def test_half_made_tunnel_made_again(self):
        """A VXLAN device left outside its bridge (a crash) is made again, complete."""
        net = self.net
        await net.add_bridge(9)
        await self.run.run(["ip", "link", "add", "cometv9", "type", "vxlan", "id", "9",
                            "local", "192.0.2.1", "dstport", "4789"])
        self.assertEqual((await net.devices())["cometv9"].master, None)
        self.assertTrue(await net.add_tunnel(9))
        self.assertEqual((await net.devices())["cometv9"].master, "cometb9")
        self.assertEqual(sorted(await self.fdb(self.run, "cometv9")), PEERS)

    async def test_bad_input(self):
        with self.assertRaises(CommandFailed):
            await self.run.run(["ip", "link", "del", "cometb1"])
        for vni in (0, 16777216, "7", True):
            with self.assertRaises(InvalidInput):
                await self.net.add_bridge(vni)


class FakeNetdevTests(NetdevContract, TestCase):
    def runner(self):
        return FakeHostNetwork("fake")

    async def fdb(self, runner, name):
        return list(runner.links[name]["fdb"])


class RealNetdevTests(NetdevContract, TestCase):
    def runner(self):
        return NamespaceRunner(self)

    async def fdb(self, runner, name):
        out = await runner.run(["bridge", "-j", "fdb", "show", "dev", name])
        return [e["dst"] for e in json.loads(out) if e.get("mac") == "00:00:00:00:00:00"]


class ParseTests(TestCase):
    def test_not_json(self):
        for text in (b"nope", b'{"a": 1}', b"[1]"):
            self.assertRaises(ParseError, parse_devices, text)

    def test_only_comets(self):
        text = json.dumps([{"ifname": "cometbr0", "flags": ["UP"]},
                           {"ifname": "cometb12", "flags": ["UP"],
                            "linkinfo": {"info_kind": "bridge"}}])
        self.assertEqual(list(parse_devices(text)), ["cometb12"])
