"""
A storage server that reboots under a running VM (issue 14, part 5), on the
real testbed: a guest boots from a zvol of storage server 1 and writes a
counter to its disk (each write C{fsync}ed through virtio, QEMU's libiscsi,
tgt, the zvol); the server's VM is reset (tgtd comes back empty: it keeps
targets in memory only); Comet makes the export again as recorded (same
target name, tid, CHAP account), QEMU's initiator logs in again, and the
guest's writes resume with no error.  What the guest wrote before the reset
and after reads back, in the guest and on the server.

It disrupts the shared storage server 1: run it holding the testbed lock
(C{flock /tmp/comet-testbed.lock ...}).  A cleanup waits until the server is
fully back (ssh, the pool imported, tgtd answering) even if the test fails
half way, so the tests after it find the testbed whole.
"""

from __future__ import annotations

import os
import re
import time

from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import File

from tests.integration import _testbed
from tests.integration._console import DomainConsole
from tests.integration._daemon import CometDaemonCase, _sleep

MiB = 1024 * 1024

#: Seconds a TCG guest may take to boot from a zvol over iSCSI (~8 s alone).
BOOT_TIMEOUT = 180

#: Seconds the storage VM may take to be back after a reset (~15 s to ssh alone).
SERVER_BACK = 240


class StorageRebootTests(CometDaemonCase):
    timeout = 900
    # Checks every 3 s: the guest's I/O waits for the export only that long
    # once the server answers.  The reconciler's pass is kept long, so the
    # export is made again by the server's return, not by the pass.
    # (ssh logins to the TCG storage VMs take seconds under load: the testbed's own 30 s)
    config_extra = {"storage": {"command_timeout": 60, "connect_timeout": 30,
                                "watch_interval": 3},
                    "reconcile": {"interval": 600}}

    async def test_guest_writes_resume_after_reboot(self):
        server = self.stack["servers"][0]
        pool = server["storagepool"]
        self.made = {"vm": None, "template": None, "cluster": None, "volume": None}
        self.console = None
        self.addCleanup(self._clean_up)
        self.addCleanup(self._server_back, server)

        # A base volume from the guest image, a template, a cluster, a VM on it.
        image = self.stack["guest"]["image"]
        site = Site(File(os.path.dirname(image)))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        base = f"it-{self.token}-rb"
        answer = await self.request("POST", f"/storagepools/{pool}/storagevolumes", {
            "name": base,
            "url": f"http://127.0.0.1:{listening.getHost().port}/{os.path.basename(image)}"})
        self.made["volume"] = base
        await self.finished(answer)
        template, cluster = f"it{self.token}rb", f"it-{self.token}-rb"
        answer = await self.request("POST", "/templates", {
            "name": template, "memory": 160, "cpus": 1, "disk": {"pool": pool, "volume": base}})
        self.assertEqual(answer.code, 201, answer)
        self.made["template"] = template
        self.assertEqual((await self.request("POST", "/cluster", {"name": cluster})).code, 201)
        self.made["cluster"] = cluster
        answer = await self.request("POST", f"/cluster/{cluster}/vms", {"template": template})
        self.assertEqual(answer.code, 201, answer)
        vm = self.made["vm"] = answer.json
        answer = await self.request("POST", vm["href"] + "/start", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "running"), answer)
        console = self.console = DomainConsole(self.stack["host_uri"], f"comet-{vm['uuid']}")
        await console.connect()
        ready = await console.waitFor(rb"COMET-GUEST: ready", BOOT_TIMEOUT)
        await console.waitFor(re.escape(self.stack["guest"]["prompt"].encode()), 60, ready.end())
        disk = (await self.get(f"/cluster/{cluster}/vms/{vm['name']}/storages/"
                               f"vm-{vm['uuid']}-vda"))
        iqn = disk["target"]
        before_target = await self._target(server, iqn)
        self.assertIsNotNone(before_target)

        # Sector 0 of the data area: a marker; sector 1: a counter, rewritten
        # and fsynced once a second, each completed write printed.
        before = f"before-{self.token}"
        await self._guest(f"echo {before} | dd of=/dev/comet-data conv=fsync 2>/dev/null")
        await self._guest(
            "(i=0; while [ ! -e /tmp/stop ]; do i=$((i+1));"
            " if echo count-$i | dd of=/dev/comet-data bs=512 seek=1 conv=fsync 2>/dev/null;"
            " then echo COUNT=$i; else echo WRITE-FAILED=$i; fi; sleep 1; done;"
            " echo COUNTER-STOPPED) & true")
        await console.waitFor(rb"COUNT=3\r?\n", 60)

        # The reset: the server's tgtd and every target are gone.
        at_reset = self._last_count()
        reset = time.monotonic()
        await _testbed.libvirtCall(self.stack, lambda c: c.lookupByName(server["domain"]).reset(0))
        await self._server_back(server)
        back = time.monotonic() - reset
        # Comet puts the export back (the server's watch saw it come back):
        # the target first, then its CHAP account and ACL, so wait for the
        # account too (a poll between the two saw a target without it).
        deadline = time.monotonic() + 120
        while ((after_target := await self._target(server, iqn)) is None
               or not after_target["accounts"]):
            if time.monotonic() > deadline:
                self.fail(f"target {iqn} not made again with its account within 120 s:"
                          f" {after_target}\n{self._log_tail()}")
            await _sleep(0.5)
        exported = time.monotonic() - reset
        self.assertEqual((after_target["tid"], after_target["accounts"], after_target["acl"]),
                         (before_target["tid"], before_target["accounts"], before_target["acl"]))
        self.assertIn("made again", self._log_tail(200000))
        # The guest's writes resume: three more completed after the target is back.
        stalled = self._last_count()
        await console.waitFor(rb"COUNT=%d\r?\n" % (stalled + 3), 180)
        resumed = time.monotonic() - reset
        await self._guest("touch /tmp/stop")
        await console.waitFor(rb"COUNTER-STOPPED\r?\n", 60)
        last = self._last_count()
        # (the echoed command line holds the words too, but not followed by a
        # number or a line end; the loop's lines may follow a prompt)
        self.assertEqual(re.findall(r"WRITE-FAILED=\d+", console.output), [])
        self.assertEqual((await self.get(vm["href"]))["state"], "running")

        # After: another marker; all three read back in the guest...
        after = f"after-{self.token}"
        await self._guest(f"echo {after} | dd of=/dev/comet-data bs=512 seek=2 conv=fsync"
                          " 2>/dev/null")
        self.assertEqual(await self._sector(0), before)
        self.assertEqual(await self._sector(1), f"count-{last}")
        self.assertEqual(await self._sector(2), after)
        # ... and on the server, in the zvol itself.
        offset = self.stack["guest"]["data_offset"] // 512
        out = await _testbed.ssh(
            self.stack, server,
            f"sync; dd if=$(zvol-dev {server['dataset']}/vm-{vm['uuid']}-vda 10)"
            f" bs=512 skip={offset} count=3 2>/dev/null | tr '\\000' '\\n' | grep .")
        self.assertEqual(out.split(), [before, f"count-{last}", after])
        print(f"\nstorage reboot: counter at {at_reset} at the reset; server back (ssh, pool,"
              f" tgtd) after {back:.1f} s; target made again after {exported:.1f} s; writes"
              f" resumed (3 more) after {resumed:.1f} s; counter {stalled} while stalled,"
              f" {last} at the end; no write failed")

    # --- the guest --------------------------------------------------------------

    def _last_count(self) -> int:
        counts = re.findall(r"COUNT=(\d+)\r?\n", self.console.output)
        return int(counts[-1]) if counts else 0

    async def _guest(self, command: str, timeout: float = 60) -> str:
        status, output = await self.console.run(command, timeout)
        self.assertEqual(status, 0, (command, output))
        return output

    async def _sector(self, n: int) -> str:
        """Sector C{n} of the data area, up to a NUL or newline, read in the guest."""
        output = await self._guest(
            f"echo \"<<$(dd if=/dev/comet-data bs=512 skip={n} count=1 2>/dev/null"
            " | tr '\\000' '\\n' | head -n 1)>>\"")
        found = re.findall(r"^<<([^\r\n]*)>>", output, re.M)
        self.assertEqual(len(found), 1, output)
        return found[0]

    # --- the server ---------------------------------------------------------------

    async def _target(self, server: dict, iqn: str) -> dict | None:
        """Target C{iqn} on C{server} as tgtadm shows it (tid, accounts, acl), or None."""
        from comet.remote.tgt import parse_targets

        out, err, code = await _testbed.ssh(
            self.stack, server, "tgtadm --lld iscsi --mode target --op show", check=False,
            timeout=30)
        if code != 0:
            return None
        for target in parse_targets(out):
            if target.iqn == iqn and target.device is not None:
                return {"tid": target.tid, "accounts": target.accounts, "acl": target.acl}
        return None

    async def _server_back(self, server: dict) -> None:
        """Wait until C{server} answers ssh with its pool imported and tgtd running."""
        deadline = time.monotonic() + SERVER_BACK
        check = (f"zpool list -H -o name {server['zpool']} && zfs list -H {server['dataset']}"
                 " && tgtadm --lld iscsi --mode target --op show >/dev/null")
        while True:
            try:
                out, err, code = await _testbed.ssh(self.stack, server, check, check=False,
                                                    timeout=20)
            except Exception as e:   # noqa: BLE001 -- a timeout while it boots
                code, err = -1, repr(e)
            if code == 0:
                return
            if time.monotonic() > deadline:
                self.fail(f"storage server {server['name']} not back within {SERVER_BACK} s:"
                          f" {err.strip()}")
            await _sleep(2)

    # --- clean-up -------------------------------------------------------------------

    async def _clean_up(self):
        if self.console is not None:
            await self.console.aclose()
        made = self.made
        if made["vm"] is not None:
            answer = await self.request(
                "DELETE", f"/cluster/{made['cluster']}/vms/{made['vm']['name']}", {"force": True})
            if answer.code != 204:
                await _testbed.removeDomains(self.stack, [f"comet-{made['vm']['uuid']}"])
        if made["template"]:
            await self.request("DELETE", f"/templates/{made['template']}")
        if made["cluster"]:
            await self.request("DELETE", f"/cluster/{made['cluster']}", {"force": True})
        if made["volume"]:
            server = self.stack["servers"][0]
            answer = await self.request(
                "DELETE", f"/storagepools/{server['storagepool']}/storagevolumes/{made['volume']}")
            if answer.code != 204:
                await _testbed.ssh(self.stack, server, "zfs destroy -R %s/%s"
                                   % (server["dataset"], made["volume"]), check=False)
