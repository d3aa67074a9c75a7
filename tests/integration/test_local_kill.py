"""
SIGKILL at every step of local-copy mode's start, stop and unmap (issue 21), on the
real testbed: L{test_kill_steps}'s machinery with a daemon whose compute
hosts are the testbed's own libvirtd and C{host3} (a VM with OpenZFS and
libvirtd, the one host with a local dataset, so every local-mode VM is
placed there).  Besides that module's invariants (its C{check_local_copies}:
every copy on the host is one its volume's record says the host holds, and
each held volume has its copy), a stop's cases write a marker into the
running VM's local copy first (as its guest would, over ssh: the guest is
firmware only; an unmap's into the volume it unmaps) and, after the repair,
find it in the one authoritative copy:
the host's if the record still says the host holds it, else the storage
server's.
"""

from __future__ import annotations

from comet.model.operations import unmap_local, vm_start, vm_stop
from tests.integration import _testbed
from tests.integration.test_kill_steps import KillStepsCase, _query
from tests.integration.test_local_mode import MARK, SECTOR
from tests.model.operations.crash import steps


class LocalKillTests(KillStepsCase):
    """
    Local-copy mode's start (the copy in is step C{export disks}), stop and
    unmap (C{unmap.local}).
    """

    pools_from_last = True
    timeout = 400
    CASES = [
        *[("local.start", "vm.start", step) for step in steps(vm_start.OPERATION)],
        *[("local.stop", "vm.stop", step) for step in steps(vm_stop.OPERATION)],
        # On a VM shut off on its host (still placed, its copies there): a
        # running firmware-only guest never lets a disk go (no OS answers the
        # hot-unplug); the detach from a running guest is the iSCSI unmap's,
        # which GuestKillTests proves with a real guest.
        *[("local.unmap", "unmap.local", step) for step in steps(unmap_local.OPERATION)],
    ]

    @classmethod
    def compute_hosts(cls, stack: dict) -> list[dict]:
        local = {"name": "local", "uri": stack["host_uri"], "domain_type": stack["domain_type"]}
        return [local, *_testbed.localHosts(stack)]

    async def prepare(self):
        if not _testbed.localHosts(self.stack):
            self.fail("the testbed has no local_hosts (testbed/stack up makes host3)")
        pool = await self.pick_pool(64 * 1024**2)
        base = f"k{self.token}-lbase"
        await self.new_volume(pool, base)
        fixture = await self.base_fixture(pool, base, memory=64)
        answer = await self.request("PUT", f"/templates/{fixture['template']}",
                                    {"disk_mode": "local"})
        self.assertEqual(answer.code, 200, answer)
        fixture["host"] = _testbed.localHosts(self.stack)[0]
        return fixture

    def disk(self) -> tuple[str, str]:
        """
        The volume the case writes to (the VM's disk, or the one it unmaps):
        its copy on the host, its zvol on the storage server.
        """
        name = self.marked
        pool = self.fixture["pool"]
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        return (f"{self.fixture['host']['local_dataset']}/{pool}/{name}",
                f"{server['dataset']}/{name}")

    async def case_local_start(self, step):
        self.marker = self.volume = None
        self.vm = await self.new_vm(self.fixture["cluster"])
        return lambda: self.request("POST", self.vm["href"] + "/start", {})

    async def running(self, step: str, marked: str) -> None:
        """Start the VM (its disks copied to the host); write a marker into C{marked}'s copy."""
        await self.finished(await self.request("POST", self.vm["href"] + "/start", {}))
        self.marked = marked
        self.marker = f"{MARK}{self.token}-{step.replace(' ', '-')}"
        local, _ = self.disk()
        await self._ssh(self.fixture["host"],
                        f"printf %s {self.marker} | dd of=/dev/zvol/{local} bs=512"
                        f" seek={SECTOR} conv=notrunc,fsync 2>/dev/null")

    async def case_local_stop(self, step):
        self.volume = None
        self.vm = await self.new_vm(self.fixture["cluster"])
        await self.running(step, f"vm-{self.vm['uuid']}-vda")
        return lambda: self.request("POST", self.vm["href"] + "/stop",
                                    {"timeout": 0, "force": True})

    async def case_local_unmap(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"])
        self.volume = self.name("u")
        await self.new_volume(self.fixture["pool"], self.volume)
        storage = await self.post(self.vm["href"] + "/storages",
                                  {"pool": self.fixture["pool"], "vol": self.volume})
        await self.running(step, self.volume)
        await self.post(self.vm["href"] + "/poweroff", {}, code=200)
        return lambda: self.request("POST", storage["actions"]["unmap"], {})

    async def check_backends(self) -> None:
        await super().check_backends()
        if not getattr(self, "marker", None):
            return
        local, zvol = self.disk()
        held = _query(self.state.database,
                      "SELECT copy_host FROM storage_volumes WHERE name = ?", self.marked)[0][0]
        where, device = ((self.fixture["host"], local) if held else
                         (next(s for s in self.stack["servers"]
                               if s["storagepool"] == self.fixture["pool"]), zvol))
        got = await self._ssh(where, f"dd if=/dev/zvol/{device} bs=512 skip={SECTOR} count=1"
                                     f" 2>/dev/null | head -c {len(self.marker)}")
        self.assertEqual(got, self.marker, (held, device))

    async def after_local_start(self):
        if getattr(self, "vm", None) is not None:
            await self.delete_vm(self.vm)
        if getattr(self, "volume", None):
            await self.delete_volume(self.fixture["pool"], self.volume)

    after_local_stop = after_local_unmap = after_local_start


LocalKillTests.generate()
