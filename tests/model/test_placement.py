"""Placement: the host with the most free memory among those that fit."""

from twisted.trial.unittest import TestCase

from comet.errors import Conflict
from comet.model.placement import Candidate, choose_host, free_memory


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
