"""
L{Hypervisors.migrate}, L{Hypervisors.migration_progress} and
L{Hypervisors.abort_migration}: what they ask libvirt (the test driver
cannot migrate, so C{virDomainMigrate3}, C{jobStats} and C{abortJob} are
answered by a recording connection's fakes, L{tests.virt._recording}), and
what they answer.  The migration itself is proven on QEMU (tests/integration).
"""

from __future__ import annotations

import libvirt
from twisted.internet.defer import inlineCallbacks

from comet.config import ComputeConfig, HostConfig
from comet.errors import Conflict, NotFound
from comet.virt import HypervisorError, Hypervisors, MigrationProgress
from tests.virt._nodes import domain_spec
from tests.virt._recording import Recorder, libvirt_error
from tests.virt.test_hypervisors import TIMEOUT, _Case

FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)


class MigrateTests(_Case):
    def two_hosts(self, migration_address: str = "", **kwargs) -> Hypervisors:
        from twisted.internet import reactor
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.recorder = Recorder()
        hv = Hypervisors(
            reactor,
            (HostConfig(name="n1", uri=self.node(domains=[domain_spec("a")]), domain_type="test"),
             HostConfig(name="n2", uri=self.node(), domain_type="test",
                        migration_address=migration_address)),
            ComputeConfig(libvirt_threads=4, libvirt_timeout=TIMEOUT),
            clock=self.clock, open_connection=self.recorder.open)
        hv.startService()
        self.addCleanup(hv.stopService)
        self.asked = []

        def downtime(dom, ms, flags):
            self.asked.append(("downtime", ms))

        def migrate3(dom, dconn, params, flags):
            """What a migration leaves: the domain on dconn, gone from here."""
            self.asked.append(("migrate3", params, flags))
            paused = dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
            moved = dconn.defineXML(dom.XMLDesc(0))
            moved.create()
            if paused:
                moved.suspend()
            dom.destroy()
            dom.undefine()
            return moved

        self.recorder.fake("migrateSetMaxDowntime", downtime)
        self.recorder.fake("migrate3", migrate3)
        return hv

    @inlineCallbacks
    def test_migrate(self):
        """
        One C{virDomainMigrate3} onto the destination's own connection, live,
        persistent there, undefined here; the downtime set first; answers the
        state on the destination.
        """
        hv = self.two_hosts()
        self.assertEqual((yield hv.migrate("n1", "n2", "a", 250, 600)), "running")
        self.assertEqual(self.asked, [("downtime", 250), ("migrate3", {}, FLAGS)])
        self.assertEqual((yield hv.domain_states("n1")), {})
        self.assertEqual((yield hv.domain_states("n2")), {"a": "running"})
        self.assertEqual(self.recorder.opened, 2)   # the connections Comet holds, one a host

    @inlineCallbacks
    def test_paused_and_address(self):
        """A paused domain stays paused; a migration address becomes libvirt's URI."""
        hv = self.two_hosts(migration_address="10.200.0.11")
        yield hv.suspend("n1", "a")
        self.assertEqual((yield hv.migrate("n1", "n2", "a", 300, 600)), "paused")
        self.assertEqual(self.asked[-1], (
            "migrate3", {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://10.200.0.11"},
            FLAGS | libvirt.VIR_MIGRATE_PAUSED))

    @inlineCallbacks
    def test_refusals(self):
        """
        A shut-off domain: Conflict; unknown hosts or domains: NotFound; a
        driver that cannot migrate (the real test driver): HypervisorError;
        in each case the domain stays where it is.
        """
        hv = self.two_hosts()
        yield hv.destroy("n1", "a")
        yield self.assertFailure(hv.migrate("n1", "n2", "a", 300, 600), Conflict)
        yield hv.start("n1", "a")
        yield self.assertFailure(hv.migrate("n1", "n9", "a", 300, 600), NotFound)
        yield self.assertFailure(hv.migrate("n9", "n2", "a", 300, 600), NotFound)
        yield self.assertFailure(hv.migrate("n1", "n2", "b", 300, 600), NotFound)
        self.recorder.fake("migrate3", None)
        e = yield self.assertFailure(hv.migrate("n1", "n2", "a", 300, 600), HypervisorError)
        self.assertIn("migrating domain 'a' from 'n1' to 'n2'", e.reason)
        self.assertEqual((yield hv.domain_states("n1")), {"a": "running"})

    @inlineCallbacks
    def test_long_call(self):
        """The call may take its own timeout, not C{libvirt_timeout}."""
        hv = self.two_hosts()
        yield hv.connect()
        gate = self.recorder.hold("migrate3")
        d = hv.migrate("n1", "n2", "a", 300, 10 * TIMEOUT)
        self.clock.advance(2 * TIMEOUT)
        self.assertFalse(d.called)
        gate.set()
        self.assertEqual((yield d), "running")
        self.assertEqual(hv.status("n1").state, "connected")

    @inlineCallbacks
    def test_progress_and_abort(self):
        """
        The job's statistics as a L{MigrationProgress} (C{None} without a
        job); a cancel asked of libvirt, C{False} when there is no job.
        """
        hv = self.two_hosts()
        stats = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 400,
                 "memory_remaining": 100, "time_elapsed": 1500}
        self.recorder.fake("jobStats", lambda dom, flags: stats)
        reading = yield hv.migration_progress("n1", "a")
        self.assertEqual(reading, MigrationProgress(400, 100, 1500, None))
        self.assertEqual(reading.percent, 75)
        stats = {"type": libvirt.VIR_DOMAIN_JOB_COMPLETED, "memory_total": 400,
                 "memory_remaining": 0, "time_elapsed": 2000, "downtime": 40}
        self.assertEqual((yield hv.migration_progress("n1", "a", completed=True)).downtime_ms, 40)
        stats = {"type": libvirt.VIR_DOMAIN_JOB_NONE}
        self.assertIsNone((yield hv.migration_progress("n1", "a")))
        self.recorder.fake("abortJob", lambda dom: None)
        self.assertTrue((yield hv.abort_migration("n1", "a")))
        self.recorder.fail_next("abortJob", libvirt_error(
            libvirt.VIR_ERR_OPERATION_INVALID, message="no job is active on the domain"))
        self.assertFalse((yield hv.abort_migration("n1", "a")))
