"""
Local-copy mode on the real testbed (issue 21): a VM whose disk is copied to
compute host C{host3}'s own OpenZFS when it starts (a TCG VM running
OpenZFS and libvirtd: testbed/host3.sh) and synced back to the storage
server when it stops.  The guest is firmware only (TCG inside TCG), so what
a guest would write is written into the local zvol on the host over ssh,
as the issue allows; it must then be on the storage server after the stop.
"""

from __future__ import annotations

import re

from tests.integration import _testbed
from tests.integration._daemon import CometDaemonCase

MiB = 1024**2
#: A block of what "the guest" writes, and where (512-byte sectors into the disk).
MARK = "comet-local-mode-marker-"
SECTOR = 2048


def local_config_hosts(stack: dict) -> list[dict]:
    """The testbed's own libvirtd and the local-dataset host (for C{comet_config})."""
    local = {"name": "local", "uri": stack["host_uri"], "domain_type": stack["domain_type"]}
    return [local, *(dict(h) for h in _testbed.localHosts(stack))]


class LocalModeTests(CometDaemonCase):
    """Start, write, stop, read back; the 409s while the data is on the host."""

    pools_from_last = True
    timeout = 600

    async def setUp(self):
        self.stack = _testbed.requireTestbed()
        if not _testbed.localHosts(self.stack):
            self.fail("the testbed has no local_hosts (testbed/stack up makes host3)")
        self.host = _testbed.localHosts(self.stack)[0]
        await super().setUp()

    def config_hosts(self):
        return local_config_hosts(self.stack)

    async def host_sh(self, command: str) -> str:
        return await _testbed.ssh(self.stack, self.host, command)

    async def server_sh(self, pool: str, command: str) -> str:
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        return await _testbed.ssh(self.stack, server, command)

    async def deleted(self, href: str, body=None) -> None:
        """Delete C{href} (a clean-up: what a test made goes, or the test fails)."""
        answer = await self.request("DELETE", href, body)
        self.assertIn(answer.code, (204, 404), (href, answer, self._log_tail()))

    async def local_vm(self) -> tuple[dict, str]:
        pool = await self.pick_pool(64 * MiB)
        base = f"l{self.token}-base"
        await self.finished(await self.request(
            "POST", f"/storagepools/{pool}/storagevolumes", {"name": base, "capacity": 1}))
        self.addCleanup(self.deleted, f"/storagepools/{pool}/storagevolumes/{base}")
        answer = await self.request("POST", "/templates", {
            "name": f"l{self.token}", "memory": 64, "cpus": 1,
            "disk": {"pool": pool, "volume": base}, "disk_mode": "local"})
        self.assertEqual(answer.code, 201, answer)
        self.addCleanup(self.deleted, f"/templates/l{self.token}")
        answer = await self.request("POST", "/cluster", {"name": f"l{self.token}"})
        self.assertEqual(answer.code, 201, answer)
        self.addCleanup(self.deleted, f"/cluster/l{self.token}", {"force": True})
        answer = await self.request("POST", f"/cluster/l{self.token}/vms",
                                    {"template": f"l{self.token}"})
        self.assertEqual((answer.code, answer.json.get("disk_mode")), (201, "local"), answer)
        return answer.json, pool

    async def test_start_write_stop(self):
        """
        The start copies the disk to host3 and runs the domain on the local
        zvol (no iSCSI target); a write there is on the storage server after
        the stop, and nothing is left on the host.
        """
        vm, pool = await self.local_vm()
        disk = f"vm-{vm['uuid']}-vda"
        local = f"{self.host['local_dataset']}/{pool}/{disk}"
        task = await self.finished(await self.request("POST", vm["href"] + "/start", {}))
        self.assertIn("its disks copied there", task["message"], task)
        vm = await self.get(vm["href"])
        self.assertEqual((vm["state"], vm["host"]), ("running", self.host["name"]), vm)
        volume = await self.get(f"/storagepools/{pool}/storagevolumes/{disk}")
        self.assertEqual((volume["target"], volume["local_copy"]), (None, self.host["name"]),
                         volume)
        listed = await self.host_sh(f"zfs list -H -o name -t volume {local}")
        self.assertEqual(listed.strip(), local)

        def xml(conn):
            return conn.lookupByName(f"comet-{vm['uuid']}").XMLDesc(0)

        domain = await _testbed.hostLibvirtCall(self.stack, self.host["name"], xml)
        self.assertRegex(domain, r"<disk type=.block. device=.disk.")
        self.assertRegex(domain, r"<source dev=./dev/(zd\d+|zvol/[^']+).")

        # 409s while the newest data is on the host
        answer = await self.request("PUT", f"/storagepools/{pool}/storagevolumes/{disk}",
                                    {"capacity": 2})
        self.assertEqual(answer.code, 409, answer)
        self.assertIn(self.host["name"], answer.json["reason"])

        mark = MARK + self.token
        await self.host_sh(f"printf %s {mark} | dd of=/dev/zvol/{local} bs=512 seek={SECTOR}"
                           " conv=notrunc,fsync 2>/dev/null")
        task = await self.finished(await self.request(
            "POST", vm["href"] + "/stop", {"timeout": 0, "force": True}))
        vm = await self.get(vm["href"])
        self.assertEqual(vm["state"], "shutoff", vm)
        zvol = f"{next(s for s in self.stack['servers'] if s['storagepool'] == pool)['dataset']}/{disk}"
        got = await self.server_sh(pool, f"dd if=/dev/zvol/{zvol} bs=512 skip={SECTOR} count=1"
                                         f" 2>/dev/null | head -c {len(mark)}")
        self.assertEqual(got, mark)
        left = await self.host_sh(f"zfs list -H -o name -t all -r {self.host['local_dataset']}")
        self.assertNotIn(disk, left)
        snaps = await self.server_sh(pool, f"zfs list -H -o name -t snapshot -r {zvol} || true")
        self.assertEqual(re.findall(r"@comet-sync-\S+", snaps), [], snaps)
