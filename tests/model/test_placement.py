"""Placement: the host with the most free memory among those that fit."""

from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.model.placement import Candidate, choose_host, free_memory
from comet.virt import HostCpus

#: What a host's libvirt offers: every mode, a few named models.
OFFERS = HostCpus(modes=frozenset({"host-passthrough", "host-model", "custom"}),
                  models=frozenset({"qemu64", "Nehalem", "Haswell-noTSX"}))


class ChooseHostTests(TestCase):
    def test_most_free_memory(self):
        hosts = [Candidate("a", 4, 8192, 2000), Candidate("b", 4, 8192, 6000)]
        self.assertEqual(choose_host(hosts, 1024, 1), "b")

    def test_only_hosts_that_fit(self):
        """A host with too few CPUs is passed over even with more memory free."""
        hosts = [Candidate("a", 2, 8192, 7000), Candidate("b", 8, 8192, 3000)]
        self.assertEqual(choose_host(hosts, 1024, 4), "b")

    def test_tie_goes_to_first(self):
        hosts = [Candidate("a", 4, 8192, 4000), Candidate("b", 4, 8192, 4000)]
        self.assertEqual(choose_host(hosts, 1024, 1), "a")

    def test_nothing_fits(self):
        hosts = [Candidate("a", 4, 8192, 500)]
        e = self.assertRaises(Conflict, choose_host, hosts, 1024, 1)
        self.assertIn("a: 500 MB free", e.reason)

    def test_only_hosts_offering_networks(self):
        """A VM with NICs goes only where every one of its networks is offered."""
        hosts = [Candidate("a", 4, 8192, 7000, frozenset({"private"})),
                 Candidate("b", 4, 8192, 3000, frozenset({"private", "public"}))]
        self.assertEqual(choose_host(hosts, 1024, 1, {"private"}), "a")
        self.assertEqual(choose_host(hosts, 1024, 1, {"private", "public"}), "b")
        e = self.assertRaises(Conflict, choose_host, hosts, 1024, 1, {"dmz"})
        self.assertIn("dmz", e.reason)
        self.assertIn("a: private", e.reason)
        e = self.assertRaises(Conflict, choose_host, hosts, 4000, 1, {"public"})
        self.assertIn("b: 3000 MB free", e.reason)
        self.assertNotIn("a:", e.reason)

    def test_cpu_model(self):
        """
        A VM needing a model goes to a host dedicated to it, or to a host
        of another mode whose libvirt can run it; never to one dedicated to
        another model.
        """
        hosts = [Candidate("nehalem", 4, 8192, 7000, cpu_mode="Nehalem", host_cpus=OFFERS),
                 Candidate("hm", 4, 8192, 5000, cpu_mode="host-model", host_cpus=OFFERS),
                 Candidate("plain", 4, 8192, 3000, host_cpus=OFFERS)]
        self.assertEqual(choose_host(hosts, 1024, 1), "nehalem")
        self.assertEqual(choose_host(hosts, 1024, 1, cpu_model="Nehalem"), "nehalem")
        self.assertEqual(choose_host(hosts, 1024, 1, cpu_model="Haswell-noTSX"), "hm")
        self.assertEqual(choose_host(hosts[2:], 1024, 1, cpu_model="qemu64"), "plain")
        e = self.assertRaises(Conflict, choose_host, hosts, 1024, 1, cpu_model="EPYC")
        self.assertEqual(
            e.reason, "no connected compute host can run CPU model EPYC, which the VM needs"
            " (nehalem: its cpu_mode is Nehalem; hm: its libvirt cannot run EPYC;"
            " plain: its libvirt cannot run EPYC)")
        # Memory is weighed among the hosts that can run the model only.
        e = self.assertRaises(Conflict, choose_host, hosts, 6000, 1, cpu_model="Haswell-noTSX")
        self.assertIn("no compute host fits a VM of 6000 MB", e.reason)
        self.assertNotIn("nehalem", e.reason)

    def test_host_cpu_mode_its_libvirt_cannot_give(self):
        """
        A host whose mode its libvirt does not support, or whose named
        model it cannot run, takes no VM without a model of its own; one
        whose CPU models could not be read takes only VMs needing nothing
        there.
        """
        tcg = HostCpus(modes=frozenset({"host-model", "custom"}), models=frozenset({"qemu64"}))
        hosts = [Candidate("pt", 4, 8192, 7000, cpu_mode="host-passthrough", host_cpus=tcg),
                 Candidate("typo", 4, 8192, 5000, cpu_mode="Nehalm", host_cpus=tcg),
                 Candidate("unread", 4, 8192, 4000, cpu_mode="host-model"),
                 Candidate("plain", 4, 8192, 3000)]
        self.assertEqual(choose_host(hosts, 1024, 1), "plain")
        e = self.assertRaises(Conflict, choose_host, hosts[:3], 1024, 1)
        self.assertEqual(
            e.reason, "no connected compute host can run the CPU its cpu_mode gives a VM"
            " (pt: its libvirt does not support host-passthrough; typo: its libvirt cannot"
            " run Nehalm; unread: its CPU models could not be read)")
        self.assertEqual(choose_host(hosts[:2], 1024, 1, cpu_model="qemu64"), "pt")
        e = self.assertRaises(Conflict, choose_host, hosts[3:], 1024, 1, cpu_model="qemu64")
        self.assertIn("plain: its CPU models could not be read", e.reason)

    def test_no_host(self):
        e = self.assertRaises(Conflict, choose_host, [], 1024, 1)
        self.assertIn("no compute host is connected", e.reason)


class FreeMemoryTests(TestCase):
    def test_kernel_figure_capped_by_commitments(self):
        self.assertEqual(free_memory(8192, 7000, 4096), 4096)
        self.assertEqual(free_memory(8192, 2000, 1024), 2000)

    def test_no_kernel_figure(self):
        """The test driver reports no free memory: commitments decide."""
        self.assertEqual(free_memory(8192, 0, 1024), 7168)
        self.assertEqual(free_memory(1024, 0, 4096), 0)
