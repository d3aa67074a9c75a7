"""
SIGKILL at every step of local-copy mode's start and stop (issue 21), on the
real testbed: L{test_kill_steps}'s machinery with a daemon whose compute
hosts are the testbed's own libvirtd and C{host3} (a VM with OpenZFS and
libvirtd, the one host with a local dataset, so every local-mode VM is
placed there).  Besides that module's invariants (its C{check_local_copies}:
every copy on the host is one its volume's record says the host holds, and
each held volume has its copy), a stop's cases write a marker into the
running VM's local copy first (as its guest would, over ssh: the guest is
firmware only) and, after the repair, find it in the one authoritative copy:
the host's if the record still says the host holds it, else the storage
server's.
"""

from __future__ import annotations

from comet.model.operations import vm_start, vm_stop
from tests.integration import _testbed
from tests.integration.test_kill_steps import KillStepsCase, _query
from tests.integration.test_local_mode import MARK, SECTOR
from tests.model.operations.crash import steps


class LocalKillTests(KillStepsCase):
    """Local-copy mode's start (the copy in is step C{export disks}) and stop."""

    pools_from_last = True
    timeout = 400
    CASES = [
        *[("local.start", "vm.start", step) for step in steps(vm_start.OPERATION)],
        *[("local.stop", "vm.stop", step) for step in steps(vm_stop.OPERATION)],
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
        """The VM's disk: its copy on the host, its zvol on the storage server."""
        name = f"vm-{self.vm['uuid']}-vda"
        pool = self.fixture["pool"]
        server = next(s for s in self.stack["servers"] if s["storagepool"] == pool)
        return (f"{self.fixture['host']['local_dataset']}/{pool}/{name}",
                f"{server['dataset']}/{name}")

    async def case_local_start(self, step):
        self.marker = None
        self.vm = await self.new_vm(self.fixture["cluster"])
        return lambda: self.request("POST", self.vm["href"] + "/start", {})

    async def case_local_stop(self, step):
        self.vm = await self.new_vm(self.fixture["cluster"])
        await self.finished(await self.request("POST", self.vm["href"] + "/start", {}))
        self.marker = f"{MARK}{self.token}-{step.replace(' ', '-')}"
        local, _ = self.disk()
        await self._ssh(self.fixture["host"],
                        f"printf %s {self.marker} | dd of=/dev/zvol/{local} bs=512"
                        f" seek={SECTOR} conv=notrunc,fsync 2>/dev/null")
        return lambda: self.request("POST", self.vm["href"] + "/stop",
                                    {"timeout": 0, "force": True})

    async def check_backends(self) -> None:
        await super().check_backends()
        if not getattr(self, "marker", None):
            return
        local, zvol = self.disk()
        name = f"vm-{self.vm['uuid']}-vda"
        held = _query(self.state.database,
                      "SELECT copy_host FROM storage_volumes WHERE name = ?", name)[0][0]
        where, device = ((self.fixture["host"], local) if held else
                         (next(s for s in self.stack["servers"]
                               if s["storagepool"] == self.fixture["pool"]), zvol))
        got = await self._ssh(where, f"dd if=/dev/zvol/{device} bs=512 skip={SECTOR} count=1"
                                     f" 2>/dev/null | head -c {len(self.marker)}")
        self.assertEqual(got, self.marker, (held, device))

    async def after_local_start(self):
        if getattr(self, "vm", None) is not None:
            await self.delete_vm(self.vm)

    after_local_stop = after_local_start


LocalKillTests.generate()
