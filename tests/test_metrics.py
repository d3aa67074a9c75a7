"""
Tests for L{comet.metrics}: the inline instruments, and the figures the
models hold, read at scrape time (parsed with C{prometheus_client}'s parser).
"""

from __future__ import annotations

from prometheus_client import REGISTRY
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.metrics import Metrics
from comet.model.tasks import Target
from tests.web.test_health import samples
from tests.web.test_vms import VMTestMixin
from tests.web.test_storage import storage_models


class InlineTests(TestCase):
    def test_requests(self):
        """Requests by route, method and status; a method no one knows is C{other}."""
        metrics = Metrics()
        metrics.request("clusters", "GET", 200, 0.003)
        metrics.request("clusters", "GET", 200, 0.2)
        metrics.request("(unmatched)", "BREW", 405, 0.001)
        value = metrics.registry.get_sample_value
        self.assertEqual(value("comet_http_requests_total",
                               {"route": "clusters", "method": "GET", "status": "200"}), 2)
        self.assertEqual(value("comet_http_requests_total",
                               {"route": "(unmatched)", "method": "other", "status": "405"}), 1)
        self.assertEqual(value("comet_http_request_duration_seconds_bucket",
                               {"route": "clusters", "method": "GET", "le": "0.005"}), 1)
        self.assertEqual(value("comet_http_request_duration_seconds_sum",
                               {"route": "clusters", "method": "GET"}), 0.203)

    def test_ssh(self):
        metrics = Metrics()
        metrics.ssh_command("s1", "zfs", True, 0.04)
        metrics.ssh_command("s1", "zfs", False, 3.0)
        value = metrics.registry.get_sample_value
        self.assertEqual(value("comet_ssh_command_duration_seconds_count",
                               {"server": "s1", "command": "zfs", "outcome": "ok"}), 1)
        self.assertEqual(value("comet_ssh_command_duration_seconds_count",
                               {"server": "s1", "command": "zfs", "outcome": "failed"}), 1)

    def test_own_registry(self):
        """Each daemon counts in its own registry, never the library's global one."""
        one, two = Metrics(), Metrics()
        one.request("clusters", "GET", 200, 0.01)
        self.assertIsNone(two.registry.get_sample_value(
            "comet_http_requests_total", {"route": "clusters", "method": "GET", "status": "200"}))
        self.assertIsNone(REGISTRY.get_sample_value(
            "comet_http_requests_total", {"route": "clusters", "method": "GET", "status": "200"}))


class ScrapeTests(TestCase):
    """The models' figures, as a scrape reads them."""

    async def scrape(self) -> dict:
        return samples((await self.models.metrics.scrape()).decode())

    async def test_pools_and_servers(self):
        """
        Pool space as Comet last read it (a scrape runs no command), and each
        storage server's last check.
        """
        self.models = storage_models(self)
        found = await self.scrape()
        self.assertNotIn(("comet_pool_available_bytes", (("pool", "pool1"), ("server", "s1"))),
                         found)
        pool = await self.models.storage.pool("pool1")
        space = await self.models.storage.space(pool)
        ran = len(self.runners["s1"].ran)
        found = await self.scrape()
        self.assertEqual(len(self.runners["s1"].ran), ran)
        labels = (("pool", "pool1"), ("server", "s1"))
        self.assertEqual(found["comet_pool_available_bytes", labels], space.available)
        self.assertEqual(found["comet_pool_capacity_bytes", labels], space.capacity)
        self.assertIn(("comet_pool_space_read_timestamp_seconds", labels), found)
        self.runners["s2"].unavailable = "No route to host"
        await self.models.serverwatch.check()
        found = await self.scrape()
        self.assertEqual(found["comet_storage_server_up", (("server", "s1"),)], 1)
        self.assertEqual(found["comet_storage_server_up", (("server", "s2"),)], 0)

    async def test_tasks(self):
        """Tasks running by kind, and ended by kind and status."""
        self.models = storage_models(self)
        gate: Deferred = Deferred()

        async def waits(task):
            await gate
            return "done"

        async def fails(task):
            raise Conflict("no")

        record = await self.models.tasks.start(Target("vm", {"cluster": "lab", "name": "a"}), waits)
        await self.models.tasks.start(Target("volume", {"pool": "p", "volume": "v"}), fails)
        found = await self.scrape()
        self.assertEqual(found["comet_tasks_running", (("kind", "vm"),)], 1)
        self.assertEqual(found["comet_tasks_ended_total", (("kind", "volume"), ("status", "failed"))], 1)
        gate.callback(None)
        await self.models.tasks.wait(record.id)
        found = await self.scrape()
        self.assertNotIn(("comet_tasks_running", (("kind", "vm"),)), found)
        self.assertEqual(found["comet_tasks_ended_total", (("kind", "vm"), ("status", "finished"))], 1)

    async def test_vms_unreadable(self):
        """VMs that cannot be read (a closed database) say so; the rest is still scraped."""
        self.models = storage_models(self)
        self.models.users.db.close()
        found = await self.scrape()
        self.assertEqual(found["comet_vms_read", ()], 0)
        self.assertIn(("comet_host_up", (("host", "node1"),)), found)
        self.flushLoggedErrors()




class VMCounterTests(VMTestMixin, TestCase):
    """Per-VM CPU, disk and network counters, read from libvirt at scrape time only."""

    async def test_running_vm_counters(self):
        await self.setUpVMs(sizes=((4, 8192),))
        for name in ("web", "idle"):
            self.assertEqual((await self.create(name=name)).code, 201)
        started = await self.action("web", "start")   # a start the test driver ends at once
        self.assertEqual((started.code, started.json["state"]), (200, "running"))
        found = samples((await self.models.metrics.scrape()).decode())
        web = (("cluster", "lab"), ("host", "node1"), ("vm", "web"))
        self.assertEqual(found["comet_vm_counters_read", (("host", "node1"),)], 1)
        self.assertGreater(found["comet_vm_cpu_seconds_total", web], 0)
        for name in ("disk_read_bytes", "disk_written_bytes", "disk_reads", "disk_writes",
                     "network_receive_bytes", "network_transmit_bytes",
                     "network_receive_packets", "network_transmit_packets"):
            self.assertGreaterEqual(found[f"comet_vm_{name}_total", web], 0)
        # Only running VMs have counters; none are kept between scrapes.
        self.assertEqual([k for k in found if k[0].startswith("comet_vm_cpu")], [
            ("comet_vm_cpu_seconds_total", web)])
        self.assertEqual(self.models.metrics.collector.vm_counters, [])
