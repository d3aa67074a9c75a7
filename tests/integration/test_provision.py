"""
First-boot provisioning on the testbed, through the HTTP API of a C{twistd
-n comet} child: a VM made with C{user_data}, C{ssh_keys} and a
C{hostname} gets its NoCloud seed on a zvol of its disk's storage server
(read back there over ssh: an ISO 9660 volume labelled C{cidata} holding
the marker), the guest booted from its own disk finds the seed on its CD-ROM
as cloud-init does (the testbed guest's /init reads it: testbed/images/guest-init),
takes its host name and runs its user-data script, which prints the marker on
the serial console; and the seed goes with the VM.
"""

from __future__ import annotations

import os
import re
import secrets

from twisted.internet import reactor
from twisted.web.server import Site
from twisted.web.static import File

from tests.integration import _testbed
from tests.integration._console import DomainConsole
from tests.integration._daemon import CometDaemonCase

MiB = 1024**2
BOOT_TIMEOUT = 180


class ProvisionTests(CometDaemonCase):
    timeout = 600

    async def test_seed_reaches_the_guest(self):
        self.made: dict = {"vm": None, "template": None, "cluster": None, "volume": None}
        self.console = None
        self.addCleanup(self._clean_up)
        guest = self.stack["guest"]
        pool = await self.pick_pool(2 * guest["image_size"] + 16 * MiB)
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        site = Site(File(os.path.dirname(guest["image"])))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/{os.path.basename(guest['image'])}"
        base = f"it-{self.token}-seedbase"
        answer = await self.request("POST", f"/storagepools/{pool}/storagevolumes",
                                    {"name": base, "url": url})
        self.made["volume"] = (pool, base)
        await self.finished(answer)
        template, cluster = f"it{self.token}s", f"it-{self.token}-s"
        answer = await self.request("POST", "/templates", {
            "name": template, "memory": 160, "cpus": 1, "disk": {"pool": pool, "volume": base}})
        self.assertEqual(answer.code, 201, answer)
        self.made["template"] = template
        self.assertEqual((await self.request("POST", "/cluster", {"name": cluster})).code, 201)
        self.made["cluster"] = cluster

        marker = f"SEED-MARKER-{secrets.token_hex(4)}"
        with open(self.stack["ssh"]["identity"] + ".pub") as f:
            key = f.read().strip()
        answer = await self.request("POST", f"/cluster/{cluster}/vms", {
            "template": template, "name": "seeded", "hostname": "seeded.example",
            "ssh_keys": [key], "user_data": f"#!/bin/sh\necho {marker} from $(hostname)\n"})
        self.assertEqual(answer.code, 201, answer)
        vm = self.made["vm"] = answer.json
        self.assertEqual(vm["provision"]["hostname"], "seeded.example")
        self.assertEqual(vm["provision"]["ssh_keys"], [key])
        self.assertNotIn(marker, str(vm))

        # The seed's bytes, on the storage server.
        zvol = f"{server['dataset']}/vm-{vm['uuid']}-hdc"
        head = await _testbed.ssh(self.stack, server, f"head -c 131072 $(zvol-dev {zvol})")
        self.assertEqual(head[32769:32774], "CD001")                 # the ISO 9660 PVD
        self.assertEqual(head[32808:32840].strip(), "cidata")      # its volume label
        self.assertIn(marker, head)
        self.assertIn(f'"instance-id": "{vm["uuid"]}"', head)
        self.assertIn('"local-hostname": "seeded.example"', head)

        # The guest finds it on its CD-ROM at first boot: its host name, and
        # the user-data script's output on the serial console.
        answer = await self.request("POST", vm["href"] + "/start", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "running"), answer)
        self.console = DomainConsole(self.stack["host_uri"], f"comet-{vm['uuid']}")
        await self.console.connect()
        try:
            ready = await self.console.waitFor(rb"COMET-GUEST: ready", BOOT_TIMEOUT)
        except Exception:
            self.fail(f"the guest did not boot; console:\n{self.console.output[-3000:]}")
        booted = self.console.output
        self.assertIn("COMET-GUEST: seed hostname=seeded.example", booted)
        self.assertIn(f"COMET-GUEST: user-data: {marker} from seeded.example", booted)
        await self.console.waitFor(re.escape(guest["prompt"].encode()), 60, ready.end())
        models = await self._guest("cat /sys/bus/scsi/devices/*/model")
        self.assertIn("QEMU DVD-ROM", models)

        # Deleted with the VM.
        await self.console.aclose()
        self.console = None
        answer = await self.request("DELETE", vm["href"], {"force": True})
        self.assertEqual(answer.code, 204, answer)
        self.made["vm"] = None
        listed = await _testbed.ssh(self.stack, server,
                                    f"zfs list -H -o name -t volume -r {server['dataset']}")
        self.assertNotIn(vm["uuid"], listed)

    async def _guest(self, command: str) -> str:
        status, output = await self.console.run(command, 60)
        self.assertEqual(status, 0, (command, output))
        return output

    async def _clean_up(self):
        if self.console is not None:
            await self.console.aclose()
        made = self.made
        if made["vm"] is not None:
            await self.request("DELETE", made["vm"]["href"], {"force": True})
            await _testbed.removeDomains(self.stack, [f"comet-{made['vm']['uuid']}"])
        if made["cluster"]:
            await self.request("DELETE", f"/cluster/{made['cluster']}", {"force": True})
        if made["template"]:
            await self.request("DELETE", f"/templates/{made['template']}")
        if made["volume"]:
            pool, name = made["volume"]
            await self.request("DELETE", f"/storagepools/{pool}/storagevolumes/{name}")
