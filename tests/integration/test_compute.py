"""
Compute end to end, through the HTTP API of a C{twistd -n comet} child process
on the real testbed: a base volume downloaded from the guest image, a
template, a cluster of three VMs booted as TCG guests from iSCSI-exported
zvol clones, their screenshots, suspend/resume, ACPI shutdown, reset, a
cluster stop, and the clean-up of all of it (domains and zvols gone).
Skipped, with the reason, when the testbed is not up.

Every name holds a random token; everything made is removed again, also
when the test fails (through the API, and then directly through libvirt and
ssh for anything the API left).
"""

from __future__ import annotations

import io
import os
import time
import xml.etree.ElementTree as ET

from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import File

from tests.integration import _testbed
from tests.integration._daemon import CometDaemonCase, _sleep

#: The testbed's own domains (the storage servers); everything else named
#: comet-* that is a Comet VM must be gone at the end.
_TESTBED_DOMAINS = ("comet-tb-",)
#: Domains other integration tests make for themselves (testbed/README.md).
_OTHER_TESTS = ("comet-it-", "comet-test-")
MiB = 1024**2
GiB = 1024**3


class ComputeIntegrationTests(CometDaemonCase):
    """Three VMs of one cluster, from a base volume to their clean-up."""

    timeout = 1200

    # --- the test -------------------------------------------------------------

    async def test_cluster_of_three(self):
        """
        Base volume from a URL, template, cluster, three VMs started as a cluster,
        screenshots, suspend/resume, ACPI shutdown, reset, cluster stop, clean-up.
        """
        started = time.monotonic()
        # room for the base volume and the VMs' clones
        pool = await self.pick_pool(2 * self.stack["guest"]["image_size"] + 128 * MiB)
        base = f"it-{self.token}-base"
        template = f"it{self.token}"
        cluster = f"it-{self.token}"
        self.made = {"base": None, "template": None, "cluster": None, "vms": {}}
        self.pool = pool
        self.addCleanup(self._clean_up)

        # 1. A base volume downloaded from the guest image served here.
        image = self.stack["guest"]["image"]
        site = Site(File(os.path.dirname(image)))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/{os.path.basename(image)}"
        answer = await self.request(
            "POST", f"/storagepools/{pool}/storagevolumes", {"name": base, "url": url})
        self.made["base"] = base
        await self.finished(answer)
        volume = await self.get(f"/storagepools/{pool}/storagevolumes/{base}")
        self.assertGreaterEqual(volume["capacity"], self.stack["guest"]["image_size"])
        self.assertEqual(volume["state"], "unmapped")

        # 2. Template, cluster, three VMs named after the template, started together.
        answer = await self.request("POST", "/templates", {
            "name": template, "memory": 192, "cpus": 1,
            "disk": {"pool": pool, "volume": base}})
        self.assertEqual(answer.code, 201, answer)
        self.made["template"] = template
        answer = await self.request("POST", "/cluster", {"name": cluster})
        self.assertEqual(answer.code, 201, answer)
        self.made["cluster"] = cluster
        hrefs = []
        for i in range(1, 4):
            answer = await self.request("POST", f"/cluster/{cluster}/vms", {"template": template})
            self.assertEqual(answer.code, 201, answer)
            vm = answer.json
            self.made["vms"][vm["name"]] = vm["uuid"]
            self.assertEqual(vm["name"], f"{template}-{i}")
            self.assertEqual((vm["state"], vm["host"], vm["memory"], vm["cpus"]),
                             ("shutoff", None, 192, 1))
            hrefs.append(vm["href"])
        self.assertEqual((await self.get(f"/cluster/{cluster}"))["state"], "stopped")

        task = await self.finished(await self.request("POST", f"/cluster/{cluster}/start", {}))
        booted = time.monotonic()
        for href in hrefs:
            vm = await self.get(href)
            self.assertEqual((vm["state"], vm["host"]), ("running", "local"), (vm, task))
        self.assertEqual((await self.get(f"/cluster/{cluster}"))["state"], "running")
        domains = await _testbed.libvirtCall(
            self.stack, lambda conn: [d.name() for d in conn.listAllDomains(1)])   # active
        for uuid in self.made["vms"].values():
            self.assertIn(f"comet-{uuid}", domains)

        # 3a. A screenshot of each: a real PNG of a real screen.
        from PIL import Image

        for href in hrefs:
            vm = await self.get(href)
            self.assertEqual(vm["screenshot"], href + "/screenshot")
            answer = await self.request("GET", vm["screenshot"])
            self.assertEqual(answer.code, 200, answer)
            self.assertEqual(answer.headers.getRawHeaders("content-type"), ["image/png"])
            picture = Image.open(io.BytesIO(answer.body))
            picture.load()
            self.assertEqual(picture.format, "PNG")
            width, height = picture.size
            self.assertGreaterEqual(width, 320, picture.size)
            self.assertGreaterEqual(height, 200, picture.size)

        # 3b. Suspend and resume the first.
        first, second, third = hrefs
        answer = await self.request("POST", first + "/suspend", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "paused"), answer)
        self.assertEqual((await self.get(first))["state"], "paused")
        self.assertEqual((await self.get(f"/cluster/{cluster}"))["state"], "partial")
        answer = await self.request("POST", first + "/resume", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "running"), answer)
        self.assertEqual((await self.get(first))["state"], "running")

        # 3c. ACPI shutdown of the second: the guest answers once it has booted,
        # so ask again every 3 s (up to 120 s from the start) until it is off
        # (it is off within 2 s of a request it heard; a wait of 10 s between
        # requests lost 5 s on average).
        deadline = booted + 120
        while True:
            answer = await self.request("POST", second + "/shutdown", {})
            if answer.code == 409 and (await self.get(second))["state"] == "shutoff":
                break
            self.assertEqual(answer.code, 200, answer)
            try:
                await self.wait_state(second, "shutoff", 3)
                break
            except self.failureException:
                if time.monotonic() > deadline:
                    raise
        vm = await self.get(second)
        self.assertEqual(vm["state"], "shutoff")
        self.assertIsNone(vm["screenshot"])

        # 3d. Reset the third: it keeps running.
        answer = await self.request("POST", third + "/reset", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "running"), answer)
        await _sleep(2)
        self.assertEqual((await self.get(third))["state"], "running")

        # 3e. Stop the cluster: every VM off its host, no domain left behind.
        # The first shuts down when asked (within 2 s); the third, reset just
        # now, is booting and deaf to ACPI, so it is powered off once the
        # timeout is over: 10 s, not 60 s waited out.
        task = await self.finished(await self.request(
            "POST", f"/cluster/{cluster}/stop", {"timeout": 10, "force": True}))
        for href in hrefs:
            vm = await self.get(href)
            self.assertEqual((vm["state"], vm["host"]), ("shutoff", None), (vm, task))
        self.assertEqual((await self.get(f"/cluster/{cluster}"))["state"], "stopped")
        # Every domain this daemon makes is named comet-<uuid of one of its VMs>:
        # none of those is left.  Other comet-* domains (the testbed's storage
        # servers, other tests and other daemons running now) are not ours.
        left = await self._comet_domains()
        ours = {f"comet-{uuid}" for uuid in self.made["vms"].values()}
        self.assertEqual(sorted(ours & set(left)), [], "domains left on the host")
        # and their disks are no longer exported over iSCSI
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        targets = await _testbed.ssh(self.stack, server,
                                     "tgtadm --lld iscsi --mode target --op show")
        for uuid in self.made["vms"].values():
            self.assertNotIn(uuid, targets)
        others = sorted(set(left) - ours)
        if others:
            print(f"\nnot this test's (another test or daemon runs now): {others}")

        # 4. Delete it all through the API; the zvols are gone.
        await self._delete_all(check=True)
        names = [v["name"] for v in await self.get(f"/storagepools/{pool}/storagevolumes")]
        self.assertNotIn(base, names)
        for uuid in self.made["vms"].values():
            self.assertNotIn(f"vm-{uuid}-vda", [n for n in names if n.startswith("vm-")])
            self.assertFalse([n for n in names if uuid in n], names)
        self.made["vms"].clear()
        self.made["base"] = None
        # the pool's dataset has no child with our token or VM uuids either
        out = await _testbed.ssh(self.stack, server,
                                 "zfs list -H -o name -t all -r %s" % server["dataset"])
        self.assertNotIn(self.token, out)
        self.duration = time.monotonic() - started
        print(f"\ncompute end to end: {self.duration:.0f} s "
              f"(boot to stopped: {time.monotonic() - booted:.0f} s)")

    # --- helpers and clean-up -------------------------------------------------

    async def _comet_domains(self) -> list[str]:
        """Names of comet-* domains on the host except the testbed's and other tests' own."""

        def names(conn):
            return [d.name() for d in conn.listAllDomains(0)]

        every = await _testbed.libvirtCall(self.stack, names)
        return sorted(
            n for n in every
            if n.startswith("comet-") and not n.startswith(_TESTBED_DOMAINS + _OTHER_TESTS))

    async def _delete_all(self, check: bool):
        """Delete VMs (forced), template, cluster and base volume through the API."""
        made = self.made
        # when cleaning up after a failure, anything goes: the next steps tidy by hand
        ok = (204,) if check else tuple(range(100, 600))
        cluster = made["cluster"]
        for name in list(made["vms"]):
            answer = await self.request("DELETE", f"/cluster/{cluster}/vms/{name}", {"force": True})
            self.assertIn(answer.code, ok, answer)
        if made["template"]:
            answer = await self.request("DELETE", f"/templates/{made['template']}")
            self.assertIn(answer.code, ok, answer)
            made["template"] = None
        if cluster:
            answer = await self.request("DELETE", f"/cluster/{cluster}", {"force": True})
            self.assertIn(answer.code, ok, answer)
            made["cluster"] = None
        if made["base"]:
            answer = await self.request(
                "DELETE", f"/storagepools/{self.pool}/storagevolumes/{made['base']}")
            self.assertIn(answer.code, ok, answer)

    async def _clean_up(self):
        """
        Whatever the test left (it failed): delete through the API, then destroy
        by hand what is still there (our VMs' domains and zvols).
        """
        made = self.made
        if not (made["vms"] or made["template"] or made["cluster"] or made["base"]):
            return
        problems = []
        if not self.done.called:
            try:
                await self._delete_all(check=False)
            except Exception as e:   # noqa: BLE001 -- clean up the rest anyway
                problems.append(f"API clean-up: {e!r}")
        uuids = list(made["vms"].values())
        gone = await _testbed.removeDomains(self.stack, [f"comet-{u}" for u in uuids])
        if gone:
            problems.append(f"domains destroyed by hand: {gone}")
        server = next(s for s in self.stack["servers"] if s["storagepool"] == self.pool)
        out = await _testbed.ssh(self.stack, server,
                                 "zfs list -H -o name -t volume -r %s" % server["dataset"])
        ours = [n for n in out.split()
                if self.token in n or any(u in n for u in uuids)]
        # clones first, then the base (-R takes the base's snapshots and any clone left)
        for name in sorted(ours, key=lambda n: self.token in n):
            out, err, code = await _testbed.ssh(
                self.stack, server, "zfs destroy -R %s" % name, check=False)
            problems.append(f"zvol destroyed by hand: {name}" if code == 0 else
                            f"zvol {name} could not be destroyed: {err.strip()}")
        if problems:
            print("\nclean-up after a failure: " + "; ".join(problems))


class CpuModelIntegrationTests(CometDaemonCase):
    """
    CPU models on QEMU (TCG): a VM needing a model the testbed's QEMU
    cannot emulate is a 409 that starts nothing; the local host given a
    named C{cpu_mode} by a reload (SIGHUP) starts a firmware-only VM whose
    live domain has exactly that CPU.
    """

    timeout = 300
    #: A model TCG cannot run (AVX-512 and more: libvirt's domain
    #: capabilities say C{usable='no'}), and one it can.
    UNUSABLE = "Icelake-Server"
    USABLE = "Nehalem"

    async def _reload_with_cpu_mode(self, mode: str) -> None:
        config = os.path.join(os.path.dirname(self.logfile), "comet.toml")
        with open(config) as f:
            text = f.read()
        # The [[hosts]] table's last key is domain_type (tests/integration/_daemon.py).
        marker = f'domain_type = "{self.stack["domain_type"]}"\n'
        self.assertIn(marker, text)
        with open(config, "w") as f:
            f.write(text.replace(marker, marker + f'cpu_mode = "{mode}"\n', 1))
        mark = os.path.getsize(self.logfile)
        self.process.signalProcess("HUP")

        async def reloaded():
            return "configuration reloaded from" in self._log_since(mark)

        await self.until("the reload", reloaded)
        self.assertIn(f"compute host 'local': cpu_mode = '{mode}'", self._log_since(mark))

    async def test_cpu_models(self):
        template, cluster = f"it-{self.token}-cpu", f"it-{self.token}-cpu"
        answer = await self.request("POST", "/templates", {"name": template, "memory": 64})
        self.assertEqual(answer.code, 201, answer)
        self.addCleanup(self.request, "DELETE", f"/templates/{template}")
        self.assertEqual((await self.request("POST", "/cluster", {"name": cluster})).code, 201)
        self.addCleanup(self.request, "DELETE", f"/cluster/{cluster}", {"force": True})
        vms = {}
        for name, body in (("odd", {"cpu_model": self.UNUSABLE}), ("plain", {})):
            answer = await self.request("POST", f"/cluster/{cluster}/vms",
                                        {"template": template, "name": name, **body})
            self.assertEqual(answer.code, 201, answer)
            vms[name] = answer.json
            self.addCleanup(_testbed.removeDomains, self.stack, [f"comet-{answer.json['uuid']}"])

        answer = await self.request("POST", f"{vms['odd']['href']}/start", {})
        self.assertEqual(answer.code, 409, answer)
        self.assertIn(f"CPU model {self.UNUSABLE}", answer.json["reason"])
        self.assertIn(f"local: its libvirt cannot run {self.UNUSABLE}", answer.json["reason"])
        self.assertIsNone((await self.get(vms["odd"]["href"]))["host"])

        await self._reload_with_cpu_mode(self.USABLE)
        answer = await self.request("POST", f"{vms['plain']['href']}/start", {})
        self.assertEqual(answer.code, 200, answer)
        domain = f"comet-{vms['plain']['uuid']}"
        xml = await _testbed.libvirtCall(
            self.stack, lambda conn: conn.lookupByName(domain).XMLDesc(0))
        cpu = ET.fromstring(xml).find("cpu")
        self.assertEqual((cpu.get("mode"), cpu.get("match"), cpu.findtext("model"),
                          cpu.find("model").get("fallback")),
                         ("custom", "exact", self.USABLE, "forbid"), xml)
        answer = await self.request("POST", f"{vms['plain']['href']}/poweroff", {})
        self.assertEqual(answer.code, 200, answer)
