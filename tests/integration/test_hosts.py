"""
Two real compute hosts (issue 17): the testbed's own libvirtd (C{local}) and
C{host2}, a second libvirtd in its own namespaces reached over
C{qemu+libssh2://root@10.200.0.11/system}, both in a C{twistd -n comet}
child's configuration.

One test VM runs on each host (started while the other host is in
maintenance: both hosts share this machine's memory, which the other
integration stream changes, so the free-memory rule cannot be predicted).
When C{host2}'s libvirtd freezes (SIGSTOP), requests about its VM answer 503
naming it while requests about the other VM keep the latency they had
before (a baseline taken in the same test); when it thaws, everything is
back without restarting Comet.  The host is always thawed by a cleanup, so a
failing test does not leave the shared testbed frozen.
"""

from __future__ import annotations

import os
import signal
import statistics
import time

from tests.integration import _testbed
from tests.integration._daemon import CometDaemonCase

#: GETs timed before and during the fault.
SAMPLES = 7


class TwoHostTests(CometDaemonCase):
    all_hosts = True
    #: A frozen host's calls are given up after this many seconds (5 was too
    #: short for a first call over a new qemu+libssh2 connection on a loaded CI machine).
    config_extra = {"compute": {"libvirt_timeout": 15}}
    timeout = 400

    def _continue(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    async def _timed_gets(self, href: str) -> list[float]:
        """Seconds each of L{SAMPLES} GETs of C{href} took (each must be a 200)."""
        times = []
        for _ in range(SAMPLES):
            start = time.monotonic()
            answer = await self.request("GET", href)
            times.append(time.monotonic() - start)
            self.assertEqual(answer.code, 200, answer)
        return times

    async def _domain_hosts(self, domain: str) -> list[str]:
        """The compute hosts whose libvirtd runs C{domain}."""
        import libvirt

        def active(conn):
            try:
                return bool(conn.lookupByName(domain).isActive())
            except libvirt.libvirtError:
                return False

        found = []
        for host in _testbed.computeHosts(self.stack):
            if await _testbed.hostLibvirtCall(self.stack, host["name"], active):
                found.append(host["name"])
        return found

    async def _maintenance(self, host: str, enabled: bool) -> None:
        answer = await self.request(
            "POST", f"/hosts/{host}/maintenance", {"enabled": enabled})
        self.assertEqual(answer.code, 200, answer)

    async def test_placement_failure_and_recovery(self):
        hosts = {h["name"]: h for h in (await self.get("/hosts"))}
        names = [h["name"] for h in _testbed.computeHosts(self.stack)]
        self.assertEqual(sorted(hosts), sorted(names))
        for host in hosts.values():
            self.assertEqual(host["state"], "connected", host)

        # One VM on each host.  The rule (most free memory, ties to the first
        # configured: tests/model/test_placement.py, tests/web/test_vms.py)
        # cannot be predicted here: both hosts report this machine's memory,
        # which the other integration stream's guests change between a read
        # and a placement.  So each VM is started while the other host is in
        # maintenance, which placement skips.
        first, other = names[0], names[1]
        template, cluster = await self.diskless_cluster()

        placed = {}
        for host, away in ((first, other), (other, first)):
            await self._maintenance(away, True)
            try:
                vm = await self.make_vm(cluster, template)
                started = await self.start(vm["href"])
            finally:
                await self._maintenance(away, False)
            self.assertEqual(started["host"], host, (started, hosts))
            placed[host] = vm
        # Each domain runs on its host's libvirtd, and only there.
        for host, vm in placed.items():
            self.assertEqual(await self._domain_hosts(f"comet-{vm['uuid']}"), [host])

        victim, survivor = placed["host2"]["href"], placed["local"]["href"]

        # Baseline: the survivor's VM, both hosts up.
        baseline = await self._timed_gets(survivor)

        pid = _testbed.hostLibvirtdPid(self.stack, "host2")
        self.addCleanup(self._continue, pid)
        os.kill(pid, signal.SIGSTOP)

        vm = await self.get(victim)
        self.assertEqual(vm["state"], "unknown", vm)
        host = await self.get("/hosts/host2")
        self.assertEqual(host["state"], "unreachable", host)
        answer = await self.request("POST", f"{victim}/poweroff", {})
        self.assertEqual(answer.code, 503, answer)
        self.assertEqual(answer.json["error"], "unavailable", answer)
        self.assertIn("host2", answer.json["reason"])

        # The other host's VM: as fast as before, and its actions work.
        during = await self._timed_gets(survivor)
        self.assertLessEqual(
            statistics.median(during), 3 * max(baseline),
            f"GET of the VM on local: {during} s with host2 frozen, {baseline} s before")
        self.assertEqual((await self.get(survivor))["state"], "running")
        self.assertEqual((await self.get("/hosts/local"))["state"], "connected")
        answer = await self.request("POST", f"{survivor}/suspend", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "paused"), answer)
        answer = await self.request("POST", f"{survivor}/resume", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "running"), answer)

        # Thawed: host2 and its VM are back without restarting Comet.
        self._continue(pid)

        async def back():
            answer = await self.request("GET", victim)
            return answer.code == 200 and answer.json["state"] == "running"

        await self.until("the VM on host2 shown running again", back, every=0.5)
        self.assertEqual((await self.get("/hosts/host2"))["state"], "connected")
        for href in (victim, survivor):
            answer = await self.request("POST", f"{href}/poweroff", {})
            self.assertIn(answer.code, (200, 202), answer)
            if answer.code == 202:
                await self.finished(answer)
            await self.wait_state(href, "shutoff", 60)
            answer = await self.request("DELETE", href)
            self.assertEqual(answer.code, 204, answer)
        for vm in placed.values():
            self.assertEqual(await self._domain_hosts(f"comet-{vm['uuid']}"), [])
