"""
Backend faults on the real testbed: a storage server that stops answering (its
VM suspended) and a compute host whose libvirtd stops answering (SIGSTOP),
while a C{twistd -n comet} child serves.

Each asserts what issue 9 asks: only the requests that need the silent backend
fail, with a 503 that names it; what lives there shows C{unreachable} or
C{unknown} rather than a stale state; and when the backend answers again
everything is back without restarting Comet.  Skipped, with the reason, when
the testbed is not up.  The backend is always resumed by a cleanup, so a
failing test does not leave the shared testbed frozen.
"""

from __future__ import annotations

import os
import signal

from tests.integration import _testbed
from tests.integration._daemon import CometDaemonCase


def _libvirtd_pid(stack) -> int:
    """
    The libvirtd of the testbed's compute host C{local} (the machine's own),
    which C{testbed/stack up} started: its pid file, checked against the
    record of what C{up} started.  (The record also names host2's libvirtd.)
    """
    pid = _testbed.hostLibvirtdPid(stack, "local")
    with open(os.path.join(_testbed.stateDir(), "started")) as f:
        if f"pid libvirtd {pid}" not in f.read().splitlines():
            raise AssertionError(f"the testbed's record does not name libvirtd {pid}")
    return pid


class _FaultCase(CometDaemonCase):
    timeout = 400

    async def _set_suspended(self, domain: str, suspended: bool) -> None:
        def change(conn):
            dom = conn.lookupByName(domain)
            paused = dom.state()[0] == 3   # VIR_DOMAIN_PAUSED
            if suspended and not paused:
                dom.suspend()
            elif not suspended and paused:
                dom.resume()

        await _testbed.libvirtCall(self.stack, change)



class StorageServerFaultTests(_FaultCase):
    """A storage server stops answering mid-use, then comes back."""

    config_extra = {"storage": {"command_timeout": 15}}

    async def test_server_stops_answering(self):
        silent, other = self.stack["servers"][1], self.stack["servers"][0]
        host, pool = silent["address"], silent["storagepool"]
        name = f"it-{self.token}-fault"
        self.addCleanup(_testbed.ssh, self.stack, silent,
                        f"zfs destroy {silent['dataset']}/{name} 2>/dev/null || true",
                        check=False)
        volume_href = f"/storagepools/{pool}/storagevolumes/{name}"
        await self.finished(await self.request(
            "POST", f"/storagepools/{pool}/storagevolumes", {"name": name, "capacity": 1}))
        self.assertEqual((await self.get(volume_href))["state"], "unmapped")

        # The server's VM is frozen: its TCP peers get no answer at all.
        self.addCleanup(self._set_suspended, silent["domain"], False)
        await self._set_suspended(silent["domain"], True)

        server = await self.get(f"/storageservers/{host}")
        self.assertEqual(server["state"], "unreachable", server)
        answer = await self.request("GET", volume_href)
        self.assertEqual(answer.code, 503, answer)
        self.assertEqual(answer.json["error"], "unavailable", answer)
        self.assertIn(host, answer.json["reason"])
        answer = await self.request("DELETE", volume_href)
        self.assertEqual(answer.code, 503, answer)
        # The other server, and what needs no server, still answer.
        self.assertEqual((await self.get(f"/storageservers/{other['address']}"))["state"],
                         "reachable")
        await self.get(f"/storagepools/{other['storagepool']}/storagevolumes")
        await self.get("/cluster")

        # Back: no restart, the same volume, and it can be deleted.
        await self._set_suspended(silent["domain"], False)

        async def back():
            answer = await self.request("GET", volume_href)
            return answer.code == 200 and answer.json

        volume = await self.until("the volume readable again", back, every=1)
        self.assertEqual(volume["state"], "unmapped")
        self.assertEqual((await self.get(f"/storageservers/{host}"))["state"], "reachable")
        answer = await self.request("DELETE", volume_href)
        self.assertEqual(answer.code, 204, answer)
        zvols = await _testbed.ssh(self.stack, silent,
                                   f"zfs list -H -o name -t volume -r {silent['dataset']}")
        self.assertNotIn(f"{silent['dataset']}/{name}", zvols.split())


class ComputeHostFaultTests(_FaultCase):
    """The compute host's libvirtd stops answering mid-use, then comes back."""

    config_extra = {"compute": {"libvirt_timeout": 5}}

    def _continue(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    async def test_host_stops_answering(self):
        template, cluster = await self.diskless_cluster()
        href = (await self.make_vm(cluster, template))["href"]
        await self.start(href)

        pid = _libvirtd_pid(self.stack)
        self.addCleanup(self._continue, pid)
        os.kill(pid, signal.SIGSTOP)

        vm = await self.get(href)
        self.assertEqual(vm["state"], "unknown", vm)
        host = await self.get("/hosts/local")
        self.assertEqual(host["state"], "unreachable", host)
        answer = await self.request("POST", f"{href}/poweroff", {})
        self.assertEqual(answer.code, 503, answer)
        self.assertIn("local", answer.json["reason"])
        # What needs no host still answers.
        await self.get("/templates")
        await self.get(f"/storageservers/{self.stack['servers'][0]['address']}")

        # Back: the VM is seen running again without restarting Comet.
        self._continue(pid)

        async def running():
            answer = await self.request("GET", href)
            return answer.code == 200 and answer.json["state"] == "running"

        await self.until("the VM shown running again", running, every=1)
        self.assertEqual((await self.get("/hosts/local"))["state"], "connected")
        answer = await self.request("POST", f"{href}/poweroff", {})
        self.assertIn(answer.code, (200, 202), answer)
        if answer.code == 202:
            await self.finished(answer)
        await self.wait_state(href, "shutoff", 60)
        answer = await self.request("DELETE", href)
        self.assertEqual(answer.code, 204, answer)
