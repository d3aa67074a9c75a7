"""
Live migration on the real testbed (issue 17), through the HTTP API of a
C{twistd -n comet} child that has both compute hosts (the testbed's own
libvirtd and its second host, reached over ssh):

 1. a base volume downloaded from the guest image, a template of 256 MiB on
    it, a VM cloned from it, started; its guest boots from its zvol over
    iSCSI;
 2. the guest writes a marker to its zvol's data area, then counts on its
    serial console (a tick every 0.2 s, with its uptime, also kept in a
    file of its RAM);
 3. C{POST .../migrate} (the placement rule picks the other host): a task
    whose message names both hosts, finished; the VM runs on the other host,
    its record says so, its domain is gone from the first host, its target
    admits the new host's address alone;
 4. the guest, read on the new host's console, is still counting: the same
    boot (its uptime and its count went on, no boot lines), no tick missing,
    no gap between two ticks longer than the move's downtime (as libvirt
    measured it) plus the tick's period and a margin; it reads the marker
    back from its zvol;
 5. back to the first host the same way;
 6. host maintenance and evacuation: the guest on host2, host2 put in
    maintenance and evacuated (C{POST /hosts/host2/evacuate}): one task, the
    guest migrated live to local, checked as in 4;
 7. fenced: the guest on host2 again writes a new marker, host2's libvirtd
    is frozen (SIGSTOP; its QEMU goes on), C{{"fenced": true}}: the VM's
    targets are deleted (ending host2's sessions) and it boots on local from
    its zvol, where it reads the new marker; host2 thawed, its leftover
    domain is removed by the reconciler and it is connected again, out of
    maintenance; then everything deleted.

Fails (does not skip) when the testbed is up without a second host.
"""

from __future__ import annotations

import os
import re
import signal
import time

from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import File

from comet.remote.tgt import parse_targets
from tests.integration import _testbed
from tests.integration._console import DomainConsole
from tests.integration._daemon import CometDaemonCase
from tests.integration._testbed import computeHosts

MiB = 1024**2
#: Seconds a guest may take to boot (TCG).
BOOT_TIMEOUT = 180
#: Seconds between two ticks of the guest's counter.
TICK = 0.2
#: What a gap between two ticks may exceed the tick and the downtime by: the
#: guest's timer and shell on a loaded 2-core machine under TCG.
SLACK = 2.5
#: The guest's counter: a tick line on the console (and in a RAM file) every TICK s.
COUNTER = ("(i=0; while :; do i=$((i+1)); echo \"TICK $i $(cut -d' ' -f1 /proc/uptime)\""
           f" | tee -a /tmp/ticks; sleep {TICK}; done) >/dev/console 2>&1 &")
TICK_LINE = re.compile(rb"TICK (\d+) ([0-9.]+)")


class MigrationTests(CometDaemonCase):
    """A guest keeps running, counting and its data across two live migrations."""

    timeout = 900
    all_hosts = True
    #: A frozen host's calls are given up after this many seconds, and the
    #: reconciler removes a returned host's leftover domain soon (step 7).
    config_extra = {"compute": {"libvirt_timeout": 10}, "reconcile": {"interval": 3}}

    async def test_guest_keeps_running(self):
        self.hosts = {h["name"]: h for h in computeHosts(self.stack)}
        self.assertGreaterEqual(len(self.hosts), 2, "the testbed has one compute host")
        self.made = {"vm": None, "template": None, "cluster": None, "volume": None}
        self.console = None
        self.addCleanup(self._clean_up)

        # 1. Base volume, template, VM, started.
        pool = await self.pick_pool(2 * self.stack["guest"]["image_size"] + 64 * MiB)
        image = self.stack["guest"]["image"]
        site = Site(File(os.path.dirname(image)))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        base = f"mig-{self.token}-base"
        answer = await self.request("POST", f"/storagepools/{pool}/storagevolumes", {
            "name": base, "url": f"http://127.0.0.1:{listening.getHost().port}/"
                                 f"{os.path.basename(image)}"})
        self.made["volume"] = (pool, base)
        await self.finished(answer)
        template, cluster = f"mig{self.token}", f"mig-{self.token}"
        answer = await self.request("POST", "/templates", {
            "name": template, "memory": 256, "cpus": 1, "disk": {"pool": pool, "volume": base}})
        self.assertEqual(answer.code, 201, answer)
        self.made["template"] = template
        self.assertEqual((await self.request("POST", "/cluster", {"name": cluster})).code, 201)
        self.made["cluster"] = cluster
        answer = await self.request("POST", f"/cluster/{cluster}/vms", {"template": template})
        self.assertEqual(answer.code, 201, answer)
        vm = self.made["vm"] = answer.json
        answer = await self.request("POST", vm["href"] + "/start", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "running"), answer)
        first = answer.json["host"]
        self.assertIn("migrate", answer.json["actions"])
        await self.attach_console(first, boot=True)

        # 2. A marker on the zvol, then the counter.
        marker = f"mig-{self.token}-marker"
        await self.guest(f"echo {marker} | dd of=/dev/comet-data conv=fsync")
        await self.guest("mkdir -p /tmp && : > /tmp/ticks")
        self.console.protocol.transport.write((COUNTER + "\r").encode())
        await self.console.waitFor(rb"TICK 10 ", 60)

        # 3.-4. To the other host, and back.
        second = next(h for h in self.hosts if h != first)
        for source, dest in ((first, second), (second, first)):
            await self.migrate_and_check(vm, source, dest, marker)

        # 6. Evacuation: the guest on host2, which goes into maintenance.
        if first != "host2":
            await self.migrate_and_check(vm, first, "host2", marker)
        await self.maintenance("host2", True)
        await self.migrate_and_check(vm, "host2", "local", marker, evacuate=True)

        # 7. Fenced: back on host2, a new marker, host2's libvirtd frozen.
        await self.maintenance("host2", False)
        await self.migrate_and_check(vm, "local", "host2", marker)
        await self.maintenance("host2", True)
        marker = f"fence-{self.token}-marker"
        await self.guest(f"echo {marker} | dd of=/dev/comet-data conv=fsync")
        await self.console.aclose()
        self.console = None
        await self.fenced_evacuation(vm, marker)

    async def maintenance(self, host: str, enabled: bool) -> None:
        answer = await self.request("POST", f"/hosts/{host}/maintenance", {"enabled": enabled})
        self.assertEqual((answer.code, answer.json["maintenance"]), (200, enabled), answer)
        if enabled:
            self.addCleanup(self.request, "POST", f"/hosts/{host}/maintenance",
                            {"enabled": False})

    async def fenced_evacuation(self, vm: dict, marker: str) -> None:
        pid = _testbed.hostLibvirtdPid(self.stack, "host2")

        def thaw():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

        self.addCleanup(thaw)
        os.kill(pid, signal.SIGSTOP)

        async def dead():
            return (await self.get("/hosts/host2"))["state"] == "unreachable"

        await self.until("host2 seen unreachable", dead, every=0.5)
        answer = await self.request("POST", "/hosts/host2/evacuate", {"fenced": True})
        self.assertEqual(answer.code, 202, answer)
        task = await self.finished(answer)
        # host2 thawed at once: thawed after some 90 s frozen (several connection
        # attempts given up), the daemon died of a general protection fault in
        # libglib, twice on this testbed; not understood yet (see the closing note).
        thaw()
        self.assertIn(f"VM {vm['name']!r} was taken off 'host2' and started on 'local'",
                      task["message"])
        got = await self.get(vm["href"])
        self.assertEqual((got["state"], got["host"]), ("running", "local"))
        await self.check_admitted(vm, "local")
        await self.attach_console("local", boot=True)
        self.assertEqual(await self.read_marker(), marker)

        # host2 returns: its leftover domain goes, it is connected, out of maintenance.
        domain = f"comet-{vm['uuid']}"

        async def recovered():
            if (await self.get("/hosts/host2"))["state"] != "connected":
                return False

            def names(conn):
                return [d.name() for d in conn.listAllDomains(0)]

            return domain not in await _testbed.hostLibvirtCall(self.stack, "host2", names)

        await self.until("host2 connected, its leftover domain removed", recovered, every=1)
        await self.maintenance("host2", False)
        self.assertEqual((await self.get(vm["href"]))["host"], "local")

    async def migrate_and_check(self, vm: dict, source: str, dest: str, marker: str,
                                evacuate: bool = False):
        """Move the VM (migrate, or evacuate C{source}) and check the guest went on."""
        before = self.last_tick()
        started = time.monotonic()
        if evacuate:
            answer = await self.request("POST", f"/hosts/{source}/evacuate", {})
            self.assertEqual(answer.code, 202, answer)
            self.assertIn(f"evacuation of host {source!r}", answer.json["message"])
        else:
            answer = await self.request("POST", vm["href"] + "/migrate", {})
            self.assertEqual(answer.code, 202, answer)
            self.assertIn(f"from {source!r} to {dest!r}", answer.json["message"])
        task = await self.finished(answer)
        took = time.monotonic() - started
        self.assertIn(f"migrated from {source!r} to {dest!r}", task["message"])
        got = await self.get(vm["href"])
        self.assertEqual((got["state"], got["host"]), ("running", dest))
        domain = f"comet-{vm['uuid']}"

        def where(conn):
            import libvirt

            names = [d.name() for d in conn.listAllDomains(0)]
            stats = None
            if domain in names:
                try:
                    stats = conn.lookupByName(domain).jobStats(
                        libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
                except libvirt.libvirtError:
                    stats = None
            return domain in names, stats

        on_source, _ = await _testbed.hostLibvirtCall(self.stack, source, where)
        on_dest, stats = await _testbed.hostLibvirtCall(self.stack, dest, where)
        self.assertEqual((on_source, on_dest), (False, True))
        downtime = (stats or {}).get("downtime", 0) / 1000
        await self.check_admitted(vm, dest)

        # The same guest, still counting, with its data.
        await self.console.aclose()
        await self.attach_console(dest, boot=False)
        # (what the guest printed while no one was connected there is gone)
        try:
            seen = await self.console.waitFor(rb"TICK (\d+) [0-9.]+\r?\n", 60)
        except Exception:
            self.fail(f"no tick on {dest} within 60 s; console ({self.console.why}):\n"
                      f"{self.console.output[-2000:]}")
        self.assertGreater(int(seen.group(1)), before[0], "the count started again")
        ticks = await self.ticks()
        numbers = [n for n, _ in ticks]
        self.assertEqual(numbers, list(range(1, len(numbers) + 1)), "a tick is missing")
        gaps = [b - a for (_, a), (_, b) in zip(ticks, ticks[1:])]
        self.assertLess(max(gaps), TICK + downtime + SLACK, (max(gaps), downtime))
        self.assertGreater(ticks[-1][1], before[1], "the guest's uptime went back: a reboot")
        self.assertNotIn("COMET-GUEST: ready", self.console.output, "the guest booted again")
        self.assertEqual(await self.read_marker(), marker)
        print(f"\n{source} -> {dest}: {took:.1f} s (task), downtime {downtime * 1000:.0f} ms"
              f" (libvirt), longest gap between ticks {max(gaps):.2f} s")

    # --- the guest ---------------------------------------------------------------

    async def attach_console(self, host: str, boot: bool) -> None:
        """The VM's console on C{host}; with C{boot}, wait until the guest is ready."""
        self.console = DomainConsole(self.hosts[host]["uri"], f"comet-{self.made['vm']['uuid']}")
        await self.console.connect()
        if boot:
            try:
                ready = await self.console.waitFor(rb"COMET-GUEST: ready", BOOT_TIMEOUT)
            except Exception:
                self.fail(f"the guest did not boot; console:\n{self.console.output[-3000:]}")
            await self.console.waitFor(re.escape(self.stack["guest"]["prompt"].encode()), 60,
                                       ready.end())

    def last_tick(self) -> tuple[int, float]:
        found = TICK_LINE.findall(self.console.protocol.buffer)
        self.assertTrue(found, self.console.output[-2000:])
        return int(found[-1][0]), float(found[-1][1])

    async def guest(self, command: str, timeout: float = 60) -> str:
        status, output = await self.console.run(command, timeout)
        self.assertEqual(status, 0, (command, output))
        return output

    async def ticks(self) -> list[tuple[int, float]]:
        """Every tick the guest kept in its RAM file (complete lines)."""
        output = await self.guest("echo \"<<$(tr '\\n' ',' < /tmp/ticks)>>\"")
        found = re.findall(r"<<([^>]*)>>", output)
        self.assertTrue(found, output)
        ticks = []
        for line in found[-1].split(","):
            parts = line.split()
            if len(parts) == 3 and parts[0] == "TICK":
                ticks.append((int(parts[1]), float(parts[2])))
        return ticks

    async def read_marker(self) -> str:
        output = await self.guest("echo \"<<$(dd if=/dev/comet-data bs=512 count=1 2>/dev/null"
                                  " | tr '\\000' '\\n' | head -n 1)>>\"")
        found = re.findall(r"^<<([^\r\n]*)>>", output, re.M)
        self.assertTrue(found, output)
        return found[-1]

    async def check_admitted(self, vm: dict, host: str) -> None:
        """The VM's disk target admits C{host}'s address alone."""
        disk = f"vm-{vm['uuid']}-vda"
        pool = self.made["volume"][0]
        volume = await self.get(f"/storagepools/{pool}/storagevolumes/{disk}")
        self.assertEqual(volume["exported_to"], host)
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        out = await _testbed.ssh(self.stack, server, "tgtadm --lld iscsi --mode target --op show")
        [target] = [t for t in parse_targets(out) if t.iqn.endswith(f".{disk}")]
        self.assertEqual(list(target.acl), [self.hosts[host]["address"]])

    # --- clean-up ------------------------------------------------------------------

    async def _clean_up(self):
        if self.console is not None:
            await self.console.aclose()
        made = self.made
        if not self.done.called:
            if made["cluster"]:
                await self.request("DELETE", f"/cluster/{made['cluster']}", {"force": True})
            if made["template"]:
                await self.request("DELETE", f"/templates/{made['template']}")
            if made["volume"]:
                pool, name = made["volume"]
                await self.request("DELETE", f"/storagepools/{pool}/storagevolumes/{name}")
        if made["vm"] is not None:
            await _testbed.removeDomainsEverywhere(self.stack, [f"comet-{made['vm']['uuid']}"])
