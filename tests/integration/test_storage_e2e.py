"""
Storage end to end, through the HTTP API of a C{twistd -n comet} child process
on the real testbed (issue 5's last "Done when"):

 1. record the datasets and snapshots of both storage servers' zpools;
 2. a 1 GB volume on each server's pool, and a base volume downloaded from
    the guest image served here on loopback;
 3. a template on the base volume, a cluster, two VMs (zvol clones), started;
 4. in each guest a first marker written to its disk's data area, a VM
    snapshot, a second marker, stop, revert, start: the guest boots and
    reads back the first marker;
 5. a volume of the other server hot-plugged into the first VM (the guest
    sees a new disk and writes to it), covered by a VM snapshot, unmapped
    (the disk leaves the guest, the snapshot leaves the volume), attached to
    the second VM (which reads what the first wrote) and covered by its
    snapshot; the first VM takes the 1 GB volume of its own disk's server,
    and a snapshot of it;
 6. everything deleted through the API (a VM alone, the other with its
    cluster's forced delete; then the volumes those snapshots covered):
    both zpools list what they listed in step 1 (issue 14).

The guests talk on their serial consoles, read through libvirt
(L{tests.integration._console}).  Skipped, with the reason, when the testbed
is not up.  Every name holds a random token; whatever a failed run leaves is
removed through the API, then by hand (libvirt, ssh).
"""

from __future__ import annotations

import os
import re
import time

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.web.server import Site
from twisted.web.static import File

from tests.integration import _testbed
from tests.integration._console import DomainConsole
from tests.integration._daemon import CometDaemonCase, _sleep

GiB = 1024**3
MiB = 1024**2

#: Seconds a guest may take from its start to "COMET-GUEST: ready" (TCG, two at once).
BOOT_TIMEOUT = 180


def _both(*coroutines):
    """Run coroutines at once; fire with their results (the first failure fails it)."""
    return gatherResults([ensureDeferred(c) for c in coroutines], consumeErrors=True)


class StorageEndToEndTests(CometDaemonCase):
    """Markers, snapshots and hot-plugged volumes in real guests on real zvols."""

    timeout = 900

    async def test_markers_snapshots_and_storages(self):
        started = time.monotonic()
        times = {}
        servers = self.stack["servers"]
        self.made = {"vms": {}, "template": None, "cluster": None, "volumes": []}
        self.consoles = {}
        self.addCleanup(self._clean_up)

        # 1. What the zpools hold before.
        before = {s["address"]: await self._zfs_state(s) for s in servers}

        # 2. A 1 GB volume on each pool; the base volume from the guest image.
        # room for the base volume and two clones (others share the testbed)
        base_pool = await self.pick_pool(3 * self.stack["guest"]["image_size"] + 128 * MiB)
        other_pool = next(s["storagepool"] for s in servers if s["storagepool"] != base_pool)
        data = {}
        for server in servers:
            pool, name = server["storagepool"], f"it-{self.token}-data"
            answer = await self.request(
                "POST", f"/storagepools/{pool}/storagevolumes", {"name": name, "capacity": 1})
            self.made["volumes"].append((pool, name))
            await self.finished(answer)
            volume = await self.get(f"/storagepools/{pool}/storagevolumes/{name}")
            self.assertEqual((volume["capacity"], volume["state"], volume["host"], volume["vm"]),
                             (GiB, "unmapped", server["address"], None))
            data[pool] = name
        image = self.stack["guest"]["image"]
        site = Site(File(os.path.dirname(image)))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}/{os.path.basename(image)}"
        base = f"it-{self.token}-base"
        answer = await self.request(
            "POST", f"/storagepools/{base_pool}/storagevolumes", {"name": base, "url": url})
        self.made["volumes"].append((base_pool, base))
        await self.finished(answer)
        volume = await self.get(f"/storagepools/{base_pool}/storagevolumes/{base}")
        self.assertEqual((volume["capacity"], volume["state"]), (GiB, "unmapped"))
        times["volumes"] = time.monotonic() - started

        # 3. Template, cluster, two VMs cloned from the base, both started.
        template, cluster = f"it{self.token}", f"it-{self.token}"
        answer = await self.request("POST", "/templates", {
            "name": template, "memory": 160, "cpus": 1,
            "disk": {"pool": base_pool, "volume": base}})
        self.assertEqual(answer.code, 201, answer)
        self.made["template"] = template
        answer = await self.request("POST", "/cluster", {"name": cluster})
        self.assertEqual(answer.code, 201, answer)
        self.made["cluster"] = cluster
        vms = []
        for _ in range(2):
            answer = await self.request("POST", f"/cluster/{cluster}/vms", {"template": template})
            self.assertEqual(answer.code, 201, answer)
            self.made["vms"][answer.json["name"]] = answer.json["uuid"]
            vms.append(answer.json)
        disks = [f"vm-{vm['uuid']}-vda" for vm in vms]
        names = [v["name"] for v in await self.get(f"/storagepools/{base_pool}/storagevolumes")]
        for disk in disks:
            self.assertIn(disk, names)
        dataset = self._dataset(base_pool)
        out = await self._ssh(base_pool, "zfs get -H -o name,value origin "
                              + " ".join(f"{dataset}/{d}" for d in disks))
        origins = dict(line.split("\t") for line in out.splitlines())
        self.assertEqual(origins, {   # clones of a snapshot of the base, one per VM
            f"{dataset}/{disk}": f"{dataset}/{base}@comet-base-{vm['uuid']}"
            for disk, vm in zip(disks, vms)})
        boots = await _both(*(self._start(vm) for vm in vms))
        for boot in boots:
            self.assertEqual(boot["marker"], "")   # a fresh image's data area is zeros
        times["first boot"] = time.monotonic() - started

        # 4. Marker, snapshot, marker, stop, revert, start: the first marker is back.
        firsts = [f"first-{self.token}-{i}" for i in (1, 2)]
        seconds = [f"second-{self.token}-{i}" for i in (1, 2)]
        boots = await _both(*(self._snapshot_round(vm, first, second)
                              for vm, first, second in zip(vms, firsts, seconds)))
        for boot, vm, first in zip(boots, vms, firsts):
            self.assertEqual(boot["marker"], first, (vm["name"], boot))
            self.assertEqual(await self._read_marker(vm, "/dev/comet-data"), first)
        times["snapshot round"] = time.monotonic() - started

        # 5. A volume of the other server: hot-plugged into the first VM, unmapped,
        # attached to the second (which reads what the first wrote on it).
        first_vm, second_vm = vms
        volume = data[other_pool]
        volume_href = f"/storagepools/{other_pool}/storagevolumes/{volume}"
        written = f"volume-{self.token}"
        seen = await self._block_devices(first_vm)
        storage = await self._attach(first_vm, other_pool, volume)
        new = await self._wait_devices(first_vm, lambda now: now - seen)
        self.assertEqual(len(new), 1, new)
        device = "/dev/" + new.pop()
        await self._guest(first_vm, f"echo {written} | dd of={device} conv=fsync")
        self.assertEqual(await self._read_marker(first_vm, device), written)
        self.assertEqual((await self.get(volume_href))["vm"], first_vm["href"])
        self.assertIn(volume, await self._domain_disks(first_vm))
        # A snapshot now covers the volume too (on its own server); the unmap
        # takes it off the volume, and the snapshot keeps the VM's own disk.
        covering = await self._snapshot_of(first_vm, f"with-{self.token}")
        other_snapshot = f"{self._dataset(other_pool)}/{volume}@comet-{covering['name']}"
        self.assertIn(other_snapshot, await self._snapshots_on(other_pool))
        unmapping = time.monotonic()
        answer = await self.request("POST", storage["actions"]["unmap"], {})
        await self.finished(answer)
        unmap_took = time.monotonic() - unmapping
        # Gone from the running domain by the time the task finished, not later:
        # its target is deleted, and the volume may be exported to another VM now.
        self.assertNotIn(volume, await self._domain_disks(first_vm))
        await self._wait_devices(first_vm, lambda now: None if now - seen else True)
        self.assertEqual(await self.get(first_vm["href"] + "/storages"),
                         [await self.get(first_vm["href"] + f"/storages/{disks[0]}")])
        volume_now = await self.get(volume_href)
        self.assertEqual((volume_now["state"], volume_now["vm"], volume_now["target"]),
                         ("unmapped", None, None))
        self.assertNotIn(other_snapshot, await self._snapshots_on(other_pool))
        self.assertIn(f"{dataset}/{disks[0]}@comet-{covering['name']}",
                      await self._snapshots_on(base_pool))
        self.assertEqual((await self.get(covering["href"]))["name"], covering["name"])
        seen = await self._block_devices(second_vm)
        await self._attach(second_vm, other_pool, volume)
        new = await self._wait_devices(second_vm, lambda now: now - seen)
        self.assertEqual(len(new), 1, new)
        self.assertEqual(await self._read_marker(second_vm, "/dev/" + new.pop()), written)
        self.assertEqual((await self.get(volume_href))["vm"], second_vm["href"])
        # The second VM's snapshot covers it: the cluster's forced delete takes it off.
        held = await self._snapshot_of(second_vm, f"held-{self.token}")
        self.assertIn(f"{self._dataset(other_pool)}/{volume}@comet-{held['name']}",
                      await self._snapshots_on(other_pool))
        # A volume attached to a VM cannot go to another: 409.
        answer = await self.request(
            "POST", first_vm["href"] + "/storages", {"pool": other_pool, "vol": volume})
        self.assertEqual(answer.code, 409, answer)
        # The first VM takes the 1 GB volume of its own disk's server instead
        # (the VMs are deleted with volumes attached: those stay, released).
        seen = await self._block_devices(first_vm)
        await self._attach(first_vm, base_pool, data[base_pool])
        new = await self._wait_devices(first_vm, lambda now: now - seen)
        self.assertEqual(await self._read_marker(first_vm, "/dev/" + new.pop()), "")
        # Its snapshot covers that volume: the VM's delete takes it off.
        await self._snapshot_of(first_vm, f"both-{self.token}")
        self.assertEqual(
            sorted(s["vol"] for s in await self.get(first_vm["href"] + "/storages")),
            sorted([disks[0], data[base_pool]]))
        times["storages"] = time.monotonic() - started

        # 6. Delete it all through the API (the first VM alone, the second with
        # the cluster's forced delete; the volumes their snapshots covered can
        # go too); the zpools are as they were.
        await self._delete_all(check=True)
        domains = await _testbed.libvirtCall(
            self.stack, lambda conn: [d.name() for d in conn.listAllDomains(0)])
        self.assertEqual([d for d in domains if self._ours(d)], [])
        after = {s["address"]: await self._zfs_state(s) for s in servers}
        self._compare_zpools(before, after)
        times["deleted"] = time.monotonic() - started
        print("\nstorage end to end: " + ", ".join(f"{k} at {v:.0f} s" for k, v in times.items())
              + f" (unmap: {unmap_took:.1f} s)")

    # --- the guests -------------------------------------------------------------

    async def _start(self, vm: dict) -> dict:
        """
        Start a VM, connect to its serial console at once, wait for its guest
        to be ready: C{{"marker": what it read from its data area at boot}}.
        """
        answer = await self.request("POST", vm["href"] + "/start", {})
        self.assertEqual((answer.code, answer.json["state"]), (200, "running"), answer)
        console = DomainConsole(self.stack["host_uri"], f"comet-{vm['uuid']}")
        await console.connect()
        self.consoles[vm["uuid"]] = console
        try:
            ready = await console.waitFor(rb"COMET-GUEST: ready", BOOT_TIMEOUT)
        except Exception:
            self.fail(f"{vm['name']} did not boot; console:\n{console.output[-3000:]}")
        # the prompt follows "ready": the shell reads what is typed from now on
        await console.waitFor(re.escape(self.stack["guest"]["prompt"].encode()), 60, ready.end())
        text = console.output
        markers = re.findall(r"COMET-GUEST: marker=([^\r\n]*)", text)
        self.assertEqual(len(markers), 1, text)
        return {"marker": markers[0], "console": text}

    async def _stop(self, vm: dict) -> None:
        answer = await self.request("POST", vm["href"] + "/stop", {"timeout": 60, "force": True})
        await self.finished(answer)
        got = await self.get(vm["href"])
        self.assertEqual((got["state"], got["host"]), ("shutoff", None))
        console = self.consoles.pop(vm["uuid"], None)
        if console is not None:
            await console.aclose()

    async def _guest(self, vm: dict, command: str, timeout: float = 60) -> str:
        """Run a shell command in the guest; its output (it must exit 0)."""
        status, output = await self.consoles[vm["uuid"]].run(command, timeout)
        self.assertEqual(status, 0, (vm["name"], command, output))
        return output

    async def _read_marker(self, vm: dict, device: str) -> str:
        """The first line of C{device} in the guest (up to a NUL), as the guest's init reads it."""
        output = await self._guest(
            vm, f"echo \"<<$(dd if={device} bs=512 count=1 2>/dev/null"
                " | tr '\\000' '\\n' | head -n 1)>>\"")
        found = re.findall(r"^<<([^\r\n]*)>>", output, re.M)
        self.assertEqual(len(found), 1, output)
        return found[0]

    async def _block_devices(self, vm: dict) -> set[str]:
        output = await self._guest(vm, "echo \"<<$(ls /sys/block | tr '\\n' ' ')>>\"")
        found = re.findall(r"^<<([^\r\n]*)>>", output, re.M)
        self.assertEqual(len(found), 1, output)
        return set(found[0].split())

    async def _wait_devices(self, vm: dict, check, timeout: float = 60):
        """Look at the guest's disks until C{check(devices)} is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            now = await self._block_devices(vm)
            value = check(now)
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"{vm['name']}: its disks are still {sorted(now)} after {timeout} s")
            await _sleep(0.5)

    async def _snapshot_round(self, vm: dict, first: str, second: str) -> dict:
        """Step 4 for one VM; what its guest read at the boot after the revert."""
        href = vm["href"]
        await self._guest(vm, f"echo {first} | dd of=/dev/comet-data conv=fsync")
        answer = await self.request("POST", href + "/snapshots", {"name": "first"})
        self.assertEqual(answer.code, 201, answer)
        snapshot = answer.json
        self.assertEqual((snapshot["name"], snapshot["parent"], snapshot["current"]),
                         ("first", "", True))
        await self._guest(vm, f"echo {second} | dd of=/dev/comet-data conv=fsync")
        self.assertEqual(await self._read_marker(vm, "/dev/comet-data"), second)
        # Not while it runs: not offered, and refused when asked all the same.
        self.assertNotIn("revert", snapshot["actions"])
        answer = await self.request("POST", snapshot["href"] + "/revert", {})
        self.assertEqual(answer.code, 409, answer)
        await self._stop(vm)
        snapshot = await self.get(snapshot["href"])
        answer = await self.request("POST", snapshot["actions"]["revert"], {})
        self.assertEqual((answer.code, answer.json["current"]), (200, True), answer)
        listed = await self.get(href + "/snapshots")
        self.assertEqual([s["name"] for s in listed], ["first"])
        return await self._start(vm)

    async def _snapshot_of(self, vm: dict, name: str) -> dict:
        answer = await self.request("POST", vm["href"] + "/snapshots", {"name": name})
        self.assertEqual(answer.code, 201, answer)
        return answer.json

    async def _snapshots_on(self, pool: str) -> list[str]:
        out = await self._ssh(pool, "zfs list -H -o name -t snapshot -r "
                              + self._dataset(pool))
        return out.split()

    async def _attach(self, vm: dict, pool: str, volume: str) -> dict:
        answer = await self.request("POST", vm["href"] + "/storages", {"pool": pool, "vol": volume})
        self.assertEqual(answer.code, 201, answer)
        storage = answer.json
        self.assertEqual((storage["pool"], storage["vol"], storage["dev"], storage["state"]),
                         (pool, volume, "vdb", "mapped"))
        return storage

    async def _domain_disks(self, vm: dict) -> str:
        """The C{<disk>} elements of the VM's running domain, as XML text."""
        def disks(conn):
            xml = conn.lookupByName(f"comet-{vm['uuid']}").XMLDesc(0)
            return "".join(re.findall(r"<disk .*?</disk>", xml, re.S))

        return await _testbed.libvirtCall(self.stack, disks)

    # --- the storage servers ----------------------------------------------------

    def _server(self, pool: str) -> dict:
        return next(s for s in self.stack["servers"] if s["storagepool"] == pool)

    def _dataset(self, pool: str) -> str:
        return self._server(pool)["dataset"]

    def _ssh(self, pool: str, command: str):
        return _testbed.ssh(self.stack, self._server(pool), command)

    async def _zfs_state(self, server: dict) -> dict:
        """
        Every dataset, volume and snapshot of the server's zpool, the space
        its Comet dataset uses, and its iSCSI targets (one ssh login).
        """
        zpool = server["dataset"].split("/")[0]
        out = await _testbed.ssh(
            self.stack, server,
            f"zfs list -H -p -t all -o name -r {zpool} && echo -- &&"
            f" zfs get -H -p -o value used {server['dataset']} && echo -- &&"
            " tgtadm --lld iscsi --mode target --op show | grep '^Target' || true")
        names, used, targets = out.split("--\n")
        return {"names": names.split(), "used": int(used),
                "targets": [line.split()[-1] for line in targets.splitlines()]}

    def _ours(self, name: str) -> bool:
        return self.token in name or any(u in name for u in self.made_uuids)

    def _compare_zpools(self, before: dict, after: dict) -> None:
        """
        Both zpools list what they did before.  Others share the testbed: a
        name that appeared or went that is not ours (no token, no VM uuid of
        ours) is another test's, reported but not failed; the space used is
        compared only when nothing but ours came and went.
        """
        for server in self.stack["servers"]:
            address = server["address"]
            old, new = before[address], after[address]
            added = sorted(set(new["names"]) - set(old["names"]))
            removed = sorted(set(old["names"]) - set(new["names"]))
            self.assertEqual([n for n in added if self._ours(n)], [], (address, "left behind"))
            self.assertEqual([n for n in removed if self._ours(n)], [], address)
            self.assertEqual([t for t in new["targets"] if self._ours(t)], [], address)
            if added or removed:
                print(f"\n{address}: another test changed the zpool meanwhile:"
                      f" +{added} -{removed}")
                continue
            self.assertEqual(new["names"], old["names"], address)
            if old["names"] == [server["dataset"].split("/")[0], server["dataset"]]:
                # nothing but ours was ever in it: the space is back too
                self.assertEqual(new["used"], old["used"], (address, server["dataset"]))

    # --- clean-up -----------------------------------------------------------------

    @property
    def made_uuids(self) -> list[str]:
        return list(self.made["vms"].values())

    async def _delete_all(self, check: bool) -> None:
        """Delete the VMs (forced), template, cluster and volumes through the API."""
        made = self.made
        ok = (204,) if check else tuple(range(100, 600))
        cluster = made["cluster"]
        # Checked: the last VM goes with the cluster's forced delete.
        for name in list(made["vms"])[:-1] if check else list(made["vms"]):
            answer = await self.request("DELETE", f"/cluster/{cluster}/vms/{name}", {"force": True})
            self.assertIn(answer.code, ok, answer)
        for console in list(self.consoles.values()):
            await console.aclose()
        self.consoles.clear()
        if cluster:
            answer = await self.request("DELETE", f"/cluster/{cluster}", {"force": True})
            self.assertIn(answer.code, ok, answer)
        if made["template"]:
            answer = await self.request("DELETE", f"/templates/{made['template']}")
            self.assertIn(answer.code, ok, answer)
        for pool, name in made["volumes"]:
            answer = await self.request("DELETE", f"/storagepools/{pool}/storagevolumes/{name}")
            self.assertIn(answer.code, ok, answer)
        if check:
            made.update(template=None, cluster=None, volumes=[])
            self.deleted = True

    async def _clean_up(self):
        """After a failure: the API first, then by hand (domains, zvols with our names)."""
        for console in list(self.consoles.values()):
            await console.aclose()
        if getattr(self, "deleted", False):
            return
        problems = []
        if not self.done.called:
            try:
                await self._delete_all(check=False)
            except Exception as e:   # noqa: BLE001 -- clean up the rest anyway
                problems.append(f"API clean-up: {e!r}")
        uuids = self.made_uuids
        await _testbed.removeDomains(self.stack, [f"comet-{u}" for u in uuids])
        for server in self.stack["servers"]:
            out = await _testbed.ssh(self.stack, server,
                                     "zfs list -H -o name -t volume -r %s" % server["dataset"])
            ours = [n for n in out.split() if self._ours(n)]
            # clones (VM disks) first, then the bases (-R: their snapshots, clones left)
            for name in sorted(ours, key=lambda n: self.token in n):
                out, err, code = await _testbed.ssh(
                    self.stack, server, "zfs destroy -R %s" % name, check=False)
                problems.append(f"zvol destroyed by hand: {name}" if code == 0 else
                                f"zvol {name} could not be destroyed: {err.strip()}")
        if problems:
            print("\nclean-up after a failure: " + "; ".join(problems))
